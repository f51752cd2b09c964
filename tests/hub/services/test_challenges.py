"""Challenges on the hub, both backends: a signed opening with the prize held, submissions refused with a
reason (daily limit, deadline, wrong shape, suspended org) writing nothing, signed scores checked, private
scores only after the deadline, the boards, and the prize paid to the winner once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consortium.challenge_wire import ChallengeCreate, ChallengeStatement, ScoreIn
from consortium.codec import encode_tensors
from consortium.crypto import OrgIdentity
from consortium.fl.core import parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.governance import challenges as rules
from consortium.governance.credits import CreditReason
from consortium.hub.db.challenge_models import ChallengeSubmission
from consortium.hub.db.models import LedgerEntry, Org
from consortium.hub.services import challenges, credits, hub_identity
from consortium.hub.services import policy as policies
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, Gone, PaymentRequired
from consortium.hub.services.identity import Principal
from consortium.protocol import AlgorithmSpec, Role

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
HP = {"layers": [4, 8, 3], "local_epochs": 1, "batch_size": 8}
names = itertools.count()


@pytest.fixture
def db(session: Session) -> Iterator[Session]:
    policies.ensure(session)
    session.commit()
    yield session


def member(session: Session, balance: int = 0) -> tuple[Org, OrgIdentity, Principal]:
    identity = OrgIdentity.from_private_key(f"org{next(names)}", Ed25519PrivateKey.generate())
    org = Org(name=identity.org, public_key=identity.public_key_b64, key_id=identity.key_id)
    session.add(org)
    session.commit()
    if balance:
        credits.earn(session, org, balance, CreditReason.compute, "seed")
        session.commit()
    return org, identity, Principal("org", org.name, Role.steward, org.id, org.name)


def statement(session: Session, host: str, prize: int = 0, daily_limit: int = 2) -> ChallengeStatement:
    return ChallengeStatement.model_validate({
        "hub_id": hub_identity.ensure(session), "host": host, "name": "iris-like", "task": "classify",
        "metric": "accuracy", "schema": {"features": [{"name": f"f{i}", "dtype": "float64"} for i in range(4)],
                                         "target": {"name": "label", "dtype": "int64"}},
        "num_features": 4, "deadline": T0 + timedelta(days=2), "daily_limit": daily_limit, "prize": prize,
        "split_seed": 7, "public_fraction": 0.5, "public_sha256": "a" * 64, "private_sha256": "b" * 64,
        "public_rows": 10, "private_rows": 10})


def opened(session: Session, identity: OrgIdentity, caller: Principal, **kwargs):
    body = statement(session, identity.org, **kwargs)
    payload = body.model_dump(mode="json", by_alias=True)
    create = ChallengeCreate(statement=body, signature=identity.sign(rules.opened_message(payload)))
    return challenges.open_challenge(session, caller, create, T0)


def weights(layers=(4, 8, 3), seed: int = 0, claimed=None) -> bytes:
    """Classifier weights of these widths, with a spec naming ``claimed`` widths (default: the same)."""
    hp = {**HP, "layers": list(layers)}
    family = get_algorithm("classifier")
    params = family.init(parse_hyperparams(family, hp), layers[0], seed)
    meta = AlgorithmSpec(name="classifier", hyperparameters={**hp, "layers": list(claimed or layers)}
                         ).model_dump_json()
    return encode_tensors(params, metadata={"submission": f'{{"algorithm": {meta}}}'})


def submit(session: Session, caller: Principal, challenge_id: int, at: datetime, payload: bytes | None = None):
    return challenges.submit_weights(session, caller, challenge_id, payload or weights(), at, lambda b: "c" * 64)


def signed_score(host: OrgIdentity, session: Session, challenge, row: ChallengeSubmission, part: str,
                 value: float) -> ScoreIn:
    st = challenges.statement_of(challenge)
    body = rules.score_statement(
        hub_id=st.hub_id, challenge_id=challenge.id, host=st.host, submission_id=row.id,
        weights_sha256=row.weights_sha256, part=part, part_sha256=getattr(st, f"{part}_sha256"), metric=st.metric,
        score=value, rows=getattr(st, f"{part}_rows"))
    return ScoreIn(statement=body, signature=host.sign(rules.score_message(body)))


def count(session: Session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_opening_holds_the_prize_and_refuses_a_short_balance_or_a_bad_signature(db: Session) -> None:
    org, identity, caller = member(db, balance=50)
    with pytest.raises(PaymentRequired, match="costs 80 credits and the balance is 50"):
        opened(db, identity, caller, prize=80)
    db.rollback()
    body = statement(db, identity.org)
    with pytest.raises(BadRequest, match="signature"):
        challenges.open_challenge(db, caller, ChallengeCreate(statement=body, signature=identity.sign(b"other")), T0)
    db.rollback()
    challenge = opened(db, identity, caller, prize=30)
    assert credits.balance(db, org) == 20
    entry = db.get(LedgerEntry, challenge.opened_seq)
    assert entry.event_type == "challenge.opened" and entry.payload["public_sha256"] == "a" * 64
    assert entry.actor_key_id == identity.key_id


def test_refusals_name_their_reason_and_write_nothing(db: Session) -> None:
    _, host, host_caller = member(db)
    challenge = opened(db, host, host_caller, daily_limit=2)
    other, _, caller = member(db)
    submit(db, caller, challenge.id, T0)
    submit(db, caller, challenge.id, T0 + timedelta(hours=1))
    entries = count(db, LedgerEntry)
    with pytest.raises(challenges.TooMany, match="daily limit is 2; it resets at 00:00 UTC"):
        submit(db, caller, challenge.id, T0 + timedelta(hours=2))
    with pytest.raises(BadRequest, match="wrong shape"):
        submit(db, caller, challenge.id, T0 + timedelta(days=1), weights(layers=(4, 8, 2), claimed=(4, 8, 3)))
    with pytest.raises(BadRequest, match="4 features"):
        submit(db, caller, challenge.id, T0 + timedelta(days=1), weights(layers=(5, 8, 3)))
    with pytest.raises(Gone, match="closed at"):
        submit(db, caller, challenge.id, T0 + timedelta(days=3))
    other.status = "suspended"
    db.commit()
    with pytest.raises(Forbidden, match="is suspended and may not submit"):
        submit(db, caller, challenge.id, T0 + timedelta(days=1))
    assert count(db, LedgerEntry) == entries and count(db, ChallengeSubmission) == 2
    # the next UTC day has a fresh allowance
    other.status = "admitted"
    db.commit()
    assert submit(db, caller, challenge.id, T0 + timedelta(days=1)).id


def test_scores_are_checked_and_private_ones_wait_for_the_deadline_then_the_prize_goes_to_the_winner(
        db: Session) -> None:
    host_org, host, host_caller = member(db, balance=10)
    challenge = opened(db, host, host_caller, prize=10)
    (a_org, _, a), (b_org, _, b) = member(db), member(db)
    first = submit(db, a, challenge.id, T0)
    second = submit(db, b, challenge.id, T0 + timedelta(minutes=1))
    assert [(r.id, part) for r, _, part in challenges.pending(db, host_caller, T0)] == [
        (first.id, "public"), (second.id, "public")]
    _, stranger, _ = member(db)
    with pytest.raises(BadRequest, match="signature"):
        challenges.post_score(db, host_caller, first.id, signed_score(stranger, db, challenge, first, "public", 0.9), T0)
    db.rollback()
    forged = signed_score(host, db, challenge, first, "public", 0.9)
    forged.statement["part_sha256"] = "f" * 64
    with pytest.raises(BadRequest, match="part_sha256"):
        challenges.post_score(db, host_caller, first.id, forged, T0)
    db.rollback()
    challenges.post_score(db, host_caller, first.id, signed_score(host, db, challenge, first, "public", 0.8), T0)
    challenges.post_score(db, host_caller, second.id, signed_score(host, db, challenge, second, "public", 0.8), T0)
    with pytest.raises(Conflict, match="already has its public score"):
        challenges.post_score(db, host_caller, first.id, signed_score(host, db, challenge, first, "public", 0.1), T0)
    db.rollback()
    with pytest.raises(Conflict, match="only after the deadline"):
        challenges.post_score(db, host_caller, first.id, signed_score(host, db, challenge, first, "private", 0.5), T0)
    db.rollback()
    board = challenges.board(db, challenge, "public", T0)
    assert [(p.org, p.rank) for p, _ in board] == [(a_org.name, 1), (b_org.name, 2)]  # tie: earlier first
    with pytest.raises(Conflict, match="final board"):
        challenges.board(db, challenge, "final", T0)
    after = challenge.deadline + timedelta(seconds=1)
    assert [part for _, _, part in challenges.pending(db, host_caller, after)] == ["private", "private"]
    challenges.post_score(db, host_caller, first.id, signed_score(host, db, challenge, first, "private", 0.5), after)
    assert challenge.finalised_at is None
    challenges.post_score(db, host_caller, second.id, signed_score(host, db, challenge, second, "private", 0.7), after)
    assert challenge.finalised_at is not None
    assert [p.org for p, _ in challenges.board(db, challenge, "final", after)] == [b_org.name, a_org.name]
    assert (credits.balance(db, host_org), credits.balance(db, b_org), credits.balance(db, a_org)) == (0, 10, 0)
    final = db.scalar(select(LedgerEntry).where(LedgerEntry.event_type == "challenge.finalised"))
    assert final.payload["payouts"] == {b_org.name: 10}
