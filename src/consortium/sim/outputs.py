"""What a simulation leaves behind: per-round metrics as JSON/CSV, and the model with its card."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from consortium.crypto import sha256_hex
from consortium.fl import baseline, preprocessing
from consortium.fl.privacy import card as privacy_card
from consortium.fl.privacy.spec import DpPlan
from consortium.governance.licence_cards import card_terms, obligation_lines
from consortium.model_files import CARD_FILE, CARD_MARKDOWN_FILE, WEIGHTS_FILE
from consortium.plan import RunPlan
from consortium.previews import PREVIEW_FILE, markdown_section, preview_png
from consortium.codec import encode_tensors
from consortium.sim.simulation import SimResult, client_parts
from consortium.sim.environments import SimEnvironments
from consortium.version import code_version


def summary(result: SimResult, engine: str) -> dict[str, Any]:
    """The JSON summary: settings, ``rounds`` (one record each) and ``final_metrics``."""
    steady = [r.wall_s for r in result.rounds[1:]] or [r.wall_s for r in result.rounds]
    return {
        "spec": result.spec.model_dump(mode="json"),
        "simulation": result.settings.model_dump(mode="json") | {"engine": engine},
        "dataset": _describe_data(result),
        "rounds": [r.as_dict() for r in result.rounds],
        "final_metrics": result.final_metrics,
        **baseline.card_section(result.baseline, result.final_metrics),
        "mean_round_s_after_first": sum(steady) / len(steady) if steady else None,
    }


def _describe_data(result: SimResult) -> dict[str, Any]:
    if isinstance(result.dataset, SimEnvironments):
        return result.dataset.describe()
    return {
        "name": result.dataset.name,
        "train_rows": len(result.dataset.train),
        "test_rows": len(result.dataset.test),
        "license": result.dataset.license,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_csv(path: Path, result: SimResult) -> None:
    """One row per round: round, clients, examples, wall seconds, then train_* and test_* metrics."""
    train_keys = sorted({k for r in result.rounds for k in r.train})
    test_keys = sorted({k for r in result.rounds for k in r.test})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["round", "clients", "num_examples", "wall_s"]
            + [f"train_{k.removeprefix('train_')}" for k in train_keys]
            + [f"test_{k}" for k in test_keys]
        )
        for r in result.rounds:
            writer.writerow(
                [r.round, r.clients, r.num_examples, f"{r.wall_s:.6f}"]
                + [r.train.get(k, "") for k in train_keys]
                + [r.test.get(k, "") for k in test_keys]
            )


def model_card(result: SimResult, engine: str, weights_sha256: str) -> dict[str, Any]:
    """The card of a simulated model, shaped like a real run's: what, on which data, how it went."""
    spec, settings = result.spec, result.settings
    size = "environments" if isinstance(result.dataset, SimEnvironments) else "rows"
    datasets = [
        {
            "ref": f"sim/{result.dataset.name}",
            size: len(result.dataset.train),
            "license": result.dataset.license,
        }
    ]
    licence, obligations = card_terms((d["ref"], d["license"]) for d in datasets)
    return {
        "schema_version": 1,
        "model": f"sim/{spec.name}",
        "simulated": True,
        "task": spec.task,
        "algorithm": spec.algorithm.model_dump(),
        "strategy": spec.strategy.model_dump(),
        "rounds": spec.rounds,
        "seed": spec.seed,
        "simulation": settings.model_dump(mode="json") | {"engine": engine},
        "datasets": datasets,
        "license": licence,
        "obligations": obligations,
        **_privacy_section(result, datasets[0]["ref"]),
        "metrics_per_round": [r.as_dict() for r in result.rounds],
        "final_metrics": {"test": result.final_metrics},
        **baseline.card_section(result.baseline, result.final_metrics),
        **({"preprocessing": result.preprocessing.model_dump(mode="json")} if result.preprocessing else {}),
        "weights": {"format": "safetensors", "sha256": weights_sha256},
        "code_version": code_version(),
    } | _card_environments(result)


def _privacy(result: SimResult) -> DpPlan | None:
    """The run's DP resolved as the simulation ran it (its cohort's sampling rate); None without DP."""
    spec, settings = result.spec, result.settings
    if spec.privacy is None:
        return None
    return RunPlan.of(spec, sampling=settings.sampling()).privacy


def _privacy_section(result: SimResult, ref: str) -> dict[str, Any]:
    """The card's privacy section. Under DP-SGD every client is its own dataset with its own noise; the card
    states the guarantee of the client whose epsilon is largest (all meet the spec's target)."""
    plan = RunPlan.of(result.spec)
    if not plan.sample_level:
        return privacy_card.card_section(_privacy(result), [ref])
    sizes = sorted({len(part) for part in client_parts(result.dataset, result.settings) if len(part)})
    worst = max((plan.dp_sgd_plan(rows) for rows in sizes), key=lambda p: p.guarantee.epsilon)
    return privacy_card.dp_sgd_section(
        {ref: worst}, note=f"Each of the {result.settings.clients} simulated clients ran DP-SGD on its own rows "
        f"with its own noise multiplier; the row states the client whose epsilon is largest.")


def _card_environments(result: SimResult) -> dict[str, Any]:
    """The clients' physics for the card of a model trained in environments; nothing otherwise."""
    if isinstance(result.dataset, SimEnvironments):
        return {"environments": result.dataset.describe()}
    return {}


def _environment_lines(environments: dict[str, Any]) -> list[str]:
    """A table of each client's physics and the physics of the evaluation environment."""
    keys = sorted(environments["evaluation"])
    rows = [(f"client {i}", physics) for i, physics in enumerate(environments["clients"])]
    rows.append(("evaluation (standard)", environments["evaluation"]))
    return [
        "",
        f"## Environments: `{environments['name']}`, physics within ±{environments['physics_spread']:.0%}",
        "",
        "| environment | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
        *("| " + " | ".join([name] + [f"{physics[k]:.4g}" for k in keys]) + " |" for name, physics in rows),
    ]


def _clients_split(card: dict[str, Any]) -> str:
    """How the clients differ: the data partition, or one physics variant each."""
    if card.get("environments"):
        return "one physics variant each"
    return f"partition `{card['simulation']['partition']}`"


def render_card(card: dict[str, Any]) -> str:
    sim = card["simulation"]
    lines = [
        f"# Model card: {card['model']} (simulated)",
        "",
        f"- **Task**: {card['task'] or '(not described)'}",
        f"- **Algorithm**: `{card['algorithm']['name']}` with hyper-parameters `{card['algorithm']['hyperparameters']}`",
        f"- **Strategy**: `{card['strategy']['name'] or 'default'}` {card['strategy']['options'] or ''}",
        (
            f"- **Simulation**: {sim['clients']} clients, {_clients_split(card)}, cohort {sim['cohort']}, "
            f"engine `{sim['engine']}` on `{sim['device']}`"
        ),
        f"- **Rounds**: {card['rounds']}, seed {card['seed']}",
        f"- **Data**: {', '.join(d['ref'] for d in card['datasets'])}; licence `{card['license']}`",
        f"- **Weights**: safetensors, SHA-256 `{card['weights']['sha256']}`",
        f"- **Code version**: `{card['code_version']}`",
    ]
    lines += obligation_lines(card["obligations"])
    lines += privacy_card.markdown_lines(card)
    lines += preprocessing.markdown_lines(card) + baseline.markdown_lines(card)
    if card.get("environments"):
        lines += _environment_lines(card["environments"])
    if card.get("samples_png"):
        lines += markdown_section(card["samples_png"])
    rounds = card["metrics_per_round"]
    keys = sorted({k for r in rounds for k in r["test"]})
    lines += [
        "",
        "## Metrics per round",
        "",
        "| round | clients | " + " | ".join(f"test {k}" for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for r in rounds:
        cells = [str(r["round"]), str(r["clients"])] + [
            f"{r['test'][k]:.4f}" if k in r["test"] else "" for k in keys
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def preview(result: SimResult) -> bytes | None:
    """PNG of what the model does, for algorithms that draw one (a GAN's sample grid): as a real run's."""
    plan = RunPlan.of(result.spec, sampling=result.settings.sampling())
    return preview_png(plan.algorithm, plan.hp, result.params, result.spec.seed)


def write_model(out_dir: Path, result: SimResult, engine: str) -> dict[str, Path]:
    """``model.safetensors``, ``model_card.json`` and ``MODEL_CARD.md`` in ``out_dir`` (plus ``samples.png`` for
    a GAN): the names ``consortium model download`` writes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = encode_tensors(result.params)
    paths = {
        "weights": out_dir / WEIGHTS_FILE,
        "card": out_dir / CARD_FILE,
        "card_markdown": out_dir / CARD_MARKDOWN_FILE,
    }
    paths["weights"].write_bytes(weights)
    card = model_card(result, engine, sha256_hex(weights))
    png = preview(result)
    if png is not None:
        paths["samples"] = out_dir / PREVIEW_FILE
        paths["samples"].write_bytes(png)
        card["samples_png"] = PREVIEW_FILE
    write_json(paths["card"], card)
    paths["card_markdown"].write_text(render_card(card))
    return paths
