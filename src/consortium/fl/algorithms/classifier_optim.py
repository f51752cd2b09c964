"""The classifier's fused (foreach) optimiser: SGD (momentum, L2 weight decay) or Adam, with FedProx's
proximal term and SCAFFOLD's correction, for one client's tensors or a cohort's stacked tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from consortium.fl import scaffold
from consortium.fl.algorithms.classifier_params import ClassifierHyperParams
from consortium.fl.cohort import bias_corrections

_BETAS = (0.9, 0.999)
_EPS = 1e-8


@torch.no_grad()
def optimizer_step(
    hp: ClassifierHyperParams,
    tensors: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    buffers: dict[str, list[torch.Tensor]],
    step_number: int,
    anchor: Sequence[torch.Tensor],
) -> None:
    """One in-place SGD (momentum, L2 weight decay) or Adam step; ``step_number`` counts from 1.

    Same update rules as ``torch.optim.SGD`` / ``torch.optim.Adam`` with default betas, plus FedProx's
    proximal term ``mu * (w - anchor)`` (``anchor`` = the round's global params) and SCAFFOLD's correction
    ``c - c_i`` (``buffers["correction"]``), with one fused (foreach) kernel per operation. Works unchanged on
    one client's tensors or on a cohort's stacked tensors (``anchor`` broadcasts over the client axis).
    """
    if hp.weight_decay:
        grads = torch._foreach_add(grads, tensors, alpha=hp.weight_decay)
    if hp.proximal_mu:
        grads = torch._foreach_add(grads, torch._foreach_sub(tensors, anchor), alpha=hp.proximal_mu)
    if "correction" in buffers:
        grads = torch._foreach_add(grads, buffers["correction"])
    if hp.optimizer == "adam":
        first, second = buffers["first"], buffers["second"]
        beta1, beta2 = _BETAS
        torch._foreach_lerp_(first, grads, 1 - beta1)
        torch._foreach_mul_(second, beta2)
        torch._foreach_addcmul_(second, grads, grads, 1 - beta2)
        bias1, bias2_sqrt = bias_corrections(step_number, _BETAS)
        denom = torch._foreach_sqrt(second)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, _EPS)
        torch._foreach_addcdiv_(tensors, first, denom, -hp.lr / bias1)
    elif hp.momentum:
        first = buffers["first"]
        torch._foreach_mul_(first, hp.momentum)
        torch._foreach_add_(first, grads)
        torch._foreach_add_(tensors, first, alpha=-hp.lr)
    else:
        torch._foreach_add_(tensors, grads, alpha=-hp.lr)


def optimizer_buffers(
    hp: ClassifierHyperParams,
    tensors: Sequence[torch.Tensor],
    controls: scaffold.Controls | None = None,
    names: Sequence[str] = (),
) -> dict[str, list[torch.Tensor]]:
    """Zeroed optimiser state shaped like ``tensors``: momentum/first moments and Adam's second moments;
    with SCAFFOLD ``controls``, the constant per-client gradient correction ``c - c_i``."""
    buffers = {}
    if hp.optimizer == "adam" or hp.momentum:
        buffers["first"] = [torch.zeros_like(t) for t in tensors]
    if hp.optimizer == "adam":
        buffers["second"] = [torch.zeros_like(t) for t in tensors]
    if controls is not None:
        buffers["correction"] = scaffold.corrections(controls, names)
    return buffers
