"""``consortium audit``: measure what a configuration leaks (one-run DP audit, membership inference)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consortium.cli.common import CaFileOpt, OptionalOrgDirOpt, TokenOpt, call, console, fail, member_client

app = typer.Typer(no_args_is_help=True, help="Privacy audits of a project spec (in simulation) or of a hub model.")

SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="project spec JSON (see examples/)")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="write the results as JSON")]
CardOption = Annotated[Path | None, typer.Option(
    "--model-card", help="a model card JSON (or a directory holding model_card.json) to write the result into, "
                         "as privacy.audit; its MODEL_CARD.md is rendered again")]


def _emit(data: dict, table: Table, json_path: Path | None) -> None:
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"results: {json_path}")


def _card_paths(path: Path) -> tuple[Path, Path]:
    from consortium.model_files import CARD_FILE, CARD_MARKDOWN_FILE

    json_path = path / CARD_FILE if path.is_dir() else path
    if not json_path.is_file():
        fail(f"--model-card: no card JSON at {json_path}")
    markdown = CARD_MARKDOWN_FILE if json_path.name == CARD_FILE else json_path.with_suffix(".md").name
    return json_path, json_path.parent / markdown


def _write_to_card(path: Path, kind: str, entry: dict, md_path: Path | None = None) -> None:
    """The audit's entry in the card's ``privacy.audit.<kind>``; the Markdown beside it (``md_path``, else the
    JSON's name with ``.md``) rendered again."""
    from consortium.fl.privacy.card import with_audit
    from consortium.hub.services.model_cards import render_markdown
    from consortium.sim.outputs import render_card

    json_path, beside = _card_paths(path)
    md_path = md_path or beside
    try:
        card = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        fail(f"--model-card: {json_path} is not valid JSON: {exc}")
    if not isinstance(card, dict) or "model" not in card:
        fail(f"--model-card: {json_path} is not a model card")
    card = with_audit(card, kind, entry)
    json_path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    md_path.write_text(render_card(card) if card.get("simulated") else render_markdown(card))
    console.print(f"model card: {json_path} and {md_path} (privacy.audit.{kind})")


@app.command("dp")
def audit_dp(
    spec_path: SpecArgument,
    clip: Annotated[float | None, typer.Option(help="client-level clipping norm C (default: the spec's "
                                                    "privacy.clip, else 1)")] = None,
    noise_multiplier: Annotated[float | None, typer.Option(help="sigma (noise std = sigma * C); 0 = no DP "
                                                                "(default: the spec's privacy)")] = None,
    epsilon: Annotated[float | None, typer.Option(help="calibrate sigma for this target epsilon instead")] = None,
    delta: Annotated[float | None, typer.Option(help="delta of the claim and of the bound (default: the "
                                                     "spec's privacy.delta, else 1e-5)")] = None,
    canaries: Annotated[int, typer.Option(help="canary clients m, each IN with probability 1/2")] = 1000,
    guesses: Annotated[int, typer.Option(help="k: guesses on each side (top k IN, bottom k OUT)")] = 100,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    clients: Annotated[int | None, typer.Option(help="override the simulated clients N")] = None,
    seed: Annotated[int, typer.Option(help="seed of the canaries, the training and the noise")] = 0,
    json_path: JsonOption = None,
    model_card: CardOption = None,
) -> None:
    """One-run DP audit (Steinke, Nasr, Jagielski 2023): an epsilon lower bound at 95 % confidence.

    The DP settings are the spec's ``privacy`` block; --clip, --noise-multiplier, --epsilon and --delta
    override it (one of the last two is needed when the spec has none)."""
    from datetime import date

    import torch

    from consortium.fl.core import FLError
    from consortium.fl.privacy.card import dp_audit_entry
    from consortium.sim.dp_audit import run_dp_audit

    torch.set_num_threads(1)
    try:
        report = run_dp_audit(spec_path, canaries, guesses, clip=clip, noise_multiplier=noise_multiplier,
                              epsilon=epsilon, delta=delta, rounds=rounds, seed=seed,
                              overrides={"clients": clients})
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
    if model_card is not None:
        _write_to_card(model_card, "dp", dp_audit_entry(report.as_dict(), date.today()))


@app.command("mia")
def audit_mia(
    spec_path: Annotated[Path | None, typer.Argument(
        metavar="[SPEC]", help="project spec JSON to train and attack in simulation (or give --model)")] = None,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    clients: Annotated[int | None, typer.Option(help="override the simulated clients N")] = None,
    seed: Annotated[int, typer.Option(help="seed of the held-out split and the shadow model")] = 0,
    json_path: JsonOption = None,
    model_card: CardOption = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="attack a model on the hub instead: its id (as `consortium model download` takes it) "
                        "or PROJECT[@VERSION] (default: the latest version)")] = None,
    members: Annotated[Path | None, typer.Option(
        "--members", help="--model: your org's data file the model was trained on (a dataset on its card)")] = None,
    non_members: Annotated[Path | None, typer.Option(
        "--non-members", help="--model: rows of the same kind the model never saw")] = None,
    target: Annotated[str | None, typer.Option("--target", help="--model: the label column of both files")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="--model: where the model and its card are downloaded (default: model-ID)")] = None,
    hub: Annotated[str | None, typer.Option("--hub", envvar="CONSORTIUM_HUB", help="hub base URL")] = None,
    token: TokenOpt = None,
    org_dir: OptionalOrgDirOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Loss-threshold and shadow-model membership inference against a classifier: the spec's, trained in
    simulation, or (--model) one trained on the hub, downloaded with your credentials and attacked with your
    own rows."""
    import torch

    from datetime import date

    from consortium.fl.core import FLError
    from consortium.fl.privacy.card import mia_audit_entry
    from consortium.sim.mia import run_mia

    torch.set_num_threads(1)
    if (spec_path is None) == (model is None):
        fail("give a SPEC to audit in simulation, or --model to audit a model on the hub (not both)")
    card_md: Path | None = None
    if model is not None:
        if hub is None:
            fail("--model needs --hub (or CONSORTIUM_HUB)")
        report, model_card, card_md, name, extra = _attack_hub_model(
            hub, token, org_dir, model, members, non_members, target, out, seed, ca_file)
    else:
        assert spec_path is not None
        name, extra = spec_path.name, {}
        try:
            report = run_mia(spec_path, rounds, seed, {"clients": clients})
        except FLError as exc:
            fail(str(exc))
    table = Table(title=f"membership inference on {name} ({report.members} members, "
                        f"{report.non_members} non-members)")
    for column in ("attack", "AUC", "TPR at 1 % FPR"):
        table.add_column(column, justify="right")
    for attack, scores in (("loss threshold", report.loss_threshold), ("shadow model", report.shadow_model)):
        table.add_row(attack, f"{scores['auc']:.3f}", f"{scores['tpr_at_1pct_fpr']:.3f}")
    _emit(report.as_dict() | extra, table, json_path)
    if model_card is not None:
        _write_to_card(model_card, "mia", mia_audit_entry(report.as_dict(), date.today()) | extra, card_md)
        if model is not None:
            console.print("the hub's own card is unchanged: it takes no audit results (a released card is "
                          "frozen); share the local card with the result")


def _attack_hub_model(hub: str, token: str | None, org_dir: Path | None, model: str, members: Path | None,
                      non_members: Path | None, target: str | None, out: Path | None, seed: int,
                      ca_file: Path | None = None):
    """Download ``model`` (hash-checked) and attack it with the caller's rows: (report, card JSON path, card
    Markdown path, title, what the card's entry adds: the model and the members' dataset)."""
    from consortium.codec import decode_tensors
    from consortium.fl.core import FLError
    from consortium.model_files import download_model
    from consortium.sim.mia import attack_hub_model
    from consortium.tables import load_table

    if members is None or non_members is None:
        fail("--model needs --members FILE (your rows it was trained on) and --non-members FILE (rows it never saw)")
    try:
        member_rows, held_out = load_table(members, target), load_table(non_members, target)
    except FLError as exc:
        fail(str(exc))
    with member_client(hub, token, org_dir, ca_file) as client:
        model_id = _model_id(client, model)
        paths = call(download_model, client, model_id, out or Path(f"model-{model_id}"))
    card = json.loads(paths["card"].read_text())
    trained_on = {d.get("sha256"): d["ref"] for d in card.get("datasets", [])}
    if member_rows.sha256 not in trained_on:
        fail(f"--members: {members} (sha256 {member_rows.sha256[:12]}...) is none of the datasets model "
             f"{model_id} was trained on ({', '.join(trained_on.values()) or 'none'}); give the file you registered")
    try:
        report = attack_hub_model(card, decode_tensors(paths["weights"].read_bytes()), member_rows.to_local_data(),
                                  held_out.to_local_data(), seed)
    except FLError as exc:
        fail(str(exc))
    extra = {"model_id": model_id, "members_dataset": trained_on[member_rows.sha256]}
    return report, paths["card"], paths["card_markdown"], f"model {model_id} ({card['model']})", extra


def _model_id(client, model: str) -> int:
    """The registry id of ``model``: an id, or PROJECT[@VERSION] (the latest version without one)."""
    if model.isdigit():
        return int(model)
    project, _, version = model.partition("@")
    if version and not version.isdigit():
        fail(f"--model: the version after @ must be a number, got {version!r}")
    rows = [m for m in call(client.list_models, project=project, limit=500) if m["project"] == project]
    if version:
        rows = [m for m in rows if m["version"] == int(version)]
    if not rows:
        fail(f"--model: no model {model!r} that you may see")
    return max(rows, key=lambda m: (m["version"] or 0, m["id"]))["id"]
