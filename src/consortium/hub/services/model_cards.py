"""Model cards (JSON + Markdown) that travel with the weights: what was trained, on which data under which
licences and with which obligations, by whom, how it went, and, once released, the release that froze it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import object_session

from consortium import crypto
from consortium.fl.core import Params
from consortium.fl import baseline, preprocessing
from consortium.fl.privacy import card as privacy_card
from consortium.fl.privacy import dp_sgd
from consortium.fl.privacy import spec as privacy_spec
from consortium.governance.licence_cards import card_terms, obligation_lines
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset
from consortium.hub.services import privacy_budgets
from consortium.plan import RunPlan
from consortium.previews import PREVIEW_FILE, PREVIEW_MEDIA_TYPE, markdown_section, preview_png
from consortium.protocol import ProjectCreate, RoundMetrics


def source_entries(sources: list[Dataset]) -> list[dict[str, Any]]:
    """What the card says about each data source: a dataset's rows and SHA-256, or an environment's
    gymnasium id and physics (just their commitment when the owner keeps them private), and the owner's
    privacy budget with what its node reported spent so far."""
    entries = []
    for source in sources:
        entry = {"ref": f"{source.org.name}/{source.name}", "org": source.org.name, "license": source.license}
        budget = privacy_budgets.budget_of(source)
        if budget is not None:
            spent, left = privacy_budgets.spent_and_left(object_session(source), source)
            entry["privacy_budget"] = {"epsilon": budget.epsilon, "delta": budget.delta, "spent": spent,
                                       "left": left}
        if source.environment is None:
            entry |= {"sha256": source.sha256, "rows": source.rows}
        else:
            entry |= {"kind": "environment", "env_id": source.environment["env_id"],
                      "physics": source.environment.get("physics"), "physics_sha256": source.sha256}
        entries.append(entry)
    return entries


def store_files(blobs: BlobStore, algorithm: Any, hp: Any, params: Params, seed: int) -> list[dict[str, Any]]:
    """Files released with the weights (a GAN's sample grid), stored as blobs: their card entries."""
    png = preview_png(algorithm, hp, params, seed)
    if png is None:
        return []
    return [{"name": PREVIEW_FILE, "media_type": PREVIEW_MEDIA_TYPE, "sha256": blobs.put(png),
             "description": "generated samples of the final model, one row per class"}]


def build_card(
    *,
    project_id: int,
    project_name: str,
    spec: ProjectCreate,
    spec_hash: str,
    run_id: int,
    version: int,
    datasets: list[dict[str, Any]],
    rounds: list[RoundMetrics],
    params_sha256: str,
    code_version: str,
    created_at: datetime,
    files: list[dict[str, Any]] | None = None,
    contributions: dict[str, Any] | None = None,
    fitted_preprocessing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model card: what was trained, on which data (or in which environments) under which licences, by
    whom, and how it went; ``datasets`` are :func:`source_entries`, ``files`` those of :func:`store_files`.
    ``license`` is the expression derived from the data, ``obligations`` what it obliges the model to do,
    ``privacy`` (with DP on) each source's (epsilon, delta) guarantee."""
    participants = sorted({ref.split("/")[0] for r in rounds for ref in r.participants})
    environments = [d for d in datasets if d.get("kind") == "environment"]
    tables = [d for d in datasets if d.get("kind") != "environment"]
    licence, obligations = card_terms((d["ref"], d["license"]) for d in datasets)
    return {
        "schema_version": 1,
        "model": f"{project_name}/run-{run_id}",
        "version": version,
        "task": spec.task,
        "project": {"id": project_id, "name": project_name, "spec_hash": spec_hash},
        "run_id": run_id,
        "algorithm": spec.algorithm.model_dump(),
        "strategy": spec.strategy.model_dump(),
        "rounds": spec.rounds,
        "seed": spec.seed,
        "datasets": tables,
        **({"environments": environments} if environments else {}),
        "license": licence,
        "obligations": obligations,
        **_privacy_section(spec, datasets),
        "participating_orgs": participants,
        **({"contributions": contributions} if contributions is not None else {}),
        "metrics_per_round": [r.model_dump(mode="json") for r in rounds],
        "final_metrics": {
            "test": rounds[-1].test if rounds else {},
            "federated_eval": rounds[-1].federated_eval if rounds else {},
        },
        **baseline.card_section(rounds[-1].baseline if rounds else None, rounds[-1].test if rounds else {}),
        **({"preprocessing": fitted_preprocessing} if fitted_preprocessing else {}),
        "weights": {"format": "safetensors", "sha256": params_sha256},
        **({"files": files} if files else {}),
        "code_version": code_version,
        "created_at": created_at.isoformat(),
    }


def _privacy_section(spec: ProjectCreate, datasets: list[dict[str, Any]]) -> dict[str, Any]:
    """Each source's guarantee: the run's client-level one, or under DP-SGD its own per-record one (from its
    rows), with the owner's budget where it has one."""
    budgets = {d["ref"]: d["privacy_budget"] for d in datasets if "privacy_budget" in d}
    if spec.privacy is not None and spec.privacy.mechanism == dp_sgd.MECHANISM:
        plan = RunPlan.of(spec)
        return privacy_card.dp_sgd_section(
            {d["ref"]: plan.dp_sgd_plan_of_source(d["rows"]) for d in datasets if d.get("kind") != "environment"},
            budgets)
    return privacy_card.card_section(
        privacy_spec.every_round(spec.privacy, spec.rounds, len(datasets)) if spec.privacy else None,
        [d["ref"] for d in datasets], budgets)


def card_sha256(card: dict[str, Any]) -> str:
    """SHA-256 of the card's canonical JSON: what a release proposal binds."""
    return crypto.sha256_hex(crypto.canonical_json(card))


def released(card: dict[str, Any], release: dict[str, Any]) -> dict[str, Any]:
    """The card frozen by a release: a copy with its ``release`` section (proposal, licence, obligations,
    visibility, rights, time)."""
    return {**card, "release": {**release, "obligations": card.get("obligations", {})}}


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _dataset_lines(card: dict[str, Any]) -> list[str]:
    lines = ["", "## Training data (never left its owners)", "", "| dataset | rows | licence | SHA-256 |",
             "|---|---|---|---|"]
    for d in card["datasets"]:
        lines.append(f"| {d['ref']} | {d['rows']} | {d['license']} | `{d['sha256'][:16]}…` |")
    return lines


def _environment_lines(environments: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Training environments (rollouts never left their owners)", "",
             "| environment | gymnasium id | licence | physics |", "|---|---|---|---|"]
    for e in environments:
        if e["physics"] is None:
            physics = f"private (committed: SHA-256 `{e['physics_sha256'][:16]}…`)"
        else:
            physics = ", ".join(f"{key} {value:.4g}" for key, value in sorted(e["physics"].items()))
        lines.append(f"| {e['ref']} | `{e['env_id']}` | {e['license']} | {physics} |")
    return lines


def _release_lines(release: dict[str, Any]) -> list[str]:
    use = "released for commercial use" if release["commercial"] else "not released for commercial use"
    return [
        "", "## Release (frozen)", "",
        f"- **Released** {release['released_at']} by proposal {release['proposal_id']}",
        f"- **Licence**: `{release['licence']}` ({use})",
        f"- **Visibility**: {release['visibility']}; process: {release['rights']['process']}, "
        f"download: {release['rights']['download']} (never wider than the data's own rights)",
    ]


def _contribution_lines(contributions: dict[str, Any] | None) -> list[str]:
    """Each org's measured contribution (docs/incentives.md), or why it was not measured."""
    if not contributions:
        return []
    lines = ["", "## Contributions", ""]
    if contributions.get("note"):
        lines.append(contributions["note"])
    elif contributions.get("method"):
        lines.append(f"Measured by {contributions['method']} on the test {contributions['metric']}, summed over "
                     f"rounds {', '.join(map(str, contributions['rounds_valued']))}.")
    for skipped in contributions.get("rounds_not_valued", []):
        lines.append(f"- round {skipped['round']} not valued: {skipped['reason']}")
    values = contributions.get("values") or {}
    if values:
        lines += ["", "| org | value |", "|---|---|"]
        lines += [f"| {org} | {value:.4g} |" for org, value in values.items()]
    return lines


def render_markdown(card: dict[str, Any]) -> str:
    """Human-readable rendering of a model card."""
    version = f" (version {card['version']})" if card.get("version") else ""
    lines = [
        f"# Model card: {card['model']}{version}",
        "",
        f"- **Task**: {card['task'] or '(not described)'}",
        f"- **Algorithm**: `{card['algorithm']['name']}` with hyper-parameters "
        f"`{card['algorithm']['hyperparameters']}`",
        f"- **Strategy**: `{card['strategy']['name'] or 'default'}` {card['strategy']['options'] or ''}",
        f"- **Rounds**: {card['rounds']}, seed {card['seed']}",
        f"- **Licence (derived from the data)**: `{card['license']}`",
        f"- **Participating organisations**: {', '.join(card['participating_orgs'])}",
        f"- **Weights**: safetensors, SHA-256 `{card['weights']['sha256']}`",
        f"- **Code version**: `{card['code_version']}`",
        f"- **Project**: {card['project']['name']} (spec SHA-256 `{card['project']['spec_hash']}`)",
    ]
    if "release" in card:
        lines += _release_lines(card["release"])
    lines += obligation_lines(card.get("obligations", {}))
    lines += privacy_card.markdown_lines(card)
    lines += _contribution_lines(card.get("contributions"))
    lines += preprocessing.markdown_lines(card) + baseline.markdown_lines(card)
    lines += _environment_lines(card["environments"]) if card.get("environments") else _dataset_lines(card)
    for file in card.get("files", []):
        if file["media_type"] == PREVIEW_MEDIA_TYPE:
            lines += markdown_section(file["name"])
    rounds = card["metrics_per_round"]
    keys_test = sorted({k for r in rounds for k in r["test"]})
    keys_fed = sorted({k for r in rounds for k in r["federated_eval"]})
    header = ["round", "participants"] + [f"test {k}" for k in keys_test]
    header += [f"federated {k}" for k in keys_fed]
    lines += ["", "## Metrics per round", "", "| " + " | ".join(header) + " |",
              "|" + "---|" * len(header)]
    for r in rounds:
        cells = [str(r["round"]), str(len(r["participants"]))]
        cells += [_fmt(r["test"].get(k)) for k in keys_test]
        cells += [_fmt(r["federated_eval"].get(k)) for k in keys_fed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
