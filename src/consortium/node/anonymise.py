"""The anonymisation gate on the owner's node: generalise a table (Mondrian partitioning, or the owner's
declared hierarchies) until k-anonymity, distinct l-diversity and t-closeness hold over its declared
quasi-identifiers and sensitive columns (measured by :mod:`consortium.node.anonymity`).

- Mondrian (LeFevre et al., 2006), strict multidimensional: a partition is split on the quasi-identifier
  with the widest normalised span while both halves keep k rows, l distinct values of each sensitive column
  and an Earth mover's distance of at most t to the whole table's sensitive distributions. Numbers split at
  the median and become ``lo-hi``; categories split by halving their sorted values and become ``a|b``.
- A quasi-identifier with a declared hierarchy (:mod:`consortium.node.hierarchies`) is generalised along it
  per partition: a partition shows the lowest level at which all its values agree, and splits by the groups
  one level below (balanced by rows); its span is that level over the hierarchy's depth.
- Direct identifiers are dropped; a table that fails as a whole is suppressed entirely.
- Information loss: the share of suppressed rows and the normalised certainty penalty (NCP) per
  quasi-identifier, the mean over rows of the generalised span over the column's whole span (0 nothing
  generalised, 1 everything merged); :mod:`consortium.node.info_loss` adds a reference model's accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from consortium.node.anonymity import AnonymityError, Closeness, Measure, check_columns, is_numeric, measure
from consortium.node.hierarchies import Hierarchy, check_values

__all__ = ["AnonymityError", "Measure", "Report", "anonymise", "measure", "require"]

DEFAULT_K = 5
DEFAULT_L = 2


@dataclass(frozen=True)
class Report:
    k: int
    l_diversity: int
    rows_in: int
    rows_out: int
    suppressed_share: float
    dropped: list[str]
    ncp: dict[str, float]
    t_closeness: float = 0.0
    hierarchies: dict[str, int] = field(default_factory=dict)
    """Per hierarchy column, the highest level any partition was generalised to."""
    reference: dict | None = None
    """The reference model's accuracy on the original and the anonymised table (when a target is named)."""


class _Quasi:
    """One quasi-identifier: how a partition's values spread, split and generalise."""

    def __init__(self, name: str, values: pd.Series, hierarchy: Hierarchy | None) -> None:
        self.name, self.hierarchy = name, hierarchy
        self.numeric = hierarchy is None and is_numeric(values)
        self.whole = 1.0
        self.whole = self.span(values) or 1.0

    def level(self, values: pd.Series) -> int:
        """The lowest hierarchy level at which all ``values`` agree."""
        assert self.hierarchy is not None
        distinct = list(values.unique())
        for level in range(self.hierarchy.depth + 1):
            if len({self.hierarchy.at(v, level) for v in distinct}) == 1:
                return level
        return self.hierarchy.depth

    def span(self, values: pd.Series) -> float:
        """The spread of ``values`` over the whole table's (0: one value)."""
        if self.hierarchy is not None:
            return self.level(values) / self.hierarchy.depth
        if self.numeric:
            return float(values.max() - values.min()) / self.whole
        return float(values.nunique() - 1) / self.whole

    def split(self, part: pd.DataFrame) -> pd.Series:
        """The rows of ``part`` that go left."""
        values = part[self.name]
        if self.hierarchy is not None:
            below = self.level(values) - 1
            keys = values.map(lambda v: self.hierarchy.at(v, below))  # type: ignore[union-attr]
            counts = keys.value_counts().sort_index()
            left, held = [], 0
            for key, count in counts.items():
                if held >= len(part) / 2:
                    break
                left.append(key)
                held += int(count)
            return keys.isin(left[: max(1, min(len(left), len(counts) - 1))])
        if self.numeric:
            median = values.median()
            left = values <= median
            return values < median if left.all() else left
        ordered = sorted(values.astype(str).unique())
        return values.astype(str).isin(ordered[: len(ordered) // 2])

    def generalised(self, values: pd.Series) -> str:
        if self.hierarchy is not None:
            return self.hierarchy.at(values.iloc[0], self.level(values))
        if self.numeric:
            lo, hi = values.min(), values.max()
            return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        return "|".join(sorted(values.astype(str).unique()))


@dataclass
class _Rule:
    sensitive: Sequence[str]
    k: int
    l_required: int
    t_allowed: float | None
    closeness: Closeness

    def allows(self, part: pd.DataFrame) -> bool:
        if len(part) < self.k or any(part[s].nunique(dropna=False) < self.l_required for s in self.sensitive):
            return False
        return self.t_allowed is None or self.closeness.t(part) <= self.t_allowed + 1e-12


def _partitions(frame: pd.DataFrame, quasi: list[_Quasi], rule: _Rule) -> list[pd.DataFrame]:
    done: list[pd.DataFrame] = []
    todo = [frame]
    while todo:
        part = todo.pop()
        spans = {q.name: q.span(part[q.name]) for q in quasi}
        for q in sorted(quasi, key=lambda q: spans[q.name], reverse=True):
            if spans[q.name] == 0:
                continue
            left = q.split(part)
            if left.all() or not left.any():
                continue
            if rule.allows(part[left]) and rule.allows(part[~left]):
                todo += [part[left], part[~left]]
                break
        else:
            done.append(part)
    return done


def anonymise(frame: pd.DataFrame, identifiers: Sequence[str], quasi: Sequence[str], sensitive: Sequence[str],
              k: int = DEFAULT_K, l_required: int = DEFAULT_L, t_allowed: float | None = None,
              hierarchies: Mapping[str, Hierarchy] | None = None) -> tuple[pd.DataFrame, Report]:
    """``frame`` without ``identifiers`` and with ``quasi`` generalised until k-anonymity, distinct
    l-diversity and (with ``t_allowed``) t-closeness hold, and the report of what it cost."""
    if k < 1 or l_required < 1:
        raise AnonymityError("k and l are at least 1")
    if t_allowed is not None and not 0 <= t_allowed <= 1:
        raise AnonymityError("t lies in [0, 1]")
    hierarchies = dict(hierarchies or {})
    check_columns(frame, identifiers, "direct identifiers")
    check_columns(frame, quasi, "quasi-identifiers")
    check_columns(frame, sensitive, "sensitive columns")
    if not quasi:
        raise AnonymityError("declare at least one quasi-identifier")
    stray = [c for c in hierarchies if c not in quasi]
    if stray:
        raise AnonymityError(f"hierarchies for {stray}, which are not declared quasi-identifiers {list(quasi)}")
    body = frame.drop(columns=list(identifiers)).reset_index(drop=True)
    for name, hierarchy in hierarchies.items():
        check_values(hierarchy, name, list(body[name].unique()))
    columns = [_Quasi(q, body[q], hierarchies.get(q)) for q in quasi]
    rule = _Rule(sensitive, k, l_required, t_allowed, Closeness(body, sensitive))
    if body.empty or not rule.allows(body):
        empty = body.iloc[0:0].astype({q: str for q in quasi})
        return empty, Report(0, 0, len(body), 0, 1.0 if len(body) else 0.0, list(identifiers),
                             {q: 1.0 for q in quasi}, 0.0, {h: 0 for h in hierarchies})
    out = body.astype({q: object for q in quasi})
    penalty = {q: 0.0 for q in quasi}
    levels = {h: 0 for h in hierarchies}
    for part in _partitions(body, columns, rule):
        for q in columns:
            out.loc[part.index, q.name] = q.generalised(part[q.name])
            penalty[q.name] += len(part) * q.span(part[q.name])
            if q.hierarchy is not None:
                levels[q.name] = max(levels[q.name], q.level(part[q.name]))
    out = out.astype({q: str for q in quasi})
    found = measure(out, quasi, sensitive)
    ncp = {q: round(penalty[q] / len(body), 4) for q in quasi}
    return out, Report(found.k, found.l_diversity, len(body), len(out), 0.0, list(identifiers), ncp,
                       found.t_closeness, levels)


def require(frame: pd.DataFrame, quasi: Sequence[str], sensitive: Sequence[str], k: int, l_required: int,
            identifiers: Sequence[str] = (), t_allowed: float | None = None) -> Measure:
    """The gate before a publish: AnonymityError naming the measured k, l and t and the columns at fault
    when the table is below the required k or l, above the t allowed, or still holds a declared direct
    identifier."""
    present = [c for c in identifiers if c in frame.columns]
    if present:
        raise AnonymityError(f"direct identifiers {present} are still in the table; run "
                             "'consortium dataset anonymise' first")
    found = measure(frame, quasi, sensitive, k, l_required, t_allowed)
    over_t = t_allowed is not None and found.t_closeness > t_allowed
    if found.k < k or found.l_diversity < l_required or over_t:
        t_part = f", t = {found.t_closeness:.3f}" if t_allowed is not None else ""
        t_need = f" and t <= {t_allowed:g}" if t_allowed is not None else ""
        raise AnonymityError(f"the table is {found.k}-anonymous and {found.l_diversity}-diverse{t_part} over "
                             f"{list(quasi)}; the policy needs k >= {k} and l >= {l_required}{t_need}; at fault: "
                             f"{found.at_fault}. Run 'consortium dataset anonymise' and publish its output")
    return found
