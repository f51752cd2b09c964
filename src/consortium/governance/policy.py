"""The consortium's policy: for each kind of proposal, who votes, how many must, and who may block it.

A :class:`ConsortiumPolicy` holds one :class:`KindRule` per :class:`ProposalKind`. It is a value: frozen,
validated, hashed over its canonical JSON (:meth:`ConsortiumPolicy.content_hash`), and changed only by a
``change_policy`` proposal that passes under the policy in force. How a rule turns votes into an outcome is
:mod:`consortium.governance.decisions`; docs/governance.md explains both.

Quorum and threshold arithmetic is exact: each share is read as the nearest fraction with a denominator of
at most a million (:func:`exact`), so ``threshold=2/3`` is two thirds and passes 2 yes against 1 no, a strict
``threshold=2/3`` does not, and a strict ``threshold=0.5`` does not pass a tie.
"""

from __future__ import annotations

from enum import StrEnum
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field, model_validator

from consortium.crypto import canonical_json, sha256_hex
from consortium.governance.credits import CreditRules
from consortium.governance.open_data_rules import OpenDataRules

MAX_WINDOW_S = 365 * 24 * 3600
"""The longest voting window a rule may set: one year."""
DAY_S = 24 * 3600


def exact(share: float) -> Fraction:
    """The share as the nearest fraction with a denominator of at most a million (so 2 / 3 is 2/3)."""
    return Fraction(share).limit_denominator(1_000_000)


class ProposalKind(StrEnum):
    """What a proposal asks the consortium to decide."""

    admit_org = "admit_org"
    suspend_org = "suspend_org"
    reinstate_org = "reinstate_org"
    run_project = "run_project"
    release_model = "release_model"
    change_policy = "change_policy"


SUBJECT_KINDS = frozenset({ProposalKind.admit_org, ProposalKind.suspend_org, ProposalKind.reinstate_org})
"""Kinds about one org (the proposal's subject)."""
DATA_KINDS = frozenset({ProposalKind.run_project, ProposalKind.release_model})
"""Kinds about data sources (their owners are the proposal's data owners)."""
CONSENT_KINDS = frozenset({ProposalKind.admit_org, ProposalKind.reinstate_org})
"""Kinds whose subject may be given a veto (its consent)."""


class VetoHolders(StrEnum):
    """Which orgs may block a proposal alone by voting no.

    - ``none``: nobody; the counts decide.
    - ``data_owners``: the owner of every dataset or environment the proposal uses (``run_project``,
      ``release_model``).
    - ``subject``: the org the proposal is about. Only for ``admit_org`` and ``reinstate_org`` (the org
      consents to joining again); an org may not block its own suspension. The subject is never in the
      electorate of a proposal about itself: it votes only as a veto holder, and its vote is not counted
      towards quorum or threshold.
    """

    none = "none"
    data_owners = "data_owners"
    subject = "subject"


class Electorate(StrEnum):
    """Whose votes a rule counts.

    - ``members``: every org admitted when the proposal opened (less the org it is about).
    - ``data_owners``: only the owners of the data the proposal uses (``run_project``, ``release_model``);
      the other members may still vote, and their votes are shown, but not counted (advisory).
    """

    members = "members"
    data_owners = "data_owners"


class KindRule(BaseModel):
    """How one kind of proposal is decided.

    - ``quorum``: the share of the electorate (the orgs admitted when the proposal opened) that must cast a
      vote; abstentions count towards quorum. ``0`` needs no vote at all.
    - ``threshold``: the share of yes among yes + no votes needed to pass: at least ``threshold``, or more
      than ``threshold`` when ``strict``. Abstentions do not count here. A vote where nobody said yes or no
      never passes.
    - ``window_s``: seconds from opening to closing (at most one year); a vote cast at or after closing
      never counts.
    - ``veto``: which orgs may block the proposal alone (:class:`VetoHolders`). A veto rejects at once.
    - ``electorate``: whose votes count (:class:`Electorate`): the members, or only the data owners (the
      other members' votes are then advisory).
    - ``data_owners_must_approve``: every data owner must vote yes for the proposal to pass; an owner who
      has not voted keeps it open until the window closes. (With ``veto=data_owners`` an owner's no
      also rejects at once; without it, an owner may still turn a no into a yes before closing.)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    quorum: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(gt=0.0, le=1.0)
    strict: bool = False
    window_s: int = Field(gt=0, le=MAX_WINDOW_S)
    veto: VetoHolders = VetoHolders.none
    electorate: Electorate = Electorate.members
    data_owners_must_approve: bool = False

    @model_validator(mode="after")
    def _satisfiable(self) -> KindRule:
        if self.strict and self.threshold >= 1.0:
            raise ValueError("a strict threshold of 1 can never be met: use threshold=1 without strict")
        return self


class ConsortiumPolicy(BaseModel):
    """One rule per proposal kind, all six required, and the policy's version (raised by each change)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    version: int = Field(ge=1, le=2**31 - 1)
    admit_org: KindRule
    suspend_org: KindRule
    reinstate_org: KindRule
    run_project: KindRule
    release_model: KindRule
    change_policy: KindRule
    credits: CreditRules | None = None
    """What earns and costs credits; None (a policy adopted before credits existed) moves no credits."""
    open_data: OpenDataRules | None = None
    """What a table published as open data must show; None: :class:`OpenDataRules`' defaults (k 5, l 2)."""

    @model_validator(mode="after")
    def _rules_fit_their_kinds(self) -> ConsortiumPolicy:
        for kind in ProposalKind:
            rule = self.rule(kind)
            if rule.veto == VetoHolders.subject and kind not in CONSENT_KINDS:
                raise ValueError(f"{kind}: only admit_org and reinstate_org may give their subject a veto")
            owners_vote = (rule.veto == VetoHolders.data_owners or rule.data_owners_must_approve
                           or rule.electorate == Electorate.data_owners)
            if owners_vote and kind not in DATA_KINDS:
                raise ValueError(f"{kind}: only run_project and release_model have data owners")
        return self

    def rule(self, kind: ProposalKind) -> KindRule:
        """The rule of ``kind``."""
        rule: KindRule = getattr(self, ProposalKind(kind).value)
        return rule

    def open_data_rules(self) -> OpenDataRules:
        """The open data rules in force (the defaults when the policy sets none)."""
        return self.open_data or OpenDataRules()

    def canonical(self) -> bytes:
        """The policy as canonical JSON (sorted keys, no whitespace): what :meth:`content_hash` hashes."""
        body = self.model_dump(mode="json")
        for optional in ("credits", "open_data"):  # absent when unset: older policies keep their hash
            if body[optional] is None:
                del body[optional]
        return canonical_json(body)

    def content_hash(self) -> str:
        """SHA-256 (hex) of :meth:`canonical`: names this exact policy in proposals and ledger entries."""
        return sha256_hex(self.canonical())


def default_policy() -> ConsortiumPolicy:
    """The demo consortium's policy (version 1).

    - ``run_project``: the data owners decide: every one must approve (an owner's no is a veto), so their
      unanimous yes runs the project at once; any other member may vote too, and its vote is shown but not
      counted (advisory). Seven days.
    - ``release_model``: data owners hold a veto; at least half yes, no quorum. Seven days.
    - ``admit_org``, ``suspend_org``, ``reinstate_org``: half of the members vote, and strictly more than
      half of the yes and no votes are yes (a tie fails). Seven days.
    - ``change_policy``: two thirds of the members vote, and at least two thirds of the yes and no votes are
      yes. Fourteen days.
    - ``credits``: the defaults of :class:`~consortium.governance.credits.CreditRules`: contributors, compute
      and open data earn; nothing costs credits until a vote sets a cost.
    """
    week = 7 * DAY_S
    membership = KindRule(quorum=0.5, threshold=0.5, strict=True, window_s=week)
    return ConsortiumPolicy(
        version=1,
        admit_org=membership,
        suspend_org=membership,
        reinstate_org=membership,
        run_project=KindRule(
            quorum=0.0, threshold=0.5, window_s=week, veto=VetoHolders.data_owners,
            electorate=Electorate.data_owners, data_owners_must_approve=True,
        ),
        release_model=KindRule(quorum=0.0, threshold=0.5, window_s=week, veto=VetoHolders.data_owners),
        change_policy=KindRule(quorum=2 / 3, threshold=2 / 3, window_s=2 * week),
        credits=CreditRules(),
    )
