"""`consortium audit mia`: membership inference against a classifier trained by a spec in simulation.

Members are the simulator's training rows (every client's data), non-members its held-out test rows, split
in two by a seed: the attacker's half ``A`` and the evaluation half ``B``. Two attacks, both judged on the
members against ``B`` (rows the attacker never saw):

- **loss threshold** (Yeom et al., CSF 2018): a row's score is minus its loss under the trained model;
- **shadow model** (Shokri et al., S&P 2017): a shadow classifier of the same architecture is trained
  centrally on half of ``A`` (for as many epochs as the federated run gave a client: rounds x local epochs),
  and a logistic regression learns to tell its training half of ``A`` from the other half by the shadow's
  outputs (loss, top probability, margin between the top two); it then scores the target's outputs.

Reported per attack: ROC AUC and the TPR at 1 % FPR (``sklearn.metrics.roc_curve``, interpolated).
Only the simulator path exists: a hub model would take its member's own rows in place of the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from consortium.fl.core import FLError, LocalData, Params, derive_seed
from consortium.fl.networks import forward
from consortium.sim.datasets import SimDataset
from consortium.sim.engines.factory import make_engine
from consortium.sim.simulation import Simulation
from consortium.sim.spec import load_spec

LOW_FPR = 0.01


def outputs(hp: Any, params: Params, data: LocalData) -> np.ndarray:
    """Per row: loss, top probability and the margin between the two top probabilities, ``[n, 3]``."""
    with torch.no_grad():
        logits = forward(hp.network, hp.activation, params, data.x.reshape(len(data.x), -1).float(), hp.conv)
        losses = F.cross_entropy(logits, data.y.to(torch.int64), reduction="none")
        top = torch.softmax(logits.double(), dim=1).topk(2, dim=1).values
    return np.stack([losses.double().numpy(), top[:, 0].numpy(), (top[:, 0] - top[:, 1]).numpy()], axis=1)


def attack_scores(members: np.ndarray, non_members: np.ndarray) -> dict[str, float]:
    """ROC AUC and TPR at 1 % FPR of scores where higher means "member"."""
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    scores = np.concatenate([members, non_members])
    fpr, tpr, _ = roc_curve(truth, scores)
    return {"auc": float(roc_auc_score(truth, scores)), "tpr_at_1pct_fpr": float(np.interp(LOW_FPR, fpr, tpr))}


def _rows(data: LocalData, index: np.ndarray) -> LocalData:
    chosen = torch.from_numpy(index)
    return LocalData(data.x[chosen], data.y[chosen])


@dataclass(frozen=True)
class MiaReport:
    members: int
    non_members: int
    loss_threshold: dict[str, float]
    shadow_model: dict[str, float]
    final_metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"members": self.members, "non_members": self.non_members, "loss_threshold": self.loss_threshold,
                "shadow_model": self.shadow_model, "final_metrics": self.final_metrics}


def shadow_attack(simulation: Simulation, attacker: LocalData, seed: int) -> Any:
    """A logistic regression telling the shadow model's training rows from its other rows, by its outputs,
    and the shadow model's params."""
    from sklearn.linear_model import LogisticRegression

    plan = simulation.plan
    order = np.random.default_rng(seed).permutation(len(attacker.x))
    inside, outside = _rows(attacker, order[: len(order) // 2]), _rows(attacker, order[len(order) // 2:])
    epochs = min(simulation.spec.rounds * plan.hp.local_epochs, 1000)
    hp = plan.hp.model_copy(update={"local_epochs": epochs})
    start = plan.algorithm.init(hp, simulation.dataset.num_features, seed)
    shadow = plan.algorithm.local_update(hp, start, inside, seed).tensors
    features = np.concatenate([outputs(hp, shadow, inside), outputs(hp, shadow, outside)])
    labels = np.concatenate([np.ones(len(inside.x)), np.zeros(len(outside.x))])
    return LogisticRegression(max_iter=1000).fit(features, labels)


def run_mia(spec_path: Path, rounds: int | None = None, seed: int = 0,
            overrides: dict[str, Any] | None = None) -> MiaReport:
    """Train the spec in simulation, then run both attacks against the final model."""
    project, settings = load_spec(spec_path, overrides)
    if project.algorithm.name != "classifier":
        raise FLError(f"audit mia attacks classifiers; the spec's algorithm is {project.algorithm.name!r}")
    if rounds is not None:
        project = project.model_copy(update={"rounds": rounds})
    simulation = Simulation(project, settings)
    if not isinstance(simulation.dataset, SimDataset) or simulation.device.type != "cpu":
        raise FLError("audit mia needs a dataset source on the CPU")
    engine = make_engine(settings.engine, simulation.setup, settings)
    try:
        result = simulation.run(engine)
    finally:
        engine.close()
    dataset, hp = simulation.dataset, simulation.plan.hp
    held_out = np.random.default_rng(derive_seed("mia-split", seed)).permutation(len(dataset.test.x))
    attacker, evaluation = _rows(dataset.test, held_out[: len(held_out) // 2]), _rows(
        dataset.test, held_out[len(held_out) // 2:])
    members, non_members = outputs(hp, result.params, dataset.train), outputs(hp, result.params, evaluation)
    model = shadow_attack(simulation, attacker, derive_seed("mia-shadow", seed))
    return MiaReport(
        len(members), len(non_members),
        attack_scores(-members[:, 0], -non_members[:, 0]),
        attack_scores(model.predict_proba(members)[:, 1], model.predict_proba(non_members)[:, 1]),
        result.final_metrics,
    )
