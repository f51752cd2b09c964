"""Released models: the card (JSON + Markdown) that travels with the weights."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from consortium.governance.licences import derive_licence
from consortium.hub.db.models import Model
from consortium.hub.services.errors import NotFound
from consortium.protocol import ProjectCreate, RoundMetrics


def build_card(
    *,
    project_id: int,
    project_name: str,
    spec: ProjectCreate,
    spec_hash: str,
    run_id: int,
    datasets: list[dict[str, Any]],
    rounds: list[RoundMetrics],
    params_sha256: str,
    code_version: str,
    created_at: datetime,
) -> dict[str, Any]:
    """The model card: what was trained, on which data under which licences, by whom, and how it went."""
    participants = sorted({ref.split("/")[0] for r in rounds for ref in r.participants})
    return {
        "schema_version": 1,
        "model": f"{project_name}/run-{run_id}",
        "task": spec.task,
        "project": {"id": project_id, "name": project_name, "spec_hash": spec_hash},
        "run_id": run_id,
        "algorithm": spec.algorithm.model_dump(),
        "strategy": spec.strategy.model_dump(),
        "rounds": spec.rounds,
        "seed": spec.seed,
        "datasets": datasets,
        "license": derive_licence(d["license"] for d in datasets),
        "participating_orgs": participants,
        "metrics_per_round": [r.model_dump(mode="json") for r in rounds],
        "final_metrics": {
            "test": rounds[-1].test if rounds else {},
            "federated_eval": rounds[-1].federated_eval if rounds else {},
        },
        "weights": {"format": "safetensors", "sha256": params_sha256},
        "code_version": code_version,
        "created_at": created_at.isoformat(),
    }


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def render_markdown(card: dict[str, Any]) -> str:
    """Human-readable rendering of a model card."""
    lines = [
        f"# Model card: {card['model']}",
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
        "",
        "## Training data (never left its owners)",
        "",
        "| dataset | rows | licence | SHA-256 |",
        "|---|---|---|---|",
    ]
    for d in card["datasets"]:
        lines.append(f"| {d['ref']} | {d['rows']} | {d['license']} | `{d['sha256'][:16]}…` |")
    rounds = card["metrics_per_round"]
    keys_test = sorted({k for r in rounds for k in r["test"]})
    keys_fed = sorted({k for r in rounds for k in r["federated_eval"]})
    header = ["round", "participants"] + [f"test {k}" for k in keys_test] + [f"federated {k}" for k in keys_fed]
    lines += ["", "## Metrics per round", "", "| " + " | ".join(header) + " |",
              "|" + "---|" * len(header)]
    for r in rounds:
        cells = [str(r["round"]), str(len(r["participants"]))]
        cells += [_fmt(r["test"].get(k)) for k in keys_test]
        cells += [_fmt(r["federated_eval"].get(k)) for k in keys_fed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def get(session: Session, model_id: int) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    return model
