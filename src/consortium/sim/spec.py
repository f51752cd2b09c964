"""A simulation spec: the JSON of a real project (algorithm, strategy, rounds, seed) plus how to simulate it.

The file is what ``consortium project create`` takes, optionally with a ``"simulation"`` object (dataset,
clients, partition, cohort); ``datasets`` (or an RL project's ``environments``) may be left out.
Command-line flags override the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from consortium.fl.core import FLError
from consortium.protocol import SIMULATION_KEY, ProjectCreate

Engine = Literal["vectorized", "loop", "ray"]


class SimulationSettings(BaseModel):
    """Where the simulated clients' data comes from and how the cohort is formed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(
        "digits", description="a bundled dataset, synthetic-images, file:PATH, or env:ID (RL environments)"
    )
    target: str | None = Field(None, description="label column of a file dataset")
    samples: int = Field(
        50_000, ge=2, description="synthetic-images: how many examples to generate (train and test together)"
    )
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = Field(0, ge=0)
    clients: int = Field(10, ge=1)
    partition: str = "dirichlet:0.5"
    partition_seed: int = Field(42, ge=0)
    physics_spread: float = Field(
        0.3, ge=0, lt=1, description="env:ID: each client's physics within ±this fraction of the defaults"
    )
    cohort: float = Field(
        1.0, gt=0, description="clients per round: a fraction in (0, 1], or a whole count > 1"
    )
    engine: Engine = "vectorized"
    device: str = "cpu"
    chunk_clients: int | None = Field(
        None, ge=1, description="vectorised engine: clients trained per batched computation (memory bound)"
    )
    ray_actors: int = Field(2, ge=1)
    ray_address: str | None = None

    @field_validator("cohort")
    @classmethod
    def _cohort(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError("a cohort above 1 is a count of clients and must be a whole number")
        return value

    def sampling(self) -> tuple[float, int]:
        """``(rate, population)`` of each round's cohort: what a run's privacy is accounted at."""
        return self.cohort_size() / self.clients, self.clients

    def cohort_size(self) -> int:
        """Clients sampled each round."""
        if self.cohort <= 1.0:
            return max(1, round(self.cohort * self.clients))
        if self.cohort > self.clients:
            raise FLError(f"cohort: {int(self.cohort)} clients per round exceed the {self.clients} clients")
        return int(self.cohort)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )


def parse_spec(
    raw: dict[str, Any], overrides: dict[str, Any] | None = None
) -> tuple[ProjectCreate, SimulationSettings]:
    """Validate a spec dict; ``overrides`` (non-None values only) replace the simulation settings."""
    raw = dict(raw)
    simulation = dict(raw.pop(SIMULATION_KEY, None) or {})
    simulation.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = SimulationSettings.model_validate(simulation)
    except ValidationError as exc:
        raise FLError(f"bad simulation settings: {_problems(exc)}") from exc
    if not raw.get("environments"):
        raw.setdefault("datasets", [f"sim/{_ref_name(settings.dataset)}"])
    try:
        project = ProjectCreate.model_validate(raw)
    except ValidationError as exc:
        raise FLError(f"bad project spec: {_problems(exc)}") from exc
    return project, settings


def _ref_name(dataset: str) -> str:
    name = Path(dataset.removeprefix("file:")).stem.lower()
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name).strip("-._")
    return cleaned or "data"


def load_spec(
    path: Path, overrides: dict[str, Any] | None = None
) -> tuple[ProjectCreate, SimulationSettings]:
    """Read and validate a spec file (FLError naming the file and the bad field)."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise FLError(f"cannot read spec {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise FLError(f"spec {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise FLError(f"spec {path} must hold a JSON object")
    return parse_spec(raw, overrides)
