"""Following a run from the command line: a rich progress bar fed by the hub's progress long poll."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.client import HubClient
from consortium.statuses import RunStatus


def follow_run(client: HubClient, run_id: int, rounds: int, console: Console, quiet: bool = False) -> dict:
    """Show a progress bar until the run ends; returns the final run record."""
    columns = (TextColumn("[bold]run {task.fields[run]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[metric]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=quiet) as bar:
        task = bar.add_task("rounds", total=rounds, run=run_id, metric="")
        seen, told = 0, 0
        while True:
            progress = client.progress(run_id, after_round=seen, wait=30.0)
            for refusal in progress.refusals[told:] if not quiet else ():
                console.print(f"[yellow]{refusal}[/]")
            told = max(told, len(progress.refusals))
            for rnd in progress.rounds:
                seen = rnd.round
                shown = rnd.test or rnd.federated_eval or rnd.train
                metric = "  ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items()))
                if rnd.diverged:
                    metric += f"  diverged: {', '.join(rnd.diverged)}"
                if rnd.baseline is not None:
                    metric += f"  (majority class {rnd.baseline['accuracy']:.4f})"
                bar.update(task, completed=seen, metric=metric)
            if progress.run.status != RunStatus.running:
                for warning in progress.warnings:
                    console.print(f"[bold yellow]warning:[/] {warning}")
                return progress.run.model_dump(mode="json") | (
                    {"warnings": progress.warnings} if progress.warnings else {})
