"""Predictions of a trained classifier on new raw rows (``consortium model predict``): the rows are checked
against the columns the model was trained on, prepared with the transform on its card (the statistics fitted
from the nodes' training rows: missing values, scaling, one-hot of categories, strings included), then run
through the model. Errors name the column (and row) at fault."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from consortium.codec import decode_tensors
from consortium.fl import categories, networks, preprocessing
from consortium.fl.core import FLError, Params, parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.model_files import CARD_FILE, WEIGHTS_FILE
from consortium.preprocessing_wire import FittedPreprocessing


class PredictError(FLError):
    """New rows that do not fit the model; the message names the column (and row)."""


@dataclass(frozen=True)
class Model:
    """A downloaded (or simulated) model: its card and weights."""

    card: dict[str, Any]
    params: Params

    @classmethod
    def load(cls, directory: Path) -> Model:
        """The model in ``directory`` (``model_card.json`` and ``model.safetensors``, as ``model download``
        and ``sim run --out`` write them)."""
        card_path, weights_path = Path(directory) / CARD_FILE, Path(directory) / WEIGHTS_FILE
        missing = [p.name for p in (card_path, weights_path) if not p.is_file()]
        if missing:
            raise PredictError(f"{directory}: no {' or '.join(missing)} here; give the directory "
                               "`consortium model download` or `sim run --out` wrote")
        try:
            return cls(json.loads(card_path.read_text()), decode_tensors(weights_path.read_bytes()))
        except (ValueError, OSError) as exc:
            raise PredictError(f"{directory}: cannot read the model: {exc}") from exc

    @property
    def fitted(self) -> FittedPreprocessing | None:
        raw = self.card.get("preprocessing")
        return FittedPreprocessing.model_validate(raw) if raw else None


def _classifier(card: dict[str, Any]) -> Any:
    spec = card.get("algorithm") or {}
    if spec.get("name") != "classifier":
        raise PredictError(f"model predict runs classifiers; this model's algorithm is {spec.get('name')!r}")
    hp = parse_hyperparams(get_algorithm("classifier"), spec.get("hyperparameters") or {})
    if hp.conv is not None:
        raise PredictError("model predict takes table rows; this classifier has convolutions (images)")
    return hp


def features(model: Model, frame: pd.DataFrame, ignore: Sequence[str] = (), allow_unseen: bool = False
             ) -> torch.Tensor:
    """The raw feature matrix of ``frame`` (float64, NaN = missing) in the order the model was trained on;
    PredictError naming missing, extra or non-numeric columns, or categories the model never saw."""
    hp = _classifier(model.card)
    fitted = model.fitted
    unknown_ignored = [c for c in ignore if c not in frame.columns]
    if unknown_ignored:
        raise PredictError(f"--ignore: column(s) {', '.join(unknown_ignored)} are not in the rows")
    given = [str(c) for c in frame.columns if c not in set(ignore)]
    if fitted is not None:
        names = list(fitted.feature_names)
        missing = [n for n in names if n not in given]
        extra = [n for n in given if n not in names]
        problems = ([f"column(s) {_quoted(missing)} missing"] if missing else []) + (
            [f"column(s) {_quoted(extra)} not used by the model (drop them or pass --ignore)"] if extra else [])
        if problems:
            raise PredictError(f"rows: {'; '.join(problems)}; the model takes {len(names)} columns: "
                               f"{_quoted(names[:20])}{' ...' if len(names) > 20 else ''}")
    else:
        names = given
        if len(names) != hp.layers[0]:
            raise PredictError(f"rows: {len(names)} feature columns ({_quoted(names[:20])}), the model takes "
                               f"{hp.layers[0]} (its card names no columns: give them in training order)")
    one_hot = {c.name: c for c in (fitted.one_hot if fitted is not None else [])}
    columns = [_column(frame[name], name, one_hot.get(name), allow_unseen) for name in names]
    return torch.from_numpy(np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0)))


def _column(values: pd.Series, name: str, encoding: Any, allow_unseen: bool) -> np.ndarray:
    """One column as float64: numbers as they are, a categorical column's strings as their codes."""
    cells = values.tolist()
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) or v == "" for v in cells]
    if encoding is not None and encoding.labels is not None:
        codes = np.array([np.nan if m else categories.code_of(str(v)) for v, m in zip(cells, missing, strict=True)])
        known = dict(zip(encoding.categories, encoding.labels, strict=True))
    else:
        try:
            codes = pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            row = next(i for i, v in enumerate(cells) if not _number(v))
            raise PredictError(f"rows: column '{name}' is not numeric (e.g. {cells[row]!r} in row {row + 1})"
                               + ("; the model one-hot encodes it from number codes" if encoding else ""))
        known = {c: f"{c:g}" for c in encoding.categories} if encoding is not None else None
    if known is not None and not allow_unseen:
        unseen = sorted({str(cells[i]) for i, c in enumerate(codes) if not np.isnan(c) and c not in known})
        if unseen:
            raise PredictError(f"rows: column '{name}' has categories the model never saw in training: "
                               f"{_quoted(unseen[:10])} (known: {_quoted(list(known.values())[:20])}); pass "
                               "--allow-unseen to encode them as all zeros")
    return codes


def _number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def predict(model: Model, frame: pd.DataFrame, ignore: Sequence[str] = (), allow_unseen: bool = False
            ) -> pd.DataFrame:
    """One row per input row: ``prediction`` (the class) and ``probability_<class>`` for each class."""
    x = features(model, frame, ignore, allow_unseen)
    fitted = model.fitted
    if fitted is not None:
        try:
            x = preprocessing.transform(fitted, x)
        except FLError as exc:
            raise PredictError(f"rows: {exc}") from exc
    elif bool(torch.isnan(x).any()):
        column = int(torch.isnan(x).any(dim=0).nonzero()[0])
        row = int(torch.isnan(x[:, column]).nonzero()[0])
        raise PredictError(f"rows: column '{frame.columns[column]}' has a missing value in row {row + 1} and the "
                           "model imputes none")
    hp = _classifier(model.card)
    if x.shape[1] != hp.layers[0]:
        raise PredictError(f"the prepared rows have {x.shape[1]} features, the model takes {hp.layers[0]}")
    with torch.no_grad():
        logits = networks.forward(hp.network, hp.activation, model.params, x.to(torch.float32))
    probabilities = torch.softmax(logits.to(torch.float64), dim=1).numpy()
    out = pd.DataFrame({"prediction": probabilities.argmax(axis=1)})
    for k in range(probabilities.shape[1]):
        out[f"probability_{k}"] = probabilities[:, k]
    return out
