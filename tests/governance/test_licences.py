"""Licences: parsing, obligations, the model's derived terms, mix and release conflicts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.governance.licence_table import LICENCES
from consortium.governance.licences import (
    NO_INPUTS,
    ConflictKind,
    LicenceError,
    Obligations,
    Term,
    alternatives,
    check_mix,
    check_release,
    choose,
    derive,
    licence_terms,
    normalise,
    obligations,
)
from consortium.protocol import SPDX_PATTERN

KNOWN = sorted(LICENCES)
SHARE_ALIKE = ["CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "ODbL-1.0", "CDLA-Sharing-1.0"]


def kinds(conflicts: list) -> list[ConflictKind]:  # type: ignore[type-arg]
    return [c.kind for c in conflicts]


# ---------------------------------------------------------------------------------------------- parsing


def test_every_known_licence_has_a_cited_source() -> None:
    assert set(KNOWN) == {
        "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "ODbL-1.0",
        "CDLA-Permissive-2.0", "CDLA-Sharing-1.0", "MIT", "Apache-2.0",
    }
    for spdx, terms in LICENCES.items():
        assert terms.spdx == spdx and terms.legal_code.startswith("https://")
        for clause in (terms.attribution, terms.share_alike, terms.non_commercial, terms.no_derivatives):
            assert clause is None or clause.strip()
    assert licence_terms("CC-BY-4.0") is LICENCES["CC-BY-4.0"] and licence_terms("LicenseRef-x") is None


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("cc-by-4.0", "CC-BY-4.0"),
        ("  MIT  ", "MIT"),
        ("mit and cc0-1.0", "CC0-1.0 AND MIT"),
        ("MIT OR CC0-1.0", "CC0-1.0 OR MIT"),
        ("MIT OR CC-BY-4.0 AND LicenseRef-x", "CC-BY-4.0 AND LicenseRef-x OR MIT"),
        ("(MIT OR CC0-1.0) AND ODbL-1.0", "CC0-1.0 AND ODbL-1.0 OR MIT AND ODbL-1.0"),
        ("Apache-2.0 WITH LLVM-exception", "Apache-2.0 WITH LLVM-exception"),
        ("licenseref-Acme.Terms-2", "LicenseRef-Acme.Terms-2"),
        ("MIT AND MIT", "MIT"),
    ],
)
def test_normalise(expr: str, expected: str) -> None:
    assert normalise(expr) == expected
    assert normalise(expected) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("GPL-3.0-only", "unknown licence id 'GPL-3.0-only'"),
        ("MIT AND FOO", "unknown licence id 'FOO'"),
        ("CC-BY-4.0+", "unknown licence id 'CC-BY-4.0+'"),
        ("DocumentRef-a:LicenseRef-b", "unknown licence id"),
        ("LicenseRef-", "unknown licence id"),
        ("MIT AND", "invalid licence expression"),
        ("(MIT", "invalid licence expression"),
        ("MIT MIT", "invalid licence expression"),
        ("MIT WITH Not-An-Exception", "invalid licence expression"),
        ("LLVM-exception", "invalid licence expression"),
        ("MIT OR " * 200 + "MIT", "longer than"),
        (" AND ".join(f"(LicenseRef-a{i} OR LicenseRef-b{i})" for i in range(7)), "alternatives"),
    ],
)
def test_bad_expressions_name_the_fault(expr: str, message: str) -> None:
    with pytest.raises(LicenceError, match=message.replace("(", r"\(").replace("+", r"\+")):
        alternatives(expr)


def test_the_normal_form_fits_the_wire_pattern() -> None:
    for expr in ("MIT OR CC-BY-4.0 AND LicenseRef-x", "(MIT OR CC0-1.0) AND ODbL-1.0",
                 "Apache-2.0 WITH LLVM-exception"):
        assert re.fullmatch(SPDX_PATTERN, normalise(expr))


# ---------------------------------------------------------------------------------------------- obligations


@pytest.mark.parametrize(
    ("spdx", "attribution", "share_alike", "nc", "nd"),
    [
        ("CC0-1.0", False, False, False, False),
        ("CC-BY-4.0", True, False, False, False),
        ("CC-BY-SA-4.0", True, True, False, False),
        ("CC-BY-NC-4.0", True, False, True, False),
        ("CC-BY-NC-SA-4.0", True, True, True, False),
        ("CC-BY-ND-4.0", True, False, False, True),
        ("ODbL-1.0", True, True, False, False),
        ("CDLA-Permissive-2.0", False, False, False, False),
        ("CDLA-Sharing-1.0", True, True, False, False),
        ("MIT", True, False, False, False),
        ("Apache-2.0", True, False, False, False),
    ],
)
def test_obligations_of_each_licence(
    spdx: str, attribution: bool, share_alike: bool, nc: bool, nd: bool,
) -> None:
    found = obligations(spdx, "north/x")
    term = (Term("north/x", spdx),)
    assert found.attribution == (term if attribution else ())
    assert found.share_alike == (term if share_alike else ())
    assert found.non_commercial == (term if nc else ())
    assert found.no_derivatives == (term if nd else ())
    assert found.proprietary == ()
    assert len(found.describe()) == attribution + share_alike + nc + nd


def test_proprietary_and_exceptions() -> None:
    found = obligations("LicenseRef-acme AND Apache-2.0 WITH LLVM-exception", "s")
    assert found.proprietary == (Term("s", "LicenseRef-acme"),)
    assert found.attribution == (Term("s", "Apache-2.0 WITH LLVM-exception"),)
    assert "proprietary terms of LicenseRef-acme (from s)" in found.describe()


@pytest.mark.parametrize(
    ("expr", "chosen"),
    [
        ("CC-BY-NC-4.0 OR CC-BY-4.0", {"CC-BY-4.0"}),
        ("CC-BY-SA-4.0 OR CC-BY-NC-4.0", {"CC-BY-SA-4.0"}),
        ("CC-BY-ND-4.0 OR CC-BY-NC-SA-4.0", {"CC-BY-NC-SA-4.0"}),
        ("LicenseRef-acme OR CC-BY-ND-4.0", {"CC-BY-ND-4.0"}),
        ("MIT OR CC0-1.0", {"CC0-1.0"}),
        ("MIT OR Apache-2.0", {"Apache-2.0"}),
        ("Apache-2.0 OR MIT", {"Apache-2.0"}),
        ("(MIT AND CC-BY-4.0) OR CC-BY-SA-4.0", {"CC-BY-4.0", "MIT"}),
    ],
)
def test_or_takes_the_least_restrictive_alternative(expr: str, chosen: set[str]) -> None:
    assert choose(expr) == chosen


def test_derive_joins_the_chosen_licences() -> None:
    derived = derive([("north/a", "CC-BY-4.0"), ("south/b", "MIT OR CC0-1.0"), ("east/c", "CC-BY-4.0")])
    assert derived.spdx == "CC-BY-4.0 AND CC0-1.0"
    assert derived.chosen == (
        Term("east/c", "CC-BY-4.0"), Term("north/a", "CC-BY-4.0"), Term("south/b", "CC0-1.0"),
    )
    assert derived.obligations.attribution == (Term("east/c", "CC-BY-4.0"), Term("north/a", "CC-BY-4.0"))
    assert derive([]).spdx == NO_INPUTS and derive([]).obligations.is_empty()


def test_derive_names_the_input_at_fault() -> None:
    with pytest.raises(LicenceError, match="south/b: unknown licence id 'GPL-2.0'"):
        derive([("north/a", "MIT"), ("south/b", "GPL-2.0")])


inputs = st.lists(
    st.tuples(st.sampled_from(["north/a", "south/b", "east/c", "west/d"]),
              st.sampled_from([*KNOWN, "LicenseRef-acme", "MIT OR CC-BY-NC-4.0",
                               "CC-BY-SA-4.0 OR ODbL-1.0"])),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(inputs, st.randoms(use_true_random=False))
def test_derive_is_order_independent_and_idempotent(found: list[tuple[str, str]], rnd: object) -> None:
    shuffled = found[:]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    derived = derive(found)
    assert derive(shuffled) == derived == derive(found + found)
    assert check_mix(shuffled) == check_mix(found)


def _contains(big: Obligations, small: Obligations) -> bool:
    return all(set(getattr(small, name)) <= set(getattr(big, name))
               for name in ("attribution", "share_alike", "non_commercial", "no_derivatives", "proprietary"))


@settings(max_examples=300, deadline=None)
@given(inputs, inputs)
def test_adding_an_input_never_removes_an_obligation(first: list[tuple[str, str]],
                                                     more: list[tuple[str, str]]) -> None:
    assert _contains(derive(first + more).obligations, derive(first).obligations)
    assert set(derive(first).chosen) <= set(derive(first + more).chosen)
    assert set(kinds(check_mix(first))) <= set(kinds(check_mix(first + more)))


# ---------------------------------------------------------------------------------------------- mixing


def pair(a: str, b: str) -> list[tuple[str, str]]:
    return [("north/a", a), ("south/b", b)]


@pytest.mark.parametrize(("a", "b"), [(a, b) for a in SHARE_ALIKE for b in SHARE_ALIKE if a < b])
def test_two_different_share_alike_licences_conflict(a: str, b: str) -> None:
    conflicts = check_mix(pair(a, b))
    assert kinds(conflicts)[0] == ConflictKind.share_alike_mismatch
    if "CC-BY-NC-SA-4.0" not in (a, b):
        assert len(conflicts) == 1
    else:
        both = {ConflictKind.share_alike_mismatch, ConflictKind.share_alike_restricted}
        assert set(kinds(conflicts)) == both
    assert conflicts[0].sources == ("north/a", "south/b") and conflicts[0].licences == tuple(sorted((a, b)))
    assert "§" in conflicts[0].message


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("CC-BY-SA-4.0", "CC-BY-SA-4.0", []),
        ("CC-BY-SA-4.0", "CC-BY-4.0", []),
        ("CC-BY-SA-4.0", "CC0-1.0", []),
        ("CC-BY-SA-4.0", "MIT", []),
        ("ODbL-1.0", "CDLA-Permissive-2.0", []),
        ("CC-BY-NC-4.0", "CC-BY-4.0", []),
        ("CC-BY-NC-4.0", "LicenseRef-acme", []),
        ("CC-BY-NC-SA-4.0", "CC-BY-NC-4.0", []),
        ("CC-BY-SA-4.0", "CC-BY-NC-4.0", [ConflictKind.share_alike_restricted]),
        ("ODbL-1.0", "CC-BY-NC-4.0", [ConflictKind.share_alike_restricted]),
        ("CDLA-Sharing-1.0", "CC-BY-NC-4.0", [ConflictKind.share_alike_restricted]),
        ("CC-BY-SA-4.0", "LicenseRef-acme", [ConflictKind.share_alike_restricted]),
        ("CC-BY-NC-SA-4.0", "LicenseRef-acme", [ConflictKind.share_alike_restricted]),
        ("CC-BY-ND-4.0", "CC0-1.0", [ConflictKind.no_derivatives]),
        ("CC-BY-ND-4.0", "CC-BY-SA-4.0", [ConflictKind.no_derivatives]),
        ("CC-BY-ND-4.0 OR LicenseRef-consortium", "CC0-1.0", [ConflictKind.no_derivatives]),
        ("CC-BY-ND-4.0 OR CC-BY-4.0", "CC0-1.0", []),
    ],
)
def test_mixes(a: str, b: str, expected: list[ConflictKind]) -> None:
    assert kinds(check_mix(pair(a, b))) == expected


def test_a_share_alike_restriction_names_the_restricting_input() -> None:
    (conflict,) = check_mix(pair("CC-BY-SA-4.0", "CC-BY-NC-4.0"))
    assert conflict.sources == ("north/a", "south/b")
    assert conflict.licences == ("CC-BY-NC-4.0", "CC-BY-SA-4.0")
    assert "south/b (CC-BY-NC-4.0)" in conflict.message


# ---------------------------------------------------------------------------------------------- release


@pytest.mark.parametrize(
    ("inputs_", "requested", "commercial", "expected"),
    [
        (["CC-BY-4.0", "MIT"], "CC-BY-4.0", True, []),
        (["CC-BY-4.0"], "CC0-1.0", False, []),
        (["CC-BY-SA-4.0", "CC-BY-4.0"], "CC-BY-SA-4.0", True, []),
        (["CC-BY-SA-4.0"], "CC-BY-4.0", False, [ConflictKind.release_share_alike]),
        (["CC-BY-SA-4.0"], "CC-BY-SA-4.0 AND MIT", False, [ConflictKind.release_share_alike]),
        (["CC-BY-SA-4.0"], "CC-BY-SA-4.0 OR MIT", False, [ConflictKind.release_share_alike]),
        (["ODbL-1.0"], "ODbL-1.0", True, []),
        (["CC-BY-NC-4.0"], "CC-BY-NC-4.0", False, []),
        (["CC-BY-NC-4.0"], "CC-BY-NC-SA-4.0", False, []),
        (["CC-BY-NC-4.0"], "CC-BY-NC-4.0", True, [ConflictKind.release_commercial]),
        (["CC-BY-NC-4.0"], "CC-BY-4.0", False, [ConflictKind.release_commercial]),
        (["CC-BY-NC-4.0"], "CC-BY-4.0", True, [ConflictKind.release_commercial] * 2),
        (["CC-BY-NC-4.0"], "CC-BY-NC-4.0 OR MIT", False, [ConflictKind.release_commercial]),
        (["CC-BY-4.0"], "CC-BY-NC-4.0", True, [ConflictKind.release_commercial]),
        (["CC-BY-NC-SA-4.0"], "CC-BY-NC-SA-4.0", False, []),
        (["CC-BY-NC-SA-4.0"], "CC-BY-NC-SA-4.0", True, [ConflictKind.release_commercial]),
        (["LicenseRef-acme", "MIT"], "LicenseRef-acme", True, []),
        (["LicenseRef-acme"], "MIT", True, [ConflictKind.release_proprietary]),
        (["LicenseRef-acme"], "LicenseRef-acme OR MIT", True, [ConflictKind.release_proprietary]),
        (["CC-BY-ND-4.0"], "CC-BY-ND-4.0", False, [ConflictKind.no_derivatives]),
        (["CC-BY-SA-4.0", "ODbL-1.0"], "ODbL-1.0", False, [ConflictKind.share_alike_mismatch]),
    ],
)
def test_releases(inputs_: list[str], requested: str, commercial: bool, expected: list[ConflictKind]) -> None:
    found = [(f"org{i}/data", spdx) for i, spdx in enumerate(inputs_)]
    assert kinds(check_release(found, requested, commercial)) == expected


def test_release_refuses_a_bad_requested_licence() -> None:
    with pytest.raises(LicenceError, match="unknown licence id 'WTFPL'"):
        check_release([("a/x", "MIT")], "WTFPL", commercial=False)


def test_the_docs_show_every_licence() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "governance.md").read_text()
    for spdx, terms in LICENCES.items():
        assert f"| `{spdx}` |" in docs and terms.legal_code in docs
