"""`consortium demo`: the whole story on one machine.

A hub on SQLite and three organisation nodes as separate processes on 127.0.0.1, each org admitted by the
votes of those before it; a fourth org admitted by the members' vote; scikit-learn's digits split non-IID
(label-Dirichlet 0.5) across the three data owners, with a held-out test set kept by the project; a
run_project proposal the three owners vote for; FedAvg rounds with a progress bar; a release proposal
under the licence derived from the data, passed by the owners' yes (the model released with its
obligations); the model card; the ledger checked (chain, signatures, Merkle root) against the checkpoints a node cosigned.
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

from consortium.launch import Process, provision_org, start_hub, start_node
from consortium.ledger_audit import load_claims, verify_from_hub
from consortium.model_files import download_model
from consortium.scenario import (
    ORGS,
    digits_spec,
    propose_and_approve,
    provision_digits,
    release_by_vote,
    vote_as,
)
from consortium.watch import follow_run
from consortium.statuses import RunStatus


def _wait_for_ctrl_c(console: Console, hub_url: str, login_token: str) -> None:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    console.print(f"\nThe hub keeps serving at [bold]{hub_url}[/] (API docs: {hub_url}/docs). Ctrl-C to stop.")
    console.print(f"Web interface: [bold]{hub_url}/[/]; log in as {WEB_STEWARD} ({ORGS[0]}'s steward) with "
                  "the token:")
    console.print(login_token, markup=False, highlight=False)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


FOURTH_ORG = "west-hospital"
WEB_STEWARD = "web-steward"
"""The user whose token the demo prints for the web interface when it keeps serving."""


def _tally(proposal: dict) -> str:
    return ", ".join(f"{vote['org']} {vote['choice']}" for vote in proposal["votes"])


def admit_fourth_member(hub, workdir: Path, consortium, console: Console) -> None:
    """A fourth org asks to join; the three members vote (two yes, one no) and it is admitted by a strict
    majority of the votes cast, as the default policy says."""
    org_dir = workdir / "orgs" / FOURTH_ORG
    with hub.client() as admin:
        provision_org(admin, hub.url, org_dir, FOURTH_ORG)
        proposal = next(p for p in admin.proposals(status="open", kind="admit_org")
                        if p["subject"]["org"] == FOURTH_ORG)
    for org, choice in zip(ORGS, ("yes", "no", "yes"), strict=True):
        vote_as(consortium.org_dirs[org], hub.url, proposal["id"], choice, f"{org} on admitting {FOURTH_ORG}")
    with hub.client() as admin:
        decided = admin.proposal(proposal["id"])
    console.print(f"{FOURTH_ORG} proposed; members voted "
                  f"{_tally(decided)}: {decided['status']}")


def release_model(consortium, model_id: int, console: Console) -> dict[str, Any]:
    """Propose to release the model to the members under the licence derived from its data; the data
    owners vote yes. What the summary says about the release."""
    with consortium.hub.client() as admin:
        licence = admin.model(model_id)["license"]
    decided = release_by_vote(consortium, model_id, licence, ORGS)
    with consortium.hub.client() as admin:
        model = admin.model(model_id)
    obligations = {name: [f"{t['source']} ({t['licence']})" for t in terms]
                   for name, terms in model["obligations"].items() if terms}
    console.print(f"release proposal {decided['id']} ({_tally(decided)}): {decided['status']}; model {model_id} "
                  f"version {model['version']} is {model['status']} under {model['license']} to the "
                  f"{model['visibility']}")
    for name, terms in obligations.items():
        console.print(f"  obligation {name.replace('_', '-')}: {', '.join(terms)}")
    return {"model_status": model["status"], "model_licence": model["license"], "obligations": obligations,
            "release_proposal_id": decided["id"]}


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
        admit_fourth_member(hub, workdir, consortium, console)
        project = propose_and_approve(consortium, digits_spec("digits-fedavg", ORGS, rounds))
        with hub.client() as admin:
            decided = admin.proposal(project["proposal_id"])
        console.print(f"project {project['id']}: proposal {decided['id']} {decided['status']} "
                      f"({_tally(decided)}); outcome signed by "
                      "the hub")

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
            summary.update(release_model(consortium, final["model_id"], console))
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
        witnessed = consortium.org_dirs[ORGS[0]] / "checkpoints.jsonl"
        claims = load_claims(witnessed) if witnessed.exists() else None
        report = verify_from_hub(admin, claims)
        summary.update(
            ledger_ok=report.ok,
            ledger_entries=report.checked,
            accuracy_per_round=[r.test.get("accuracy") for r in progress.rounds],
            elapsed_s=round(time.perf_counter() - started, 2),
            hub_url=hub.url,
        )
        against = f", against {len(claims)} checkpoints {ORGS[0]}'s node cosigned" if claims else ""
        summary["ledger_checkpoints_cosigned"] = len(claims or [])
        console.print(f"ledger: {'[green]OK' if report.ok else '[red]BROKEN'}[/] ({report.checked} entries, "
                      f"signatures and Merkle root checked{against})")
        if not report.ok:
            console.print(f"ledger problem: {report.reason}", markup=False)
        if json_path is not None:
            Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
        if keep_serving:
            login = admin.create_user(WEB_STEWARD, "steward", ORGS[0])
            _wait_for_ctrl_c(console, hub.url, login["token"])
        admin.close()
        return summary
    finally:
        for proc in reversed(processes):
            proc.stop()
