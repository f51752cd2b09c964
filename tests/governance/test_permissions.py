"""Rights over data sources and models: see, process, download; model rights before and after release."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.governance.permissions import (
    ANONYMOUS,
    EVERYONE,
    MEMBERS,
    NOBODY,
    Grant,
    Reader,
    ReleaseDecision,
    Rights,
    can_download,
    can_process,
    can_see,
    model_rights,
    narrowest,
)
from consortium.protocol import Visibility

OWNER = "north"
MEMBER = Reader("south", is_member=True)
SUSPENDED = Reader("east", is_member=False)
ADMIN = Reader(None, is_admin=True)
OWNER_READER = Reader(OWNER, is_member=True)
P, M, U = Visibility.private, Visibility.members, Visibility.public


@pytest.mark.parametrize(
    ("visibility", "reader", "sees"),
    [
        (U, ANONYMOUS, True), (U, SUSPENDED, True), (U, MEMBER, True), (U, ADMIN, True),
        (M, ANONYMOUS, False), (M, SUSPENDED, False), (M, MEMBER, True), (M, ADMIN, True),
        (P, ANONYMOUS, False), (P, SUSPENDED, False), (P, MEMBER, False), (P, ADMIN, False),
        (P, OWNER_READER, True), (P, Reader(OWNER), True),
    ],
)
def test_who_sees_a_data_source(visibility: Visibility, reader: Reader, sees: bool) -> None:
    assert can_see(reader, OWNER, Rights(visibility)) is sees


def test_grants_name_orgs_or_every_member() -> None:
    rights = Rights(M, process=Grant.to({"south"}), download=MEMBERS)
    assert can_process(MEMBER, OWNER, rights)
    assert not can_process(Reader("west", is_member=True), OWNER, rights)
    assert not can_process(Reader("south"), OWNER, rights), "a suspended org loses its grant"
    assert can_download(Reader("west", is_member=True), OWNER, rights)
    assert not can_download(ANONYMOUS, OWNER, Rights(U, download=MEMBERS))
    assert not can_download(MEMBER, OWNER, Rights(P, download=MEMBERS)), "download implies see"
    assert not can_download(ADMIN, OWNER, Rights(M, download=MEMBERS)), "the admin holds no data grant"


def test_anonymous_callers_download_only_what_is_public_and_granted_to_everyone() -> None:
    assert can_download(ANONYMOUS, OWNER, Rights(U, download=EVERYONE))
    assert can_download(SUSPENDED, OWNER, Rights(U, download=EVERYONE))
    assert not can_download(ANONYMOUS, OWNER, Rights(M, download=EVERYONE)), "download implies see"
    assert not can_download(ANONYMOUS, OWNER, Rights(U, download=MEMBERS))
    assert not can_process(ANONYMOUS, OWNER, Rights(U, process=EVERYONE))


def test_the_admin_processes_what_every_member_may() -> None:
    for grant, may in [(MEMBERS, True), (EVERYONE, True), (Grant.to({"south"}), False), (NOBODY, False)]:
        assert can_process(ADMIN, OWNER, Rights(M, process=grant)) is may
    assert not can_process(Reader(None), OWNER, Rights(U, process=MEMBERS)), "a user without org"


def test_the_owner_may_do_everything() -> None:
    nothing = Rights(P)
    for reader in (OWNER_READER, Reader(OWNER)):
        assert can_see(reader, OWNER, nothing) and can_process(reader, OWNER, nothing)
        assert can_download(reader, OWNER, nothing)


def test_grant_algebra_and_storage() -> None:
    ab, bc = Grant.to("ab"), Grant.to("bc")
    assert ab & bc == Grant.to("b") and ab | bc == Grant.to("abc")
    assert ab & MEMBERS == ab and MEMBERS & ab == ab and ab | MEMBERS == MEMBERS
    assert NOBODY <= ab <= MEMBERS <= EVERYONE and not MEMBERS <= ab and not EVERYONE <= MEMBERS
    assert ab & EVERYONE == ab and EVERYONE & MEMBERS == MEMBERS and ab | EVERYONE == EVERYONE
    assert Grant(members=True, orgs=frozenset("x")) == MEMBERS
    assert Grant(orgs=frozenset("x"), everyone=True) == EVERYONE and EVERYONE.members
    for grant in (NOBODY, MEMBERS, EVERYONE, ab):
        assert Grant.load(grant.dump()) == grant
    assert ab.dump() == ["a", "b"] and NOBODY.dump() == "nobody" and MEMBERS.dump() == "members"
    assert EVERYONE.dump() == "everyone"
    assert EVERYONE.allows(None) and not MEMBERS.allows(None)
    with pytest.raises(ValueError, match="a grant is"):
        Grant.load("anyone")
    with pytest.raises(ValueError, match="only an org"):
        Reader(None, is_member=True)


def test_a_model_before_release_is_its_participants() -> None:
    rights = model_rights([Rights(U, MEMBERS, MEMBERS)], None, {"north", "south"})
    both = frozenset({"north", "south"})
    assert rights == Rights(P, Grant.to(both), Grant.to(both), both)
    assert can_see(MEMBER, None, rights) and can_download(MEMBER, None, rights)
    assert not can_see(Reader("west", is_member=True), None, rights)
    assert can_see(ADMIN, None, rights) and can_download(ADMIN, None, rights)
    assert not can_see(Reader("south"), None, rights), "a suspended participant loses access"


def test_a_release_is_narrowed_by_its_inputs() -> None:
    inputs = [Rights(U, MEMBERS, Grant.to({"west", "east"})), Rights(M, MEMBERS, MEMBERS)]
    release = ReleaseDecision(U, MEMBERS, MEMBERS)
    rights = model_rights(inputs, release, {"north"})
    assert rights.visibility == M
    assert rights.download == Grant.to({"west", "east", "north"})
    assert rights.process == MEMBERS
    assert can_download(Reader("west", is_member=True), None, rights)
    assert not can_download(Reader("south", is_member=True), None, rights)
    assert not can_see(ANONYMOUS, None, rights)


def test_narrowest() -> None:
    assert narrowest(U, M) == M and narrowest(P, U) == P and narrowest() == U


orgs = st.frozensets(st.sampled_from(["north", "south", "east", "west"]))
grants = st.one_of(st.just(NOBODY), st.just(MEMBERS), st.just(EVERYONE), orgs.map(Grant.to))
visibilities = st.sampled_from(list(Visibility))
rights_ = st.builds(Rights, visibilities, grants, grants, orgs)
releases = st.builds(ReleaseDecision, visibilities, grants, grants)
readers = st.one_of(
    st.just(ANONYMOUS), st.just(ADMIN),
    st.builds(Reader, st.sampled_from(["north", "south", "east", "west"]), st.booleans()),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(rights_, max_size=4), rights_, st.none() | releases, orgs)
def test_adding_an_input_never_widens_a_model(
    inputs: list[Rights], extra: Rights, release: ReleaseDecision | None, participants: frozenset[str],
) -> None:
    wider = model_rights(inputs, release, participants)
    assert model_rights([*inputs, extra], release, participants).within(wider)


@settings(max_examples=500, deadline=None)
@given(st.lists(rights_, max_size=4), releases, orgs, readers)
def test_a_release_never_widens_beyond_its_inputs(inputs: list[Rights], release: ReleaseDecision,
                                                  participants: frozenset[str], reader: Reader) -> None:
    rights = model_rights(inputs, release, participants)
    if reader.org in participants or reader.is_admin:
        return
    for source in inputs:
        assert rank(rights.visibility) <= rank(source.visibility)
        if can_download(reader, None, rights):
            assert source.download.allows(reader.org) and release.download.allows(reader.org)
        if can_process(reader, None, rights):
            assert source.process.allows(reader.org) and release.process.allows(reader.org)


def rank(v: Visibility) -> int:
    return [P, M, U].index(v)


@settings(max_examples=500, deadline=None)
@given(rights_, readers, st.sampled_from(["north", "south", None]))
def test_rights_invariants(rights: Rights, reader: Reader, owner: str | None) -> None:
    if can_download(reader, owner, rights):
        assert can_see(reader, owner, rights)
    if reader.org is not None and reader.org == owner:
        assert can_see(reader, owner, rights) and can_process(reader, owner, rights)
        assert can_download(reader, owner, rights)
    public_download = rights.visibility == U and rights.download.everyone
    if reader == ANONYMOUS:
        assert can_see(reader, owner, rights) is (rights.visibility == U)
        assert can_download(reader, owner, rights) is public_download
        assert not can_process(reader, owner, rights)
    if reader.org is not None and reader.org != owner and not reader.is_member:
        assert not can_process(reader, owner, rights)
        assert can_download(reader, owner, rights) is public_download
