"""Licences of data and of the models trained on it: SPDX expressions, obligations, conflicts.

Expressions are parsed by the ``license-expression`` library against the licences of
:data:`~consortium.governance.licence_table.LICENCES`, the SPDX exceptions, and ``LicenseRef-<name>``
(proprietary terms). Ids match case-insensitively and are written back in their SPDX spelling; anything
else (an unknown id, ``+``, a ``DocumentRef``, bad syntax) is a :class:`LicenceError` naming it.

- ``A AND B``: both apply, so the obligations add up.
- ``A OR B``: the licensee chooses, and the consortium takes the least restrictive alternative, ranked by
  proprietary terms, then no-derivatives, non-commercial, share-alike, the number of attributions, and
  finally the spelling (so the choice is deterministic). The choice is per input and is written into the
  model's expression.
- ``A WITH exception``: an exception only grants extra permissions; the obligations are those of ``A``
  (the conservative reading), and the exception stays in the expression.

What each licence obliges a model to do, and why, is the table in
:mod:`~consortium.governance.licence_table`; docs/governance.md shows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum
from functools import cache
from itertools import product

from boolean.boolean import ParseError
from license_expression import (
    ExpressionError,
    LicenseSymbol,
    LicenseWithExceptionSymbol,
    Licensing,
    get_spdx_licensing,
)

from consortium.governance.licence_table import LICENCE_REF_PREFIX, LICENCES, LicenceTerms

MAX_EXPRESSION_CHARS = 1000
MAX_ALTERNATIVES = 64
"""An expression whose OR alternatives multiply out beyond this is refused (the DNF would explode)."""
NO_INPUTS = "NOASSERTION"
"""The SPDX value of a model trained on nothing we know the licence of."""
WITH = " WITH "

Alternative = frozenset[str]
"""One way to satisfy an expression: the licences (``ID`` or ``ID WITH EXCEPTION``) that all apply."""


class LicenceError(ValueError):
    """A licence expression that cannot be used: the message says which part and why (an HTTP 400)."""


@dataclass(frozen=True, order=True)
class Term:
    """A licence that binds a model through one of its inputs: ``source`` (e.g. ``org/dataset``) under
    ``licence`` (an SPDX id, with its exception if any)."""

    source: str
    licence: str

    @property
    def base(self) -> str:
        """The licence id without its exception."""
        return self.licence.split(WITH)[0]


def _terms(value: Iterable[Term]) -> tuple[Term, ...]:
    return tuple(sorted(set(value)))


@dataclass(frozen=True)
class Obligations:
    """What a model must honour, each obligation with the inputs that impose it (sorted, no duplicates)."""

    attribution: tuple[Term, ...] = ()
    share_alike: tuple[Term, ...] = ()
    non_commercial: tuple[Term, ...] = ()
    no_derivatives: tuple[Term, ...] = ()
    proprietary: tuple[Term, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _terms(getattr(self, f.name)))

    def __or__(self, other: Obligations) -> Obligations:
        return Obligations(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def share_alike_licences(self) -> tuple[str, ...]:
        """The share-alike licences involved: more than one is a conflict."""
        return tuple(sorted({t.base for t in self.share_alike}))

    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> list[str]:
        """One sentence per obligation, for a model card."""
        lines = [f"credit {t.source} ({t.licence}): {_terms_of(t).attribution}" for t in self.attribution]
        lines += [f"share alike under {t.base} (from {t.source}): {_terms_of(t).share_alike}"
                  for t in self.share_alike]
        lines += [f"non-commercial use only (from {t.source}, {t.licence})" for t in self.non_commercial]
        lines += [f"no derivatives may be shared (from {t.source}, {t.licence})" for t in self.no_derivatives]
        lines += [f"proprietary terms of {t.licence} (from {t.source})" for t in self.proprietary]
        return lines


def _terms_of(term: Term) -> LicenceTerms:
    return LICENCES[term.base]


def licence_terms(spdx_id: str) -> LicenceTerms | None:
    """The table entry of a known licence id (exact SPDX spelling), None for LicenseRef and unknown ids."""
    return LICENCES.get(spdx_id)


@cache
def _licensing() -> Licensing:
    """Our licences and the SPDX exceptions (without their LicenseRef aliases, which are ours to read)."""
    exceptions = sorted(
        key for key, symbol in get_spdx_licensing().known_symbols.items()
        if symbol.is_exception and not key.startswith(LICENCE_REF_PREFIX)
    )
    return Licensing([LicenseSymbol(key) for key in LICENCES]
                     + [LicenseSymbol(key, is_exception=True) for key in exceptions])


def _licence_id(symbol: LicenseSymbol) -> str:
    key = str(symbol.key)
    if key in LICENCES:
        return key
    prefix, rest = key[: len(LICENCE_REF_PREFIX)], key[len(LICENCE_REF_PREFIX):]
    if prefix.lower() == LICENCE_REF_PREFIX.lower() and rest and all(c.isalnum() or c in ".-" for c in rest):
        return LICENCE_REF_PREFIX + rest
    known = ", ".join([*LICENCES, "LicenseRef-<name>"])
    raise LicenceError(f"unknown licence id {key!r}; known: {known}")


def _alternatives(node: object) -> tuple[Alternative, ...]:
    """The expression in disjunctive normal form: each alternative a set of licences that all apply."""
    if isinstance(node, LicenseWithExceptionSymbol):
        return (frozenset({f"{_licence_id(node.license_symbol)}{WITH}{node.exception_symbol.key}"}),)
    if isinstance(node, LicenseSymbol):
        return (frozenset({_licence_id(node)}),)
    parts = [_alternatives(arg) for arg in getattr(node, "args", ())]
    if isinstance(node, _licensing().OR):
        found = tuple(dict.fromkeys(alt for part in parts for alt in part))
    elif isinstance(node, _licensing().AND):
        found = tuple(dict.fromkeys(frozenset().union(*combo) for combo in product(*parts)))
    else:
        raise LicenceError(f"unexpected part of a licence expression: {node!r}")
    if len(found) > MAX_ALTERNATIVES:
        raise LicenceError(f"licence expression has more than {MAX_ALTERNATIVES} alternatives")
    return found


def alternatives(expr: str) -> tuple[Alternative, ...]:
    """Parse an SPDX expression into its alternatives (one for an expression without OR); LicenceError
    when it is empty, too long, malformed or names an unknown licence."""
    text = expr.strip()
    if not text:
        raise LicenceError("empty licence expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise LicenceError(f"licence expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        parsed = _licensing().parse(text, validate=False, strict=True)
    except (ExpressionError, ParseError) as exc:
        raise LicenceError(f"invalid licence expression {expr!r}: {exc}") from exc
    if parsed is None:
        raise LicenceError("empty licence expression")
    return _alternatives(parsed)


def _alternative_obligations(alternative: Alternative, source: str) -> Obligations:
    found: dict[str, list[Term]] = {f.name: [] for f in fields(Obligations)}
    for licence in alternative:
        term = Term(source, licence)
        terms = LICENCES.get(term.base)
        if terms is None:
            found["proprietary"].append(term)
            continue
        for name in ("attribution", "share_alike", "non_commercial", "no_derivatives"):
            if getattr(terms, name) is not None:
                found[name].append(term)
    return Obligations(**found)


def _restrictiveness(alternative: Alternative) -> tuple[int, bool, bool, int, int, tuple[str, ...]]:
    o = _alternative_obligations(alternative, "")
    return (len(o.proprietary), bool(o.no_derivatives), bool(o.non_commercial), len(o.share_alike_licences),
            len(o.attribution), tuple(sorted(alternative)))


def choose(expr: str) -> Alternative:
    """The alternative of ``expr`` the consortium takes: the least restrictive one (see the module docs)."""
    return min(alternatives(expr), key=_restrictiveness)


def obligations(expr: str, source: str = "") -> Obligations:
    """What a model trained on data under ``expr`` (from ``source``) must honour."""
    return _alternative_obligations(choose(expr), source)


def normalise(expr: str) -> str:
    """``expr`` checked and spelled canonically, e.g. for a dataset card: SPDX case, its alternatives sorted
    and joined by OR, each alternative's licences sorted and joined by AND (no parentheses needed: AND binds
    tighter than OR). LicenceError when it cannot be used."""
    return " OR ".join(sorted(" AND ".join(sorted(alt)) for alt in alternatives(expr)))


@dataclass(frozen=True)
class DerivedTerms:
    """A model's licence terms: the SPDX expression for its card (every chosen input licence, joined by
    AND), its obligations, and the licence chosen for each input (``Term(source, licence)``)."""

    spdx: str
    obligations: Obligations
    chosen: tuple[Term, ...]


def derive(inputs: Iterable[tuple[str, str]]) -> DerivedTerms:
    """The terms of a model trained on ``inputs`` (pairs of source name and SPDX expression). Order and
    repetition of the inputs do not matter; LicenceError names the first input that cannot be parsed."""
    chosen: set[Term] = set()
    found = Obligations()
    for source, expr in sorted({(str(source), str(expr)) for source, expr in inputs}):
        try:
            alternative = choose(expr)
        except LicenceError as exc:
            raise LicenceError(f"{source}: {exc}") from exc
        chosen.update(Term(source, licence) for licence in alternative)
        found = found | _alternative_obligations(alternative, source)
    licences = sorted({term.licence for term in chosen})
    return DerivedTerms(" AND ".join(licences) if licences else NO_INPUTS, found, _terms(chosen))


# ---------------------------------------------------------------------------------------------- conflicts


class ConflictKind(StrEnum):
    share_alike_mismatch = "share_alike_mismatch"
    """Two different share-alike licences: the model cannot be under both."""
    share_alike_restricted = "share_alike_restricted"
    """A share-alike licence forbids further restrictions that another input imposes."""
    no_derivatives = "no_derivatives"
    """A no-derivatives input: the model (an adaptation) may not be shared."""
    release_share_alike = "release_share_alike"
    """The requested licence is not the share-alike licence the model must carry."""
    release_commercial = "release_commercial"
    """Non-commercial data, released for commercial use or under a licence permitting it."""
    release_proprietary = "release_proprietary"
    """The requested licence drops proprietary terms the model carries."""


@dataclass(frozen=True)
class Conflict:
    """Why a mix of licences, or a release, is not possible: the sources and licences at fault and a
    sentence citing the clause."""

    kind: ConflictKind
    sources: tuple[str, ...]
    licences: tuple[str, ...]
    message: str


def _conflict(kind: ConflictKind, terms: Iterable[Term], message: str) -> Conflict:
    terms = list(terms)
    return Conflict(kind, tuple(sorted({t.source for t in terms})), tuple(sorted({t.licence for t in terms})),
                    message)


def _listed(terms: Iterable[Term]) -> str:
    return ", ".join(f"{t.source} ({t.licence})" for t in terms)


def check_mix(inputs: Iterable[tuple[str, str]]) -> list[Conflict]:
    """The conflicts of training one model on ``inputs`` (source name, SPDX expression); [] when none."""
    found = derive(inputs).obligations
    conflicts: list[Conflict] = []
    families = found.share_alike_licences
    if len(families) > 1:
        clauses = "; ".join(f"{f} {LICENCES[f].share_alike}" for f in families)
        conflicts.append(_conflict(
            ConflictKind.share_alike_mismatch, found.share_alike,
            f"share-alike licences that exclude each other: {_listed(found.share_alike)}; {clauses}",
        ))
    for family in families:
        nc_allowed = LICENCES[family].non_commercial is not None
        restricting = [t for t in found.non_commercial if not nc_allowed] + list(found.proprietary)
        binding = [t for t in found.share_alike if t.base == family]
        if restricting:
            conflicts.append(_conflict(
                ConflictKind.share_alike_restricted, [*binding, *restricting],
                f"{family} ({_listed(binding)}) allows no further restriction "
                f"({LICENCES[family].share_alike}), but {_listed(restricting)} restrict the model",
            ))
    if found.no_derivatives:
        clauses = "; ".join(sorted({f"{t.base} {_terms_of(t).no_derivatives}" for t in found.no_derivatives}))
        conflicts.append(_conflict(
            ConflictKind.no_derivatives, found.no_derivatives,
            f"a model trained on {_listed(found.no_derivatives)} is an adaptation that may not be shared, "
            f"and the consortium shares every model with the project's participants: {clauses}",
        ))
    return conflicts


def check_release(inputs: Iterable[tuple[str, str]], requested_spdx: str, commercial: bool) -> list[Conflict]:
    """The conflicts of releasing a model trained on ``inputs`` under ``requested_spdx`` (for commercial use
    when ``commercial``): those of :func:`check_mix`, then the release's own. Every alternative of an OR in
    the requested expression must comply, since a recipient may pick any. LicenceError when an expression
    cannot be parsed."""
    inputs = list(inputs)
    found = derive(inputs).obligations
    requested = alternatives(requested_spdx)
    conflicts = check_mix(inputs)
    families = found.share_alike_licences
    if len(families) == 1 and any(alt != frozenset(families) for alt in requested):
        conflicts.append(_conflict(
            ConflictKind.release_share_alike, found.share_alike,
            f"the model must be released under {families[0]} alone, not {requested_spdx!r}: "
            f"{LICENCES[families[0]].share_alike}",
        ))
    if found.non_commercial:
        if commercial:
            conflicts.append(_conflict(
                ConflictKind.release_commercial, found.non_commercial,
                f"{_listed(found.non_commercial)} may not be used commercially "
                f"({_terms_of(found.non_commercial[0]).non_commercial})",
            ))
        permissive = [alt for alt in requested if not _alternative_obligations(alt, "").non_commercial]
        if permissive:
            conflicts.append(_conflict(
                ConflictKind.release_commercial, found.non_commercial,
                f"{requested_spdx!r} would permit commercial use of a model trained on "
                f"{_listed(found.non_commercial)}; choose a non-commercial licence",
            ))
    elif commercial and any(_alternative_obligations(alt, "").non_commercial for alt in requested):
        conflicts.append(_conflict(
            ConflictKind.release_commercial, [],
            f"a commercial release cannot be under a non-commercial licence ({requested_spdx!r})",
        ))
    dropped = [t for t in found.proprietary if any(t.licence not in alt for alt in requested)]
    if dropped:
        conflicts.append(_conflict(
            ConflictKind.release_proprietary, dropped,
            f"the model carries the proprietary terms of {_listed(dropped)}; "
            "the release licence must name them",
        ))
    return conflicts
