"""What a model card says about licences: the expression derived from the data and the obligations, as JSON
for the card and as Markdown lines. Pure; the hub's cards and the simulator's use it alike.

The card's ``obligations`` maps each obligation (``attribution``, ``share_alike``, ``non_commercial``,
``no_derivatives``, ``proprietary``) to the inputs imposing it: ``{"source", "licence", "clause"}``, the
clause being the licence table's reading. An input whose licence cannot be read (``NOASSERTION``, or an id
registered before licences were checked) is listed under ``unrecognised`` with why; the card's expression is
then ``NOASSERTION``, since nobody can say what the model may be licensed under.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from consortium.governance.licence_table import LICENCES, PROPRIETARY_CLAUSE
from consortium.governance.licences import NO_INPUTS, LicenceError, Obligations, Term, alternatives, derive

TITLES = {
    "attribution": "Attribution",
    "share_alike": "Share alike",
    "non_commercial": "Non-commercial",
    "no_derivatives": "No derivatives",
    "proprietary": "Proprietary terms",
}
"""The obligations, in the order a card lists them."""
UNRECOGNISED = "unrecognised"


def _clause(obligation: str, term: Term) -> str:
    if obligation == "proprietary":
        return PROPRIETARY_CLAUSE
    return getattr(LICENCES[term.base], obligation)


def obligations_json(found: Obligations) -> dict[str, list[dict[str, str]]]:
    """The card's form of ``found``: each obligation with its sources, licences and clauses."""
    return {name: [{"source": t.source, "licence": t.licence, "clause": _clause(name, t)}
                   for t in getattr(found, name)] for name in TITLES}


def card_terms(inputs: Iterable[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    """The card's licence expression and obligations for a model trained on ``inputs`` (source, SPDX
    expression): :func:`~consortium.governance.licences.derive` over the inputs whose licence can be read,
    the others listed under ``unrecognised`` (and the expression ``NOASSERTION``)."""
    readable: list[tuple[str, str]] = []
    unrecognised: list[dict[str, str]] = []
    for source, expr in sorted(set(inputs)):
        try:
            alternatives(expr)
        except LicenceError as exc:
            unrecognised.append({"source": source, "licence": expr, "why": str(exc)})
            continue
        readable.append((source, expr))
    derived = derive(readable)
    found: dict[str, Any] = obligations_json(derived.obligations)
    if unrecognised:
        found[UNRECOGNISED] = unrecognised
    return (NO_INPUTS if unrecognised else derived.spdx), found


def obligation_lines(obligations: dict[str, Any]) -> list[str]:
    """The card's obligations as a Markdown section."""
    lines = ["", "## Licence obligations", ""]
    for name, title in TITLES.items():
        lines += [f"- **{title}**: {e['source']} ({e['licence']}): {e['clause']}"
                  for e in obligations.get(name, [])]
    lines += [f"- **Licence not recognised**: {e['source']} (`{e['licence']}`): no terms derived; "
              "ask its owner" for e in obligations.get(UNRECOGNISED, [])]
    if len(lines) == 3:
        lines.append("None: the data's licences put no obligation on the model.")
    return lines
