"""Measured quality of generated digits: a judge classifier, conditioning accuracy, Fréchet distance.

The judge is an MLP classifier trained deterministically (fixed seeds, the repository's own
:class:`~consortium.fl.algorithms.classifier.Classifier`) on the train part of scikit-learn's bundled digits
(features / 16 as float32, stratified 80/20 split, ``random_state=0``: the split the demo uses). It is
rebuilt once per process rather than shipped as weights, so every number it produces can be re-derived from
the code. Its penultimate-layer activations are the feature space of the Fréchet distance (an FID for 8x8
digits): the distance between Gaussians fitted to generated and to real examples' features.

Importing this module registers :func:`digits_quality` as the GAN's sample measure for digits-shaped models
(64 features, 10 classes; on other data of that shape the numbers are meaningless), so that the generic GAN
never depends on a dataset. The algorithm registry imports it with the built-in algorithms.

Pure: no I/O beyond scikit-learn's bundled data files, no global random state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from consortium.fl.algorithms.classifier import Classifier, build_mlp
from consortium.fl.algorithms.classifier_params import ClassifierHyperParams
from consortium.fl.algorithms.gan import register_sample_measure
from consortium.fl.core import FLError, LocalData, Params, parse_hyperparams

JUDGE_HYPERPARAMETERS: dict[str, Any] = {
    "layers": [64, 128, 32, 10],
    "activation": "relu",
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "local_epochs": 40,
    "batch_size": 32,
}
_JUDGE_SEED = 0
_SPLIT_SEED = 0
DIGITS_SHAPE = (64, 10)
"""(features, classes) of an 8x8 digit model."""


@dataclass(frozen=True)
class DigitsSplit:
    """scikit-learn's digits as float32 features in [0, 1] and int64 labels, split 80/20 (read-only)."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


@functools.cache
def digits_split() -> DigitsSplit:
    """The stratified 80/20 split (``random_state=0``) of the digits, loaded once per process."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    parts = train_test_split(
        (x / 16.0).astype(np.float32), y.astype(np.int64), test_size=0.2, random_state=_SPLIT_SEED, stratify=y
    )
    for part in parts:
        part.setflags(write=False)
    return DigitsSplit(*parts)


@dataclass(frozen=True)
class Judge:
    """A trained digits classifier: predicts labels and exposes its penultimate-layer features."""

    hp: ClassifierHyperParams
    params: Params

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the last hidden layer, [n, width]."""
        with torch.no_grad():
            return build_mlp(self.hp, self.params).layers[:-1](x.to(torch.float32))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most likely class of each row."""
        with torch.no_grad():
            return build_mlp(self.hp, self.params)(x.to(torch.float32)).argmax(dim=1)


@functools.cache
def digits_judge() -> Judge:
    """The judge, trained centrally on the digits' train split with fixed seeds, once per process."""
    classifier = Classifier()
    hp = parse_hyperparams(classifier, JUDGE_HYPERPARAMETERS)
    split = digits_split()
    train = LocalData(torch.tensor(split.x_train), torch.tensor(split.y_train))
    params = classifier.init(hp, train.x.shape[1], seed=_JUDGE_SEED)
    return Judge(hp, classifier.local_update(hp, params, train, seed=_JUDGE_SEED).tensors)


def conditioning_accuracy(judge: Judge, samples: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of generated ``samples`` the judge assigns to the label they were conditioned on."""
    if samples.shape[0] != labels.shape[0]:
        raise FLError(f"{samples.shape[0]} samples but {labels.shape[0]} labels")
    if samples.shape[0] == 0:
        raise FLError("conditioning accuracy needs at least one sample")
    return float((judge.predict(samples) == labels.to(torch.int64)).double().mean())


def _moments(features: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    if features.ndim != 2 or features.shape[0] < 2:
        raise FLError(f"{name} must be [n >= 2, d] features, got shape {features.shape}")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to two sets of feature rows.

    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` in float64. The trace of the matrix square
    root is taken as the sum of the square roots of the eigenvalues of the symmetric ``S_a^(1/2) S_b
    S_a^(1/2)`` (the same eigenvalues as ``S_a S_b``): equal to ``scipy.linalg.sqrtm``'s answer, but real
    and stable when the covariances are singular, as they are for collapsed generators.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    mean_a, cov_a = _moments(a, "features_a")
    mean_b, cov_b = _moments(b, "features_b")
    if mean_a.shape != mean_b.shape:
        raise FLError(f"feature widths differ: {mean_a.shape[0]} and {mean_b.shape[0]}")
    distance = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b)
    return max(float(distance - 2.0 * _trace_sqrt_product(cov_a, cov_b)), 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """``Tr((cov_a cov_b)^(1/2))`` for symmetric positive semi-definite ``cov_a`` and ``cov_b``."""
    root_a = _psd_sqrt(cov_a)
    inner = root_a @ cov_b @ root_a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum())


def digits_quality(samples: torch.Tensor, labels: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """``conditioning_accuracy`` of ``samples``; with 2+ rows each, their ``frechet_distance`` to ``real``."""
    judge = digits_judge()
    metrics = {"conditioning_accuracy": conditioning_accuracy(judge, samples, labels)}
    if samples.shape[0] >= 2 and real.shape[0] >= 2:
        metrics["frechet_distance"] = frechet_distance(judge.features(samples), judge.features(real))
    return metrics


register_sample_measure(*DIGITS_SHAPE, digits_quality)
