"""The licence checks the hub makes (the rules are :mod:`consortium.governance.licences`): a data source's
licence when it is registered, a project's mix of licences when it is proposed, a model's licence when its
release is proposed. Each refusal is a BadRequest (422) naming the field, and, for a conflict, the data
sources and the clauses at fault (also sent as ``conflicts``, machine-readable)."""

from __future__ import annotations

from consortium.governance.licences import Conflict, LicenceError, check_mix, check_release, normalise
from consortium.hub.db.models import Dataset
from consortium.hub.services.errors import BadRequest


def normalised(field: str, expr: str) -> str:
    """``expr`` in its canonical SPDX spelling; BadRequest naming ``field`` and the unknown id or the bad
    syntax."""
    try:
        return normalise(expr)
    except LicenceError as exc:
        raise BadRequest(f"{field}: {exc}") from None


def inputs(sources: list[Dataset]) -> list[tuple[str, str]]:
    """The (``org/name``, licence) pairs of data sources, as the licence rules take them."""
    return [(f"{s.org.name}/{s.name}", s.license) for s in sources]


def _refusal(field: str, what: str, conflicts: list[Conflict]) -> BadRequest:
    told = "; ".join(f"[{c.kind.value}] {', '.join(c.sources) or 'the requested licence'}: {c.message}"
                     for c in conflicts)
    return BadRequest(f"{field}: {what}: {told}", conflicts=[
        {"kind": c.kind.value, "sources": list(c.sources), "licences": list(c.licences), "message": c.message}
        for c in conflicts])


def check_sources_mix(field: str, sources: list[Dataset]) -> None:
    """BadRequest when one model may not be trained on ``sources`` (their licences conflict)."""
    try:
        conflicts = check_mix(inputs(sources))
    except LicenceError as exc:
        raise BadRequest(f"{field}: {exc}") from None
    if conflicts:
        raise _refusal(field, "the licences of these data sources cannot be mixed in one model", conflicts)


def check_model_release(sources: list[Dataset], licence: str, commercial: bool) -> None:
    """BadRequest when a model trained on ``sources`` may not be released under ``licence`` (for commercial
    use when ``commercial``)."""
    try:
        conflicts = check_release(inputs(sources), licence, commercial)
    except LicenceError as exc:
        raise BadRequest(f"licence: {exc}") from None
    if conflicts:
        raise _refusal("licence", f"the model cannot be released under {licence!r}", conflicts)
