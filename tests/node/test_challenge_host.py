"""The host node's side of a challenge: the statement commits to the split test set, a changed file is not
scored, scores are the algorithm's own metric on each part, and what the node posts is signed by its key."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consortium.challenge_wire import ChallengeStatement
from consortium.codec import encode_tensors
from consortium.crypto import OrgIdentity, verify_signature
from consortium.fl.core import FLError, parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.governance import challenges as rules
from consortium.node.challenges import ChallengeBook, ChallengeHost, part_sha256, prepare_statement, score
from consortium.protocol import AlgorithmSpec

SPEC = AlgorithmSpec(name="classifier", hyperparameters={"layers": [3, 4, 2], "local_epochs": 1})


def hidden_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    frame["label"] = (frame["a"] > 0).astype(int)
    path = tmp_path / "hidden.csv"
    frame.to_csv(path, index=False)
    return path


def prepared(tmp_path: Path, host: str = "north") -> tuple[ChallengeStatement, object]:
    return prepare_statement(hub_id="0" * 32, host=host, name="cup", task="sign of a", path=hidden_file(tmp_path),
                             target="label", metric="accuracy", higher_is_better=True,
                             deadline=datetime.now(UTC) + timedelta(days=1), daily_limit=3, prize=0, split_seed=4,
                             public_fraction=0.25)


def weights() -> bytes:
    family = get_algorithm("classifier")
    return encode_tensors(family.init(parse_hyperparams(family, SPEC.hyperparameters), 3, 0))


def test_the_statement_commits_to_both_parts_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    statement, test_set = prepared(tmp_path)
    assert (statement.public_rows, statement.private_rows, statement.num_features) == (10, 30, 3)
    book = ChallengeBook(tmp_path)
    book.add("cup", test_set, {"public_sha256": statement.public_sha256, "private_sha256": statement.private_sha256})
    parts = book.checked_parts("cup")
    assert part_sha256(parts["private"]) == statement.private_sha256
    assert "label" not in json.dumps(statement.model_dump(mode="json", by_alias=True)["schema"]["features"])
    frame = pd.read_csv(test_set.path)
    frame.loc[0, "a"] += 1.0
    frame.to_csv(test_set.path, index=False)
    with pytest.raises(FLError, match="changed since the challenge opened"):
        book.checked_parts("cup")


def test_scores_are_the_algorithms_metric_or_a_reason(tmp_path: Path) -> None:
    statement, test_set = prepared(tmp_path)
    public = test_set.parts()[0]
    value, error = score(SPEC, weights(), public, "accuracy")
    assert error == "" and 0.0 <= value <= 1.0 and value * 10 == round(value * 10)
    assert score(SPEC, weights(), public, "f1")[1].startswith("the algorithm reports no 'f1'")
    wrong = AlgorithmSpec(name="classifier", hyperparameters={"layers": [3, 5, 2]})
    assert score(wrong, weights(), public, "accuracy")[0] is None


class FakeHub:
    """What the host talks to: one pending public score, and the posts it receives."""

    def __init__(self, statement: ChallengeStatement, identity: OrgIdentity, payload: bytes) -> None:
        self.identity, self.payload, self.posted = identity, payload, []
        self.item = {"submission_id": 9, "challenge_id": 2, "challenge": "cup", "part": "public",
                     "weights_sha256": hashlib.sha256(payload).hexdigest(), "algorithm": SPEC.model_dump()}
        self.challenge_out = {"id": 2, "statement": statement.model_dump(mode="json", by_alias=True)}

    def challenge_pending(self):
        return [] if self.posted else [self.item]

    def health(self):
        return {"hub_id": "0" * 32}

    def challenge(self, challenge_id):
        return self.challenge_out

    def challenge_weights(self, submission_id):
        return self.payload

    def post_challenge_score(self, submission_id, body):
        self.posted.append((submission_id, body))


def test_the_host_signs_what_it_posts_and_skips_weights_that_do_not_hash(tmp_path: Path) -> None:
    identity = OrgIdentity.from_private_key("north", Ed25519PrivateKey.generate())
    statement, test_set = prepared(tmp_path)
    ChallengeBook(tmp_path).add("cup", test_set, {"public_sha256": statement.public_sha256,
                                                  "private_sha256": statement.private_sha256})
    hub = FakeHub(statement, identity, weights())
    hub.item["weights_sha256"] = "f" * 64
    assert ChallengeHost(hub, tmp_path).step() == 0 and hub.posted == []
    hub.item["weights_sha256"] = hashlib.sha256(hub.payload).hexdigest()
    assert ChallengeHost(hub, tmp_path).step() == 1
    [(submission_id, body)] = hub.posted
    signed = body["statement"]
    assert submission_id == 9 and signed["part_sha256"] == statement.public_sha256 and signed["rows"] == 10
    assert verify_signature(identity.public_key_b64, rules.score_message(signed), body["signature"])
