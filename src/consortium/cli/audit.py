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


def _write_to_card(path: Path, kind: str, entry: dict) -> None:
    """The audit's entry in the card's ``privacy.audit.<kind>``; the Markdown beside it rendered again."""
    from consortium.fl.privacy.card import with_audit
    from consortium.hub.services.model_cards import render_markdown
    from consortium.sim.outputs import render_card

    json_path, md_path = _card_paths(path)
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
    spec_path: SpecArgument,
    rounds: Annotated[int | None, typer.Option(help="override the spec's rounds")] = None,
    clients: Annotated[int | None, typer.Option(help="override the simulated clients N")] = None,
    seed: Annotated[int, typer.Option(help="seed of the held-out split and the shadow model")] = 0,
    json_path: JsonOption = None,
    model_card: CardOption = None,
) -> None:
    """Loss-threshold and shadow-model membership inference against the spec's classifier (simulation)."""
    import torch

    from datetime import date

    from consortium.fl.core import FLError
    from consortium.fl.privacy.card import mia_audit_entry
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
    if model_card is not None:
        _write_to_card(model_card, "mia", mia_audit_entry(report.as_dict(), date.today()))
