"""The anonymisation gate on the owner's node: measure k-anonymity and l-diversity of a table over its
declared quasi-identifiers and sensitive columns, and generalise it (Mondrian partitioning) until both hold.

- *k-anonymity*: every combination of quasi-identifier values (an equivalence class) is shared by at least k
  rows; *l-diversity* (distinct): every class holds at least l distinct values of each sensitive column.
- Mondrian (LeFevre et al., 2006), strict multidimensional: a partition is split on the quasi-identifier
  with the widest normalised span (numbers at the median, categories by halving their sorted values) while
  both halves keep k rows and l distinct sensitive values; each final partition's quasi-identifiers are
  generalised to its span (``lo-hi`` for numbers, ``a|b`` for categories). Direct identifiers are dropped; a
  table that fails as a whole is suppressed entirely.
- Information loss: the share of suppressed rows and the normalised certainty penalty (NCP) per
  quasi-identifier, the mean over rows of the generalised span over the column's whole span (0 nothing
  generalised, 1 everything merged).

The measurement is written here (``pycanon`` pins older numpy, pandas and typer than this project uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

DEFAULT_K = 5
DEFAULT_L = 2


class AnonymityError(ValueError):
    """A declaration that does not fit the table, or a table that fails the required k and l."""


@dataclass(frozen=True)
class Measure:
    k: int
    l_diversity: int
    classes: int
    at_fault: list[str] = field(default_factory=list)
    """Quasi-identifiers that alone already leave a class smaller than the k asked (all of them when only
    their combination does)."""


@dataclass(frozen=True)
class Report:
    k: int
    l_diversity: int
    rows_in: int
    rows_out: int
    suppressed_share: float
    dropped: list[str]
    ncp: dict[str, float]


def _check_columns(frame: pd.DataFrame, names: Sequence[str], role: str) -> None:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise AnonymityError(f"{role} {missing} not in the table (its columns: {list(frame.columns)})")


def measure(frame: pd.DataFrame, quasi: Sequence[str], sensitive: Sequence[str],
            k_required: int = 1) -> Measure:
    """k, distinct l and the number of classes of ``frame`` over ``quasi`` (an empty table: k = l = 0)."""
    _check_columns(frame, quasi, "quasi-identifiers")
    _check_columns(frame, sensitive, "sensitive columns")
    if not quasi:
        raise AnonymityError("declare at least one quasi-identifier")
    if frame.empty:
        return Measure(0, 0, 0, list(quasi))
    groups = frame.astype({q: str for q in quasi}).groupby(list(quasi), sort=False, dropna=False)
    k = int(groups.size().min())
    l_found = min((int(groups[s].nunique(dropna=False).min()) for s in sensitive), default=k)
    at_fault = [q for q in quasi if int(frame[q].astype(str).value_counts().min()) < k_required]
    if k < k_required and not at_fault:
        at_fault = list(quasi)
    return Measure(k, l_found, int(groups.ngroups), at_fault)


def _span(values: pd.Series, numeric: bool) -> float:
    if numeric:
        return float(values.max() - values.min())
    return float(values.nunique() - 1)


def _split(part: pd.DataFrame, column: str, numeric: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    if numeric:
        median = part[column].median()
        left = part[column] <= median
        if left.all():
            left = part[column] < median
    else:
        values = sorted(part[column].astype(str).unique())
        left = part[column].astype(str).isin(values[: len(values) // 2])
    return part[left], part[~left]


def _allowed(part: pd.DataFrame, sensitive: Sequence[str], k: int, l_required: int) -> bool:
    return len(part) >= k and all(part[s].nunique(dropna=False) >= l_required for s in sensitive)


def _partitions(frame: pd.DataFrame, quasi: Sequence[str], sensitive: Sequence[str], k: int,
                l_required: int, numeric: dict[str, bool]) -> list[pd.DataFrame]:
    whole = {q: _span(frame[q], numeric[q]) or 1.0 for q in quasi}
    done: list[pd.DataFrame] = []
    todo = [frame]
    while todo:
        part = todo.pop()
        order = sorted(quasi, key=lambda q: _span(part[q], numeric[q]) / whole[q], reverse=True)
        for column in order:
            if _span(part[column], numeric[column]) == 0:
                continue
            left, right = _split(part, column, numeric[column])
            if _allowed(left, sensitive, k, l_required) and _allowed(right, sensitive, k, l_required):
                todo += [left, right]
                break
        else:
            done.append(part)
    return done


def _generalised(part: pd.DataFrame, column: str, numeric: bool) -> str:
    if numeric:
        lo, hi = part[column].min(), part[column].max()
        return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
    return "|".join(sorted(part[column].astype(str).unique()))


def anonymise(frame: pd.DataFrame, identifiers: Sequence[str], quasi: Sequence[str], sensitive: Sequence[str],
              k: int = DEFAULT_K, l_required: int = DEFAULT_L) -> tuple[pd.DataFrame, Report]:
    """``frame`` without ``identifiers`` and with ``quasi`` generalised until k-anonymity and distinct
    l-diversity hold, and the report of what it cost."""
    if k < 1 or l_required < 1:
        raise AnonymityError("k and l are at least 1")
    _check_columns(frame, identifiers, "direct identifiers")
    measure(frame, quasi, sensitive)
    body = frame.drop(columns=list(identifiers)).reset_index(drop=True)
    numeric = {q: bool(pd.api.types.is_numeric_dtype(body[q]) and not pd.api.types.is_bool_dtype(body[q]))
               for q in quasi}
    whole = {q: _span(body[q], numeric[q]) for q in quasi}
    if not _allowed(body, sensitive, k, l_required):
        empty = body.iloc[0:0].astype({q: str for q in quasi})
        return empty, Report(0, 0, len(body), 0, 1.0 if len(body) else 0.0, list(identifiers),
                             {q: 1.0 for q in quasi})
    out = body.astype({q: object for q in quasi})
    penalty = {q: 0.0 for q in quasi}
    for part in _partitions(body, quasi, sensitive, k, l_required, numeric):
        for q in quasi:
            out.loc[part.index, q] = _generalised(part, q, numeric[q])
            if whole[q] > 0:
                penalty[q] += len(part) * _span(part[q], numeric[q]) / whole[q]
    out = out.astype({q: str for q in quasi})
    found = measure(out, quasi, sensitive)
    ncp = {q: round(penalty[q] / len(body), 4) for q in quasi}
    return out, Report(found.k, found.l_diversity, len(body), len(out), 0.0, list(identifiers), ncp)


def require(frame: pd.DataFrame, quasi: Sequence[str], sensitive: Sequence[str], k: int, l_required: int,
            identifiers: Sequence[str] = ()) -> Measure:
    """The gate before a publish: AnonymityError naming the measured k and l and the columns at fault when
    the table is below the required k or l, or still holds a declared direct identifier."""
    present = [c for c in identifiers if c in frame.columns]
    if present:
        raise AnonymityError(f"direct identifiers {present} are still in the table; run "
                             "'consortium dataset anonymise' first")
    found = measure(frame, quasi, sensitive, k)
    if found.k < k or found.l_diversity < l_required:
        raise AnonymityError(f"the table is {found.k}-anonymous and {found.l_diversity}-diverse over "
                             f"{list(quasi)}; the policy needs k >= {k} and l >= {l_required}; at fault: "
                             f"{found.at_fault}. Run 'consortium dataset anonymise' and publish its output")
    return found

