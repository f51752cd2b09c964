"""The consortium policy (governance/policy.py; named apart from tests/node/test_policy.py): validation, the
default, canonical form and hash."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from consortium.governance.policy import (
    MAX_WINDOW_S,
    ConsortiumPolicy,
    KindRule,
    ProposalKind,
    VetoHolders,
    default_policy,
)

WEEK = 7 * 24 * 3600


def rule(**changes: object) -> KindRule:
    return KindRule(**({"quorum": 0.5, "threshold": 0.5, "window_s": WEEK} | changes))


def policy_dict(**changes: object) -> dict[str, object]:
    base = default_policy().model_dump(mode="json")
    return base | changes


def test_every_kind_has_a_rule_in_the_default() -> None:
    policy = default_policy()
    assert policy.version == 1
    for kind in ProposalKind:
        assert isinstance(policy.rule(kind), KindRule)


def test_default_encodes_the_demo_story() -> None:
    policy = default_policy()
    run = policy.rule(ProposalKind.run_project)
    assert run.data_owners_must_approve and run.veto == VetoHolders.data_owners
    assert (run.quorum, run.threshold, run.strict) == (0.0, 0.5, False)
    release = policy.rule(ProposalKind.release_model)
    assert release.veto == VetoHolders.data_owners and not release.data_owners_must_approve
    for kind in (ProposalKind.admit_org, ProposalKind.suspend_org, ProposalKind.reinstate_org):
        membership = policy.rule(kind)
        assert (membership.quorum, membership.threshold, membership.strict) == (0.5, 0.5, True)
    change = policy.rule(ProposalKind.change_policy)
    assert (change.quorum, change.threshold, change.strict) == (2 / 3, 2 / 3, False)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quorum": -0.1}, "quorum"),
        ({"quorum": 1.01}, "quorum"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"window_s": 0}, "window_s"),
        ({"window_s": MAX_WINDOW_S + 1}, "window_s"),
        ({"veto": "everyone"}, "veto"),
        ({"surprise": True}, "surprise"),
        ({"threshold": 1.0, "strict": True}, "strict threshold of 1"),
    ],
)
def test_bad_rules_are_refused(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        rule(**changes)


def test_rules_are_frozen() -> None:
    with pytest.raises(ValidationError):
        rule().quorum = 0.9  # type: ignore[misc]


def test_a_policy_needs_all_six_rules() -> None:
    data = policy_dict()
    del data["change_policy"]
    with pytest.raises(ValidationError, match="change_policy"):
        ConsortiumPolicy.model_validate(data)


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        ("suspend_org", {"veto": "subject"}, "subject a veto"),
        ("run_project", {"veto": "subject"}, "subject a veto"),
        ("admit_org", {"veto": "data_owners"}, "data owners"),
        ("change_policy", {"data_owners_must_approve": True}, "data owners"),
    ],
)
def test_rules_must_fit_their_kind(kind: str, changes: dict[str, object], message: str) -> None:
    data = policy_dict(**{kind: rule(**changes).model_dump(mode="json")})
    with pytest.raises(ValidationError, match=message):
        ConsortiumPolicy.model_validate(data)


def test_subject_veto_is_allowed_for_consent_kinds() -> None:
    consent = rule(veto="subject").model_dump()
    data = policy_dict(admit_org=consent, reinstate_org=consent)
    assert ConsortiumPolicy.model_validate(data).rule(ProposalKind.admit_org).veto == VetoHolders.subject


def test_canonical_json_round_trips_and_hash_is_stable() -> None:
    policy = default_policy()
    canonical = policy.canonical()
    assert canonical == json.dumps(json.loads(canonical), sort_keys=True, separators=(",", ":")).encode()
    again = ConsortiumPolicy.model_validate_json(canonical)
    assert again == policy and again.content_hash() == policy.content_hash()
    assert len(policy.content_hash()) == 64


def test_any_change_changes_the_hash() -> None:
    policy = default_policy()
    bumped = policy.model_copy(update={"version": 2})
    tweaked = ConsortiumPolicy.model_validate(policy_dict(admit_org=rule(quorum=0.75).model_dump()))
    assert len({policy.content_hash(), bumped.content_hash(), tweaked.content_hash()}) == 3


def test_the_hash_is_pinned() -> None:
    """The default policy's hash is what ledgers and proposals name: changing it is a deliberate act."""
    pinned = "d6f70c1b5d64bb398b141fffd247822ca4834e433e90d49f90af6a06636f9380"
    assert default_policy().content_hash() == pinned
    assert default_policy().canonical().startswith(b'{"admit_org":{"data_owners_must_approve":false,')


def test_a_policy_adopted_before_credits_keeps_its_hash() -> None:
    """Hubs whose version 1 predates credit rules: the stored body has no ``credits`` and still hashes as it
    did (the hash before credit rules existed is pinned here)."""
    before_credits = default_policy().model_copy(update={"credits": None})
    assert before_credits.content_hash() == "e2df644278442cebba5676edc1920f4d79e748d2b71043976e400ec358ed6c36"
    assert b"credits" not in before_credits.canonical()
    stored = before_credits.model_dump(mode="json")
    del stored["credits"]
    assert ConsortiumPolicy.model_validate(stored).content_hash() == before_credits.content_hash()
