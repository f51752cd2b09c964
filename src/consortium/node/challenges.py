"""The host's side of a challenge: its hidden test set stays here, split into a public and a private part;
the node scores each submission on them, signs the scores with the org key and posts them.

``<org dir>/challenges.json`` keeps, per challenge name, the test file, its target, the split seed and
fraction and each part's SHA-256 (the commitment in the signed ``challenge.opened`` statement). A part's
hash is the SHA-256 of its rows as canonical safetensors (``x`` float32, ``y``), so anyone holding the file
recomputes it. Before scoring, the node re-reads the file and refuses to score on rows that no longer hash
as committed.

:class:`ChallengeHost` runs in its own thread next to the task loop (``consortium node``): every few seconds
it asks the hub what to score (public parts at once, private parts once the deadline passed), fetches the
weights, checks their SHA-256, evaluates with the algorithm's own ``evaluate`` and posts the signed
statement. :func:`verify` recomputes every score of a challenge and compares with the hub's submissions and
the signed ledger entries.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from consortium.atomic import exclusive_lock, write_json_atomic
from consortium.challenge_wire import ChallengeStatement, ScoreIn
from consortium.client import HubClient
from consortium.codec import decode_tensors, encode_tensors
from consortium.crypto import OrgIdentity, verify_signature
from consortium.fl.core import FLError, LocalData, parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.governance import challenges as rules
from consortium.protocol import AlgorithmSpec
from consortium.tables import load_table

log = logging.getLogger("consortium.node.challenges")

BOOK_FILE = "challenges.json"


def part_sha256(data: LocalData) -> str:
    tensors = {"x": data.x.contiguous()} | ({"y": data.y.contiguous()} if data.y is not None else {})
    return hashlib.sha256(encode_tensors(tensors)).hexdigest()


@dataclass(frozen=True)
class HiddenTestSet:
    """A challenge's test file on the host's node and how it is split."""

    path: Path
    target: str
    split_seed: int
    public_fraction: float

    def parts(self) -> tuple[LocalData, LocalData, Any]:
        """The public and private parts and the file's schema."""
        loaded = load_table(self.path, self.target)
        data = loaded.to_local_data()
        public, private = rules.split_indices(len(data), self.public_fraction, self.split_seed)
        assert data.y is not None
        return (LocalData(data.x[public], data.y[public]), LocalData(data.x[private], data.y[private]),
                loaded.schema)


class ChallengeBook:
    """The node's hidden test sets, by challenge name (``challenges.json``, written atomically)."""

    def __init__(self, org_dir: Path) -> None:
        self.path = Path(org_dir) / BOOK_FILE

    def _read(self) -> dict[str, Any]:
        import json

        return json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}

    def add(self, name: str, test_set: HiddenTestSet, commitment: dict[str, str]) -> None:
        with exclusive_lock(self.path):
            book = self._read()
            book[name] = {"path": str(test_set.path.resolve()), "target": test_set.target,
                          "split_seed": test_set.split_seed, "public_fraction": test_set.public_fraction,
                          **commitment}
            write_json_atomic(self.path, book)

    def get(self, name: str) -> tuple[HiddenTestSet, dict[str, str]]:
        entry = self._read().get(name)
        if entry is None:
            raise FLError(f"no hidden test set for challenge {name!r} in {self.path}")
        test_set = HiddenTestSet(Path(entry["path"]), entry["target"], entry["split_seed"],
                                 entry["public_fraction"])
        return test_set, {k: entry[k] for k in ("public_sha256", "private_sha256")}

    def checked_parts(self, name: str) -> dict[str, LocalData]:
        """Both parts, after checking they still hash as committed (FLError otherwise)."""
        test_set, commitment = self.get(name)
        public, private, _ = test_set.parts()
        for part, data in (("public", public), ("private", private)):
            if part_sha256(data) != commitment[f"{part}_sha256"]:
                raise FLError(f"challenge {name!r}: the {part} part of {test_set.path} changed since the "
                              "challenge opened; its hash no longer matches the commitment")
        return {"public": public, "private": private}


def prepare_statement(*, hub_id: str, host: str, name: str, task: str, path: Path, target: str,
                      metric: str, higher_is_better: bool, deadline: datetime, daily_limit: int, prize: int,
                      split_seed: int, public_fraction: float, algorithm_family: str = "classifier"
                      ) -> tuple[ChallengeStatement, HiddenTestSet]:
    """The opening statement for a local test file (its schema and each part's hash; no rows)."""
    test_set = HiddenTestSet(Path(path), target, split_seed, public_fraction)
    public, private, schema = test_set.parts()
    statement = ChallengeStatement.model_validate({
        "hub_id": hub_id, "host": host, "name": name, "task": task, "algorithm_family": algorithm_family,
        "metric": metric, "higher_is_better": higher_is_better, "schema": schema.model_dump(mode="json"),
        "num_features": int(public.x.shape[1]), "deadline": deadline, "daily_limit": daily_limit,
        "prize": prize,
        "split_seed": split_seed, "public_fraction": public_fraction, "public_sha256": part_sha256(public),
        "private_sha256": part_sha256(private), "public_rows": len(public), "private_rows": len(private)})
    return statement, test_set


def open_challenge(client: HubClient, org_dir: Path, statement: ChallengeStatement, test_set: HiddenTestSet
                   ) -> dict:
    """Sign the statement with the org key, open the challenge on the hub, keep the test set in the book."""
    identity = client.identity
    if identity is None:
        raise ValueError("opening a challenge signs with the org key: use an org-signed client")
    payload = statement.model_dump(mode="json", by_alias=True)
    signature = identity.sign(rules.opened_message(payload))
    opened = client.open_challenge({"statement": payload, "signature": signature})
    ChallengeBook(org_dir).add(statement.name, test_set, {"public_sha256": statement.public_sha256,
                                                          "private_sha256": statement.private_sha256})
    return opened


def score(algorithm: AlgorithmSpec, weights: bytes, data: LocalData, metric: str) -> tuple[float | None, str]:
    """The submission's ``metric`` on ``data`` with its algorithm's ``evaluate``, or (None, why not)."""
    try:
        family = get_algorithm(algorithm.name)
        hp = parse_hyperparams(family, algorithm.hyperparameters)
        metrics = family.evaluate(hp, decode_tensors(weights), data).metrics
    except (FLError, ValueError, RuntimeError) as exc:
        return None, f"could not evaluate: {exc}"[:500]
    value = metrics.get(metric)
    if value is None:
        return None, f"the algorithm reports no {metric!r} (it reports {', '.join(sorted(metrics))})"
    value = float(value)
    return (value, "") if value == value and abs(value) != float("inf") else (None, f"{metric} is not finite")


def score_statement(hub_id: str, statement: ChallengeStatement, challenge_id: int, submission_id: int,
                    weights_sha256: str, part: str, data: LocalData, algorithm: AlgorithmSpec, weights: bytes
                    ) -> dict[str, object]:
    value, error = score(algorithm, weights, data, statement.metric)
    return rules.score_statement(
        hub_id=hub_id, challenge_id=challenge_id, host=statement.host, submission_id=submission_id,
        weights_sha256=weights_sha256, part=part, part_sha256=getattr(statement, f"{part}_sha256"),
        metric=statement.metric, score=value, rows=len(data), error=error)


class ChallengeHost:
    """Scores the submissions to the challenges this org hosts (``client`` signs with the org key)."""

    def __init__(self, client: HubClient, org_dir: Path) -> None:
        if client.identity is None:
            raise ValueError("a challenge host signs scores with the org key: give it an org-signed client")
        self.client = client
        self.book = ChallengeBook(org_dir)
        self._hub_id: str | None = None

    def _weights(self, submission_id: int, expected: str) -> bytes:
        weights = self.client.challenge_weights(submission_id)
        if hashlib.sha256(weights).hexdigest() != expected:
            raise FLError(f"the weights of submission {submission_id} do not match their SHA-256")
        return weights

    def step(self) -> int:
        """Score everything pending; the number of scores posted."""
        pending = self.client.challenge_pending()
        if not pending:
            return 0
        self._hub_id = self._hub_id or self.client.health()["hub_id"]
        posted = 0
        for item in pending:
            challenge = self.client.challenge(item["challenge_id"])
            statement = ChallengeStatement.model_validate(challenge["statement"])
            try:
                parts = self.book.checked_parts(statement.name)
                weights = self._weights(item["submission_id"], item["weights_sha256"])
            except FLError as exc:
                log.error("challenge %s: cannot score submission %s: %s", statement.name,
                          item["submission_id"], exc)
                continue
            signed = score_statement(self._hub_id, statement, challenge["id"], item["submission_id"],
                                     item["weights_sha256"], item["part"], parts[item["part"]],
                                     AlgorithmSpec.model_validate(item["algorithm"]), weights)
            signature = self.client.identity.sign(rules.score_message(signed))
            body = ScoreIn(statement=signed, signature=signature).model_dump(mode="json")
            self.client.post_challenge_score(item["submission_id"], body)
            log.info("challenge %s: submission %s scored on the %s part: %s", statement.name,
                     item["submission_id"], item["part"], signed["score"] if signed["score"] is not None
                     else signed["error"])
            posted += 1
        return posted

    def run_forever(self, stop: threading.Event, every_s: float = 2.0) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # the hub may be restarting: keep scoring later
                log.warning("challenge scoring: %s", exc)
            stop.wait(every_s)


def start_challenge_host(client: HubClient, org_dir: Path, stop: threading.Event, every_s: float = 2.0
                         ) -> threading.Thread:
    """Run a :class:`ChallengeHost` in its own daemon thread."""
    thread = threading.Thread(target=ChallengeHost(client, org_dir).run_forever, args=(stop, every_s),
                              name="challenge-host", daemon=True)
    thread.start()
    return thread


SCORE_TOLERANCE = 1e-9
"""Relative difference allowed between a posted and a recomputed score: a loss summed by a different number of
torch threads may differ in its last bits; an accuracy (a count over rows) never does."""


def same_score(posted: float | None, recomputed: float | None) -> bool:
    if posted is None or recomputed is None:
        return posted is recomputed
    return math.isclose(posted, recomputed, rel_tol=SCORE_TOLERANCE, abs_tol=SCORE_TOLERANCE)


def same_statement(posted: dict[str, Any], recomputed: dict[str, object]) -> bool:
    """Every field equal, the score within :data:`SCORE_TOLERANCE` (the error text too when unscored)."""
    rest = {k: v for k, v in posted.items() if k != "score"}
    return (rest == {k: v for k, v in recomputed.items() if k != "score"}
            and same_score(posted.get("score"), recomputed["score"]))  # type: ignore[arg-type]


def verify(client: HubClient, org_dir: Path, challenge_id: int) -> list[str]:
    """The host re-scores every submission of its challenge and checks the hub's record: the committed part
    hashes, each posted score against the recomputation, the ledger entry of each score (payload equal to
    the recomputed statement, signed by this org), and the final board's order. The problems found."""
    identity: OrgIdentity | None = client.identity
    if identity is None:
        raise ValueError("verifying a challenge needs the host's org key")
    challenge = client.challenge(challenge_id)
    statement = ChallengeStatement.model_validate(challenge["statement"])
    hub_id = client.health()["hub_id"]
    parts = ChallengeBook(org_dir).checked_parts(statement.name)
    problems: list[str] = []
    entries: list[rules.Scored] = []
    for sub in client.challenge_submissions(challenge_id):
        weights = client.challenge_weights(sub["id"])
        if hashlib.sha256(weights).hexdigest() != sub["weights_sha256"]:
            problems.append(f"submission {sub['id']}: weights differ from their SHA-256")
            continue
        algorithm = AlgorithmSpec.model_validate(sub["algorithm"])
        scores: dict[str, float | None] = {"public": None, "private": None}
        for part in rules.PARTS:
            posted = sub.get(part)
            if posted is None:
                continue
            expected = score_statement(hub_id, statement, challenge_id, sub["id"], sub["weights_sha256"],
                                       part, parts[part], algorithm, weights)
            scores[part] = expected["score"]  # type: ignore[assignment]
            if not same_score(posted["score"], expected["score"]):
                problems.append(f"submission {sub['id']}: {part} score {posted['score']} on the hub, "
                                f"{expected['score']} recomputed")
            entry = client.ledger(after=posted["ledger_seq"] - 1, limit=1)[0]
            payload = entry["payload"] or {}
            if not (same_statement(payload, expected) and verify_signature(
                    identity.public_key_b64, rules.score_message(payload), entry.get("actor_signature") or "")):
                problems.append(f"submission {sub['id']}: the ledger entry {entry['seq']} of its {part} "
                                "score is not this org's signed recomputed statement")
        entries.append(rules.Scored(sub["id"], sub["org"], datetime.fromisoformat(sub["submitted_at"]),
                                    scores["public"], scores["private"]))
    if challenge["status"] == "final":
        board = client.challenge_leaderboard(challenge_id, "final")["placings"]
        mine = rules.final_board(entries, statement.higher_is_better)
        if [(p["org"], p["submission_id"]) for p in board] != [(p.org, p.submission_id) for p in mine]:
            problems.append("the hub's final board differs from the board recomputed from the local scores")
    return problems
