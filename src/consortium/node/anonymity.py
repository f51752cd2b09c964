"""Measuring a table's anonymity over its quasi-identifiers: k-anonymity, distinct l-diversity and t-closeness.

- *k-anonymity*: every combination of quasi-identifier values (an equivalence class) is shared by at least k
  rows.
- *l-diversity* (distinct): every class holds at least l distinct values of each sensitive column.
- *t-closeness* (Li, Li and Venkatasubramanian, 2007): in every class, the distribution of each sensitive
  column is within Earth mover's distance t of its distribution in the whole table. Numbers (an ordered
  domain) use the ordered distance: with the table's m distinct values sorted, ``EMD = sum_i |sum_{j<=i}
  (p_j - q_j)| / (m - 1)``; categories use the equal distance, where EMD is the total variation
  ``sum_i |p_i - q_i| / 2``. Both lie in [0, 1]; t is the largest over classes and sensitive columns.

The measurement is this project's (``pycanon`` pins older numpy, pandas, scipy and typer than it uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class AnonymityError(ValueError):
    """A declaration that does not fit the table, or a table that fails the required k, l or t."""


@dataclass(frozen=True)
class Measure:
    k: int
    l_diversity: int
    classes: int
    at_fault: list[str] = field(default_factory=list)
    """Columns at fault: quasi-identifiers that alone already leave a class smaller than the k asked (all of
    them when only their combination does), then sensitive columns below the l or above the t asked."""
    t_closeness: float = 0.0


def check_columns(frame: pd.DataFrame, names: Sequence[str], role: str) -> None:
    """AnonymityError naming the declared ``role`` columns that are not in ``frame``."""
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise AnonymityError(f"{role} {missing} not in the table (its columns: {list(frame.columns)})")


def is_numeric(values: pd.Series) -> bool:
    """A column of numbers (an ordered domain); booleans are categories."""
    return bool(pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))


class Closeness:
    """Each sensitive column's distribution over the whole table, to measure a class's EMD against."""

    def __init__(self, whole: pd.DataFrame, sensitive: Sequence[str]) -> None:
        self.ordered = {s: is_numeric(whole[s]) for s in sensitive}
        self.whole = {s: self._distribution(whole[s], None, self.ordered[s]) for s in sensitive}

    @staticmethod
    def _distribution(values: pd.Series, index: pd.Index | None, ordered: bool) -> pd.Series:
        counts = values.value_counts(normalize=True, dropna=False)
        if index is None:
            return counts.sort_index() if ordered else counts
        return counts.reindex(index, fill_value=0.0)

    def emd(self, part: pd.DataFrame, column: str) -> float:
        """Earth mover's distance between ``column`` in ``part`` and in the whole table."""
        whole = self.whole[column]
        found = self._distribution(part[column], whole.index, self.ordered[column])
        gap = found.to_numpy(dtype=float) - whole.to_numpy(dtype=float)
        if self.ordered[column]:
            m = len(gap)
            return 0.0 if m < 2 else float(np.abs(np.cumsum(gap)[:-1]).sum() / (m - 1))
        return float(np.abs(gap).sum() / 2)

    def worst(self, frame: pd.DataFrame, classes: np.ndarray, column: str) -> float:
        """The largest EMD of ``column`` over the classes ``classes`` labels the rows of ``frame`` with (one
        cross-tabulation, not a loop over classes)."""
        whole = self.whole[column]
        values = frame[column]
        if values.isna().any():  # NaN is a value of its own here; the loop keeps it
            return max(self.emd(part, column) for _, part in frame.groupby(classes, sort=False))
        table = pd.crosstab(classes, values.to_numpy(), normalize="index").reindex(columns=whole.index,
                                                                                    fill_value=0.0)
        gap = table.to_numpy(dtype=float) - whole.to_numpy(dtype=float)[None, :]
        if self.ordered[column]:
            m = gap.shape[1]
            return 0.0 if m < 2 else float((np.abs(np.cumsum(gap, axis=1)[:, :-1]).sum(axis=1) / (m - 1)).max())
        return float((np.abs(gap).sum(axis=1) / 2).max())

    def t(self, part: pd.DataFrame) -> float:
        """The largest EMD of ``part`` over the sensitive columns (0 without any)."""
        return max((self.emd(part, s) for s in self.whole), default=0.0)


def measure(frame: pd.DataFrame, quasi: Sequence[str], sensitive: Sequence[str], k_required: int = 1,
            l_required: int = 1, t_allowed: float | None = None) -> Measure:
    """k, distinct l, t and the number of classes of ``frame`` over ``quasi`` (an empty table: k = l = 0),
    naming the columns at fault for the k, l and t asked."""
    check_columns(frame, quasi, "quasi-identifiers")
    check_columns(frame, sensitive, "sensitive columns")
    if not quasi:
        raise AnonymityError("declare at least one quasi-identifier")
    if frame.empty:
        return Measure(0, 0, 0, list(quasi))
    keyed = frame.astype({q: str for q in quasi})
    groups = keyed.groupby(list(quasi), sort=False, dropna=False)
    k = int(groups.size().min())
    diversity = {s: int(groups[s].nunique(dropna=False).min()) for s in sensitive}
    closeness = Closeness(frame, sensitive)
    classes = groups.ngroup().to_numpy()
    worst = {s: closeness.worst(frame, classes, s) for s in sensitive}
    at_fault = [q for q in quasi if int(keyed[q].value_counts().min()) < k_required]
    if k < k_required and not at_fault:
        at_fault = list(quasi)
    at_fault += [s for s in sensitive if diversity[s] < l_required
                 or (t_allowed is not None and worst[s] > t_allowed)]
    return Measure(k, min(diversity.values(), default=k), int(groups.ngroups), at_fault,
                   round(max(worst.values(), default=0.0), 6))
