"""Example data for a first consortium: CSV shares of a bundled dataset, one per org, cut exactly as the
simulator cuts the same dataset across the same number of clients (so ``consortium sim run`` of a spec whose
``simulation`` names these settings trains on the same rows), plus the held-out test split with and without
its label column. Raw columns: the project's ``preprocessing`` prepares them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from consortium.fl.core import FLError
from consortium.fl.core import LocalData
from consortium.sim.datasets import load_dataset
from consortium.sim.partition import partition


def _frame(data: LocalData, names: tuple[str, ...], target: str | None) -> pd.DataFrame:
    frame = pd.DataFrame(data.x.reshape(len(data), -1).numpy(), columns=list(names))
    if target is not None and data.y is not None:
        frame[target] = data.y.numpy()
    return frame


def write_csv_shares(dataset: str, orgs: int, out: Path, *, target: str = "label",
                     partition_kind: str = "dirichlet:1.0", partition_seed: int = 42, test_fraction: float = 0.2,
                     split_seed: int = 0) -> dict[str, Path]:
    """Write ``share-1.csv`` ... ``share-N.csv`` (each org's training rows), ``test.csv`` (the held-out rows
    with ``target``) and ``new.csv`` (the same rows without it) into ``out``; FLError for a dataset without
    column names or labels, or a partition that leaves an org without rows."""
    if orgs < 1:
        raise FLError(f"--orgs must be at least 1, got {orgs}")
    data = load_dataset(dataset, test_fraction=test_fraction, seed=split_seed, raw=True)
    if not data.feature_names or data.train.y is None:
        raise FLError(f"{dataset} has no named columns and labels to write as CSV")
    if target in data.feature_names:
        raise FLError(f"--target {target!r} is already a feature column of {dataset}")
    parts = partition(partition_kind, data.train.y.numpy(), len(data.train), orgs, partition_seed)
    empty = [i + 1 for i, part in enumerate(parts) if len(part) == 0]
    if empty:
        raise FLError(f"partition {partition_kind} leaves share(s) {empty} without rows; try another seed")
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for i, part in enumerate(parts, start=1):
        index = torch.from_numpy(part)
        paths[f"share-{i}"] = out / f"share-{i}.csv"
        share = LocalData(data.train.x[index], data.train.y[index])
        _frame(share, data.feature_names, target).to_csv(paths[f"share-{i}"], index=False)
    paths["test"] = out / "test.csv"
    _frame(data.test, data.feature_names, target).to_csv(paths["test"], index=False)
    paths["new"] = out / "new.csv"
    _frame(data.test, data.feature_names, None).to_csv(paths["new"], index=False)
    return paths
