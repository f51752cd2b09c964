"""``consortium sim``: simulate a project over many clients in one process or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consortium.cli.common import console, fail

app = typer.Typer(no_args_is_help=True, help="Simulate a project over many clients in one process or on Ray.")


@app.command("run")
def sim_run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="project spec JSON (see examples/)")],
    clients: Annotated[int | None, typer.Option("--clients", help="number of simulated clients N")] = None,
    partition: Annotated[str | None, typer.Option(help="iid | dirichlet:ALPHA | shards:K")] = None,
    cohort: Annotated[float | None, typer.Option(help="clients per round: fraction in (0, 1] or a count")] = None,
    engine: Annotated[str | None, typer.Option(help="vectorized | loop | ray")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda")] = None,
    dataset: Annotated[str | None, typer.Option(help="digits, iris, wine, breast_cancer, synthetic-images, file:PATH")] = None,
    target: Annotated[str | None, typer.Option(help="label column of a file dataset")] = None,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    chunk_clients: Annotated[int | None, typer.Option(help="vectorised engine: clients per batched chunk")] = None,
    ray_actors: Annotated[int | None, typer.Option(help="ray engine: number of actors")] = None,
    ray_address: Annotated[str | None, typer.Option(help="ray engine: address of an existing cluster")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write rounds and final_metrics as JSON")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="write per-round metrics as CSV")] = None,
    out: Annotated[Path, typer.Option(help="directory for the model weights and card")] = Path("sim-output"),
) -> None:
    """Run SPEC over N simulated clients with a progress bar; writes the model and its card to --out."""
    import torch

    from consortium.config import torch_threads
    from consortium.fl.core import FLError
    from consortium.sim.runner import run_simulation

    torch.set_num_threads(torch_threads())
    overrides = {"clients": clients, "partition": partition, "cohort": cohort, "engine": engine, "device": device,
                 "dataset": dataset, "target": target, "chunk_clients": chunk_clients, "ray_actors": ray_actors,
                 "ray_address": ray_address}
    try:
        run_simulation(spec_path, overrides, rounds=rounds, json_path=json_path, csv_path=csv_path,
                       out_dir=out, console=console)
    except FLError as exc:
        fail(str(exc))


def _names(option: str, value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        fail(f"{option}: give at least one name")
    return names


@app.command("attack")
def sim_attack(
    rules: Annotated[str | None, typer.Option(help="comma-separated rules; default: FedAvg and every "
                                                   "robust rule")] = None,
    attacks: Annotated[str | None, typer.Option(help="comma-separated attacks; default: all")] = None,
    partitions: Annotated[str, typer.Option(help="comma-separated partitions")] = "iid,dirichlet:0.5",
    seeds: Annotated[int, typer.Option(help="seeds 0..S-1 per cell")] = 3,
    clients: Annotated[int, typer.Option(help="simulated clients n")] = 20,
    malicious: Annotated[int, typer.Option(help="malicious clients f (the first f client ids)")] = 4,
    rounds: Annotated[int | None, typer.Option(help="rounds per run")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write every run, cell and check")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="update this BENCHMARKS.md")] = None,
) -> None:
    """Attack x rule matrix on the digits MLP (final accuracy, backdoor success; no attack is always run)."""
    import torch

    from consortium.config import torch_threads
    from consortium.fl.core import FLError
    from consortium.bench.attack_matrix import DEFAULT_ROUNDS, MatrixConfig, rule_catalogue
    from consortium.bench.attack_suite import run_attack_suite
    from consortium.sim.attacks import ATTACK_NAMES

    torch.set_num_threads(torch_threads())
    if seeds < 1:
        fail("--seeds: run at least one seed")
    config = MatrixConfig(clients, malicious, rounds or DEFAULT_ROUNDS)
    chosen_rules = _names("--rules", rules) if rules else list(rule_catalogue(clients, malicious))
    chosen_attacks = _names("--attacks", attacks) if attacks else list(ATTACK_NAMES)
    chosen_partitions = _names("--partitions", partitions)
    command = (f"consortium sim attack --rules {','.join(chosen_rules)} --attacks {','.join(chosen_attacks)} "
               f"--partitions {','.join(chosen_partitions)} --seeds {seeds} --clients {clients} "
               f"--malicious {malicious} --rounds {config.rounds}"
               + (f" --markdown {markdown.name}" if markdown else ""))
    try:
        run_attack_suite(chosen_rules, chosen_attacks, chosen_partitions, list(range(seeds)), config, command,
                         json_path=json_path, markdown_path=markdown, console=console)
    except FLError as exc:
        fail(str(exc))
