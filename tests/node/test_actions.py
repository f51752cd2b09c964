"""Before a yes to release a model, the voter re-checks what the hub serves against what the proposal binds."""

from __future__ import annotations

import pytest

from consortium import crypto
from consortium.client import HubError
from consortium.node.actions import VoteError, check_release_subject

CARD = {"model": "p/run-1", "datasets": [{"ref": "north/digits", "license": "CC-BY-NC-4.0"},
                                         {"ref": "south/digits", "license": "CC-BY-4.0"}]}


class ServedModel:
    """The one hub answer the check reads: ``GET /api/models/{id}`` (or its 404)."""

    def __init__(self, card: dict | None, params_sha256: str = "a" * 64, status: str = "trained") -> None:
        self.card, self.params_sha256, self.status = card, params_sha256, status

    def model(self, model_id: int) -> dict:
        if self.card is None:
            raise HubError(404, f"no model {model_id}")
        return {"id": model_id, "card": self.card, "params_sha256": self.params_sha256, "status": self.status,
                "release_proposal_id": 3 if self.status == "released" else None}


def subject(**changes) -> dict:
    return {"model_id": 7, "params_sha256": "a" * 64, "card_sha256": crypto.sha256_hex(crypto.canonical_json(CARD)),
            "licence": "CC-BY-NC-4.0 AND CC-BY-4.0", "commercial": False} | changes


def test_the_model_the_proposal_binds_passes() -> None:
    check_release_subject(ServedModel(CARD), subject())


def test_a_model_the_voter_may_not_see_is_voted_on_its_subject_alone() -> None:
    check_release_subject(ServedModel(None), subject())


@pytest.mark.parametrize("served, changes, words", [
    (ServedModel({**CARD, "model": "p/run-2"}), {}, "not the one the release proposal binds"),
    (ServedModel(CARD, params_sha256="b" * 64), {}, "not the one the release proposal binds"),
    (ServedModel(CARD), {"licence": "CC0-1.0"}, "conflicts with the model's data"),
    (ServedModel(CARD), {"commercial": True}, "conflicts with the model's data"),
    (ServedModel(CARD), {"licence": "NOT-A-LICENCE"}, "cannot be read"),
    (ServedModel(CARD, status="released"), {}, "released already"),
])
def test_a_changed_model_or_a_licence_the_data_forbids_is_not_voted_for(served, changes, words) -> None:
    with pytest.raises(VoteError, match=words):
        check_release_subject(served, subject(**changes))
