"""`consortium sim run`: load the spec, run it with a progress bar, write JSON/CSV and the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.sim.engines.factory import make_engine
from consortium.sim.outputs import summary, write_csv, write_json, write_model
from consortium.sim.simulation import RoundRecord, SimResult, Simulation
from consortium.sim.spec import load_spec, parse_spec


def _headline(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))


def simulate(raw: dict[str, Any], **overrides: Any) -> SimResult:
    """Run a spec given as a dict (simulation settings in ``overrides``: clients, engine, partition...) with
    no console and no files: the programmatic form of `consortium sim run`. FLError for bad input."""
    project, settings = parse_spec(raw, overrides)
    simulation = Simulation(project, settings)
    engine = make_engine(settings.engine, simulation.setup, settings)
    try:
        return simulation.run(engine)
    finally:
        engine.close()


def run_simulation(
    spec_path: Path,
    overrides: dict[str, Any],
    rounds: int | None = None,
    json_path: Path | None = None,
    csv_path: Path | None = None,
    out_dir: Path | None = None,
    console: Console | None = None,
) -> SimResult:
    """Everything `consortium sim run` does; FLError for any bad input, before any output is written."""
    console = console or Console()
    project, settings = load_spec(spec_path, overrides)
    if rounds is not None:
        project = project.model_copy(update={"rounds": rounds})
    simulation = Simulation(project, settings)
    engine = make_engine(
        settings.engine, simulation.setup, settings, notify=lambda m: console.print(f"[yellow]{m}[/]")
    )
    console.print(
        f"simulating [bold]{project.name}[/]: {project.algorithm.name} on {simulation.dataset.name}, "
        f"{settings.clients} clients ({settings.partition}), {simulation.cohort_size} per round, "
        f"engine {engine.name} on {simulation.device}"
    )
    try:
        with Progress(
            TextColumn("round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("", total=project.rounds)

            def on_round(record: RoundRecord) -> None:
                progress.update(
                    task, advance=1, description=f"{_headline(record.test)}  ({record.wall_s:.3f} s)"
                )

            result = simulation.run(engine, on_round)
    finally:
        engine.close()
    console.print(f"final test metrics: {_headline(result.final_metrics)}")
    data = summary(result, engine.name)
    if data.get("baseline"):
        console.print(f"majority-class baseline: accuracy {data['baseline']['majority_class']['accuracy']:.4f}")
    for warning in data.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}")
    if json_path is not None:
        write_json(json_path, data)
        console.print(f"metrics: {json_path}")
    if csv_path is not None:
        write_csv(csv_path, result)
        console.print(f"per-round CSV: {csv_path}")
    if out_dir is not None:
        paths = write_model(out_dir, result, engine.name)
        console.print(f"model: {paths['weights']}  card: {paths['card_markdown']}")
    return result
