"""Federated preprocessing, pure: per-node column statistics of the training rows, their combination, the
transform fitted from the combined statistics, and the transform applied to rows.

The simulator (per client), the node (per data source) and the hub (combining) use these same functions, so
a spec's ``preprocessing`` gives the same transform in simulation and in a real run. Combining is exact for
counts, minima, maxima and category counts, and a float64 sum for sums and sums of squares: the combined
statistics of any split of the rows equal the statistics of all of them (up to float rounding)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from consortium.fl import categories as string_categories
from consortium.fl.core import FLError, LocalData
from consortium.preprocessing_wire import FittedPreprocessing, OneHotColumn, PreprocessingSpec

STAT_KEYS = ("rows", "count", "total", "squares", "low", "high")


@dataclass(frozen=True)
class Layout:
    """Which input features are scaled and which are counted (categorical, or every one when numeric ones
    are imputed by their most frequent value)."""

    feature_names: tuple[str, ...]
    numeric: tuple[int, ...]
    scaled: tuple[int, ...]
    categorical: tuple[int, ...]
    counted: tuple[int, ...]


def layout(spec: PreprocessingSpec, feature_names: Sequence[str]) -> Layout:
    """The spec's columns resolved against the data's feature names (FLError naming an unknown one)."""
    index = {name: i for i, name in enumerate(feature_names)}
    unknown = [n for n in [*spec.categorical, *(spec.columns or ())] if n not in index]
    if unknown:
        shown = ", ".join(list(feature_names)[:20])
        raise FLError(f"preprocessing: unknown feature column(s) {unknown}; the data has: {shown}")
    categorical = tuple(sorted(index[n] for n in spec.categorical))
    numeric = tuple(i for i in range(len(feature_names)) if i not in set(categorical))
    if spec.scale == "none":
        scaled: tuple[int, ...] = ()
    else:
        scaled = tuple(sorted(index[n] for n in spec.columns)) if spec.columns is not None else numeric
    counted = categorical if spec.impute != "most_frequent" else tuple(range(len(feature_names)))
    return Layout(tuple(feature_names), numeric, scaled, categorical, counted)


@dataclass(frozen=True)
class ColumnStats:
    """Statistics of some rows: per feature the non-missing count, sum, sum of squares, minimum and maximum
    (0 where a feature has no value), and for counted features how often each value occurs (and, for a column
    of strings, each code's text: ``labels``)."""

    rows: int
    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    low: np.ndarray
    high: np.ndarray
    values: dict[int, dict[float, int]]
    labels: dict[int, dict[float, str]] = field(default_factory=dict)


Labels = Mapping[int, Mapping[float, str]]
"""Per feature index of a column of strings: each category code's text (:mod:`consortium.fl.categories`)."""


def column_stats(x: torch.Tensor | np.ndarray, plan: Layout, max_categories: int, labels: Labels | None = None
                 ) -> ColumnStats:
    """The statistics of the rows ``x`` ([rows, features], NaN = missing; a column of strings holds codes
    whose text ``labels`` gives). FLError when a counted feature has more than ``max_categories`` distinct
    values."""
    data = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(plan.feature_names):
        raise FLError(f"preprocessing: rows have shape {tuple(data.shape)}, expected [rows, "
                      f"{len(plan.feature_names)}]")
    present = ~np.isnan(data)
    filled = np.where(present, data, 0.0)
    count = present.sum(axis=0).astype(np.float64)
    low = np.where(count > 0, np.where(present, data, np.inf).min(axis=0, initial=np.inf), 0.0)
    high = np.where(count > 0, np.where(present, data, -np.inf).max(axis=0, initial=-np.inf), 0.0)
    values = {}
    for column in plan.counted:
        seen, counts = np.unique(data[present[:, column], column], return_counts=True)
        if len(seen) > max_categories:
            raise FLError(f"preprocessing: feature '{plan.feature_names[column]}' has {len(seen)} distinct "
                          f"values here, more than max_categories={max_categories}")
        values[column] = {float(v): int(c) for v, c in zip(seen, counts, strict=True)}
    texts = {c: {v: labels[c][v] for v in values[c]} for c in plan.counted if labels and c in labels}
    return ColumnStats(int(data.shape[0]), count, filled.sum(axis=0), (filled * filled).sum(axis=0), low, high,
                       values, texts)


def combine(parts: Sequence[ColumnStats]) -> ColumnStats:
    """The statistics of all the parts' rows together."""
    if not parts:
        raise FLError("preprocessing: no statistics to combine")
    count = np.sum([p.count for p in parts], axis=0)
    lows = np.stack([np.where(p.count > 0, p.low, np.inf) for p in parts])
    highs = np.stack([np.where(p.count > 0, p.high, -np.inf) for p in parts])
    values: dict[int, dict[float, int]] = {}
    for part in parts:
        for column, counts in part.values.items():
            merged = values.setdefault(column, {})
            for value, n in counts.items():
                merged[value] = merged.get(value, 0) + n
    labels = {column: string_categories.merge_labels([p.labels[column] for p in parts if column in p.labels],
                                                     f"preprocessing: feature column {column}")
              for column in sorted({c for p in parts for c in p.labels})}
    return ColumnStats(
        sum(p.rows for p in parts), count, np.sum([p.total for p in parts], axis=0),
        np.sum([p.squares for p in parts], axis=0),
        np.where(count > 0, lows.min(axis=0), 0.0), np.where(count > 0, highs.max(axis=0), 0.0),
        {c: dict(sorted(v.items())) for c, v in sorted(values.items())}, labels)


def fit(spec: PreprocessingSpec, plan: Layout, stats: ColumnStats) -> FittedPreprocessing:
    """The transform the combined ``stats`` give; FLError naming a feature it cannot handle."""
    names = plan.feature_names
    empty = [names[i] for i in range(len(names)) if stats.count[i] == 0]
    if empty:
        raise FLError(f"preprocessing: feature(s) {empty[:10]} have no value in any node's training rows")
    mean = stats.total / stats.count
    fill = None
    if spec.impute is not None:
        fill = [float(v) for v in mean]
        for column, counts in stats.values.items():
            fill[column] = max(counts.items(), key=lambda item: (item[1], -item[0]))[0]
    elif np.any(stats.count < stats.rows):
        missing = [names[i] for i in range(len(names)) if stats.count[i] < stats.rows]
        raise FLError(f"preprocessing: feature(s) {missing[:10]} have missing values; set preprocessing.impute")
    shift = np.zeros(len(names))
    scale = np.ones(len(names))
    scaled = list(plan.scaled)
    if spec.scale == "standardise":
        variance = np.maximum(stats.squares / stats.count - mean * mean, 0.0)
        std = np.sqrt(variance)
        shift[scaled] = mean[scaled]
        scale[scaled] = np.where(std[scaled] > 1e-12 * np.maximum(1.0, np.abs(mean[scaled])), std[scaled], 1.0)
    elif spec.scale == "min-max":
        span = stats.high - stats.low
        shift[scaled] = stats.low[scaled]
        scale[scaled] = np.where(span[scaled] > 0, span[scaled], 1.0)
    one_hot = []
    for column in plan.categorical:
        categories = sorted(stats.values[column])
        if len(categories) > spec.max_categories:
            raise FLError(f"preprocessing: feature '{names[column]}' has {len(categories)} categories across the "
                          f"nodes, more than max_categories={spec.max_categories}")
        texts = stats.labels.get(column)
        if texts is not None and any(c not in texts for c in categories):
            raise FLError(f"preprocessing: feature '{names[column]}' mixes strings and numbers across the nodes")
        one_hot.append(OneHotColumn(column=column, name=names[column], categories=categories,
                                    labels=None if texts is None else [texts[c] for c in categories]))
    numeric = list(plan.numeric)
    return FittedPreprocessing(
        input_features=len(names), feature_names=list(names), fill=fill, numeric=numeric,
        shift=[float(shift[i]) for i in numeric], scale=[float(scale[i]) for i in numeric], one_hot=one_hot,
        rows=stats.rows, spec=spec)


def transform(fitted: FittedPreprocessing, x: torch.Tensor) -> torch.Tensor:
    """``x`` ([rows, input_features], NaN = missing) transformed: float32 [rows, output_features]."""
    if x.ndim != 2 or x.shape[1] != fitted.input_features:
        raise FLError(f"preprocessing: rows have shape {tuple(x.shape)}, the transform takes "
                      f"[rows, {fitted.input_features}]")
    x = x.to(torch.float64)
    missing = torch.isnan(x)
    if fitted.fill is not None:
        x = torch.where(missing, torch.tensor(fitted.fill, dtype=torch.float64), x)
    elif bool(missing.any()):
        column = int(missing.any(dim=0).nonzero()[0])
        raise FLError(f"preprocessing: feature '{fitted.feature_names[column]}' has missing values and the "
                      "transform imputes none")
    parts = [(x[:, fitted.numeric] - torch.tensor(fitted.shift, dtype=torch.float64))
             / torch.tensor(fitted.scale, dtype=torch.float64)]
    for column in fitted.one_hot:
        parts.append((x[:, column.column:column.column + 1]
                      == torch.tensor(column.categories, dtype=torch.float64)).to(torch.float64))
    return torch.cat(parts, dim=1).to(torch.float32)


def transform_data(fitted: FittedPreprocessing | None, data: LocalData) -> LocalData:
    """``data`` with its features transformed (as is without a transform)."""
    return data if fitted is None else LocalData(transform(fitted, data.x), data.y)


def to_tensors(stats: ColumnStats) -> dict[str, torch.Tensor]:
    """The statistics as float64 tensors (what a node uploads): ``count``... and ``values.<column>`` as a
    [2, k] tensor of values and their counts."""
    tensors = {
        "rows": torch.tensor([float(stats.rows)], dtype=torch.float64),
        **{key: torch.from_numpy(np.asarray(getattr(stats, key), dtype=np.float64).copy())
           for key in STAT_KEYS[1:]},
    }
    for column, counts in stats.values.items():
        tensors[f"values.{column}"] = torch.tensor([list(counts), list(counts.values())], dtype=torch.float64)
        if not counts:
            tensors[f"values.{column}"] = torch.zeros((2, 0), dtype=torch.float64)
    for column, texts in stats.labels.items():
        encoded = json.dumps([texts[v] for v in stats.values[column]]).encode("utf-8")
        tensors[f"labels.{column}"] = torch.tensor(list(encoded), dtype=torch.uint8)
    return tensors


def from_tensors(tensors: dict[str, torch.Tensor], plan: Layout, rows_limit: int, max_categories: int
                 ) -> ColumnStats:
    """Uploaded statistics checked against the layout and the source's registered rows; FLError naming
    what is wrong, with the feature it is about (a node's answer is untrusted)."""
    width = len(plan.feature_names)
    named = lambda key: key if "." not in key else f"{key} (feature '{_feature(plan, key)}')"
    expected = {*STAT_KEYS, *(f"values.{c}" for c in plan.counted)}
    texts = {k: tensors[k] for k in tensors if k.startswith("labels.")}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected - set(texts))
    if missing or extra:
        raise FLError("statistics do not match the project's columns: "
                      + "; ".join(([f"missing {', '.join(map(named, missing))}"] if missing else [])
                                  + ([f"unexpected {', '.join(extra[:10])}"] if extra else []))
                      + f" (features: {', '.join(plan.feature_names[:20])})")
    arrays = {k: tensors[k].detach().to(torch.float64).numpy() for k in tensors if k not in texts}
    if any(not np.all(np.isfinite(a)) for a in arrays.values()):
        raise FLError("statistics must be finite")
    if arrays["rows"].shape != (1,):
        raise FLError("statistics: rows must be one number")
    rows = arrays["rows"][0]
    if rows != int(rows) or not 1 <= rows <= rows_limit:
        raise FLError(f"statistics: rows must be a whole number in [1, {rows_limit}], got {rows}")
    for key in STAT_KEYS[1:]:
        if arrays[key].shape != (width,):
            raise FLError(f"statistics: {key} must have one value per feature ({width}: "
                          f"{', '.join(plan.feature_names[:5])}...), got shape {list(arrays[key].shape)}")
    count = arrays["count"]
    if np.any(count < 0) or np.any(count > rows) or np.any(count != np.round(count)):
        raise FLError("statistics: counts must be whole numbers between 0 and rows")
    values = {}
    for column in plan.counted:
        key = f"values.{column}"
        table = arrays[key]
        if table.ndim != 2 or table.shape[0] != 2 or table.shape[1] > max_categories:
            raise FLError(f"statistics: {named(key)} must be [2, k] with k <= {max_categories}")
        seen, counts = table
        if (len(set(seen.tolist())) != len(seen) or np.any(counts < 1) or np.any(counts != np.round(counts))
                or counts.sum() != count[column]):
            raise FLError(f"statistics: {named(key)} must list distinct values with counts summing to count")
        values[column] = {float(v): int(n) for v, n in zip(seen, counts, strict=True)}
    labels = {int(k.split(".")[1]): _labels(named(k), t, list(values[int(k.split(".")[1])]))
              for k, t in texts.items() if k.split(".")[1].isdigit() and int(k.split(".")[1]) in values}
    if len(labels) != len(texts):
        raise FLError(f"statistics: {', '.join(sorted(texts))} must name counted feature columns")
    return ColumnStats(int(rows), count, arrays["total"], arrays["squares"], arrays["low"], arrays["high"], values,
                       labels)


def _feature(plan: Layout, key: str) -> str:
    index = key.split(".", 1)[1]
    return plan.feature_names[int(index)] if index.isdigit() and int(index) < len(plan.feature_names) else "?"


def _labels(key: str, tensor: torch.Tensor, codes: list[float]) -> dict[float, str]:
    """A column's category texts (UTF-8 JSON list in a uint8 tensor), each checked against its code."""
    if tensor.dtype != torch.uint8 or tensor.ndim != 1 or tensor.numel() > 2 + 1024 * max(1, len(codes)):
        raise FLError(f"statistics: {key} must be the UTF-8 bytes of a JSON list of category names")
    try:
        texts = json.loads(bytes(tensor.tolist()).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FLError(f"statistics: {key} is not a JSON list of category names: {exc}") from exc
    if (not isinstance(texts, list) or len(texts) != len(codes) or not all(isinstance(t, str) for t in texts)
            or any(string_categories.code_of(t) != c for t, c in zip(texts, codes, strict=True))):
        raise FLError(f"statistics: {key} must name each counted value, in order, by the text it is the code of")
    return dict(zip(codes, texts, strict=True))


def feature_names_of(columns: Sequence[tuple[str, int]]) -> list[str]:
    """Names of the feature matrix's columns from (column name, per-example width) in schema order: the
    name itself for a scalar column, ``name[i]`` for each element of an array column."""
    names: list[str] = []
    for name, width in columns:
        names += [name] if width == 1 else [f"{name}[{i}]" for i in range(width)]
    return names


def default_names(width: int) -> list[str]:
    """Names for features that have none (``x0``, ``x1``, ...)."""
    return [f"x{i}" for i in range(width)]


def markdown_lines(card: dict) -> list[str]:
    """The card's preprocessing as Markdown lines (none without it)."""
    fitted = card.get("preprocessing")
    if not fitted:
        return []
    spec = fitted["spec"]
    parts = [f"scale `{spec['scale']}` ({len(fitted['numeric'])} numeric features)"]
    if fitted["one_hot"]:
        parts.append("one-hot " + ", ".join(f"`{c['name']}` ({len(c['categories'])})" for c in fitted["one_hot"]))
    if spec["impute"]:
        parts.append(f"missing values imputed (`{spec['impute']}`)")
    return [f"- **Preprocessing** (statistics of {fitted['rows']} training rows across the nodes, applied at "
            f"inference too): " + "; ".join(parts)]
