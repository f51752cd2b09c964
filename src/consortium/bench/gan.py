"""Federated GAN, measured: the conditional GAN over N orgs' non-IID digits against each org trained alone.

``consortium bench gan examples/gan-digits.json --markdown BENCHMARKS.md`` runs the spec's simulation (its
``simulation`` block says how many orgs and how the digits are split), then every org's share alone for the
same rounds, so with the same local steps per org. Every final generator is judged on the held-out digits
by :mod:`consortium.fl.gan_quality`: conditioning accuracy under the judge classifier and the Fréchet
distance on the judge's penultimate-layer features (lower is better).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.bench.report import machine_info
from consortium.fl.core import FLError
from consortium.fl.algorithms.gan import sample_grid
from consortium.images import write_png
from consortium.protocol import ProjectCreate
from consortium.sim.engines.loop import LoopEngine
from consortium.sim.simulation import Simulation, client_parts, load_source
from consortium.sim.spec import SimulationSettings, load_spec

QUALITY_KEYS = ("conditioning_accuracy", "frechet_distance")


@dataclass(frozen=True)
class GeneratorScore:
    """One trained generator: how its quality moved per round and where it ended."""

    label: str
    train_rows: int
    per_round: list[dict[str, float]]
    final: dict[str, float]
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "train_rows": self.train_rows,
            "per_round": self.per_round,
            "final_metrics": self.final,
            "wall_s": self.wall_s,
        }


def _trained_and_scored(
    label: str, project: ProjectCreate, settings: SimulationSettings, dataset, parts, sample_png: Path | None
) -> GeneratorScore:
    started = time.perf_counter()
    simulation = Simulation(project, settings, dataset=dataset, parts=parts)
    result = simulation.run(LoopEngine(simulation.setup))
    wall_s = time.perf_counter() - started
    missing = [key for key in QUALITY_KEYS if key not in result.final_metrics]
    if missing:
        raise FLError(
            f"the GAN's evaluation has no {', '.join(missing)}: it needs 64-feature digits with labels"
        )
    if sample_png is not None:
        write_png(sample_png, sample_grid(simulation.plan.hp, result.params, per_class=10, seed=project.seed))
    return GeneratorScore(
        label,
        sum(len(p) for p in parts),
        [{key: r.test[key] for key in QUALITY_KEYS} for r in result.rounds],
        {key: result.final_metrics[key] for key in QUALITY_KEYS},
        wall_s,
    )


def run_gan_bench(
    spec_path: Path, rounds: int | None = None, samples_dir: Path | None = None
) -> dict[str, Any]:
    """The federated run and every org alone, each judged; a JSON-ready dict."""
    project, settings = load_spec(spec_path)
    if project.algorithm.name != "gan":
        raise FLError(f"{spec_path}: algorithm is {project.algorithm.name!r}, this bench needs 'gan'")
    if rounds is not None:
        project = project.model_copy(update={"rounds": rounds})
    settings = settings.model_copy(update={"engine": "loop"})
    dataset = load_source(settings)
    parts = client_parts(dataset, settings)

    if samples_dir is not None:
        samples_dir.mkdir(parents=True, exist_ok=True)

    def png(name: str) -> Path | None:
        return None if samples_dir is None else samples_dir / f"{name}.png"

    scores = [
        _trained_and_scored(
            f"federated ({settings.clients} orgs)", project, settings, dataset, parts, png("federated")
        )
    ]
    alone = settings.model_copy(update={"clients": 1})
    for i, part in enumerate(parts):
        scores.append(_trained_and_scored(f"org {i} alone", project, alone, dataset, [part], png(f"org-{i}")))
    return {
        "spec": str(spec_path),
        "rounds": project.rounds,
        "partition": settings.partition,
        "partition_seed": settings.partition_seed,
        "hyperparameters": project.algorithm.hyperparameters,
        "machine": machine_info(),
        "generators": [score.as_dict() for score in scores],
    }


def markdown(report: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md section body of a report."""
    machine = report["machine"]
    rows = [
        "| generator | training rows | conditioning accuracy | Fréchet distance | wall s |",
        "|---|---|---|---|---|",
    ]
    for g in report["generators"]:
        final = g["final_metrics"]
        rows.append(
            f"| {g['label']} | {g['train_rows']} | **{final['conditioning_accuracy']:.3f}** "
            f"| **{final['frechet_distance']:.2f}** | {g['wall_s']:.0f} |"
        )
    federated = report["generators"][0]
    per_round = ", ".join(
        f"{r['conditioning_accuracy']:.2f}/{r['frechet_distance']:.1f}" for r in federated["per_round"]
    )
    best_alone = min(g["final_metrics"]["frechet_distance"] for g in report["generators"][1:])
    return "\n".join(
        [
            f"Command: `{command}`",
            (
                f"Machine: {machine['cpu']} ({machine['cores']} cores, shared), {machine['python']}, "
                f"torch {machine['torch']}, {machine['torch_threads']} torch thread; measured {machine['date']}."
            ),
            "",
            (
                f"Conditional GAN (`{report['spec']}`), FedAvg of generator and discriminator, {report['rounds']} "
                f"rounds; digits split {report['partition']} (seed {report['partition_seed']}) across the orgs; "
                "each org alone trains on its own share for the same rounds and local steps. Judged on the "
                "held-out digits test split by the judge classifier of `consortium.fl.gan_quality` (trained "
                "centrally, deterministically, in the process): conditioning accuracy of one generated digit "
                "per test digit, conditioned on its label, and the Fréchet distance of the judge's penultimate "
                "features (lower is better)."
            ),
            "",
            *rows,
            "",
            (
                f"Federated Fréchet distance {federated['final_metrics']['frechet_distance']:.2f} against the best "
                f"single org's {best_alone:.2f}. Federated conditioning accuracy / Fréchet distance per round: "
                f"{per_round}."
            ),
        ]
    )
