"""Before a yes to release a model, the voter re-checks what the hub serves against what the proposal binds;
a vote cast in the web page reaches the node's vote book only with the org's own signature."""

from __future__ import annotations

import pytest

from consortium import crypto
from consortium.client import HubError
from consortium.governance import statements
from consortium.node.actions import VoteError, adopt_vote, check_release_subject
from consortium.node.policy import VoteBook

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


HUB_ID = "ab" * 16


class ServedProposal:
    """The hub answers :func:`adopt_vote` reads: its health, one run_project proposal with the votes recorded,
    and the project."""

    def __init__(self, identity: crypto.OrgIdentity, votes: list[dict]) -> None:
        from consortium.node.policy import spec_hash
        from consortium.scenario import digits_spec

        self.identity = identity
        spec = digits_spec("story", ["north"], rounds=1)
        self.spec, self.spec_hash = spec.model_dump(mode="json"), spec_hash(spec)
        self.subject = {"project_id": 4, "project": "story", "spec_hash": self.spec_hash, "test_set_sha256": None}
        self.content = statements.proposal_content(HUB_ID, "run_project", self.subject)
        self.content_hash = statements.content_hash(self.content)
        self.votes = votes

    def health(self) -> dict:
        return {"hub_id": HUB_ID}

    def proposal(self, proposal_id: int) -> dict:
        return {"id": proposal_id, "kind": "run_project", "subject": self.subject, "content": self.content,
                "content_hash": self.content_hash, "status": "open", "votes": self.votes}

    def project(self, project_id: int) -> dict:
        return {"id": project_id, "name": "story", "spec": self.spec, "spec_hash": self.spec_hash,
                "test_set_sha256": None}

    def signed(self, signer: crypto.OrgIdentity, choice: str = "yes", reason: str = "agreed") -> dict:
        statement = statements.vote_statement(hub_id=HUB_ID, proposal_id=9, content_hash=self.content_hash,
                                              org="north", choice=choice, reason=reason)
        return {"org": "north", "choice": choice, "reason": reason,
                "signature": signer.sign(statements.vote_message(statement))}


def north() -> crypto.OrgIdentity:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return crypto.OrgIdentity.from_private_key("north", Ed25519PrivateKey.generate())


def test_a_vote_signed_in_the_page_with_the_orgs_key_is_recorded_for_the_node(tmp_path) -> None:
    served = ServedProposal(north(), [])
    served.votes = [served.signed(served.identity)]
    adopt_vote(served, tmp_path, 9)
    voted = VoteBook(tmp_path).voted(4)
    assert voted is not None and (voted.spec_hash, voted.proposal_id, voted.content_hash) == (
        served.spec_hash, 9, served.content_hash)
    served.votes = [served.signed(served.identity, choice="no")]
    adopt_vote(served, tmp_path, 9)
    assert VoteBook(tmp_path).voted(4) is None


@pytest.mark.parametrize("case, words", [
    ("none", "has not voted on proposal 9"),
    ("other key", "not signed by the organisation's current key"),
    ("reason changed", "not signed by the organisation's current key"),
])
def test_a_vote_the_org_did_not_sign_is_not_recorded(tmp_path, case: str, words: str) -> None:
    served = ServedProposal(north(), [])
    if case == "other key":
        served.votes = [served.signed(north())]
    elif case == "reason changed":
        served.votes = [{**served.signed(served.identity), "reason": "something else"}]
    with pytest.raises(VoteError, match=words):
        adopt_vote(served, tmp_path, 9)
    assert VoteBook(tmp_path).voted(4) is None
