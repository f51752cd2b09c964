"""``consortium audit``: measure what a configuration leaks (one-run DP audit, membership inference)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import console, fail

app = typer.Typer(no_args_is_help=True, help="Privacy audits of a project spec, run in simulation.")

SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="project spec JSON (see examples/)")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="write the results as JSON")]


def _emit(data: dict, table: Table, json_path: Path | None) -> None:
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"results: {json_path}")


@app.command("dp")
def audit_dp(
    spec_path: SpecArgument,
    clip: Annotated[float, typer.Option(help="client-level clipping norm C")] = 1.0,
    noise_multiplier: Annotated[float | None, typer.Option(help="sigma (noise std = sigma * C); 0 = no DP")] = None,
    epsilon: Annotated[float | None, typer.Option(help="calibrate sigma for this target epsilon instead")] = None,
    delta: Annotated[float, typer.Option(help="delta of the claim and of the bound")] = 1e-5,
    canaries: Annotated[int, typer.Option(help="canary clients m, each IN with probability 1/2")] = 1000,
    guesses: Annotated[int, typer.Option(help="k: guesses on each side (top k IN, bottom k OUT)")] = 100,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    clients: Annotated[int | None, typer.Option(help="override the simulated clients N")] = None,
    seed: Annotated[int, typer.Option(help="seed of the canaries and the noise")] = 0,
    json_path: JsonOption = None,
) -> None:
    """One-run DP audit (Steinke, Nasr, Jagielski 2023): an epsilon lower bound at 95 % confidence."""
    import torch

    from consortium.fl.core import FLError
    from consortium.fl.privacy import accountant
    from consortium.sim.dp_audit import run_dp_audit
    from consortium.sim.spec import load_spec

    torch.set_num_threads(1)
    if (noise_multiplier is None) == (epsilon is None):
        fail("give exactly one of --noise-multiplier and --epsilon")
    try:
        if epsilon is not None:
            project, settings = load_spec(spec_path, {"clients": clients})
            rate = settings.cohort_size() / settings.clients
            noise_multiplier = accountant.noise_multiplier_for(epsilon, delta, rate, rounds or project.rounds)
        report = run_dp_audit(spec_path, clip, noise_multiplier, canaries, guesses, delta, rounds, seed,
                              {"clients": clients})
    except (FLError, ValueError) as exc:
        fail(str(exc))
    table = Table(title=f"one-run DP audit of {spec_path.name}")
    for column in ("ε claimed", "ε lower (95 %)", "δ", "σ", "C", "rounds", "m", "guesses", "correct"):
        table.add_column(column, justify="right")
    o = report.outcome
    table.add_row(f"{report.epsilon_claimed:.3f}", f"{o.epsilon_lower:.3f}", f"{o.delta:g}",
                  f"{report.noise_multiplier:.4g}", f"{report.clip:g}", str(report.rounds), str(o.canaries),
                  str(o.guesses), str(o.correct))
    _emit(report.as_dict(), table, json_path)


@app.command("mia")
def audit_mia(
    spec_path: SpecArgument,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    clients: Annotated[int | None, typer.Option(help="override the simulated clients N")] = None,
    seed: Annotated[int, typer.Option(help="seed of the held-out split and the shadow model")] = 0,
    json_path: JsonOption = None,
) -> None:
    """Loss-threshold and shadow-model membership inference against the spec's classifier (simulation)."""
    import torch

    from consortium.fl.core import FLError
    from consortium.sim.mia import run_mia

    torch.set_num_threads(1)
    try:
        report = run_mia(spec_path, rounds, seed, {"clients": clients})
    except FLError as exc:
        fail(str(exc))
    table = Table(title=f"membership inference on {spec_path.name} ({report.members} members, "
                        f"{report.non_members} non-members)")
    for column in ("attack", "AUC", "TPR at 1 % FPR"):
        table.add_column(column, justify="right")
    for name, scores in (("loss threshold", report.loss_threshold), ("shadow model", report.shadow_model)):
        table.add_row(name, f"{scores['auc']:.3f}", f"{scores['tpr_at_1pct_fpr']:.3f}")
    _emit(report.as_dict(), table, json_path)
