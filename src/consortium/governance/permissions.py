"""Rights over data sources and models: who may see, process (train on) and download them. Pure.

An object (a dataset or environment card, a model) has an owner org (a model has none: its project's
participants stand in) and :class:`Rights`: a visibility, a :class:`Grant` for processing and one for
downloading, and an ``audience`` that sees it whatever its visibility (a model's participants).

- **See** (:func:`can_see`): ``public`` everyone, anonymous included; ``members`` every admitted, not
  suspended org and the admin; ``private`` only the owner. The audience's member orgs see the object too,
  and so does the admin (it takes part in every project, as ``hub/services/access.py`` has it); the admin
  does not see a private data source.
- **Process** (:func:`can_process`): the owner, and member orgs the grant names (or every member). The
  admin has no org: it proposes for the consortium as a whole, so it may process what every member may (a
  grant to ``members`` or ``everyone``), never what is granted to named orgs only. Anonymous callers and
  users without an org (other than the admin) process nothing.
- **Download** (:func:`can_download`): only what one may see; the owner, the member orgs the grant names,
  and the admin for objects with an audience (a project's models). A download grant to ``everyone``
  (:data:`EVERYONE`) is the one way anonymous callers download: on a public object, anyone may.
- The owner always holds every right on its own object, suspended or not; any other org holds a right only
  while it is a member (except ``everyone``, which holds for anybody who sees the object).

A model's rights (:func:`model_rights`) before release: private to its participants, who may process and
download it. After release: the narrowest of its inputs' rights and of the :class:`ReleaseDecision`
(visibility the minimum, grants the intersection), its participants keeping theirs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce

from consortium.protocol import Visibility

_RANK = {Visibility.private: 0, Visibility.members: 1, Visibility.public: 2}


def narrowest(*visibilities: Visibility) -> Visibility:
    """The most restrictive of ``visibilities`` (private < members < public); public for none."""
    return min((Visibility(v) for v in visibilities), key=_RANK.__getitem__, default=Visibility.public)


@dataclass(frozen=True)
class Grant:
    """Which orgs, besides the owner, hold a right: anybody (``everyone``: members, other orgs and anonymous
    callers; it implies ``members``), every member (``members``), or the named ``orgs`` (none: nobody).
    Named orgs and members hold it only while they are members. Ordered nobody < orgs < members < everyone."""

    members: bool = False
    orgs: frozenset[str] = frozenset()
    everyone: bool = False

    def __post_init__(self) -> None:
        if self.everyone:
            object.__setattr__(self, "members", True)
        object.__setattr__(self, "orgs", frozenset() if self.members else frozenset(self.orgs))

    @classmethod
    def to(cls, orgs: Iterable[str]) -> Grant:
        """A grant to the named orgs."""
        return cls(orgs=frozenset(orgs))

    def allows(self, org: str | None) -> bool:
        """Whether the grant names ``org`` (None: an anonymous caller, held only by ``everyone``)."""
        return self.everyone or (org is not None and (self.members or org in self.orgs))

    def __and__(self, other: Grant) -> Grant:
        if self.everyone or other.everyone:
            return other if self.everyone else self
        if self.members or other.members:
            return other if self.members else self
        return Grant.to(self.orgs & other.orgs)

    def __or__(self, other: Grant) -> Grant:
        if self.everyone or other.everyone:
            return EVERYONE
        if self.members or other.members:
            return MEMBERS
        return Grant.to(self.orgs | other.orgs)

    def __le__(self, other: Grant) -> bool:
        if other.everyone:
            return True
        return not self.everyone and (other.members or (not self.members and self.orgs <= other.orgs))

    def dump(self) -> str | list[str]:
        """The stored form: ``"everyone"``, ``"members"``, ``"nobody"`` or the sorted org names."""
        if self.everyone:
            return "everyone"
        if self.members:
            return "members"
        return sorted(self.orgs) if self.orgs else "nobody"

    @classmethod
    def load(cls, value: str | Iterable[str]) -> Grant:
        """The grant of a :meth:`dump` value."""
        if value == "everyone":
            return EVERYONE
        if value == "members":
            return MEMBERS
        if value == "nobody":
            return NOBODY
        if isinstance(value, str):
            raise ValueError(
                f"a grant is 'everyone', 'members', 'nobody' or a list of org names, not {value!r}")
        return cls.to(value)


NOBODY = Grant()
MEMBERS = Grant(members=True)
EVERYONE = Grant(everyone=True)


@dataclass(frozen=True)
class Rights:
    """What others may do with an object (its owner may do everything)."""

    visibility: Visibility
    process: Grant = NOBODY
    download: Grant = NOBODY
    audience: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "visibility", Visibility(self.visibility))
        object.__setattr__(self, "audience", frozenset(self.audience))

    def within(self, other: Rights) -> bool:
        """Whether these rights grant nothing ``other`` does not."""
        return (_RANK[self.visibility] <= _RANK[other.visibility] and self.process <= other.process
                and self.download <= other.download and self.audience <= other.audience)


@dataclass(frozen=True)
class ReleaseDecision:
    """What a passed ``release_model`` proposal asked for the model."""

    visibility: Visibility
    process: Grant
    download: Grant

    def __post_init__(self) -> None:
        object.__setattr__(self, "visibility", Visibility(self.visibility))


@dataclass(frozen=True)
class Reader:
    """Who asks: an org (None for an anonymous caller or the admin without org), whether that org is a
    member (admitted and not suspended), and whether the caller is the hub's admin."""

    org: str | None
    is_member: bool = False
    is_admin: bool = False

    def __post_init__(self) -> None:
        if self.is_member and self.org is None:
            raise ValueError("only an org can be a member")


ANONYMOUS = Reader(None)


def _owns(reader: Reader, owner_org: str | None) -> bool:
    return reader.org is not None and reader.org == owner_org


def can_see(reader: Reader, owner_org: str | None, rights: Rights) -> bool:
    """Whether ``reader`` may see the object (its card, its existence)."""
    if rights.visibility == Visibility.public or _owns(reader, owner_org):
        return True
    if reader.is_member and reader.org in rights.audience:
        return True
    if rights.visibility == Visibility.members:
        return reader.is_member or reader.is_admin
    return reader.is_admin and bool(rights.audience)


def can_process(reader: Reader, owner_org: str | None, rights: Rights) -> bool:
    """Whether ``reader``'s org (the admin: the consortium as a whole) may train on the object."""
    if reader.org is None:
        return reader.is_admin and rights.process.members
    return _owns(reader, owner_org) or (reader.is_member and rights.process.allows(reader.org))


def can_download(reader: Reader, owner_org: str | None, rights: Rights) -> bool:
    """Whether ``reader`` may download the object's bytes (never what it may not see)."""
    if _owns(reader, owner_org):
        return True
    if not can_see(reader, owner_org, rights):
        return False
    if rights.download.everyone or (reader.is_admin and rights.audience):
        return True
    return reader.is_member and rights.download.allows(reader.org)


def model_rights(
    inputs: Iterable[Rights], release: ReleaseDecision | None, participants: Iterable[str]
) -> Rights:
    """The rights over a model trained on data sources with rights ``inputs`` by ``participants``: before
    release (``release`` None) private to the participants; after, the narrowest of the inputs and the
    release decision, the participants keeping their rights."""
    audience = frozenset(participants)
    own = Grant.to(audience)
    if release is None:
        return Rights(Visibility.private, own, own, audience)
    inputs = list(inputs)
    visibility = narrowest(*(r.visibility for r in inputs), release.visibility)
    process = reduce(Grant.__and__, (r.process for r in inputs), release.process)
    download = reduce(Grant.__and__, (r.download for r in inputs), release.download)
    return Rights(visibility, process | own, download | own, audience)
