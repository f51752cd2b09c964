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

A model trained on the hub (:func:`attack_hub_model`) is attacked the same way with the auditor's own rows:
the rows its org contributed as members, rows the model never saw as the non-members (split in two as above),
the architecture and the epochs from the model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from consortium.fl.core import Algorithm, FLError, LocalData, Params, derive_seed, parse_hyperparams
from consortium.fl.networks import forward
from consortium.fl.registry import get_algorithm
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


def shadow_attack(algorithm: Algorithm, hp: Any, rounds: int, attacker: LocalData, seed: int) -> Any:
    """A logistic regression telling the shadow model's training rows from its other rows, by its outputs
    (the shadow: ``algorithm`` trained centrally for the federated run's ``rounds`` x local epochs)."""
    from sklearn.linear_model import LogisticRegression

    order = np.random.default_rng(seed).permutation(len(attacker.x))
    inside, outside = _rows(attacker, order[: len(order) // 2]), _rows(attacker, order[len(order) // 2:])
    epochs = min(rounds * hp.local_epochs, 1000)
    hp = hp.model_copy(update={"local_epochs": epochs})
    start = algorithm.init(hp, attacker.x.shape[1], seed)
    shadow = algorithm.local_update(hp, start, inside, seed).tensors
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
    plan = simulation.plan
    return attack(plan.algorithm, plan.hp, project.rounds, result.params, simulation.dataset.train,
                  simulation.dataset.test, seed, result.final_metrics)


def attack(algorithm: Algorithm, hp: Any, rounds: int, params: Params, members: LocalData, held_out: LocalData,
           seed: int, final_metrics: dict[str, float] | None = None) -> MiaReport:
    """Both attacks on the model ``params``: ``members`` its training rows, ``held_out`` rows it never saw
    (half the attacker's, half the evaluation's non-members)."""
    if len(held_out.x) < 4:
        raise FLError(f"audit mia needs at least 4 rows the model never saw, got {len(held_out.x)}")
    order = np.random.default_rng(derive_seed("mia-split", seed)).permutation(len(held_out.x))
    attacker, evaluation = _rows(held_out, order[: len(order) // 2]), _rows(held_out, order[len(order) // 2:])
    inside, outside = outputs(hp, params, members), outputs(hp, params, evaluation)
    model = shadow_attack(algorithm, hp, rounds, attacker, derive_seed("mia-shadow", seed))
    return MiaReport(
        len(inside), len(outside),
        attack_scores(-inside[:, 0], -outside[:, 0]),
        attack_scores(model.predict_proba(inside)[:, 1], model.predict_proba(outside)[:, 1]),
        final_metrics or {},
    )


def attack_hub_model(card: dict[str, Any], params: Params, members: LocalData, non_members: LocalData,
                     seed: int = 0) -> MiaReport:
    """Both attacks on a model trained on the hub, described by its ``card`` (algorithm, hyper-parameters,
    rounds): ``members`` rows it was trained on (the auditor's own), ``non_members`` rows it never saw.
    FLError when the card is no classifier's or the rows do not fit it."""
    algorithm_spec = card.get("algorithm") or {}
    if algorithm_spec.get("name") != "classifier":
        raise FLError(f"audit mia attacks classifiers; the model's algorithm is {algorithm_spec.get('name')!r}")
    algorithm = get_algorithm("classifier")
    hp = parse_hyperparams(algorithm, algorithm_spec.get("hyperparameters") or {})
    width = None if hp.conv is not None else int(hp.layers[0])
    for what, rows in (("members", members), ("non-members", non_members)):
        if rows.y is None:
            raise FLError(f"the {what} rows have no target column; give --target")
        if width is not None and rows.x.shape[1] != width:
            raise FLError(f"the {what} rows have {rows.x.shape[1]} features, the model takes {width}")
    return attack(algorithm, hp, int(card.get("rounds", 1)), params, members, non_members, seed,
                  dict((card.get("final_metrics") or {}).get("test", {})))
