"""``consortium challenge``: open one on a hidden local test set, list, submit, the boards, and the host's
re-verification of every score."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import (
    CaFileOpt,
    HubOpt,
    OptionalOrgDirOpt,
    OrgDirOpt,
    TokenOpt,
    call,
    console,
    fail,
    member_client,
    org_client,
    print_json,
)

app = typer.Typer(no_args_is_help=True, help="Challenges: a hidden test set on the host's node, public and "
                                              "final leaderboards.")
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="the challenge's name")],
    hub: HubOpt, org_dir: OrgDirOpt,
    file: Annotated[Path, typer.Option(
        "--file", help="the hidden test set (CSV, Parquet, NPZ); it stays here")],
    target: Annotated[str, typer.Option("--target", help="the label column")],
    task: Annotated[str, typer.Option("--task", help="what to predict, in words")],
    metric: Annotated[str, typer.Option(
        "--metric", help="a metric of the algorithm's evaluate")] = "accuracy",
    lower_is_better: Annotated[bool, typer.Option("--lower-is-better")] = False,
    algorithm: Annotated[str, typer.Option(
        "--algorithm", help="the algorithm submissions use")] = "classifier",
    days: Annotated[float, typer.Option("--days", min=0.0001, help="deadline, days from now")] = 14.0,
    daily_limit: Annotated[int, typer.Option("--daily-limit", min=1, max=1000)] = 5,
    prize: Annotated[int, typer.Option(
        "--prize", min=0, help="credits held from the host, paid to the winner")] = 0,
    public_fraction: Annotated[float, typer.Option("--public-fraction", min=0.01, max=0.99)] = 0.5,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="split seed (default: random)")] = None,
    as_json: JsonOpt = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Open a challenge: split the local test set, commit both parts' hashes in a statement signed by the
    org key. No row leaves this machine."""
    from consortium.fl.core import FLError
    from consortium.node.challenges import open_challenge, prepare_statement

    with org_client(hub, org_dir, ca_file) as client:
        try:
            statement, test_set = prepare_statement(
                hub_id=call(client.health)["hub_id"], host=client.identity.org, name=name, task=task,
                path=file,
                target=target, metric=metric, higher_is_better=not lower_is_better,
                deadline=datetime.now(UTC) + timedelta(days=days), daily_limit=daily_limit, prize=prize,
                split_seed=secrets.randbits(62) if seed is None else seed, public_fraction=public_fraction,
                algorithm_family=algorithm)
        except (FLError, ValueError) as exc:
            fail(str(exc))
        opened = call(open_challenge, client, org_dir, statement, test_set)
    if as_json:
        print_json(opened)
    else:
        console.print(f"challenge {opened['id']} {name!r} open until {statement.deadline.isoformat()} "
                      f"(public part {statement.public_rows} rows, private {statement.private_rows})")


@app.command("list")
def list_challenges(hub: HubOpt, token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
                    as_json: JsonOpt = False, ca_file: CaFileOpt = None) -> None:
    """Every challenge with its host, metric, deadline and status."""
    with member_client(hub, token, org_dir, ca_file) as client:
        rows = call(client.challenges)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "host", "metric", "deadline", "prize", "submissions", "status")
    for row in rows:
        s = row["statement"]
        table.add_row(str(row["id"]), s["name"], s["host"], s["metric"], s["deadline"][:19], str(s["prize"]),
                      str(row["submissions"]), row["status"])
    console.print(table)


@app.command("submit")
def submit(
    challenge_id: Annotated[int, typer.Argument(min=1)], hub: HubOpt,
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="the model's params (safetensors)")] = None,
    spec: Annotated[Path | None, typer.Option(
        "--spec", help="JSON: {name, hyperparameters} of the algorithm")] = None,
    model: Annotated[int | None, typer.Option(
        "--model", min=1, help="a released model, entered for its team")] = None,
    token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None, as_json: JsonOpt = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Submit weights plus their algorithm spec, or a released model your org helped train (a team entry)."""
    from consortium.codec import decode_tensors, encode_tensors

    if (model is None) == (weights is None):
        fail("give either --weights with --spec, or --model")
    with member_client(hub, token, org_dir, ca_file) as client:
        if model is not None:
            row = call(client.submit_challenge_model, challenge_id, model)
        else:
            if spec is None:
                fail("--weights needs --spec (the algorithm's name and hyper-parameters)")
            meta = json.dumps({"algorithm": json.loads(spec.read_text(encoding="utf-8"))})
            payload = encode_tensors(decode_tensors(weights.read_bytes()), metadata={"submission": meta})
            row = call(client.submit_challenge_weights, challenge_id, payload)
    if as_json:
        print_json(row)
    else:
        console.print(f"submission {row['id']} to challenge {challenge_id} for {', '.join(row['team'])}; the "
                      "host's node scores it")


@app.command("leaderboard")
def leaderboard(
    challenge_id: Annotated[int, typer.Argument(min=1)], hub: HubOpt,
    final: Annotated[bool, typer.Option(
        "--final", help="the final board (private part, after the deadline)")] = False,
    token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None, as_json: JsonOpt = False,
    ca_file: CaFileOpt = None,
) -> None:
    """The public board (live) or the final one; ties go to the earlier submission."""
    with member_client(hub, token, org_dir, ca_file) as client:
        data = call(client.challenge_leaderboard, challenge_id, "final" if final else "public")
    if as_json:
        print_json(data)
        return
    table = Table("rank", "org", "team", "submission", data["metric"], "submitted")
    for p in data["placings"]:
        table.add_row(str(p["rank"]), p["org"], ", ".join(p["team"]), str(p["submission_id"]),
                      f"{p['score']:.6g}", p["submitted_at"][:19])
    console.print(table)


@app.command("verify")
def verify(challenge_id: Annotated[int, typer.Argument(min=1)], hub: HubOpt, org_dir: OrgDirOpt,
           ca_file: CaFileOpt = None) -> None:
    """As the host: re-score every submission on the local test set and check the hub's scores, the signed
    ledger entries and the final board."""
    from consortium.fl.core import FLError
    from consortium.node.challenges import verify as verify_challenge

    with org_client(hub, org_dir, ca_file) as client:
        try:
            problems = call(verify_challenge, client, org_dir, challenge_id)
        except FLError as exc:
            fail(str(exc))
    if problems:
        for problem in problems:
            console.print(f"[red]x[/] {problem}")
        raise typer.Exit(1)
    console.print(f"challenge {challenge_id}: every score and the board re-verified")
