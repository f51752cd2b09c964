"""The node's own privacy-budget ledger: what each of its datasets has spent, kept on its disk and enforced
before every round, whatever the hub says.

``<org dir>/privacy-budget.jsonl`` holds one JSON line per charge (dataset, project, run, round, task id and
seed, noise multiplier, sampling rate, steps, the budget's delta), appended under a file lock and fsynced. Before a
fit task of a DP project on a dataset with a budget (``privacy_budget`` on its card in the registry),
:meth:`BudgetGuard.admit` composes the dataset's charges with this round's
(:func:`consortium.fl.privacy.budget.verdict`) and refuses the task if the total would pass the budget; else
it writes the charge BEFORE any training, so a crash never loses one. A task of a project without DP on such a
dataset is refused outright (its spend would be unbounded).

Replays: a charge is keyed by (dataset, run, round, task seed). The hub replays a lost round with the same seeds
(``derive_seed(spec seed, kind, round, dataset)``), so the node recomputes the same update with the same noise
and releases nothing new: the replay reuses the charge. A task of the same round with another seed would draw
other noise, so it is charged again (the safe choice).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from consortium.atomic import exclusive_lock
from consortium.fl.privacy import budget as privacy_budget
from consortium.fl.privacy.budget import Budget, Charge
from consortium.node.registry import LocalRegistry
from consortium.plan import RunPlan
from consortium.protocol import TaskKind, TaskOut

BUDGET_FILE = "privacy-budget.jsonl"


@dataclass(frozen=True)
class ChargeRecord:
    """One round charged to a dataset's budget, as the node keeps it."""

    dataset: str
    project_id: int
    run_id: int
    round: int
    task_id: int
    seed: int
    noise_multiplier: float
    sampling_rate: float
    delta: float
    at: str
    steps: int = 1
    """Sampled Gaussian steps in the round: DP-SGD's local steps (1 for DP-FedAvg, and in older lines)."""

    @property
    def charge(self) -> Charge:
        """The round as the accountant composes it."""
        return Charge(self.noise_multiplier, self.sampling_rate, self.steps)

    def same_release(self, task: TaskOut) -> bool:
        """True when ``task`` recomputes this charge's release (same dataset, run, round and seed)."""
        return (self.dataset, self.run_id, self.round, self.seed) == (task.dataset, task.run_id, task.round,
                                                                      task.seed)


class BudgetLedger:
    """``<org dir>/privacy-budget.jsonl``: every charge, appended atomically (a torn last line is skipped)."""

    def __init__(self, org_dir: Path) -> None:
        self.path = Path(org_dir) / BUDGET_FILE

    def records(self, dataset: str | None = None) -> list[ChargeRecord]:
        """Every charge kept (of ``dataset`` only, if given), oldest first."""
        if not self.path.exists():
            return []
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = ChargeRecord(**json.loads(line))
            except (ValueError, TypeError):
                continue
            if dataset is None or record.dataset == dataset:
                kept.append(record)
        return kept

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The file's lock between processes: hold it from reading the charges to writing a new one."""
        return exclusive_lock(self.path)

    def append(self, record: ChargeRecord) -> None:
        """Add one charge: one line, flushed and fsynced. The caller holds :meth:`locked`."""
        line = json.dumps(asdict(record), sort_keys=True) + "\n"
        with open(self.path, "ab") as handle:
            if handle.tell() and not self._ends_with_newline():
                handle.write(b"\n")  # after a torn line, start a fresh one
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"


@dataclass(frozen=True)
class Admission:
    """What the guard decided for a task: a refusal reason, or the charge it recorded (None: nothing to
    charge, e.g. a dataset without a budget or an evaluation task)."""

    refusal: str | None = None
    charge: ChargeRecord | None = None


class BudgetGuard:
    """Enforces the budgets on the cards in the org's dataset registry (``datasets.json``, read afresh for
    every task), with the ledger on its disk."""

    def __init__(self, org: str, org_dir: Path) -> None:
        self.org = org
        self.registry = LocalRegistry(org_dir)
        self.ledger = BudgetLedger(org_dir)

    def budget(self, dataset: str) -> Budget | None:
        """The owner's budget on the dataset's card (None: no budget, or not a registered dataset)."""
        if dataset not in self.registry:
            return None
        spec = self.registry.get(dataset).card.privacy_budget
        return None if spec is None else Budget(spec.epsilon, spec.delta)

    def admit(self, task: TaskOut, plan: RunPlan) -> Admission:
        """Refuse the task if it would pass its dataset's budget (or has no DP on a budgeted dataset); for a fit
        task that fits, record its charge first (or find the one a replay of its round already made)."""
        budget = self.budget(task.dataset)
        if budget is None:
            return Admission()
        ref = f"{self.org}/{task.dataset}"
        if not plan.private:
            return Admission(refusal=privacy_budget.no_dp_refusal(ref))
        if task.kind != TaskKind.fit:
            return Admission()
        with self.ledger.locked():
            return self._charge(task, plan, budget, ref)

    def round_charge(self, task: TaskOut, plan: RunPlan) -> Charge:
        """What one round of ``plan`` spends on the task's dataset: DP-FedAvg's one sampled Gaussian release,
        or DP-SGD's local steps on the rows the node trains on (from the card's row count)."""
        if plan.sample_level:
            return plan.dp_sgd_plan_of_source(self.registry.get(task.dataset).card.rows).round_charge()
        assert plan.privacy is not None
        return Charge(plan.privacy.noise_multiplier, plan.privacy.sampling_rate)

    def _charge(self, task: TaskOut, plan: RunPlan, budget: Budget, ref: str) -> Admission:
        spent = self.ledger.records(task.dataset)
        for record in spent:
            if record.same_release(task):
                return Admission(charge=record)
        charge = self.round_charge(task, plan)
        refusal = privacy_budget.round_refusal(ref, privacy_budget.verdict(
            budget, [r.charge for r in spent], [charge]))
        if refusal is not None:
            return Admission(refusal=refusal)
        record = ChargeRecord(
            dataset=task.dataset, project_id=task.project_id, run_id=task.run_id, round=task.round,
            task_id=task.id, seed=task.seed, noise_multiplier=charge.noise_multiplier,
            sampling_rate=charge.sampling_rate, delta=budget.delta, at=datetime.now(UTC).isoformat(),
            steps=charge.steps)
        self.ledger.append(record)
        return Admission(charge=record)

    def spent(self, dataset: str) -> float | None:
        """Epsilon the dataset has spent at its budget's delta (None without a budget)."""
        budget = self.budget(dataset)
        if budget is None:
            return None
        return privacy_budget.epsilon_of([r.charge for r in self.ledger.records(dataset)], budget.delta)
