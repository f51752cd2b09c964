"""Publish DP synthetic data made from a registered dataset: the node charges the release to the dataset's
budget on its own ledger first (refusing one that would overspend), generates the rows
(:mod:`consortium.node.synthetic`), and publishes them as a version marked synthetic, with its epsilon in the
version record and the datasheet; the hub charges it to its mirror of the budget (refusing it likewise)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from consortium.client import HubClient
from consortium.fl.privacy import budget as privacy_budget
from consortium.fl.privacy.budget import Charge
from consortium.node.budget import BudgetGuard, ChargeRecord
from consortium.node.open_data import frame_of, publish_made_table
from consortium.node.registry import LocalRegistry
from consortium.node.synthetic import Domain, SynthesisError, synthesise
from consortium.open_data_wire import Datasheet, SyntheticRelease
from consortium.tables import DatasetError, load_table


def _charge_locally(org: str, org_dir: Path, name: str, release: SyntheticRelease) -> None:
    guard = BudgetGuard(org, org_dir)
    budget = guard.budget(name)
    if budget is None:
        return
    charge = Charge(release.noise_multiplier, 1.0, release.measurements)
    with guard.ledger.locked():
        spent = [r.charge for r in guard.ledger.records(name)]
        refusal = privacy_budget.round_refusal(f"{org}/{name}", privacy_budget.verdict(budget, spent, [charge]))
        if refusal is not None:
            raise SynthesisError(f"{refusal}; nothing was generated or sent")
        guard.ledger.append(ChargeRecord(
            dataset=name, project_id=0, run_id=0, round=0, task_id=0, seed=secrets.randbits(62),
            noise_multiplier=charge.noise_multiplier, sampling_rate=1.0, delta=budget.delta,
            at=datetime.now(UTC).isoformat(), steps=charge.steps))


def synthetic_of(org_dir: Path, name: str, domains: Mapping[str, Domain], epsilon: float, delta: float,
                 identifiers: Sequence[str] = (), seed: int | None = None):
    """The registered dataset ``name`` (checked against its card, ``identifiers`` dropped) as DP synthetic
    rows; (rows, release, the card's target if kept, its categorical columns kept)."""
    entry = LocalRegistry(org_dir).get(name)
    loaded = load_table(entry.path, entry.target, declared=entry.card.schema_)
    if loaded.sha256 != entry.card.sha256:
        raise DatasetError(f"dataset {name!r}: {entry.path} no longer matches its card; register it again")
    frame = frame_of(loaded).drop(columns=[c for c in identifiers if c in loaded.columns])
    rows, release = synthesise(frame, domains, epsilon, delta, seed)
    target = entry.target if entry.target in rows.columns else None
    categorical = [c for c in entry.card.schema_.categorical or () if c in rows.columns]
    return rows, release, target, categorical


def publish_synthetic(client: HubClient, org_dir: Path, ref: str, version: str, licence: str,
                      datasheet: Datasheet, work_dir: Path, domains: Mapping[str, Domain], epsilon: float,
                      delta: float, identifiers: Sequence[str] = ()) -> dict:
    """Charge, generate and publish DP synthetic data of the registered dataset ``ref``; the hub's version
    record (SynthesisError when the node's budget refuses the release)."""
    org, _, name = ref.partition("/")
    rows, release, target, categorical = synthetic_of(org_dir, name, domains, epsilon, delta, identifiers)
    _charge_locally(org, org_dir, name, release)
    work_dir.mkdir(parents=True, exist_ok=True)
    raw, canonical = work_dir / f"{name}-synthetic.raw.csv", work_dir / f"{name}-synthetic.csv"
    note = (f" Synthetic: these rows are differentially private synthetic data (epsilon {epsilon:g}, delta "
            f"{delta:g}; {release.generator}), not the real rows.")
    sheet = datasheet.model_copy(update={"preprocessing": (datasheet.preprocessing[: 4000 - len(note)] + note)})
    try:
        rows.to_csv(raw, index=False)
        loaded = load_table(raw, target, categorical=categorical)
        return publish_made_table(client, ref, canonical, loaded, version, licence, sheet, release)
    finally:
        raw.unlink(missing_ok=True)
        canonical.unlink(missing_ok=True)
