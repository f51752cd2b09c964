"""The outcome of a proposal: a pure function of its facts, its votes and the time.

Semantics (docs/governance.md has the long form):

- **Who votes.** The electorate is fixed when the proposal opens (the orgs admitted then, less the subject
  of a proposal about one org), so admitting or suspending an org mid-vote changes no open vote. The veto
  holders and the orgs whose yes is required (:attr:`Proposal.must_approve`) vote too, even when outside the
  electorate, but only electorate votes are counted towards quorum and threshold. The rule is also fixed at
  opening (:attr:`Proposal.rule`), so a policy change does not touch open votes.
- **Which votes count.** Only those of voters, cast at or after opening, before closing and not after ``now``.
  An org may change its vote while the proposal is open: its latest vote counts. Two votes of one org at the
  same instant: no beats abstain beats yes.
- **Replay.** Votes are applied instant by instant (all votes of one instant together). After each instant,
  and once at opening, the proposal is decided early when the result is already certain:

  * *rejected* as soon as a veto holder's vote is no (a veto is final);
  * *passed* as soon as every required yes is in, every veto holder has voted (yes or abstain), the quorum
    is reached, and the threshold would still be met if every electorate member who has not voted voted no.

  A decided proposal stays decided: later votes are not counted. Votes of the orgs that had not voted
  could not change the result; a change of mind is possible only while the proposal is open.
  With an empty electorate and nobody holding a veto or a required yes, the proposal passes at opening
  (``bootstrap``: this is how the first org is admitted).
- **At closing** what has not been decided is decided on the votes cast before closing: a veto rejects;
  then it passes when the required yes, the quorum and the threshold are all met; else it *expires* when
  the quorum was not reached or nobody in the electorate voted, is *rejected* when the threshold was not
  met (all abstaining included) or a required approver said no, and expires when a required approver never
  said yes.
- **Withdrawal.** A proposal withdrawn before closing is withdrawn, unless it was decided before the
  withdrawal (a vote at the instant of the withdrawal does not count).

All datetimes are timezone-aware; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from itertools import groupby

from consortium.governance.policy import (
    DATA_KINDS,
    SUBJECT_KINDS,
    Electorate,
    ConsortiumPolicy,
    KindRule,
    ProposalKind,
    VetoHolders,
    exact,
)


class VoteChoice(StrEnum):
    yes = "yes"
    no = "no"
    abstain = "abstain"


class ProposalStatus(StrEnum):
    open = "open"
    passed = "passed"
    rejected = "rejected"
    expired = "expired"
    withdrawn = "withdrawn"


class Basis(StrEnum):
    """Why an outcome is what it is (machine-readable; :attr:`Outcome.reason` says it in words)."""

    pending = "pending"
    bootstrap = "bootstrap"
    votes = "votes"
    veto = "veto"
    quorum = "quorum"
    threshold = "threshold"
    approvals = "approvals"
    withdrawn = "withdrawn"


_PRECEDENCE = {VoteChoice.yes: 0, VoteChoice.abstain: 1, VoteChoice.no: 2}
"""Of two votes of one org at one instant, the higher wins."""


def _aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


@dataclass(frozen=True)
class Vote:
    """One org's vote, as cast at ``cast_at``."""

    org: str
    choice: VoteChoice
    cast_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "choice", VoteChoice(self.choice))
        _aware(self.cast_at, "cast_at")


@dataclass(frozen=True)
class Proposal:
    """The facts the decision needs, all fixed when the proposal opened (:func:`open_proposal` builds one
    from a policy), except ``withdrawn_at``."""

    kind: ProposalKind
    rule: KindRule
    opened_at: datetime
    electorate: frozenset[str]
    veto_holders: frozenset[str] = frozenset()
    must_approve: frozenset[str] = frozenset()
    subject: str | None = None
    withdrawn_at: datetime | None = None
    advisory: frozenset[str] = frozenset()
    """Orgs that may vote although their votes are not counted (the members outside a data-owner
    electorate): their votes are recorded and shown, never tallied."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ProposalKind(self.kind))
        for name in ("electorate", "veto_holders", "must_approve", "advisory"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        _aware(self.opened_at, "opened_at")
        if self.withdrawn_at is not None:
            _aware(self.withdrawn_at, "withdrawn_at")
            if self.withdrawn_at < self.opened_at:
                raise ValueError("a proposal cannot be withdrawn before it opened")
        if self.subject is not None and self.subject in self.electorate:
            raise ValueError(f"{self.subject} cannot be in the electorate of a proposal about itself")

    @property
    def closes_at(self) -> datetime:
        """The end of the voting window: votes cast at or after it never count."""
        return self.opened_at + timedelta(seconds=self.rule.window_s)

    @property
    def voters(self) -> frozenset[str]:
        """Every org that may vote: the electorate, the veto holders and the required approvers."""
        return self.electorate | self.veto_holders | self.must_approve

    @property
    def may_vote(self) -> frozenset[str]:
        """The voters and the advisory voters."""
        return self.voters | self.advisory


def open_proposal(
    policy: ConsortiumPolicy,
    kind: ProposalKind,
    opened_at: datetime,
    admitted: Iterable[str],
    *,
    data_owners: Iterable[str] = (),
    subject: str | None = None,
) -> Proposal:
    """A new proposal of ``kind`` under ``policy``: its electorate is the orgs ``admitted`` now (less the
    subject), its veto holders and required approvers follow from the kind's rule. ``subject`` is required
    for admit/suspend/reinstate and refused otherwise; ``data_owners`` only for run_project/release_model."""
    kind = ProposalKind(kind)
    rule = policy.rule(kind)
    owners = frozenset(data_owners)
    if (subject is not None) != (kind in SUBJECT_KINDS):
        raise ValueError(f"{kind} {'needs' if kind in SUBJECT_KINDS else 'has no'} subject org")
    if owners and kind not in DATA_KINDS:
        raise ValueError(f"{kind} has no data owners")
    veto = {VetoHolders.none: frozenset(), VetoHolders.data_owners: owners,
            VetoHolders.subject: frozenset({subject} if subject else ())}[rule.veto]
    members = frozenset(admitted) - {subject}
    electorate = owners if rule.electorate == Electorate.data_owners else members
    return Proposal(
        kind=kind,
        rule=rule,
        opened_at=opened_at,
        electorate=electorate,
        advisory=members - electorate - veto,
        veto_holders=veto,
        must_approve=owners if rule.data_owners_must_approve else frozenset(),
        subject=subject,
    )


@dataclass(frozen=True)
class Outcome:
    """Where a proposal stands. Counts are of electorate votes; ``missing`` are the required approvers whose
    yes is not in; ``not_voted`` the voters who have not voted; ``vetoed_by`` the veto holders who said no.
    ``decided_at`` is None while open, else the instant of the deciding vote, opening, closing or withdrawal
    (so an outcome, once decided, is the same whenever it is computed again)."""

    status: ProposalStatus
    basis: Basis
    reason: str
    yes: int
    no: int
    abstain: int
    decided_at: datetime | None
    missing: tuple[str, ...] = ()
    not_voted: tuple[str, ...] = ()
    vetoed_by: tuple[str, ...] = ()

    @property
    def decided(self) -> bool:
        return self.status != ProposalStatus.open


@dataclass
class _Tally:
    """The latest vote of each voter so far, and what follows from it. The counts the replay asks after every
    vote are kept up to date as votes are recorded, so a replay is linear in the votes, not in votes times
    voters (a project of a thousand data owners took seconds per decision)."""

    proposal: Proposal
    latest: dict[str, VoteChoice] = field(default_factory=dict)
    _electorate: dict[VoteChoice, int] = field(default_factory=lambda: dict.fromkeys(VoteChoice, 0))
    _veto: dict[VoteChoice, int] = field(default_factory=lambda: dict.fromkeys(VoteChoice, 0))
    _approved: int = 0

    def record(self, org: str, choice: VoteChoice) -> None:
        """``org``'s latest vote is now ``choice``."""
        old = self.latest.get(org)
        self.latest[org] = choice
        proposal = self.proposal
        for counts, among in ((self._electorate, proposal.electorate), (self._veto, proposal.veto_holders)):
            if org in among:
                if old is not None:
                    counts[old] -= 1
                counts[choice] += 1
        if org in proposal.must_approve:
            self._approved += (choice == VoteChoice.yes) - (old == VoteChoice.yes)

    def counts(self) -> tuple[int, int, int, int]:
        """yes, no, abstain among the electorate, and electorate members who have not voted."""
        yes, no, abstain = (self._electorate[c] for c in (VoteChoice.yes, VoteChoice.no, VoteChoice.abstain))
        return yes, no, abstain, len(self.proposal.electorate) - yes - no - abstain

    def orgs(self, among: Iterable[str], choice: VoteChoice | None) -> tuple[str, ...]:
        return tuple(sorted(org for org in among if self.latest.get(org) == choice))

    def missing(self) -> tuple[str, ...]:
        if not self.any_missing():
            return ()
        return tuple(sorted(o for o in self.proposal.must_approve if self.latest.get(o) != VoteChoice.yes))

    def any_missing(self) -> bool:
        """Whether a required approver's yes is not in (what :meth:`missing` lists)."""
        return self._approved < len(self.proposal.must_approve)

    def any_veto(self) -> bool:
        """Whether a veto holder said no."""
        return self._veto[VoteChoice.no] > 0

    def veto_pending(self) -> bool:
        """Whether a veto holder has not voted."""
        return sum(self._veto.values()) < len(self.proposal.veto_holders)

    def quorum_met(self) -> bool:
        yes, no, abstain, _ = self.counts()
        size = len(self.proposal.electorate)
        return size == 0 or Fraction(yes + no + abstain, size) >= exact(self.proposal.rule.quorum)

    def threshold_met(self, yes: int, no: int) -> bool:
        """Whether ``yes`` against ``no`` meets the threshold (an empty electorate has nothing to count)."""
        if not self.proposal.electorate:
            return True
        if yes + no == 0:
            return False
        share, threshold = Fraction(yes, yes + no), exact(self.proposal.rule.threshold)
        return share > threshold if self.proposal.rule.strict else share >= threshold


def _outcome(
    tally: _Tally, status: ProposalStatus, basis: Basis, reason: str, at: datetime | None
) -> Outcome:
    yes, no, abstain, _ = tally.counts()
    return Outcome(
        status=status, basis=basis, reason=reason, yes=yes, no=no, abstain=abstain, decided_at=at,
        missing=tally.missing(), not_voted=tally.orgs(tally.proposal.voters, None),
        vetoed_by=tally.orgs(tally.proposal.veto_holders, VoteChoice.no),
    )


def _names(orgs: Iterable[str]) -> str:
    return ", ".join(orgs)


def _tallied(tally: _Tally) -> str:
    yes, no, abstain, _ = tally.counts()
    return f"{yes} yes, {no} no, {abstain} abstain from an electorate of {len(tally.proposal.electorate)}"


def _vetoed(tally: _Tally, at: datetime) -> Outcome | None:
    if not tally.any_veto():
        return None
    vetoes = tally.orgs(tally.proposal.veto_holders, VoteChoice.no)
    return _outcome(tally, ProposalStatus.rejected, Basis.veto, f"rejected: vetoed by {_names(vetoes)}", at)


def _early(tally: _Tally, at: datetime) -> Outcome | None:
    """The outcome if it is already certain, else None."""
    vetoed = _vetoed(tally, at)
    if vetoed is not None:
        return vetoed
    yes, no, _, remaining = tally.counts()
    if tally.any_missing() or tally.veto_pending() or not tally.quorum_met():
        return None
    if not tally.threshold_met(yes, no + remaining):
        return None
    if not tally.proposal.electorate:
        reason = "passed by bootstrap: no org was admitted when it opened, so nobody else votes"
        if tally.proposal.voters:
            reason = f"passed by bootstrap after {_names(sorted(tally.proposal.voters))} agreed"
        return _outcome(tally, ProposalStatus.passed, Basis.bootstrap, reason, at)
    reason = f"passed: {_tallied(tally)}; the result can no longer change"
    return _outcome(tally, ProposalStatus.passed, Basis.votes, reason, at)


def _at_close(tally: _Tally, at: datetime) -> Outcome:
    vetoed = _vetoed(tally, at)
    if vetoed is not None:
        return vetoed
    yes, no, abstain, _ = tally.counts()
    rule, missing = tally.proposal.rule, tally.missing()
    if not missing and tally.quorum_met() and tally.threshold_met(yes, no):
        basis = Basis.votes if tally.proposal.electorate else Basis.bootstrap
        return _outcome(tally, ProposalStatus.passed, basis, f"passed at closing: {_tallied(tally)}", at)
    if not tally.quorum_met():
        reason = f"expired: quorum not reached ({_tallied(tally)}; {rule.quorum:.0%} had to vote)"
        return _outcome(tally, ProposalStatus.expired, Basis.quorum, reason, at)
    if tally.proposal.electorate and yes + no + abstain == 0:
        return _outcome(tally, ProposalStatus.expired, Basis.quorum, "expired: nobody voted", at)
    if not tally.threshold_met(yes, no):
        need = f"more than {rule.threshold:.0%}" if rule.strict else f"at least {rule.threshold:.0%}"
        reason = f"rejected: {_tallied(tally)}; {need} of yes and no votes had to be yes"
        return _outcome(tally, ProposalStatus.rejected, Basis.threshold, reason, at)
    refused = tally.orgs(missing, VoteChoice.no)
    if refused:
        reason = f"rejected: not approved by {_names(refused)}"
        return _outcome(tally, ProposalStatus.rejected, Basis.approvals, reason, at)
    reason = f"expired: never approved by {_names(missing)}"
    return _outcome(tally, ProposalStatus.expired, Basis.approvals, reason, at)


def _counted(proposal: Proposal, votes: Iterable[Vote], until: datetime) -> list[Vote]:
    """The votes that may count, in replay order: voters only, from opening, before ``until``."""
    voters = proposal.voters
    kept = [v for v in votes if v.org in voters and proposal.opened_at <= v.cast_at < until]
    return sorted(kept, key=lambda v: (v.cast_at, v.org, _PRECEDENCE[v.choice]))


def decide(proposal: Proposal, votes: Iterable[Vote], now: datetime) -> Outcome:
    """The proposal's outcome at ``now`` (see the module docstring for the rules)."""
    _aware(now, "now")
    if now < proposal.opened_at:
        raise ValueError("now is before the proposal opened")
    closes = proposal.closes_at
    withdrawn = proposal.withdrawn_at
    if withdrawn is not None and (withdrawn > now or withdrawn >= closes):
        withdrawn = None
    tally = _Tally(proposal)
    decided = _early(tally, proposal.opened_at)
    if decided is not None:
        return decided
    horizon = min(closes, now + timedelta(microseconds=1))
    for instant, batch in groupby(_counted(proposal, votes, horizon), key=lambda v: v.cast_at):
        if withdrawn is not None and withdrawn <= instant:
            break
        for vote in batch:
            tally.record(vote.org, vote.choice)
        decided = _early(tally, instant)
        if decided is not None:
            return decided
    if withdrawn is not None:
        return _outcome(tally, ProposalStatus.withdrawn, Basis.withdrawn, "withdrawn before it was decided",
                        withdrawn)
    if now >= closes:
        return _at_close(tally, closes)
    waiting = [f"{_tallied(tally)}"]
    if tally.missing():
        waiting.append(f"waiting for approval from {_names(tally.missing())}")
    pending_veto = tally.orgs(proposal.veto_holders, None)
    if pending_veto:
        waiting.append(f"veto holders yet to vote: {_names(pending_veto)}")
    reason = f"open until {closes.isoformat()}: " + "; ".join(waiting)
    return _outcome(tally, ProposalStatus.open, Basis.pending, reason, None)


def can_vote(proposal: Proposal, votes: Iterable[Vote], org: str, now: datetime) -> str | None:
    """None when ``org`` may vote now, else why not (not a voter, withdrawn, closed, already decided)."""
    if org not in proposal.may_vote:
        if org == proposal.subject:
            return f"{org} does not vote on a proposal about itself"
        return f"{org} is not in the electorate of this proposal"
    outcome = decide(proposal, votes, now)
    if outcome.status == ProposalStatus.withdrawn:
        return "the proposal was withdrawn"
    if now >= proposal.closes_at:
        return f"voting closed at {proposal.closes_at.isoformat()}"
    if outcome.decided:
        return f"the proposal was already decided: {outcome.status.value}"
    return None


def accepts_vote(proposal: Proposal, votes: Iterable[Vote], vote: Vote) -> str | None:
    """:func:`can_vote` for ``vote``'s org at the instant it was cast."""
    return can_vote(proposal, votes, vote.org, vote.cast_at)

