"""Data the simulator can split across clients: scikit-learn's bundled datasets, generated images, local files.

Every source gives a seeded train/test split as tensors. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from consortium.fl.core import FLError, LocalData


@dataclass(frozen=True)
class SimDataset:
    """A dataset for simulation: training rows to partition across clients and a held-out test set."""

    name: str
    train: LocalData
    test: LocalData
    license: str
    feature_names: tuple[str, ...] = ()
    """Names of the feature matrix's columns (``x0``, ... when the source has none)."""
    labels: dict[int, dict[float, str]] = field(default_factory=dict)
    """Per feature column of strings (a file's categories): each code's text (:mod:`consortium.fl.categories`)."""

    @property
    def num_features(self) -> int:
        return int(self.train.x[0].numel())


def _sklearn(name: str, scale: str, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Seeded stratified split; ``scale`` 'raw' leaves the features as the source has them."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    x = x.astype(np.float32)
    if scale == "digits":
        x = x / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, y.astype(np.int64), test_size=test_fraction, random_state=seed, stratify=y
    )
    if scale == "standardise":
        mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return x_train.astype(np.float32), x_test.astype(np.float32), y_train, y_test


# name -> (how features are scaled, licence of the data as SPDX id)
_SKLEARN = {
    "digits": ("digits", "CC-BY-4.0"),
    "iris": ("standardise", "CC-BY-4.0"),
    "wine": ("standardise", "CC-BY-4.0"),
    "breast_cancer": ("standardise", "CC-BY-4.0"),
}


def synthetic_images(samples: int, shape: tuple[int, ...], classes: int, seed: int) -> LocalData:
    """Learnable synthetic images: each class is a fixed random pattern plus per-sample Gaussian noise."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn((classes, *shape), generator=generator)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    noise = torch.randn((samples, *shape), generator=generator)
    return LocalData((patterns[labels] + 2.0 * noise).to(torch.float32), labels)


def builtin_names() -> list[str]:
    return sorted(_SKLEARN) + ["synthetic-images", "file:PATH"]


def _sklearn_names(name: str) -> tuple[str, ...]:
    from sklearn import datasets

    names = getattr(datasets, f"load_{name}")().feature_names
    return tuple(str(n) for n in names) if name != "digits" else tuple(f"x{i}" for i in range(len(names)))


def load_dataset(
    source: str, target: str | None = None, test_fraction: float = 0.2, seed: int = 0, samples: int = 50_000,
    raw: bool = False, categorical: Sequence[str] = (),
) -> SimDataset:
    """The dataset named by ``source``: a bundled one, ``synthetic-images`` (3x32x32, 10 classes) or ``file:PATH``.

    ``raw``: features as the source has them (a spec with ``preprocessing`` prepares them itself, with the
    federated statistics; otherwise the bundled tables come standardised, digits scaled to [0, 1]); a file's
    missing values are kept as NaN for the spec's imputation."""
    if not 0.0 < test_fraction < 1.0:
        raise FLError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if source in _SKLEARN:
        scale, license = _SKLEARN[source]
        x_train, x_test, y_train, y_test = _sklearn(source, "raw" if raw else scale, test_fraction, seed)
        return SimDataset(
            source,
            LocalData(torch.from_numpy(x_train), torch.from_numpy(y_train)),
            LocalData(torch.from_numpy(x_test), torch.from_numpy(y_test)),
            license,
            _sklearn_names(source),
        )
    if source == "synthetic-images":
        data = synthetic_images(samples, (3, 32, 32), 10, seed)
        return _split(source, data, test_fraction, seed, "CC0-1.0")
    if source.startswith("file:"):
        return _from_file(Path(source.removeprefix("file:")), target, test_fraction, seed, raw, categorical)
    raise FLError(f"unknown dataset {source!r}; known: {', '.join(builtin_names())}")


def _split(name: str, data: LocalData, test_fraction: float, seed: int, license: str,
           names: tuple[str, ...] = (), labels: dict[int, dict[float, str]] | None = None) -> SimDataset:
    from consortium.fl.data import train_validation_split

    train_idx, test_idx = train_validation_split(len(data), test_fraction, seed)
    pick = lambda idx: LocalData(
        data.x[torch.from_numpy(idx)], None if data.y is None else data.y[torch.from_numpy(idx)]
    )
    return SimDataset(name, pick(train_idx), pick(test_idx), license, names, labels or {})


def _from_file(path: Path, target: str | None, test_fraction: float, seed: int, raw: bool,
               categorical: Sequence[str] = ()) -> SimDataset:
    from consortium.tables import DatasetError, feature_names, load_table

    try:
        loaded = load_table(path, target, categorical=list(categorical) or None)
        data = loaded.to_local_data(allow_missing=raw)
    except (DatasetError, OSError) as exc:
        raise FLError(f"dataset file:{path}: {exc}") from exc
    names = tuple(feature_names(loaded.schema))
    labels = {names.index(column): texts for column, texts in loaded.category_labels().items()}
    return _split(path.name, data, test_fraction, seed, "NOASSERTION", names, labels)
