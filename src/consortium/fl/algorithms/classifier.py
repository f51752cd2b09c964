"""A neural-network classifier trained with federated averaging: an MLP, optionally behind convolutions.

The MLP is ``Linear - act - Linear - act - ... - Linear`` with parameter names ``layers.0.weight``,
``layers.0.bias``, ``layers.2.weight``... (float32); with ``conv``, convolution blocks ``conv.0.weight``...
come first (:mod:`consortium.fl.networks`). Everything is pure and seeded: the same params, data and seed
give bitwise the same update on the same machine and thread count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from consortium.fl import networks, scaffold
from consortium.fl.algorithms.classifier_optim import optimizer_buffers, optimizer_step
from consortium.fl.algorithms.classifier_params import ClassifierHyperParams
from consortium.fl.cohort import Cohort, GroupState, plan_local_steps, stack_params, train_cohort
from consortium.fl.privacy import dp_sgd
from consortium.fl.core import (
    Evaluation,
    FLError,
    LocalData,
    Params,
    ServerInitialised,
    TensorSpec,
    Update,
    spec_of,
)
from consortium.fl.shuffle import permutation

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}
_EVAL_CHUNK = 8192


def build_mlp(hp: ClassifierHyperParams, params: Params | None = None) -> nn.Sequential:
    """The MLP as a module whose ``state_dict`` names match the algorithm's params.

    The global random state is not touched: the module's tensors are uninitialised unless ``params`` are
    given, in which case they are copied in.
    """
    if hp.conv is not None:
        raise FLError("build_mlp builds MLPs only; this classifier has convolutions")
    modules: list[nn.Module] = []
    with torch.device("meta"):
        for i, (fan_in, fan_out) in enumerate(zip(hp.layers[:-1], hp.layers[1:], strict=True)):
            if i > 0:
                modules.append(_ACTIVATIONS[hp.activation]())
            modules.append(nn.Linear(fan_in, fan_out))
    model = nn.Sequential(OrderedDict(layers=nn.Sequential(*modules))).to_empty(device="cpu")
    if params is not None:
        _check_params(hp, params)
        model.load_state_dict(params)
    return model


def _check_params(hp: ClassifierHyperParams, params: Params) -> None:
    expected = {}
    for layer in hp.network:
        expected[layer.weight] = TensorSpec(layer.weight_shape, torch.float32)
        expected[layer.bias] = TensorSpec(layer.bias_shape, torch.float32)
    if spec_of(params) != expected:
        raise FLError(
            f"params do not match the network (layers {hp.layers}"
            f"{', conv ' + str(hp.conv.channels) if hp.conv else ''}): expected {sorted(expected)} with shapes "
            f"{[expected[n].shape for n in sorted(expected)]}"
        )


def _features(hp: ClassifierHyperParams, data: LocalData) -> torch.Tensor:
    """The rows as float32 ``[n, layers[0]]``; image rows ``[n, C, H, W]`` are flattened (row-major)."""
    x = data.x
    if x.dim() > 2 and hp.conv is not None and tuple(x.shape[1:]) != hp.conv.input_shape:
        expected = ", ".join(map(str, hp.conv.input_shape))
        raise FLError(f"data has shape {tuple(x.shape)}, the model expects [n, {expected}]")
    if x.dim() > 2:
        x = x.reshape(x.shape[0], -1)
    if x.dim() != 2 or x.shape[1] != hp.layers[0]:
        raise FLError(f"data has shape {tuple(x.shape)}, the model expects [n, {hp.layers[0]}] features")
    return x.to(torch.float32).contiguous()


def _labels(hp: ClassifierHyperParams, data: LocalData) -> torch.Tensor:
    y = data.y
    if y is None:
        raise FLError("the classifier needs labels (data.y)")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise FLError(f"labels must be integer class ids, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != data.x.shape[0]:
        raise FLError(f"labels have shape {tuple(y.shape)}, expected [{data.x.shape[0]}]")
    y = y.to(torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= hp.num_classes):
        raise FLError(
            f"labels must lie in [0, {hp.num_classes}) for a model with {hp.num_classes} classes, "
            f"found values in [{int(y.min())}, {int(y.max())}]"
        )
    return y


def _forward(hp: ClassifierHyperParams, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits of feature rows ``x`` (for one client, or per client under ``vmap``)."""
    return networks.forward(hp.network, hp.activation, params, x, hp.conv)


def _loss_and_correct(
    hp: ClassifierHyperParams, params: Params, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, int]:
    """Summed cross-entropy and number of correct predictions, in chunks, without gradients."""
    loss_sum = 0.0
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], _EVAL_CHUNK):
            xb, yb = x[start : start + _EVAL_CHUNK], y[start : start + _EVAL_CHUNK]
            logits = _forward(hp, params, xb)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    return loss_sum, correct


def _check_controls(
    hp: ClassifierHyperParams, params: Params, controls: scaffold.Controls | None, clients: int | None = None
) -> None:
    """FLError unless ``controls`` are given exactly when ``hp.scaffold`` is on, shaped like ``params``
    (the client's with a leading axis of ``clients`` when that is given)."""
    if not hp.scaffold:
        if controls is not None:
            raise FLError("control variates were given but the hyper-parameter scaffold is off")
        return
    if controls is None:
        raise FLError("scaffold is on: the local update needs the control variates c and c_i")
    scaffold.check_control(controls.server, params, "the server control variate c")
    client = controls.client
    if clients is not None:
        client = {name: t[0] for name, t in controls.client.items()}
        for name, t in controls.client.items():
            if t.shape[0] != clients:
                raise FLError(
                    f"the stacked client control {name!r} has {t.shape[0]} rows for {clients} clients"
                )
    scaffold.check_control(client, params, "the client control variate c_i")


def _cross_entropies(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy, written with ops that ``vmap`` batches natively (no decomposition fallback)."""
    return -F.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _batch_stats(
    logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``[summed loss, correct predictions]`` of one batch (its unmasked rows)."""
    correct = (logits.argmax(dim=-1) == labels).to(losses.dtype)
    if mask is not None:
        correct = correct * mask
    return torch.stack([losses.sum(), correct.sum()])


def _train_metrics(last_epoch: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per client, ``train_loss`` and ``train_accuracy``: means over the last local epoch's batches as they
    were trained (``last_epoch`` [C, 2]: summed loss, correct predictions; ``rows`` [C] examples)."""
    safe = rows.clamp_min(1)
    return {"train_loss": last_epoch[:, 0] / safe, "train_accuracy": last_epoch[:, 1] / safe}


class Classifier(ServerInitialised):
    """Supervised classifier (MLP, optionally behind convolutions); FedAvg of the locally trained weights."""

    name: ClassVar[str] = "classifier"
    HyperParams: ClassVar[type[ClassifierHyperParams]] = ClassifierHyperParams
    default_strategy: ClassVar[str] = "fedavg"

    def init(self, hp: ClassifierHyperParams, num_features: int, seed: int) -> Params:
        """Fresh weights from ``seed``, like ``nn.Linear``'s and ``nn.Conv2d``'s: uniform in ±1/sqrt(fan_in)."""
        if hp.layers[0] != num_features:
            raise FLError(
                f"the first layer width ({hp.layers[0]}) must equal the number of input features "
                f"({num_features})"
            )
        return networks.init_params(hp.network, torch.Generator().manual_seed(seed))

    def uses_scaffold(self, hp: ClassifierHyperParams) -> bool:
        return hp.scaffold

    def update_template(self, hp: ClassifierHyperParams, params: Params) -> dict[str, TensorSpec]:
        """The trained params (names, shapes, dtypes of the global ones) and, with SCAFFOLD, ``delta_c``.

        ``params`` may be a fit task's broadcast (params plus the server control variate).
        """
        model, _ = scaffold.split_broadcast(params)
        template = spec_of(model)
        if hp.scaffold:
            template |= scaffold.prefixed_deltas(template)
        return template

    def local_update(
        self,
        hp: ClassifierHyperParams,
        params: Params,
        data: LocalData,
        seed: int,
        controls: scaffold.Controls | None = None,
    ) -> Update:
        """Train a copy of ``params`` on ``data`` for ``hp.local_epochs`` epochs of shuffled mini-batches.

        The metrics ``train_loss`` and ``train_accuracy`` are the means over the last local epoch's batches as
        they were trained (free to compute; a separate pass over ``data`` would cost as much as an epoch).
        With ``hp.scaffold``, ``controls`` (c and this client's c_i) correct every gradient by ``c - c_i`` and
        the update also carries ``delta_c`` (:mod:`consortium.fl.scaffold`); the client keeps
        ``c_i + delta_c``.
        """
        _check_params(hp, params)
        _check_controls(hp, params, controls)
        x = _features(hp, data)
        y = _labels(hp, data)
        n = len(data)
        names = hp.param_names
        tensors = [params[name].detach().clone() for name in names]
        anchor = [params[name].detach() for name in names]
        buffers = optimizer_buffers(hp, tensors, controls, names)
        if n == 0:
            untouched = dict(zip(names, tensors, strict=True))
            no_steps = torch.zeros(1, dtype=torch.int64, device=x.device)
            return Update(untouched | self._deltas(hp, params, untouched, controls, no_steps), 0)
        for tensor in tensors:
            tensor.requires_grad_(True)
        current = dict(zip(names, tensors, strict=True))
        step_number = 0
        batch = hp.batch_size
        last_epoch = torch.zeros(2, dtype=torch.float64)
        with torch.enable_grad():
            for epoch in range(hp.local_epochs):
                order = torch.from_numpy(permutation(n, seed, epoch))
                x_epoch, y_epoch = x[order], y[order]
                for start in range(0, n, batch):
                    labels = y_epoch[start : start + batch]
                    logits = _forward(hp, current, x_epoch[start : start + batch])
                    losses = _cross_entropies(logits, labels)
                    step_number += 1
                    grads = torch.autograd.grad(losses.sum() / labels.shape[0], tensors)
                    if epoch == hp.local_epochs - 1:
                        last_epoch += _batch_stats(logits.detach(), labels, losses.detach()).to(torch.float64)
                    optimizer_step(hp, tensors, grads, buffers, step_number, anchor)
        trained = {name: t.detach() for name, t in zip(names, tensors, strict=True)}
        metrics = _train_metrics(last_epoch.unsqueeze(0), torch.tensor([float(n)], dtype=torch.float64))
        deltas = self._deltas(hp, params, trained, controls, torch.tensor([step_number], device=x.device))
        return Update(trained | deltas, n, {name: float(value[0]) for name, value in metrics.items()})

    def local_update_dp_sgd(
        self, hp: ClassifierHyperParams, params: Params, data: LocalData, seed: int, plan: dp_sgd.DpSgdPlan
    ) -> Update:
        """:meth:`local_update` as sample-level DP-SGD (:mod:`consortium.fl.privacy.dp_sgd`, Opacus): Poisson-
        sampled batches, each example's gradient clipped to ``plan.clip``, Gaussian noise on their sum, then
        ``torch.optim`` SGD or Adam (the same rules as :func:`optimizer_step`). ``train_loss`` and
        ``train_accuracy`` are over the last epoch's sampled rows."""
        _check_params(hp, params)
        features = LocalData(_features(hp, data), _labels(hp, data))

        def optimiser(tensors: list[nn.Parameter]) -> torch.optim.Optimizer:
            if hp.optimizer == "adam":
                return torch.optim.Adam(tensors, lr=hp.lr, weight_decay=hp.weight_decay)
            return torch.optim.SGD(tensors, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

        trained = dp_sgd.train(params, lambda p, x: _forward(hp, p, x), features, optimiser, plan,
                               hp.local_epochs, seed)
        seen = max(1, trained.seen)
        return Update(trained.params, len(data),
                      {"train_loss": trained.loss_sum / seen, "train_accuracy": trained.correct / seen})

    @staticmethod
    def _deltas(
        hp: ClassifierHyperParams,
        params: Params,
        trained: Params,
        controls: scaffold.Controls | None,
        steps: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One client's ``delta_c`` under its update names (nothing without SCAFFOLD)."""
        if controls is None:
            return {}
        stacked = {name: t.unsqueeze(0) for name, t in trained.items()}
        deltas = scaffold.control_deltas(controls.server, params, stacked, steps, hp.lr)
        return scaffold.prefixed_deltas({name: t[0] for name, t in deltas.items()})

    def local_update_cohort(
        self,
        hp: ClassifierHyperParams,
        params: Params,
        data: LocalData,
        cohort: Cohort,
        controls: scaffold.Controls | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`local_update` for every client of ``cohort`` at once, as batched computation.

        ``data`` holds the rows of all clients (on any device); the result is the update tensors stacked
        ``[C, *shape]`` in cohort order, and per-client metric tensors ``[C]`` (``train_loss``,
        ``train_accuracy``), equal to what each client's own :meth:`local_update` returns. With SCAFFOLD,
        ``controls.client`` holds the cohort's ``c_i`` stacked ``[C, *shape]`` in cohort order.
        """
        _check_params(hp, params)
        _check_controls(hp, params, controls, clients=len(cohort))
        x = _features(hp, data)
        y = _labels(hp, data)
        names = hp.param_names
        device = x.device
        params = {k: v.to(device) for k, v in params.items()}
        stacked = stack_params(params, names, len(cohort))
        anchor = [params[name] for name in names]
        buffers = optimizer_buffers(hp, list(stacked.values()), controls, names)

        def client_loss(p, xb, yb, mask, count):
            logits = _forward(hp, p, xb)
            losses = _cross_entropies(logits, yb) * mask
            return losses.sum() / count, _batch_stats(logits.detach(), yb, losses.detach(), mask)

        def step(tensors, grads, state: GroupState, step_number: int) -> None:
            optimizer_step(hp, tensors, grads, state.buffers, step_number, anchor)

        plan = plan_local_steps(cohort, hp.batch_size, hp.local_epochs, device)
        last_epoch = torch.zeros(len(cohort), 2, dtype=torch.float64, device=device)
        train_cohort(stacked, client_loss, x, y, plan, step, buffers, last_epoch)
        sizes = torch.as_tensor(cohort.sizes, dtype=torch.float64, device=device)
        metrics = _train_metrics(last_epoch, sizes)
        if controls is not None:
            steps = torch.as_tensor(-(-cohort.sizes // hp.batch_size) * hp.local_epochs, device=device)
            server = {name: t.to(device) for name, t in controls.server.items()}
            deltas = scaffold.control_deltas(server, params, stacked, steps, hp.lr)
            stacked |= scaffold.prefixed_deltas(deltas)
        return stacked, metrics

    def local_update_cohort_summed(
        self, hp: ClassifierHyperParams, params: Params, data: LocalData, cohort: Cohort
    ) -> tuple[Params, dict[str, torch.Tensor]]:
        """``sum_c n_c * params_c`` (float64) over the cohort's trained local params, and per-client metrics
        ``[C]``: what a FedAvg partial needs, without materialising every client's params when it can.

        A client whose whole local training is ONE plain-SGD step (one epoch, ``n_c <= batch_size``) ends at
        ``g - lr (grad_c + wd g)`` from the global params ``g``, and ``n_c grad_c`` is the gradient of its
        summed loss at ``g``. So those clients' weighted sum is ``W (1 - lr wd) g - lr grad(sum of their rows'
        losses at g)``: one shared forward/backward, like centralized training (momentum's first step equals
        plain SGD; the proximal term is zero at the first step). The other clients train as in
        :meth:`local_update_cohort`.
        """
        _check_params(hp, params)
        x = _features(hp, data)
        y = _labels(hp, data)
        device = x.device
        names = hp.param_names
        sizes = cohort.sizes
        if hp.scaffold:
            raise FLError("SCAFFOLD updates carry each client's delta_c: train them with local_update_cohort")
        one_step = (sizes > 0) & (sizes <= hp.batch_size)
        if hp.optimizer != "sgd" or hp.local_epochs != 1:
            one_step[:] = False
        sums = {name: torch.zeros(params[name].shape, dtype=torch.float64, device=device) for name in names}
        metrics = {
            key: torch.zeros(len(cohort), dtype=torch.float64, device=device)
            for key in ("train_loss", "train_accuracy")
        }
        trained = np.flatnonzero(~one_step & (sizes > 0))
        if len(trained):
            stacked, trained_metrics = self.local_update_cohort(hp, params, data, cohort.select(trained))
            weights = torch.as_tensor(sizes[trained], dtype=torch.float64, device=device)
            positions = torch.as_tensor(trained, device=device)
            for name in names:
                sums[name] += torch.tensordot(weights, stacked[name].to(torch.float64), dims=1)
            for key, values in trained_metrics.items():
                metrics[key][positions] = values.to(torch.float64)
        single = np.flatnonzero(one_step)
        if len(single):
            self._one_step_sums(hp, params, x, y, cohort, single, sums, metrics)
        return sums, metrics

    def _one_step_sums(
        self, hp: ClassifierHyperParams, params: Params, x: torch.Tensor, y: torch.Tensor, cohort: Cohort,
        single: np.ndarray, sums: Params, metrics: dict[str, torch.Tensor],
    ) -> None:
        """Add the one-step clients' ``sum_c n_c params_c`` to ``sums`` and write their metrics."""
        device = x.device
        owner = np.repeat(np.arange(len(cohort)), cohort.sizes)
        chosen = np.isin(owner, single)
        rows = torch.as_tensor(cohort.rows[chosen], device=device)
        owners = torch.as_tensor(owner[chosen], device=device)
        names = list(sums)
        leaves = [params[name].detach().to(device).requires_grad_() for name in names]
        with torch.enable_grad():
            logits = _forward(hp, dict(zip(names, leaves, strict=True)), x[rows])
            losses = _cross_entropies(logits, y[rows])
            grads = torch.autograd.grad(losses.sum(), leaves)
        total = float(cohort.sizes[single].sum())
        shrink = 1.0 - hp.lr * hp.weight_decay
        for name, leaf, grad in zip(names, leaves, grads, strict=True):
            sums[name] += total * shrink * leaf.detach().to(torch.float64) - hp.lr * grad.to(torch.float64)
        loss_sum = torch.zeros(len(cohort), dtype=torch.float64, device=device)
        correct = torch.zeros(len(cohort), dtype=torch.float64, device=device)
        loss_sum.index_add_(0, owners, losses.detach().to(torch.float64))
        correct.index_add_(0, owners, (logits.detach().argmax(dim=-1) == y[rows]).to(torch.float64))
        positions = torch.as_tensor(single, device=device)
        counts = torch.as_tensor(cohort.sizes[single], dtype=torch.float64, device=device)
        metrics["train_loss"][positions] = loss_sum[positions] / counts
        metrics["train_accuracy"][positions] = correct[positions] / counts

    def evaluate(self, hp: ClassifierHyperParams, params: Params, data: LocalData) -> Evaluation:
        """Mean cross-entropy loss and accuracy of ``params`` on ``data``."""
        _check_params(hp, params)
        x = _features(hp, data)
        y = _labels(hp, data)
        n = len(data)
        if n == 0:
            return Evaluation(0, {})
        loss_sum, correct = _loss_and_correct(hp, params, x, y)
        return Evaluation(n, {"loss": loss_sum / n, "accuracy": correct / n})
