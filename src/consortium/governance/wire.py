"""Wire schemas of governance: proposals, votes and the consortium policy (pydantic, strict like
:class:`consortium.protocol.Wire`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from consortium.governance.policy import ConsortiumPolicy, ProposalKind
from consortium.governance.statements import MAX_REASON
from consortium.protocol import NAME_PATTERN, SPDX_PATTERN, Visibility, Wire

HEX64 = r"^[0-9a-f]{64}$"


class ProposalCreate(Wire):
    """A proposal a member (or the admin) opens directly. ``run_project`` proposals open with their project
    (``POST /api/projects``) and ``admit_org`` ones with the org (``POST /api/orgs``)."""

    kind: ProposalKind = Field(description="suspend_org, reinstate_org, change_policy or release_model")
    org: str | None = Field(default=None, pattern=NAME_PATTERN, description="suspend_org, reinstate_org")
    policy: ConsortiumPolicy | None = Field(default=None, description="change_policy: the whole new policy")
    model_id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="release_model")
    licence: str | None = Field(default=None, max_length=400, pattern=SPDX_PATTERN,
                                description="release_model: the SPDX licence to release under")
    visibility: Visibility | None = Field(default=None, description="release_model: who may see the model, "
                                          "members (default) or public")
    download: bool | None = Field(default=None, description="release_model: whether every member who sees "
                                  "the model may download it (default: only its participants)")
    process: bool | None = Field(default=None, description="release_model: whether every member who sees it "
                                 "may train on it (default: as download)")
    commercial: bool = Field(default=False, description="release_model: released for commercial use")
    reason: str = Field(default="", max_length=MAX_REASON)


class VoteIn(Wire):
    """An org's vote: the signature is its key's over the vote statement
    (:func:`consortium.governance.statements.vote_message`)."""

    choice: str = Field(pattern=r"^(yes|no|abstain)$")
    reason: str = Field(default="", max_length=MAX_REASON)
    content_hash: str = Field(pattern=HEX64, description="the proposal's content hash, as read by the voter")
    signature: str = Field(max_length=200, description="Ed25519 signature, base64")


class WithdrawIn(Wire):
    reason: str = Field(default="", max_length=MAX_REASON)


class VoteOut(Wire):
    org: str
    choice: str
    reason: str
    cast_at: datetime
    signature: str
    counted: bool = Field(description="false for a vote of an org that is not a voter of the proposal")


class ProposalOut(Wire):
    id: int
    kind: ProposalKind
    subject: dict[str, Any]
    content: dict[str, Any] = Field(description="what content_hash is the SHA-256 of (canonical JSON)")
    content_hash: str
    proposer: str
    status: str
    reason: str
    policy_version: int
    electorate: list[str]
    veto_holders: list[str]
    must_approve: list[str] = Field(description="orgs whose yes the proposal needs")
    advisory: list[str] = Field(description="orgs that may vote, their votes shown but not counted")
    opened_at: datetime
    closes_at: datetime
    decided_at: datetime | None
    votes: list[VoteOut]
    missing: list[str] = Field(description="orgs whose vote the proposal still needs")
    outcome: dict[str, Any] | None = Field(description="the hub's signed outcome statement, once decided")
    outcome_signature: str | None


class PolicyOut(Wire):
    version: int
    content_hash: str
    policy: ConsortiumPolicy
    proposal_id: int | None
