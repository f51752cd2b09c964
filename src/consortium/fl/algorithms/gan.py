"""A federated (conditional) GAN: both networks trained locally, both aggregated (FedAvg by default).

Generator: noise ``z`` (``latent_dim``) concatenated with the one-hot label -> MLP with leaky ReLUs ->
``num_features`` outputs squashed into the data's range (``sigmoid`` for [0, 1], ``tanh`` for [-1, 1],
``linear`` for unbounded). Discriminator: features -> MLP with leaky ReLUs -> one real/fake logit; when the
GAN is conditional its logit gets a projection term ``<embedding[label], last hidden layer>`` (a projection
discriminator, Miyato & Koyama 2018). With ``num_classes`` 0 or None the GAN is unconditional and ignores
labels.

Params are float32 tensors named ``generator.layers.{2i}.weight|bias``,
``discriminator.layers.{2i}.weight|bias`` and, when conditional, ``discriminator.embedding.weight``.
Local training uses the non-saturating GAN loss and two Adam optimisers whose moments start at zero every
round: the Update is all that leaves a client. Everything is seeded by the ``seed`` argument; the global
random state is never touched.

Evaluation: always the discriminator's accuracy on the real data and on as many generated samples (drawn
with a fixed seed, so evaluation is a pure function of params and data). A measure of sample quality for one
model shape (the digits judge of :mod:`consortium.fl.gan_quality` for 64 features and 10 classes) registers
itself with :func:`register_sample_measure`; when the data has labels its numbers join the metrics. The GAN
itself knows no dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from consortium.fl.core import (
    MAX_LAYER_WIDTH,
    BatchSize,
    Evaluation,
    FLError,
    LocalData,
    Params,
    ServerInitialised,
    Steps,
    TensorSpec,
    Update,
    Width,
    check_model_size,
    check_widths,
    dense_params,
    spec_of,
)
from consortium.fl.core import HyperParams as BaseHyperParams

_LEAKY_SLOPE = 0.2
_ADAM_EPS = 1e-8
_EVAL_SEED = 0
_GRID_GAP_SHADE = 160
PREVIEW_PER_CLASS = 10
"""Columns of the preview grid: generated examples per class."""


class GANHyperParams(BaseHyperParams):
    """Architecture and local-training settings of the (conditional) MLP GAN."""

    num_features: Width = Field(description="Number of features of one example (64 for 8x8 digits).")
    num_classes: int | None = Field(
        None, ge=0, le=MAX_LAYER_WIDTH,
        description="Number of labels to condition on; 0 or None for an unconditional GAN.",
    )
    latent_dim: Width = Field(32, description="Size of the generator's noise input.")
    generator_hidden: list[int] = Field(
        [128, 256], max_length=64, description="Hidden layer widths of the generator."
    )
    discriminator_hidden: list[int] = Field(
        [256, 128], max_length=64, description="Hidden layer widths of the discriminator."
    )
    output: Literal["sigmoid", "tanh", "linear"] = Field(
        "sigmoid", description="Generator output squashing: sigmoid for [0, 1] data, tanh for [-1, 1]."
    )
    generator_lr: float = Field(3e-3, gt=0)
    discriminator_lr: float = Field(3e-3, gt=0)
    generator_betas: tuple[float, float] = (0.5, 0.999)
    discriminator_betas: tuple[float, float] = (0.5, 0.999)
    local_steps: Steps = Field(100, description="Generator steps per round.")
    discriminator_steps: int = Field(
        1, ge=1, le=1000, description="Discriminator steps before each generator step."
    )
    batch_size: BatchSize = 64

    @model_validator(mode="after")
    def _bounded_size(self) -> GANHyperParams:
        for network in ("generator", "discriminator"):
            check_model_size(f"{network}_hidden", dense_params(_layer_widths(self, network)))
        return self

    @field_validator("generator_hidden", "discriminator_hidden")
    @classmethod
    def _check_hidden(cls, widths: list[int]) -> list[int]:
        if not widths:
            raise ValueError("needs at least one hidden layer")
        if any(width < 1 for width in widths):
            raise ValueError(f"every hidden width must be >= 1, got {widths}")
        check_widths(widths)
        return widths

    @field_validator("generator_betas", "discriminator_betas")
    @classmethod
    def _check_betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"Adam betas must lie in [0, 1), got {list(betas)}")
        return betas

    @property
    def classes(self) -> int:
        """Number of conditioning labels; 0 for an unconditional GAN."""
        return self.num_classes or 0


def _layer_widths(hp: GANHyperParams, network: str) -> list[int]:
    if network == "generator":
        return [hp.latent_dim + hp.classes, *hp.generator_hidden, hp.num_features]
    return [hp.num_features, *hp.discriminator_hidden, 1]


def _linear_names(hp: GANHyperParams, network: str) -> list[tuple[str, str, int, int]]:
    """(weight name, bias name, fan_in, fan_out) of each Linear layer of ``network``, in forward order."""
    widths = _layer_widths(hp, network)
    return [
        (f"{network}.layers.{2 * i}.weight", f"{network}.layers.{2 * i}.bias", fan_in, fan_out)
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    ]


def _embedding_shape(hp: GANHyperParams) -> tuple[int, int] | None:
    return (hp.classes, hp.discriminator_hidden[-1]) if hp.classes else None


def _network_names(hp: GANHyperParams, network: str) -> list[str]:
    names = [name for layer in _linear_names(hp, network) for name in layer[:2]]
    if network == "discriminator" and hp.classes:
        names.append("discriminator.embedding.weight")
    return names


def params_template(hp: GANHyperParams) -> dict[str, TensorSpec]:
    """Names, shapes and dtypes of the GAN's params (generator first, then discriminator)."""
    template = {}
    for network in ("generator", "discriminator"):
        for weight, bias, fan_in, fan_out in _linear_names(hp, network):
            template[weight] = TensorSpec((fan_out, fan_in), torch.float32)
            template[bias] = TensorSpec((fan_out,), torch.float32)
    embedding = _embedding_shape(hp)
    if embedding is not None:
        template["discriminator.embedding.weight"] = TensorSpec(embedding, torch.float32)
    return template


def _check_params(hp: GANHyperParams, params: Params) -> None:
    expected = params_template(hp)
    if spec_of(params) != expected:
        raise FLError(
            f"params do not match the GAN's hyper-parameters: expected {sorted(expected)} with shapes "
            f"{[expected[n].shape for n in sorted(expected)]}"
        )


def _features(hp: GANHyperParams, data: LocalData) -> torch.Tensor:
    x = data.x
    if x.dim() != 2 or x.shape[1] != hp.num_features:
        raise FLError(f"data has shape {tuple(x.shape)}, the GAN expects [n, {hp.num_features}] features")
    return x.to(torch.float32).contiguous()


def _labels(hp: GANHyperParams, labels: torch.Tensor | None, count: int) -> torch.Tensor | None:
    """Validated int64 labels for a conditional GAN; None for an unconditional one."""
    if not hp.classes:
        return None
    if labels is None:
        raise FLError(f"the conditional GAN (num_classes={hp.classes}) needs labels (data.y)")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise FLError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != count:
        raise FLError(f"labels have shape {tuple(labels.shape)}, expected [{count}]")
    labels = labels.to(torch.int64)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= hp.classes):
        raise FLError(
            f"labels must lie in [0, {hp.classes}) for num_classes={hp.classes}, "
            f"found values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def _hidden(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """The last hidden activation: every layer but the last, each followed by a leaky ReLU."""
    for weight, bias in layers[:-1]:
        x = F.leaky_relu(F.linear(x, weight, bias), _LEAKY_SLOPE)
    return x


def _layers(hp: GANHyperParams, params: Params, network: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(params[weight], params[bias]) for weight, bias, _, _ in _linear_names(hp, network)]


def _squash(hp: GANHyperParams, x: torch.Tensor) -> torch.Tensor:
    if hp.output == "sigmoid":
        return torch.sigmoid(x)
    if hp.output == "tanh":
        return torch.tanh(x)
    return x


def _generator(
    hp: GANHyperParams, params: Params, z: torch.Tensor, labels: torch.Tensor | None
) -> torch.Tensor:
    if labels is not None:
        z = torch.cat([z, F.one_hot(labels, hp.classes).to(z.dtype)], dim=1)
    layers = _layers(hp, params, "generator")
    return _squash(hp, F.linear(_hidden(layers, z), *layers[-1]))


def _discriminator(
    hp: GANHyperParams, params: Params, x: torch.Tensor, labels: torch.Tensor | None
) -> torch.Tensor:
    """One real/fake logit per row: a linear head plus, when conditional, the label projection."""
    layers = _layers(hp, params, "discriminator")
    hidden = _hidden(layers, x)
    logits = F.linear(hidden, *layers[-1]).squeeze(1)
    if labels is not None:
        logits = logits + (params["discriminator.embedding.weight"][labels] * hidden).sum(dim=1)
    return logits


def _noise(hp: GANHyperParams, count: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(count, hp.latent_dim, generator=generator)


def generate(
    hp: GANHyperParams, params: Params, num_samples: int, seed: int, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """``num_samples`` generated examples [n, num_features], conditioned on ``labels`` when conditional."""
    _check_params(hp, params)
    if num_samples < 0:
        raise FLError(f"num_samples must be >= 0, got {num_samples}")
    labels = _labels(hp, labels, num_samples)
    z = _noise(hp, num_samples, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return _generator(hp, params, z, labels)


class _Adam:
    """In-place Adam step (same rule as ``torch.optim.Adam``) over a list of tensors, fused foreach ops."""

    def __init__(self, tensors: list[torch.Tensor], lr: float, betas: tuple[float, float]) -> None:
        self.tensors = tensors
        self.lr = lr
        self.betas = betas
        self.steps = 0
        self.first = [torch.zeros_like(t) for t in tensors]
        self.second = [torch.zeros_like(t) for t in tensors]

    @torch.no_grad()
    def __call__(self, grads: Sequence[torch.Tensor]) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        torch._foreach_lerp_(self.first, grads, 1 - beta1)
        torch._foreach_mul_(self.second, beta2)
        torch._foreach_addcmul_(self.second, grads, grads, 1 - beta2)
        bias1 = 1 - beta1**self.steps
        bias2_sqrt = math.sqrt(1 - beta2**self.steps)
        denom = torch._foreach_sqrt(self.second)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, _ADAM_EPS)
        torch._foreach_addcdiv_(self.tensors, self.first, denom, -self.lr / bias1)


def _init_linear(fan_in: int, fan_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.Linear``'s default distribution: uniform in ±1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    weight = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=generator)
    return weight, torch.empty(fan_out).uniform_(-bound, bound, generator=generator)


class _LocalTrainer:
    """One round of local GAN training on one client's data; owns the trainable copies and optimisers."""

    def __init__(self, hp: GANHyperParams, params: Params, x: torch.Tensor, y: torch.Tensor | None) -> None:
        self.hp, self.x, self.y = hp, x, y
        self.params = {name: t.detach().clone().requires_grad_(True) for name, t in params.items()}
        self.g_tensors = [self.params[n] for n in _network_names(hp, "generator")]
        self.d_tensors = [self.params[n] for n in _network_names(hp, "discriminator")]
        self.g_step = _Adam(self.g_tensors, hp.generator_lr, hp.generator_betas)
        self.d_step = _Adam(self.d_tensors, hp.discriminator_lr, hp.discriminator_betas)

    def _batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = torch.randint(self.x.shape[0], (self.hp.batch_size,), generator=generator)
        return self.x[rows], None if self.y is None else self.y[rows]

    def discriminator_step(self, generator: torch.Generator) -> float:
        hp = self.hp
        real, labels = self._batch(generator)
        with torch.no_grad():
            fake = _generator(hp, self.params, _noise(hp, hp.batch_size, generator), labels)
        both = None if labels is None else torch.cat([labels, labels])
        logits = _discriminator(hp, self.params, torch.cat([real, fake]), both)
        real_logits, fake_logits = logits[: hp.batch_size], logits[hp.batch_size :]
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        self.d_step(torch.autograd.grad(loss, self.d_tensors))
        return float(loss.detach())

    def generator_step(self, generator: torch.Generator) -> float:
        hp = self.hp
        _, labels = self._batch(generator)
        fake = _generator(hp, self.params, _noise(hp, hp.batch_size, generator), labels)
        loss = F.softplus(-_discriminator(hp, self.params, fake, labels)).mean()
        self.g_step(torch.autograd.grad(loss, self.g_tensors))
        return float(loss.detach())

    def trained(self) -> Params:
        return {name: t.detach() for name, t in self.params.items()}


def _discriminator_accuracy(
    hp: GANHyperParams, params: Params, x: torch.Tensor, labels: torch.Tensor | None
) -> dict[str, float]:
    """Fraction of real rows scored real and of as many generated rows (fixed seed) scored fake."""
    fake = generate(hp, params, x.shape[0], _EVAL_SEED, labels)
    with torch.no_grad():
        real_right = (_discriminator(hp, params, x, labels) > 0).float().mean()
        fake_right = (_discriminator(hp, params, fake, labels) < 0).float().mean()
    return {
        "discriminator_real_accuracy": float(real_right),
        "discriminator_fake_accuracy": float(fake_right),
    }


SampleMeasure = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, float]]
"""``(samples, labels, real) -> metrics``: the quality of samples conditioned on ``labels`` against ``real``."""

_SAMPLE_MEASURES: dict[tuple[int, int], SampleMeasure] = {}


def register_sample_measure(num_features: int, classes: int, measure: SampleMeasure) -> None:
    """Have :meth:`GAN.evaluate` add ``measure``'s metrics for models of this shape on labelled data."""
    _SAMPLE_MEASURES[(num_features, classes)] = measure


def _to_unit_range(hp: GANHyperParams, samples: torch.Tensor) -> torch.Tensor:
    if hp.output == "sigmoid":
        return samples
    if hp.output == "tanh":
        return (samples + 1.0) / 2.0
    low, high = samples.min(), samples.max()
    return (samples - low) / (high - low) if high > low else torch.zeros_like(samples)


def sample_grid(hp: GANHyperParams, params: Params, per_class: int, seed: int, scale: int = 4) -> np.ndarray:
    """A greyscale uint8 image of generated examples: one row per class, ``per_class`` columns.

    Each example is drawn as a square (``num_features`` must be a perfect square) with dark ink on white,
    each pixel enlarged ``scale`` times, tiles separated by grey lines. An unconditional GAN gives one row.
    """
    side = math.isqrt(hp.num_features)
    if side * side != hp.num_features:
        raise FLError(f"a sample grid needs a square number of features, got {hp.num_features}")
    if per_class < 1 or scale < 1:
        raise FLError(f"per_class and scale must be >= 1, got {per_class} and {scale}")
    rows = max(hp.classes, 1)
    labels = torch.arange(rows).repeat_interleave(per_class) if hp.classes else None
    samples = _to_unit_range(hp, generate(hp, params, rows * per_class, seed, labels)).clamp(0.0, 1.0)
    ink = np.rint(255.0 * (1.0 - samples.numpy())).astype(np.uint8).reshape(rows, per_class, side, side)
    grid = np.full((rows * (side + 1) + 1, per_class * (side + 1) + 1), _GRID_GAP_SHADE, dtype=np.uint8)
    for row in range(rows):
        for column in range(per_class):
            top, left = 1 + row * (side + 1), 1 + column * (side + 1)
            grid[top : top + side, left : left + side] = ink[row, column]
    return np.kron(grid, np.ones((scale, scale), dtype=np.uint8))


class GAN(ServerInitialised):
    """Conditional MLP GAN; the server averages both networks' locally trained weights (FedAvg)."""

    name: ClassVar[str] = "gan"
    HyperParams: ClassVar[type[GANHyperParams]] = GANHyperParams
    default_strategy: ClassVar[str] = "fedavg"

    def init(self, hp: GANHyperParams, num_features: int, seed: int) -> Params:
        """Fresh weights of both networks from ``seed`` (``nn.Linear``-like; embedding at zero)."""
        if hp.num_features != num_features:
            raise FLError(
                f"num_features ({hp.num_features}) must equal the number of input features ({num_features})"
            )
        generator = torch.Generator().manual_seed(seed)
        params: Params = {}
        for network in ("generator", "discriminator"):
            for weight, bias, fan_in, fan_out in _linear_names(hp, network):
                params[weight], params[bias] = _init_linear(fan_in, fan_out, generator)
        embedding = _embedding_shape(hp)
        if embedding is not None:
            params["discriminator.embedding.weight"] = torch.zeros(embedding)
        return params

    def local_update(self, hp: GANHyperParams, params: Params, data: LocalData, seed: int) -> Update:
        """``hp.local_steps`` generator steps, each after ``hp.discriminator_steps`` discriminator steps.

        Batches are drawn with replacement from ``data``; fake examples are conditioned on the labels of a
        drawn real batch, so a client generates its own label mix. Metrics: the mean ``generator_loss`` and
        ``discriminator_loss`` over the round's steps.
        """
        _check_params(hp, params)
        x = _features(hp, data)
        y = _labels(hp, data.y, x.shape[0])
        n = len(data)
        if n == 0:
            return Update({name: t.detach().clone() for name, t in params.items()}, 0, {})
        trainer = _LocalTrainer(hp, params, x, y)
        generator = torch.Generator().manual_seed(seed)
        d_losses, g_losses = [], []
        with torch.enable_grad():
            for _ in range(hp.local_steps):
                d_losses.extend(trainer.discriminator_step(generator) for _ in range(hp.discriminator_steps))
                g_losses.append(trainer.generator_step(generator))
        metrics = {
            "generator_loss": sum(g_losses) / len(g_losses),
            "discriminator_loss": sum(d_losses) / len(d_losses),
        }
        return Update(trainer.trained(), n, metrics)

    def evaluate(self, hp: GANHyperParams, params: Params, data: LocalData) -> Evaluation:
        """The discriminator's accuracies, plus any registered sample measure (see the module)."""
        _check_params(hp, params)
        x = _features(hp, data)
        labels = _labels(hp, data.y, x.shape[0])
        n = len(data)
        if n == 0:
            return Evaluation(0, {})
        metrics = _discriminator_accuracy(hp, params, x, labels)
        measure = _SAMPLE_MEASURES.get((hp.num_features, hp.classes))
        if measure is not None and labels is not None:
            metrics |= measure(generate(hp, params, n, _EVAL_SEED, labels), labels, x)
        return Evaluation(n, metrics)

    def preview(self, hp: GANHyperParams, params: Params, seed: int) -> np.ndarray:
        """What the model card shows: a grid of generated examples, one row per class, 10 columns.

        FLError when the examples are not square images (see :func:`sample_grid`).
        """
        _check_params(hp, params)
        return sample_grid(hp, params, per_class=PREVIEW_PER_CLASS, seed=seed)
