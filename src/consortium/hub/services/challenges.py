"""Challenges on the hub: a host org opens one (its signed statement commits to a test set that stays on its
node), members submit models, the host's node posts signed scores, and the boards rank them.

The hub holds metadata only: the statement, the submissions' weights (blobs) and specs, and the host's signed
scores. Private scores are never on the hub before the deadline: the host's node scores the private part only
once the deadline has passed (:func:`pending` offers it no private work before), so nothing can leak them.
When every submission has its private score, the challenge is finalised: the final board is written to the
ledger and the prize, held from the host at opening, goes to the winner's team (back to the host when nobody
submitted). Every opening, submission, score and payout is a ledger entry.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.challenge_wire import (
    ChallengeCreate,
    ChallengeStatement,
    ModelSubmission,
    ScoreIn,
    SubmissionMeta,
)
from consortium.codec import decode_tensors, safetensors_metadata
from consortium.fl.core import FLError, check_update, parse_hyperparams, spec_of
from consortium.fl.registry import get_algorithm
from consortium.governance import challenges as rules
from consortium.governance.credits import CreditReason
from consortium.hub.db.challenge_models import Challenge, ChallengeSubmission
from consortium.hub.db.models import Dataset, Model, Org, ProjectDataset
from consortium.hub.services import credits, hub_identity, ledger
from consortium.hub.services import models as model_service
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, ServiceError
from consortium.hub.services.identity import Principal
from consortium.ledger.signatures import ActorSignature
from consortium.protocol import AlgorithmSpec
from consortium.strict_json import StrictJSONError, loads


class TooMany(ServiceError):
    """The org's submissions for today reached the challenge's daily limit."""

    status_code = 429


def statement_of(challenge: Challenge) -> ChallengeStatement:
    return ChallengeStatement.model_validate(challenge.statement)


def get(session: Session, challenge_id: int) -> Challenge:
    challenge = session.get(Challenge, challenge_id)
    if challenge is None:
        raise NotFound(f"no challenge {challenge_id}")
    return challenge


def listing(session: Session) -> list[Challenge]:
    return list(session.scalars(select(Challenge).order_by(Challenge.id)))


def status(challenge: Challenge, now: datetime) -> str:
    if challenge.finalised_at is not None:
        return "final"
    return "open" if now < challenge.deadline else "closed"


def _acting_org(session: Session, caller: Principal, verb: str) -> Org:
    """The caller's org, admitted; Forbidden naming why not."""
    if caller.org_id is None:
        raise Forbidden(f"only an organisation may {verb} (the caller belongs to none)")
    org = session.get(Org, caller.org_id)
    if org.status != "admitted":
        raise Forbidden(f"org {org.name!r} is {org.status} and may not {verb}")
    return org


def open_challenge(session: Session, caller: Principal, body: ChallengeCreate, now: datetime) -> Challenge:
    """Record the host's signed statement, hold the prize from its balance (PaymentRequired when short)."""
    statement = body.statement
    org = _acting_org(session, caller, "open a challenge")
    if org.name != statement.host or not caller.acts_for(org.id):
        raise Forbidden(f"a challenge of {statement.host!r} is opened by that org's key or steward")
    if statement.hub_id != hub_identity.ensure(session):
        raise BadRequest("statement.hub_id: the statement was made for another hub")
    if statement.deadline <= now:
        raise BadRequest(f"statement.deadline: {statement.deadline.isoformat()} has passed")
    try:
        get_algorithm(statement.algorithm_family)
    except (FLError, KeyError, ValueError) as exc:
        raise BadRequest(f"statement.algorithm_family: {exc}") from exc
    if session.scalar(select(Challenge.id).where(Challenge.host_org_id == org.id,
                                                 Challenge.name == statement.name)) is not None:
        raise Conflict(f"{org.name} already has a challenge called {statement.name!r}")
    payload = statement.model_dump(mode="json", by_alias=True)
    signature = ActorSignature(org.key_id or "", body.signature)
    try:
        ledger.check_actor_signature(session, rules.OPENED_EVENT, payload, signature)
    except ValueError as exc:
        raise BadRequest(f"signature: {exc}") from exc
    challenge = Challenge(host_org_id=org.id, name=statement.name, statement=payload,
                          signature=body.signature,
                          deadline=statement.deadline, opened_seq=0)
    session.add(challenge)
    session.flush()
    if statement.prize:
        credits.spend(session, org, statement.prize, CreditReason.prize_escrow, f"challenge:{challenge.id}",
                      {"challenge_id": challenge.id})
    entry = ledger.record(session, rules.OPENED_EVENT, caller.label, payload, scope=ledger.MEMBERS,
                          actor_signature=signature)
    challenge.opened_seq = entry.seq
    session.commit()
    return challenge


def _check_open(session: Session, challenge: Challenge, org: Org, now: datetime) -> None:
    if now >= challenge.deadline:
        raise Gone(f"challenge {challenge.id} closed at {challenge.deadline.isoformat()}; "
                   "no more submissions")
    ledger.lock(session)  # concurrent submissions of one org count one after the other
    day = rules.utc_day(now)
    start = datetime.combine(day, time.min, tzinfo=UTC)
    today = session.scalar(select(func.count()).select_from(ChallengeSubmission).where(
        ChallengeSubmission.challenge_id == challenge.id, ChallengeSubmission.org_id == org.id,
        ChallengeSubmission.submitted_at >= start))
    limit = statement_of(challenge).daily_limit
    if today >= limit:
        raise TooMany(f"{org.name} has made {today} submission(s) to challenge {challenge.id} "
                      f"on {day.isoformat()} "
                      f"(UTC), the daily limit is {limit}; it resets at 00:00 UTC")


def check_fits(statement: ChallengeStatement, algorithm: AlgorithmSpec, tensors: dict[str, Any]) -> None:
    """BadRequest unless the spec names the challenge's algorithm with valid hyper-parameters for its input
    width and the weights have exactly the shapes that spec's model has."""
    if algorithm.name != statement.algorithm_family:
        raise BadRequest(f"algorithm.name: challenge {statement.name!r} takes {statement.algorithm_family!r} "
                         f"models, not {algorithm.name!r}")
    try:
        family = get_algorithm(algorithm.name)
        hp = parse_hyperparams(family, algorithm.hyperparameters)
        template = spec_of(family.init(hp, statement.num_features, 0))
    except FLError as exc:
        raise BadRequest(f"algorithm.hyperparameters: {exc} (the challenge's input has "
                         f"{statement.num_features} features)") from exc
    try:
        check_update(template, tensors)
    except FLError as exc:
        raise BadRequest(f"wrong shape: the weights do not fit the spec for {statement.num_features} input "
                         f"features: {exc}") from exc


def _record_submission(session: Session, challenge: Challenge, org: Org, caller: Principal, now: datetime, *,
                       team: list[str], weights_sha256: str, algorithm: AlgorithmSpec,
                       model_id: int | None) -> ChallengeSubmission:
    row = ChallengeSubmission(challenge_id=challenge.id, org_id=org.id, team=team, model_id=model_id,
                              weights_sha256=weights_sha256, algorithm=algorithm.model_dump(mode="json"),
                              submitted_at=now)
    session.add(row)
    session.flush()
    ledger.record(session, "challenge.submitted", caller.label,
                  {"challenge_id": challenge.id, "submission_id": row.id, "org": org.name, "team": team,
                   "model_id": model_id, "weights_sha256": weights_sha256, "algorithm": row.algorithm,
                   "submitted_at": now.isoformat()}, scope=ledger.MEMBERS)
    session.commit()
    return row


def submit_weights(session: Session, caller: Principal, challenge_id: int, payload: bytes, now: datetime,
                   put_blob: Callable[[bytes], str]) -> ChallengeSubmission:
    """A submission of weights (safetensors) with its spec under ``__metadata__['submission']``."""
    challenge = get(session, challenge_id)
    org = _acting_org(session, caller, "submit to a challenge")
    _check_open(session, challenge, org, now)
    try:
        raw = safetensors_metadata(payload).get("submission")
        if raw is None:
            raise ValueError("the safetensors header has no 'submission' metadata (the algorithm spec)")
        meta = SubmissionMeta.model_validate(loads(raw))
        tensors = decode_tensors(payload)
    except (ValueError, StrictJSONError, ValidationError) as exc:
        raise BadRequest(f"submission: {exc}"[:1000]) from exc
    check_fits(statement_of(challenge), meta.algorithm, tensors)
    return _record_submission(session, challenge, org, caller, now, team=[org.name],
                              weights_sha256=put_blob(payload), algorithm=meta.algorithm, model_id=None)


def submit_model(session: Session, caller: Principal, challenge_id: int, body: ModelSubmission, now: datetime,
                 get_blob: Callable[[str], bytes]) -> ChallengeSubmission:
    """A released model the caller may download, entered for its team: the orgs whose data trained it."""
    challenge = get(session, challenge_id)
    org = _acting_org(session, caller, "submit to a challenge")
    _check_open(session, challenge, org, now)
    model: Model = model_service.downloadable(session, caller, body.model_id)
    team = sorted(set(session.scalars(
        select(Org.name).join(Dataset, Dataset.org_id == Org.id)
        .join(ProjectDataset, ProjectDataset.dataset_id == Dataset.id)
        .where(ProjectDataset.project_id == model.project_id))))
    if org.name not in team:
        raise Forbidden(f"model {model.id} was trained without {org.name}'s data: only its team "
                        f"({', '.join(team)}) may enter it")
    algorithm = AlgorithmSpec.model_validate(model.project.spec["algorithm"])
    check_fits(statement_of(challenge), algorithm, decode_tensors(get_blob(model.params_sha256)))
    return _record_submission(session, challenge, org, caller, now, team=team,
                              weights_sha256=model.params_sha256, algorithm=algorithm, model_id=model.id)


def pending(session: Session, host: Principal, now: datetime,
            limit: int = 50) -> list[tuple[ChallengeSubmission, Challenge, str]]:
    """What the host's node has to score: public parts at once, private parts once the deadline passed.
    A closed challenge with nothing left to score is finalised here."""
    found: list[tuple[ChallengeSubmission, Challenge, str]] = []
    for challenge in session.scalars(select(Challenge).where(Challenge.host_org_id == host.org_id,
                                                            Challenge.finalised_at.is_(None))):
        closed = now >= challenge.deadline
        for row in session.scalars(select(ChallengeSubmission).where(
                ChallengeSubmission.challenge_id == challenge.id).order_by(ChallengeSubmission.id)):
            if row.public_seq is None:
                found.append((row, challenge, "public"))
            elif closed and row.private_seq is None:
                found.append((row, challenge, "private"))
        if closed and not any(c is challenge for _, c, _ in found):
            finalise(session, challenge, now)
    return found[:limit]


def post_score(session: Session, host: Principal, submission_id: int, body: ScoreIn, now: datetime
               ) -> ChallengeSubmission:
    """Record the host's signed score statement after checking it names this submission, its weights and the
    committed part; the private part only after the deadline; each part once."""
    row = session.get(ChallengeSubmission, submission_id)
    challenge = session.get(Challenge, row.challenge_id) if row is not None else None
    if row is None or challenge is None or challenge.host_org_id != host.org_id:
        raise NotFound(f"no submission {submission_id} to a challenge of the caller's org")
    statement = statement_of(challenge)
    got = body.statement
    part = got.get("part")
    expected = {"type": rules.SCORE_TYPE, "hub_id": statement.hub_id, "challenge_id": challenge.id,
                "host": statement.host, "submission_id": row.id, "weights_sha256": row.weights_sha256,
                "metric": statement.metric,
                "part_sha256": statement.public_sha256 if part == "public" else statement.private_sha256,
                "rows": statement.public_rows if part == "public" else statement.private_rows}
    wrong = sorted(k for k, v in expected.items() if got.get(k) != v)
    if part not in rules.PARTS or wrong or set(got) != set(expected) | {"part", "score", "error"}:
        raise BadRequest("statement: fields that do not match the submission or the commitment: "
                         f"{wrong or 'part'}")
    if part == "private" and now < challenge.deadline:
        raise Conflict("private scores are posted only after the deadline")
    if getattr(row, f"{part}_seq") is not None:
        raise Conflict(f"submission {row.id} already has its {part} score")
    org = session.get(Org, host.org_id)
    try:
        rules.score_message(got)
        entry = ledger.record(session, rules.SCORED_EVENT, host.label, got, scope=ledger.MEMBERS,
                              actor_signature=ActorSignature(org.key_id or "", body.signature))
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"signature: {exc}") from exc
    score = got.get("score")
    setattr(row, f"{part}_score", float(score) if isinstance(score, int | float) else None)
    setattr(row, f"{part}_error", str(got.get("error") or "") or None)
    setattr(row, f"{part}_seq", entry.seq)
    session.flush()
    unscored = select(func.count()).select_from(ChallengeSubmission).where(
        ChallengeSubmission.challenge_id == challenge.id, ChallengeSubmission.private_seq.is_(None))
    if now >= challenge.deadline and not session.scalar(unscored):
        finalise(session, challenge, now)
    session.commit()
    return row


def scored(session: Session, challenge: Challenge) -> list[tuple[rules.Scored, ChallengeSubmission]]:
    rows = session.scalars(select(ChallengeSubmission)
                           .where(ChallengeSubmission.challenge_id == challenge.id))
    names = {org_id: name for org_id, name in session.execute(select(Org.id, Org.name))}
    return [(rules.Scored(r.id, names[r.org_id], r.submitted_at, r.public_score, r.private_score), r)
            for r in rows]


def board(session: Session, challenge: Challenge, which: str,
          now: datetime) -> list[tuple[rules.Placing, list[str]]]:
    """The public board (live), or the final board (after the deadline; Conflict before)."""
    entries = scored(session, challenge)
    teams = {s.submission_id: row.team for s, row in entries}
    higher = statement_of(challenge).higher_is_better
    if which == "final":
        if now < challenge.deadline:
            raise Conflict(f"the final board of challenge {challenge.id} opens at the deadline, "
                           f"{challenge.deadline.isoformat()}")
        placings = rules.final_board([s for s, _ in entries], higher)
    else:
        placings = rules.public_board([s for s, _ in entries], higher)
    return [(p, list(teams[p.submission_id])) for p in placings]


def finalise(session: Session, challenge: Challenge, now: datetime) -> None:
    """Write the final board to the ledger and pay the prize to the winner's team (the host gets it back
    when the board is empty). Once per challenge; the caller commits."""
    if challenge.finalised_at is not None:
        return
    placings = board(session, challenge, "final", now)
    statement = statement_of(challenge)
    reference = f"challenge:{challenge.id}"
    payouts: dict[str, int] = {}
    if statement.prize and placings:
        payouts = rules.prize_shares(statement.prize, placings[0][1])
        for name, amount in sorted(payouts.items()):
            winner = session.scalar(select(Org).where(Org.name == name))
            credits.earn(session, winner, amount, CreditReason.prize, reference,
                         {"challenge_id": challenge.id})
    elif statement.prize:
        credits.earn(session, session.get(Org, challenge.host_org_id), statement.prize,
                     CreditReason.prize_refund, reference, {"challenge_id": challenge.id})
    ledger.record(session, "challenge.finalised", "hub", {
        "challenge_id": challenge.id, "payouts": payouts,
        "board": [{"rank": p.rank, "org": p.org, "team": team, "submission_id": p.submission_id,
                   "score": p.score} for p, team in placings]}, scope=ledger.MEMBERS)
    challenge.finalised_at = now
    session.flush()


def may_see_private(challenge: Challenge, caller: Principal, now: datetime) -> bool:
    return caller.org_id == challenge.host_org_id or now >= challenge.deadline


def submissions(session: Session, caller: Principal, challenge: Challenge) -> list[ChallengeSubmission]:
    """The host sees every submission; anyone else its own org's (the boards show everyone's scores)."""
    query = select(ChallengeSubmission).where(ChallengeSubmission.challenge_id == challenge.id)
    if caller.org_id != challenge.host_org_id and caller.role.value != "admin":
        query = query.where(ChallengeSubmission.org_id == caller.org_id)
    return list(session.scalars(query.order_by(ChallengeSubmission.id)))


def weights_of(session: Session, host: Principal, submission_id: int) -> str:
    """The blob digest of a submission's weights, for its challenge's host only."""
    row = session.get(ChallengeSubmission, submission_id)
    if row is None or session.get(Challenge, row.challenge_id).host_org_id != host.org_id:
        raise NotFound(f"no submission {submission_id} to a challenge of the caller's org")
    return row.weights_sha256


def org_names(session: Session) -> dict[int, str]:
    return {org_id: name for org_id, name in session.execute(select(Org.id, Org.name))}


def model_entries(session: Session, model_id: int, now: datetime) -> list[dict[str, Any]]:
    """The challenges a model was entered in, for its card: the team, its public score and rank, and after
    the deadline its final rank and private score (the card was frozen at release; these come live)."""
    found = []
    for row in session.scalars(select(ChallengeSubmission).where(ChallengeSubmission.model_id == model_id)
                               .order_by(ChallengeSubmission.id)):
        challenge = session.get(Challenge, row.challenge_id)
        statement = statement_of(challenge)
        entry: dict[str, Any] = {"challenge_id": challenge.id, "challenge": challenge.name,
                                 "host": statement.host, "metric": statement.metric, "submission_id": row.id,
                                 "team": list(row.team),
                                 "public_score": row.public_score, "public_rank": None, "final_rank": None,
                                 "private_score": None}
        for which in ("public", "final") if now >= challenge.deadline else ("public",):
            for placing, _ in board(session, challenge, which, now):
                if placing.submission_id == row.id:
                    entry[f"{which}_rank"] = placing.rank
        if now >= challenge.deadline:
            entry["private_score"] = row.private_score
        found.append(entry)
    return found


def card_section(entries: list[dict[str, Any]]) -> str:
    """The card's Markdown section of its challenge entries (empty without any)."""
    if not entries:
        return ""
    lines = ["", "## Challenges (live, not part of the frozen card)", "",
             "| challenge | host | team | metric | public | final |", "|---|---|---|---|---|---|"]
    for e in entries:
        public = "-" if e["public_score"] is None else f"{e['public_score']:.4g} (#{e['public_rank']})"
        final = "-" if e["final_rank"] is None else f"{e['private_score']:.4g} (#{e['final_rank']})"
        lines.append(f"| {e['challenge']} (#{e['challenge_id']}) | {e['host']} | {', '.join(e['team'])} | "
                     f"{e['metric']} | {public} | {final} |")
    return "\n".join(lines) + "\n"
