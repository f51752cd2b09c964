"""``consortium proposal`` and ``consortium vote``: decisions the members take."""

from __future__ import annotations

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
    err_console,
    fail,
    member_client,
    org_client,
    print_json,
)

app = typer.Typer(no_args_is_help=True, help="List, show and open proposals (votes: `consortium vote`).")

KINDS = "suspend-org, reinstate-org, change-policy or release-model (or with '_')"


@app.command("list")
def proposal_list(
    hub: HubOpt, token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
    status: Annotated[str | None, typer.Option("--status", help="open, passed, rejected, expired, withdrawn")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="admit_org, run_project, ...")] = None,
    ca_file: CaFileOpt = None,
) -> None:
    """The proposals you may see, with their status and the votes still missing."""
    with member_client(hub, token, org_dir, ca_file) as client:
        rows = call(client.proposals, status=status, kind=kind)
    table = Table("id", "kind", "about", "status", "votes", "missing", "closes")
    for p in rows:
        about = p["subject"].get("org") or p["subject"].get("project") or p["subject"].get("model_id") or ""
        tally = ", ".join(f"{v['org']}:{v['choice']}" for v in p["votes"]) or "-"
        table.add_row(str(p["id"]), p["kind"], str(about), p["status"], tally, ", ".join(p["missing"]) or "-",
                      p["closes_at"][:19])
    console.print(table)


@app.command("show")
def proposal_show(proposal_id: int, hub: HubOpt, token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
                  ca_file: CaFileOpt = None) -> None:
    """A proposal in full: its content and hash, electorate, veto holders, votes and outcome."""
    with member_client(hub, token, org_dir, ca_file) as client:
        print_json(call(client.proposal, proposal_id))


@app.command("create")
def proposal_create(
    kind: Annotated[str, typer.Argument(help=KINDS)],
    hub: HubOpt, token: TokenOpt = None, org_dir: OptionalOrgDirOpt = None,
    org: Annotated[str | None, typer.Option("--org", help="suspend_org / reinstate_org: the org")] = None,
    policy_file: Annotated[Path | None, typer.Option("--policy", exists=True, dir_okay=False,
                                                     help="change_policy: the new policy (JSON)")] = None,
    model_id: Annotated[int | None, typer.Option("--model", help="release_model: the model id")] = None,
    licence: Annotated[str | None, typer.Option("--licence", help="release_model: SPDX licence")] = None,
    visibility: Annotated[str | None, typer.Option("--visibility", help="release_model: members (default) or "
                                                                        "public")] = None,
    download: Annotated[bool | None, typer.Option("--download/--no-download", help="release_model: every member "
                                                  "who sees it may download it (default: no)")] = None,
    process: Annotated[bool | None, typer.Option("--process/--no-process", help="release_model: every member who "
                                                 "sees it may train on it (default: as --download)")] = None,
    commercial: Annotated[bool, typer.Option("--commercial/--no-commercial",
                                             help="release_model: for commercial use")] = False,
    reason: Annotated[str, typer.Option("--reason", help="why (shown to the voters)")] = "",
    ca_file: CaFileOpt = None,
) -> None:
    """Open a proposal (projects open theirs with `project create`, orgs with `org create`)."""
    import json

    from pydantic import ValidationError

    from consortium.governance.wire import ProposalCreate

    fields = {"kind": kind.replace("-", "_"), "org": org, "model_id": model_id, "licence": licence,
              "visibility": visibility, "download": download, "process": process, "commercial": commercial,
              "reason": reason}
    try:
        if policy_file is not None:
            fields["policy"] = json.loads(policy_file.read_text())
        body = ProposalCreate.model_validate({k: v for k, v in fields.items() if v is not None})
    except json.JSONDecodeError as exc:
        fail(f"--policy: {policy_file} is not valid JSON: {exc}")
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
    with member_client(hub, token, org_dir, ca_file) as client:
        row = call(client.create_proposal, body)
    console.print(f"proposal {row['id']} ({row['kind']}) is {row['status']}; closes {row['closes_at'][:19]}")


def vote(
    proposal_id: Annotated[int, typer.Argument(help="the proposal")],
    choice: Annotated[str, typer.Argument(help="yes, no or abstain")],
    hub: HubOpt, org_dir: OrgDirOpt,
    reason: Annotated[str, typer.Option("--reason", help="why (recorded with the vote)")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="sign without asking")] = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Vote for your org: shows what the proposal is about (for a project: the spec hash, checked here, and
    the test set), asks, signs the vote with the org's key and records a yes to run a project for your node."""
    from consortium.node.actions import VoteError, cast_vote

    if choice not in ("yes", "no", "abstain"):
        fail(f"CHOICE: must be yes, no or abstain, not {choice!r}")

    def confirm(subject) -> bool:
        console.print(f"proposal {subject.proposal_id} ({subject.kind}, {subject.status}) on hub "
                      f"{subject.hub_id}\n  content sha256   {subject.content_hash} (recomputed here)\n"
                      f"  subject          {subject.subject}", soft_wrap=True, markup=False)
        return yes or typer.confirm(f"Sign a {choice!r} vote for {client.identity.org}?", default=False)

    with org_client(hub, org_dir, ca_file) as client:
        try:
            subject = call(cast_vote, client, org_dir, proposal_id, choice, reason, confirm)
        except VoteError as exc:
            fail(str(exc))
    if subject is None:
        err_console.print("no vote: nothing was signed")
        raise typer.Exit(1)
    console.print(f"{client.identity.org} voted {choice} on proposal {proposal_id}")


@app.command("adopt-vote")
def proposal_adopt_vote(
    proposal_id: Annotated[int, typer.Argument(help="the run_project proposal voted on in the web page")],
    hub: HubOpt, org_dir: OrgDirOpt, ca_file: CaFileOpt = None,
) -> None:
    """Tell your node of a vote a steward cast in the web page: checks the proposal as `consortium vote`
    does and the vote's signature with the org's key, then records a yes to run the project for the node."""
    from consortium.node.actions import VoteError, adopt_vote

    with org_client(hub, org_dir, ca_file) as client:
        try:
            subject = call(adopt_vote, client, org_dir, proposal_id)
        except VoteError as exc:
            fail(str(exc))
    console.print(f"{client.identity.org}'s vote on proposal {proposal_id} (project "
                  f"{subject.subject['project_id']}) is recorded for its node")
