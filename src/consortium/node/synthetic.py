"""Differentially private synthetic data on the owner's node: noisy two-way marginals along a chain of the
declared columns (Gaussian mechanism), sampled as a Markov chain.

Why not ``smartnoise-synth``: its releases pin ``opacus<0.15`` and ``pandas<3``, which would downgrade what
this project runs on; ``private-pgm`` (``mbi``) pulls in jax. This generator is small and its privacy
argument short:

- The owner declares each column's **domain** (a JSON file, public by declaration: ``{"age": {"min": 0,
  "max": 100, "bins": 20}, "sex": {"values": ["F", "M"]}}``); the chain follows the file's order. Numbers are
  cut into equal bins over [min, max] (values outside are clipped into the end bins); categories outside the
  declared values are refused. Nothing about the domain is read from the data.
- It measures the histogram of each consecutive pair of columns (one column alone: its histogram). Adding or
  removing one row changes each histogram in one cell by 1: L2 sensitivity 1. Each gets independent
  Gaussian noise of standard deviation ``z``; ``m`` such measurements are ``m`` Gaussian mechanisms, which
  the project's accountant (``dp_accounting``, PLD) composes, and ``z`` is the smallest noise multiplier
  whose ``m`` measurements spend at most the owner's epsilon at delta (:func:`noise_multiplier_for`).
- Everything after is post-processing: negative counts clipped to 0, the row count estimated from the
  first noisy histogram, the first column drawn from its noisy marginal and each next one from its noisy
  conditional on the one before (uniform where the noisy counts are all 0); numbers drawn uniformly within
  their bin.

The release is charged to the dataset's privacy budget as ``m`` Gaussian mechanisms of multiplier ``z``
(:class:`consortium.fl.privacy.budget.Charge`), on the node's own ledger and on the hub.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from consortium.fl.privacy.accountant import noise_multiplier_for
from consortium.open_data_wire import SyntheticRelease

GENERATOR = "consortium marginal chain 1 (Gaussian noisy two-way marginals)"


class SynthesisError(ValueError):
    """A domain that does not fit the table, or a privacy target that cannot be met."""


class NumericDomain(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    min: float
    max: float
    bins: int = Field(default=10, ge=1, le=10_000)
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> NumericDomain:
        if self.max <= self.min:
            raise ValueError("max must be greater than min")
        return self

    @property
    def size(self) -> int:
        return self.bins

    def encode(self, values: pd.Series) -> np.ndarray:
        width = (self.max - self.min) / self.bins
        codes = np.floor((values.to_numpy(dtype=float) - self.min) / width)
        return np.clip(np.nan_to_num(codes, nan=0.0), 0, self.bins - 1).astype(np.int64)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        width = (self.max - self.min) / self.bins
        values = self.min + (codes + rng.random(len(codes))) * width
        if self.integer:
            return np.clip(np.floor(values), np.ceil(self.min), np.floor(self.max)).astype(np.int64)
        return np.minimum(values, self.max)


class CategoricalDomain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: list[str | int | bool] = Field(min_length=1, max_length=100_000)

    @property
    def size(self) -> int:
        return len(self.values)

    def encode(self, values: pd.Series) -> np.ndarray:
        index = {str(v): i for i, v in enumerate(self.values)}
        unknown = sorted({str(v) for v in values.unique()} - set(index))
        if unknown:
            raise SynthesisError(f"values {unknown[:10]} of column {values.name!r} are not in its declared domain")
        return values.astype(str).map(index).to_numpy(dtype=np.int64)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.values, dtype=object)[codes]


Domain = NumericDomain | CategoricalDomain
_FILE = TypeAdapter(dict[str, Annotated[Domain, Field(union_mode="left_to_right")]])


def load_domains(path: Path) -> dict[str, Domain]:
    """Column domains from a JSON file (see the module); SynthesisError naming the field at fault."""
    try:
        return _FILE.validate_python(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise SynthesisError("--domain: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from exc
        raise SynthesisError(f"--domain {path}: {exc}") from exc


def _distribution(counts: np.ndarray) -> np.ndarray:
    clipped = np.clip(counts, 0.0, None)
    total = clipped.sum()
    return clipped / total if total > 0 else np.full(len(counts), 1.0 / len(counts))


def synthesise(frame: pd.DataFrame, domains: Mapping[str, Domain], epsilon: float, delta: float,
               seed: int | None = None) -> tuple[pd.DataFrame, SyntheticRelease]:
    """``(epsilon, delta)``-DP synthetic rows of ``frame``'s declared columns (see the module), and the
    release to charge. Every column of ``frame`` must have a domain."""
    columns = list(domains)
    missing = [c for c in frame.columns if c not in domains]
    unknown = [c for c in columns if c not in frame.columns]
    if missing or unknown:
        raise SynthesisError(f"--domain: declare every column of the table (missing {missing}) and only those "
                             f"(not in the table: {unknown})")
    pairs = [(columns[0],)] if len(columns) == 1 else list(zip(columns, columns[1:], strict=False))
    try:
        noise = noise_multiplier_for(epsilon, delta, 1.0, len(pairs))
    except ValueError as exc:
        raise SynthesisError(f"--synthetic: {exc}") from exc
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(128))
    codes = {c: domains[c].encode(frame[c]) for c in columns}
    noisy = []
    for pair in pairs:
        shape = tuple(domains[c].size for c in pair)
        counts = np.zeros(shape)
        np.add.at(counts, tuple(codes[c] for c in pair), 1.0)
        noisy.append(counts + rng.normal(0.0, noise, shape))
    rows = max(1, int(round(float(noisy[0].sum()))))
    first = noisy[0] if len(columns) == 1 else noisy[0].sum(axis=1)
    drawn = {columns[0]: rng.choice(domains[columns[0]].size, size=rows, p=_distribution(first))}
    for (before, after), table in zip(pairs, noisy, strict=False) if len(columns) > 1 else ():
        out = np.empty(rows, dtype=np.int64)
        for value in np.unique(drawn[before]):
            where = drawn[before] == value
            out[where] = rng.choice(domains[after].size, size=int(where.sum()), p=_distribution(table[value]))
        drawn[after] = out
    synthetic = pd.DataFrame({c: domains[c].decode(drawn[c], rng) for c in columns})
    release = SyntheticRelease(epsilon=epsilon, delta=delta, noise_multiplier=noise, measurements=len(pairs),
                               generator=GENERATOR, marginals=[list(p) for p in pairs])
    return synthetic, release
