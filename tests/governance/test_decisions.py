"""Deciding a proposal: examples, exhaustive small electorates and hypothesis properties."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.governance.decisions import (
    Basis,
    Outcome,
    Proposal,
    ProposalStatus,
    Vote,
    VoteChoice,
    accepts_vote,
    can_vote,
    decide,
    open_proposal,
)
from consortium.governance.policy import KindRule, ProposalKind, VetoHolders, default_policy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = 100
CLOSE = T0 + timedelta(seconds=WINDOW)
AFTER = CLOSE + timedelta(days=1)
ORGS = ("a", "b", "c", "d", "e")
Y, N, A = VoteChoice.yes, VoteChoice.no, VoteChoice.abstain
Scenario = tuple[Proposal, list[Vote], datetime]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def vote(org: str, choice: VoteChoice | str, seconds: float = 1) -> Vote:
    return Vote(org, VoteChoice(choice), at(seconds))


def proposal(
    electorate: str = "abc", *, veto: str = "", must: str = "", quorum: float = 0.0, threshold: float = 0.5,
    strict: bool = False, withdrawn: float | None = None,
) -> Proposal:
    return Proposal(
        kind=ProposalKind.run_project,
        rule=KindRule(quorum=quorum, threshold=threshold, strict=strict, window_s=WINDOW),
        opened_at=T0, electorate=frozenset(electorate), veto_holders=frozenset(veto),
        must_approve=frozenset(must),
        withdrawn_at=None if withdrawn is None else at(withdrawn),
    )


# ---------------------------------------------------------------------------------------------- examples


def test_bootstrap_passes_at_opening() -> None:
    first = open_proposal(default_policy(), ProposalKind.admit_org, T0, [], subject="north")
    outcome = decide(first, [], T0)
    assert (outcome.status, outcome.basis, outcome.decided_at) == (ProposalStatus.passed, Basis.bootstrap, T0)
    assert "bootstrap" in outcome.reason


def test_second_org_needs_the_first_ones_vote() -> None:
    second = open_proposal(default_policy(), ProposalKind.admit_org, T0, ["north"], subject="south")
    assert second.electorate == {"north"}
    assert decide(second, [], at(1)).status == ProposalStatus.open
    assert decide(second, [Vote("north", Y, at(2))], at(3)).status == ProposalStatus.passed
    assert decide(second, [Vote("north", N, at(2))], at(3)).status == ProposalStatus.open
    late = decide(second, [Vote("north", N, at(2))], T0 + timedelta(days=8))
    assert (late.status, late.basis) == (ProposalStatus.rejected, Basis.threshold)


def test_run_project_data_owners_must_approve_others_may_vote() -> None:
    run = open_proposal(default_policy(), ProposalKind.run_project, T0, "abc", data_owners=["a", "b"])
    assert run.veto_holders == run.must_approve == {"a", "b"}
    waiting = decide(run, [vote("a", Y)], at(2))
    assert waiting.status == ProposalStatus.open and waiting.missing == ("b",)
    assert "waiting for approval from b" in waiting.reason
    done = decide(run, [vote("a", Y), vote("b", Y, 2)], at(3))
    assert (done.status, done.decided_at, done.yes) == (ProposalStatus.passed, at(2), 2)
    vetoed = decide(run, [vote("a", Y), vote("b", N, 2)], at(3))
    assert (vetoed.status, vetoed.basis, vetoed.vetoed_by) == (ProposalStatus.rejected, Basis.veto, ("b",))
    assert "vetoed by b" in vetoed.reason
    never = decide(run, [vote("a", Y)], T0 + timedelta(days=8))
    assert (never.status, never.basis, never.missing) == (ProposalStatus.expired, Basis.approvals, ("b",))


def test_a_data_owner_electorate_counts_the_owners_and_hears_the_others() -> None:
    run = open_proposal(default_policy(), ProposalKind.run_project, T0, "abcde", data_owners=["a"])
    assert (run.electorate, run.advisory) == ({"a"}, {"b", "c", "d", "e"})
    assert can_vote(run, [], "d", at(1)) is None, "an advisory member may vote"
    others_against = [vote("b", N), vote("c", N), vote("d", N)]
    assert decide(run, others_against, at(2)).status == ProposalStatus.open
    done = decide(run, [*others_against, vote("a", Y, 2)], at(3))
    assert (done.status, done.decided_at, done.yes, done.no) == (ProposalStatus.passed, at(2), 1, 0)
    assert can_vote(run, [vote("a", Y)], "z", at(2)) == "z is not in the electorate of this proposal"


def test_others_can_outvote_approving_owners_at_close() -> None:
    p = proposal("abcde", veto="a", must="a")
    outcome = decide(p, [vote("a", Y), vote("b", N), vote("c", N)], AFTER)
    assert (outcome.status, outcome.basis) == (ProposalStatus.rejected, Basis.threshold)


def test_threshold_is_at_least_or_strictly_more() -> None:
    tie = [vote("a", Y), vote("b", N)]
    assert decide(proposal("ab"), tie, AFTER).status == ProposalStatus.passed
    assert decide(proposal("ab", strict=True), tie, AFTER).status == ProposalStatus.rejected
    two_thirds = [vote("a", Y), vote("b", Y), vote("c", N)]
    assert decide(proposal("abc", threshold=2 / 3), two_thirds, AFTER).status == ProposalStatus.passed
    strict = proposal("abc", threshold=2 / 3, strict=True)
    assert decide(strict, two_thirds, AFTER).status == ProposalStatus.rejected


def test_quorum_counts_abstentions_and_expires_without_it() -> None:
    p = proposal("abcd", quorum=0.5)
    assert decide(p, [vote("a", Y)], AFTER).basis == Basis.quorum
    assert decide(p, [vote("a", Y)], AFTER).status == ProposalStatus.expired
    assert decide(p, [vote("a", Y), vote("b", A)], AFTER).status == ProposalStatus.passed


def test_all_abstain_is_rejected() -> None:
    outcome = decide(proposal("ab", quorum=1.0), [vote("a", A), vote("b", A)], AFTER)
    assert (outcome.status, outcome.basis) == (ProposalStatus.rejected, Basis.threshold)


def test_latest_vote_wins_and_same_instant_is_conservative() -> None:
    p = proposal("ab", quorum=1.0)
    assert decide(p, [vote("a", N, 1), vote("a", Y, 2), vote("b", Y, 3)], AFTER).yes == 2
    assert decide(p, [vote("a", Y, 1), vote("a", N, 1), vote("b", Y, 3)], AFTER).no == 1
    assert decide(p, [vote("a", Y, 1), vote("a", A, 1), vote("b", Y, 3)], AFTER).abstain == 1


def test_votes_that_never_count() -> None:
    p = proposal("ab", quorum=1.0)
    base = [vote("a", Y)]
    strays = [vote("zed", N), Vote("b", N, CLOSE), Vote("b", N, T0 - timedelta(seconds=1)), vote("b", N, 50)]
    assert decide(p, base + strays, at(10)) == decide(p, base, at(10))


def test_withdrawal_wins_unless_decided_before() -> None:
    p = proposal("ab", withdrawn=5)
    assert decide(p, [vote("a", Y, 7), vote("b", Y, 7)], AFTER).status == ProposalStatus.withdrawn
    assert decide(p, [vote("a", Y, 5), vote("b", Y, 5)], AFTER).status == ProposalStatus.withdrawn
    assert decide(p, [vote("a", Y, 4), vote("b", Y, 4)], AFTER).status == ProposalStatus.passed
    assert decide(p, [], at(4)).status == ProposalStatus.open
    withdrawn = decide(p, [], at(5))
    assert (withdrawn.status, withdrawn.decided_at) == (ProposalStatus.withdrawn, at(5))
    expired = decide(proposal("ab", withdrawn=WINDOW), [], AFTER)
    assert (expired.status, expired.reason) == (ProposalStatus.expired, "expired: nobody voted")


def test_subject_does_not_vote_on_its_own_suspension() -> None:
    suspend = open_proposal(default_policy(), ProposalKind.suspend_org, T0, "abc", subject="c")
    assert suspend.electorate == {"a", "b"} and not suspend.veto_holders
    assert can_vote(suspend, [], "c", at(1)) == "c does not vote on a proposal about itself"
    assert decide(suspend, [vote("a", Y), vote("b", Y)], at(2)).status == ProposalStatus.passed


def test_open_proposal_checks_the_kind() -> None:
    policy = default_policy()
    with pytest.raises(ValueError, match="needs subject"):
        open_proposal(policy, ProposalKind.suspend_org, T0, "abc")
    with pytest.raises(ValueError, match="has no subject"):
        open_proposal(policy, ProposalKind.run_project, T0, "abc", subject="a")
    with pytest.raises(ValueError, match="no data owners"):
        open_proposal(policy, ProposalKind.change_policy, T0, "abc", data_owners=["a"])
    release = open_proposal(policy, ProposalKind.release_model, T0, "abc", data_owners=["a"])
    assert release.veto_holders == {"a"} and not release.must_approve
    assert release.closes_at == T0 + timedelta(days=7)


def test_subject_veto_for_admission_counts_only_as_veto() -> None:
    data = default_policy().model_dump() | {"admit_org": {**default_policy().admit_org.model_dump(),
                                                          "veto": VetoHolders.subject}}
    policy = type(default_policy()).model_validate(data)
    admit = open_proposal(policy, ProposalKind.admit_org, T0, "ab", subject="new")
    assert admit.veto_holders == {"new"} and "new" not in admit.electorate
    assert decide(admit, [vote("a", Y), vote("b", Y)], at(2)).status == ProposalStatus.open
    joined = decide(admit, [vote("a", Y), vote("b", Y), vote("new", Y, 3)], at(4))
    assert (joined.status, joined.yes) == (ProposalStatus.passed, 2)
    assert decide(admit, [vote("new", N)], at(2)).status == ProposalStatus.rejected


def test_can_vote_reasons() -> None:
    p = proposal("ab", quorum=1.0)
    assert can_vote(p, [], "a", at(1)) is None
    assert can_vote(p, [], "zed", at(1)) == "zed is not in the electorate of this proposal"
    assert can_vote(p, [], "a", CLOSE).startswith("voting closed at")
    decided = [vote("a", Y), vote("b", Y)]
    assert can_vote(p, decided, "a", at(2)) == "the proposal was already decided: passed"
    assert can_vote(proposal("ab", withdrawn=3), [], "a", at(4)) == "the proposal was withdrawn"
    assert accepts_vote(p, [], vote("b", N, 2)) is None


def test_naive_datetimes_and_time_travel_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Vote("a", Y, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(proposal(), [], datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="before the proposal opened"):
        decide(proposal(), [], T0 - timedelta(seconds=1))
    with pytest.raises(ValueError, match="withdrawn before it opened"):
        proposal(withdrawn=-1)


# ---------------------------------------------------------------------------------------------- exhaustive


def close_reference(p: Proposal, latest: dict[str, VoteChoice]) -> ProposalStatus:
    """The close-time rule written out plainly, for comparison."""
    if any(latest.get(o) == N for o in p.veto_holders):
        return ProposalStatus.rejected
    counts = {c: sum(latest.get(o) == c for o in p.electorate) for c in VoteChoice}
    cast, yes, no = sum(counts.values()), counts[Y], counts[N]
    quorum = not p.electorate or cast >= p.rule.quorum * len(p.electorate) - 1e-9
    if not p.electorate:
        threshold = True
    elif yes + no == 0:
        threshold = False
    elif p.rule.strict:
        threshold = yes > p.rule.threshold * (yes + no) + 1e-9
    else:
        threshold = yes >= p.rule.threshold * (yes + no) - 1e-9
    approved = all(latest.get(o) == Y for o in p.must_approve)
    if approved and quorum and threshold:
        return ProposalStatus.passed
    if not quorum or (p.electorate and cast == 0):
        return ProposalStatus.expired
    if not threshold or any(latest.get(o) == N for o in p.must_approve):
        return ProposalStatus.rejected
    return ProposalStatus.expired


SMALL_RULES = [
    {"quorum": 0.0, "threshold": 0.5},
    {"quorum": 0.5, "threshold": 0.5, "strict": True},
    {"quorum": 2 / 3, "threshold": 2 / 3},
    {"quorum": 1.0, "threshold": 1.0},
    {"quorum": 0.25, "threshold": 0.25, "strict": True},
]
HOLDERS = [("", ""), ("a", "a"), ("ab", ""), ("", "bc"), ("x", "x")]


@pytest.mark.parametrize("rule", SMALL_RULES)
@pytest.mark.parametrize(("veto", "must"), HOLDERS)
def test_every_vote_combination_of_four_orgs(rule: dict[str, object], veto: str, must: str) -> None:
    """At closing the outcome is the plain rule; before closing it is passed exactly when every way the
    orgs yet to vote could vote (or not) passes, rejected exactly on a veto, and open otherwise."""
    p = proposal("abcd", veto=veto, must=must, **rule)  # type: ignore[arg-type]
    voters = sorted(p.voters)
    options: list[VoteChoice | None] = [None, Y, N, A]
    for combo in itertools.product(options, repeat=len(voters)):
        latest = {o: c for o, c in zip(voters, combo, strict=True) if c is not None}
        votes = [vote(o, c) for o, c in latest.items()]
        assert decide(p, votes, AFTER).status == close_reference(p, latest), latest
        early = decide(p, votes, at(2)).status
        rest = [o for o in voters if o not in latest]
        finals = {
            close_reference(p, latest | {o: c for o, c in zip(rest, more, strict=True) if c is not None})
            for more in itertools.product(options, repeat=len(rest))
        }
        if any(latest.get(o) == N for o in p.veto_holders):
            assert early == ProposalStatus.rejected
        elif finals == {ProposalStatus.passed}:
            assert early == ProposalStatus.passed, latest
        else:
            assert early == ProposalStatus.open, latest


# ---------------------------------------------------------------------------------------------- properties

choices = st.sampled_from(list(VoteChoice))
leaning_yes = st.sampled_from([Y, Y, Y, A, N])
subsets = st.frozensets(st.sampled_from(ORGS))
few = st.just(frozenset()) | st.frozensets(st.sampled_from(ORGS), max_size=2)


@st.composite
def scenarios(draw: st.DrawFn, unique_voters: bool = False) -> tuple[Proposal, list[Vote], datetime]:
    threshold = draw(st.sampled_from([0.25, 0.5, 2 / 3, 1.0]))
    rule = KindRule(
        quorum=draw(st.sampled_from([0.0, 0.25, 0.5, 2 / 3, 1.0])), threshold=threshold,
        strict=threshold < 1 and draw(st.booleans()), window_s=WINDOW,
    )
    withdrawn = draw(st.none() | st.none() | st.integers(0, 2 * WINDOW))
    p = Proposal(
        kind=ProposalKind.run_project, rule=rule, opened_at=T0,
        electorate=draw(subsets | subsets.filter(bool)),
        veto_holders=draw(few), must_approve=draw(few),
        withdrawn_at=None if withdrawn is None else at(withdrawn),
    )
    orgs = st.sampled_from((*ORGS, "zed"))
    raw = draw(st.lists(st.tuples(orgs, leaning_yes, st.integers(-5, WINDOW + 10)), max_size=14,
                        unique_by=(lambda t: t[0]) if unique_voters else None))
    return p, [Vote(o, c, at(s)) for o, c, s in raw], at(draw(st.integers(0, 2 * WINDOW)))


def counted_latest(p: Proposal, votes: list[Vote], until: datetime) -> dict[str, VoteChoice]:
    rank = {Y: 0, A: 1, N: 2}
    latest: dict[str, VoteChoice] = {}
    kept = [v for v in votes
            if v.org in p.voters and p.opened_at <= v.cast_at <= until and v.cast_at < p.closes_at]
    for v in sorted(kept, key=lambda v: (v.cast_at, rank[v.choice])):
        latest[v.org] = v.choice
    return latest


@settings(max_examples=1000, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_main_invariant(scenario: Scenario, rnd: random.Random) -> None:
    """Deterministic and order-independent; nothing passes without every required yes or with a veto; a
    veto rejects; a decided outcome never changes later; stray votes change nothing."""
    p, votes, now = scenario
    outcome = decide(p, votes, now)
    shuffled = votes[:]
    rnd.shuffle(shuffled)
    assert decide(p, shuffled, now) == outcome == decide(p, tuple(votes), now)
    if outcome.decided:
        assert outcome.decided_at is not None and outcome.decided_at <= now
        assert decide(p, votes, now + timedelta(days=30)) == outcome
    else:
        assert outcome.decided_at is None and now < p.closes_at
    if outcome.status == ProposalStatus.passed:
        assert outcome.decided_at is not None
        latest = counted_latest(p, votes, outcome.decided_at)
        assert all(latest.get(o) == Y for o in p.must_approve)
        assert not any(latest.get(o) == N for o in p.veto_holders)
        assert outcome.missing == () and outcome.vetoed_by == ()
    if outcome.basis == Basis.veto:
        assert outcome.status == ProposalStatus.rejected and outcome.vetoed_by
    late = p.closes_at + timedelta(seconds=rnd.randint(0, 9))
    strays = [Vote("zed", N, at(1)), Vote(rnd.choice(ORGS), N, late),
              Vote(rnd.choice(ORGS), N, T0 - timedelta(seconds=1))]
    assert decide(p, votes + strays, now) == outcome


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.data())
def test_an_early_decision_is_what_any_completion_would_give(
    scenario: Scenario, data: st.DataObject,
) -> None:
    p, votes, now = scenario
    outcome = decide(p, votes, now)
    if not outcome.decided or outcome.decided_at is None or outcome.decided_at >= p.closes_at:
        return
    if outcome.status == ProposalStatus.withdrawn:
        return
    latest = counted_latest(p, votes, outcome.decided_at)
    rest = sorted(p.voters - set(latest))
    more = data.draw(st.lists(st.none() | choices, min_size=len(rest), max_size=len(rest)))
    final = latest | {o: c for o, c in zip(rest, more, strict=True) if c is not None}
    unwithdrawn = Proposal(p.kind, p.rule, p.opened_at, p.electorate, p.veto_holders, p.must_approve)
    at_once = decide(unwithdrawn, [vote(o, c, WINDOW - 1) for o, c in final.items()], AFTER)
    assert at_once.status == outcome.status


def add(votes: list[Vote], choice: VoteChoice, data: st.DataObject, p: Proposal) -> list[Vote]:
    org = data.draw(st.sampled_from(sorted(p.voters)))
    seconds = data.draw(st.integers(0, WINDOW - 1))
    return [*votes, Vote(org, choice, at(seconds))]


@settings(max_examples=500, deadline=None)
@given(scenarios(), st.data())
def test_a_yes_never_undoes_a_pass(scenario: Scenario, data: st.DataObject) -> None:
    p, votes, now = scenario
    if not p.voters or decide(p, votes, now).status != ProposalStatus.passed:
        return
    if votes and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(votes) - 1))
        more = [*votes[:i], Vote(votes[i].org, Y, votes[i].cast_at), *votes[i + 1:]]
    else:
        more = add(votes, Y, data, p)
    assert decide(p, more, now).status == ProposalStatus.passed


@settings(max_examples=500, deadline=None)
@given(scenarios(unique_voters=True), st.data())
def test_a_no_never_turns_a_rejection_into_a_pass(
    scenario: Scenario, data: st.DataObject,
) -> None:
    """Adding a no from an org that had not voted (each org votes once here: a change of mind after an
    early decision does not count, see the module docs)."""
    p, votes, now = scenario
    voted = {v.org for v in votes}
    if not (p.voters - voted) or decide(p, votes, now).status != ProposalStatus.rejected:
        return
    org = data.draw(st.sampled_from(sorted(p.voters - voted)))
    more = [*votes, Vote(org, N, at(data.draw(st.integers(0, WINDOW - 1))))]
    assert decide(p, more, now).status != ProposalStatus.passed


@settings(max_examples=500, deadline=None)
@given(scenarios(), st.data())
def test_a_veto_holders_no_rejects(scenario: Scenario, data: st.DataObject) -> None:
    p, votes, _ = scenario
    if not p.veto_holders:
        return
    holder = data.draw(st.sampled_from(sorted(p.veto_holders)))
    first = min([v.cast_at for v in votes if v.cast_at >= T0] + [CLOSE]) - timedelta(microseconds=1)
    if first < T0 or (p.withdrawn_at is not None and p.withdrawn_at <= first):
        return
    outcome = decide(p, [*votes, Vote(holder, N, first)], AFTER)
    if outcome.basis != Basis.bootstrap:
        assert (outcome.status, outcome.basis) == (ProposalStatus.rejected, Basis.veto)
        assert holder in outcome.vetoed_by


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_only_the_latest_vote_of_each_org_counts(scenario: Scenario) -> None:
    """Without an early decision, dropping every vote an org replaced later changes nothing."""
    p, votes, now = scenario
    outcome = decide(p, votes, now)
    if outcome.decided_at is not None and outcome.decided_at < p.closes_at:
        return
    horizon = min(now, p.closes_at - timedelta(microseconds=1))
    latest = counted_latest(p, votes, horizon)
    kept: dict[str, Vote] = {}
    counted = (v for v in votes if v.org in latest and T0 <= v.cast_at <= horizon)
    for v in sorted(counted, key=lambda v: v.cast_at):
        if v.choice == latest[v.org]:
            kept[v.org] = v
    assert decide(p, list(kept.values()), now) == outcome


def test_outcome_is_a_value() -> None:
    outcome = decide(proposal(), [], at(1))
    assert isinstance(outcome, Outcome) and hash(outcome) == hash(decide(proposal(), [], at(1)))
