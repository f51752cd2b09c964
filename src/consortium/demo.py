"""`consortium demo`: the whole story on one machine.

A hub on SQLite and three organisation nodes as separate processes on 127.0.0.1; scikit-learn's digits split
non-IID (label-Dirichlet 0.5) across the three orgs, with a held-out test set kept by the project; a project
approved by the three data owners; FedAvg rounds with a progress bar; the model card; a ledger check.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from consortium.launch import Process, start_hub, start_node
from consortium.ledger_audit import verify_from_hub
from consortium.model_files import download_model
from consortium.scenario import ORGS, digits_spec, propose_and_approve, provision_digits
from consortium.watch import follow_run
from consortium.statuses import RunStatus


def _wait_for_ctrl_c(console: Console, hub_url: str) -> None:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    console.print(f"\nThe hub keeps serving at [bold]{hub_url}[/] (API docs: {hub_url}/docs). Ctrl-C to stop.")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(
    workdir: Path,
    rounds: int = 20,
    port: int | None = None,
    console: Console | None = None,
    keep_serving: bool = False,
    json_path: Path | None = None,
) -> dict[str, Any]:
    """Run the demo end to end and return its summary (also written to ``json_path`` when given)."""
    console = console or Console()
    workdir = Path(workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.perf_counter()
    processes: list[Process] = []
    try:
        console.rule("[bold]consortium demo")
        hub = start_hub(workdir / "hub", port=port)
        processes.append(hub)
        console.print(f"hub on SQLite at {hub.url} (data in {hub.data_dir})")
        consortium = provision_digits(hub, workdir, ORGS, report=lambda line: console.print("  " + line))
        for org in ORGS:
            processes.append(start_node(hub.url, consortium.org_dirs[org]))
        with hub.client() as admin:
            admin.wait_online(list(ORGS))
        console.print(f"three node processes online: {', '.join(ORGS)}")
        project = propose_and_approve(consortium, digits_spec("digits-fedavg", ORGS, rounds))
        console.print(f"project {project['id']} approved by {', '.join(project['required_orgs'])}")

        admin = hub.client()
        run = admin.start_run(project["id"])
        final = follow_run(admin, run["id"], rounds, console)
        progress = admin.progress(run["id"])
        table = Table("round", "test accuracy", "test loss", "federated val accuracy", "round s")
        for rnd in progress.rounds:
            table.add_row(str(rnd.round), f"{rnd.test.get('accuracy', float('nan')):.4f}",
                          f"{rnd.test.get('loss', float('nan')):.4f}",
                          f"{rnd.federated_eval.get('accuracy', float('nan')):.4f}", f"{rnd.wall_s:.3f}")
        console.print(table)

        summary: dict[str, Any] = {"status": final["status"], "rounds": len(progress.rounds), "run_id": run["id"]}
        if final["status"] == RunStatus.completed:
            paths = download_model(admin, final["model_id"], workdir / "model")
            summary.update(
                final_test_accuracy=progress.rounds[-1].test["accuracy"],
                model_card=str(paths["card"]),
                model_card_markdown=str(paths["card_markdown"]),
                weights=str(paths["weights"]),
            )
            console.print(f"final test accuracy: [bold]{summary['final_test_accuracy']:.4f}[/]")
            console.print(f"model card: {summary['model_card']} (and {summary['model_card_markdown']})")
        else:
            summary["error"] = final["error"]
            console.print(f"[red]run failed:[/] {final['error']}")
        report = verify_from_hub(admin)
        summary.update(
            ledger_ok=report.ok,
            ledger_entries=report.checked,
            accuracy_per_round=[r.test.get("accuracy") for r in progress.rounds],
            elapsed_s=round(time.perf_counter() - started, 2),
            hub_url=hub.url,
        )
        console.print(f"ledger: {'[green]OK' if report.ok else '[red]BROKEN'}[/] ({report.checked} entries)")
        if not report.ok:
            console.print(f"ledger problem: {report.reason}", markup=False)
        if json_path is not None:
            Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
        if keep_serving:
            _wait_for_ctrl_c(console, hub.url)
        admin.close()
        return summary
    finally:
        for proc in reversed(processes):
            proc.stop()
