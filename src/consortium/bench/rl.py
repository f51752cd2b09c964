"""Federated RL, measured: PPO over N CartPole physics variants against each variant trained alone.

``consortium bench rl examples/rl-cartpole.json --markdown BENCHMARKS.md`` runs the spec's
simulation (each client plays its own physics; the global policy is tested every round on the standard
CartPole-v1), then every client's environment alone for the same rounds, so with the same local steps per
client. Each final policy is scored on the standard environment and on every client's own physics.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from consortium.bench.report import machine_info
from consortium.fl.core import Params
from consortium.protocol import ProjectCreate
from consortium.sim.engines.loop import LoopEngine
from consortium.sim.simulation import SimResult, Simulation
from consortium.sim.environments import SimEnvironments, load_environments
from consortium.sim.spec import SimulationSettings, load_spec

SOLVED = 475.0
"""CartPole-v1's threshold: a mean return of 475 over 100 episodes."""


@dataclass(frozen=True)
class PolicyScore:
    """One trained policy: how it learned and how it plays the standard and each client's environment."""

    label: str
    steps_per_client: int
    per_round: list[float]
    standard: float
    per_client: list[float]
    wall_s: float

    @property
    def first_solved_round(self) -> int | None:
        return next((i + 1 for i, value in enumerate(self.per_round) if value >= SOLVED), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "steps_per_client": self.steps_per_client,
            "mean_return_per_round": self.per_round,
            "mean_return_standard": self.standard,
            "mean_return_per_client_physics": self.per_client,
            "first_round_at_least_475": self.first_solved_round,
            "wall_s": self.wall_s,
        }


def _score(
    label: str, simulation: Simulation, result: SimResult, environments: SimEnvironments, wall_s: float
) -> PolicyScore:
    params: Params = result.params
    per_client = [
        simulation.plan.algorithm.evaluate(simulation.plan.hp, params, env).metrics["mean_return"]
        for env in environments.train
    ]
    clients = len(result.dataset.train)
    return PolicyScore(
        label,
        sum(r.num_examples for r in result.rounds) // clients,
        [r.test["mean_return"] for r in result.rounds],
        result.final_metrics["mean_return"],
        per_client,
        wall_s,
    )


def _trained_and_scored(
    label: str,
    project: ProjectCreate,
    settings: SimulationSettings,
    played: SimEnvironments,
    everyone: SimEnvironments,
) -> PolicyScore:
    started = time.perf_counter()
    simulation = Simulation(project, settings, dataset=played)
    result = simulation.run(LoopEngine(simulation.setup))
    wall_s = time.perf_counter() - started
    return _score(label, simulation, result, everyone, wall_s)


def run_rl_bench(spec_path: Path, rounds: int | None = None) -> dict[str, Any]:
    """The federated run and every client alone, each scored; a JSON-ready dict."""
    project, settings = load_spec(spec_path)
    if rounds is not None:
        project = project.model_copy(update={"rounds": rounds})
    environments = load_environments(
        settings.dataset, settings.clients, settings.physics_spread, settings.partition_seed
    )
    scores = [
        _trained_and_scored(
            f"federated ({settings.clients} orgs)", project, settings, environments, environments
        )
    ]
    alone_settings = settings.model_copy(update={"clients": 1})
    for i, env in enumerate(environments.train):
        alone = replace(environments, train=[env])
        scores.append(_trained_and_scored(f"client {i} alone", project, alone_settings, alone, environments))
    return {
        "spec": str(spec_path),
        "rounds": project.rounds,
        "hyperparameters": project.algorithm.hyperparameters,
        "environments": environments.describe(),
        "machine": machine_info(),
        "policies": [score.as_dict() for score in scores],
    }


def _physics_cell(physics: dict[str, float]) -> str:
    return ", ".join(f"{key} {physics[key]:.3g}" for key in ("length", "masspole", "gravity"))


def _policy_rows(policies: list[dict[str, Any]], last: int = 5) -> list[str]:
    rows = [
        (
            "| policy | env steps per client | mean return, standard CartPole-v1 | first round ≥ 475 "
            f"| mean / lowest of the last {last} rounds | mean over the clients' physics "
            "| worst client's physics | wall s |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for policy in policies:
        per_client = policy["mean_return_per_client_physics"]
        recent = policy["mean_return_per_round"][-last:]
        rows.append(
            f"| {policy['label']} | {policy['steps_per_client']} | **{policy['mean_return_standard']:.2f}** "
            f"| {policy['first_round_at_least_475'] or 'never'} "
            f"| {sum(recent) / len(recent):.1f} / {min(recent):.1f} "
            f"| {sum(per_client) / len(per_client):.2f} | {min(per_client):.2f} | {policy['wall_s']:.0f} |"
        )
    return rows


def markdown(report: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md section body of a report."""
    machine, environments = report["machine"], report["environments"]
    physics = "; ".join(f"client {i}: {_physics_cell(p)}" for i, p in enumerate(environments["clients"]))
    per_round = ", ".join(f"{value:.1f}" for value in report["policies"][0]["mean_return_per_round"])
    return "\n".join(
        [
            f"Command: `{command}`",
            (
                f"Machine: {machine['cpu']} ({machine['cores']} cores, shared), {machine['python']}, "
                f"torch {machine['torch']}, {machine['torch_threads']} torch thread; measured {machine['date']}."
            ),
            "",
            (
                f"PPO `{json.dumps(report['hyperparameters'])}`, FedAvg, {report['rounds']} rounds. Each client "
                f"plays its own physics (±{environments['physics_spread']:.0%} of the defaults); each final policy "
                "is scored by its mean return over 100 greedy episodes of standard CartPole-v1 (475 = solved) and "
                "of every client's physics. Wall time includes the 100-episode test after every round."
            ),
            "",
            *_policy_rows(report["policies"]),
            "",
            f"Clients' physics: {physics}.",
            "",
            f"Federated mean return per round: {per_round}.",
        ]
    )
