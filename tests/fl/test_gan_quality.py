"""Quality measures for generated digits (the judge, conditioning accuracy, Fréchet distance) and the GAN's
sample grids."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from consortium.fl.algorithms.gan import GAN, sample_grid
from consortium.fl.core import FLError, parse_hyperparams
from consortium.fl.gan_quality import (
    conditioning_accuracy,
    digits_judge,
    digits_split,
    frechet_distance,
)
from consortium.images import encode_png, write_png
from consortium.scenario import digits_split as scenario_digits_split


def test_digits_split_is_the_demo_split_and_read_only() -> None:
    split = digits_split()
    expected = scenario_digits_split()
    for ours, theirs in zip(
        (split.x_train, split.x_test, split.y_train, split.y_test), expected, strict=True
    ):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
        assert not ours.flags.writeable
    assert split.x_train.shape == (1437, 64) and split.x_test.shape == (360, 64)


def test_judge_is_accurate_and_reproducible() -> None:
    split = digits_split()
    judge = digits_judge()
    x_test, y_test = torch.tensor(split.x_test), torch.tensor(split.y_test)
    assert conditioning_accuracy(judge, x_test, y_test) >= 0.95
    retrained = digits_judge.__wrapped__()
    assert all(torch.equal(judge.params[name], retrained.params[name]) for name in judge.params)
    assert judge.features(x_test).shape == (360, 32)


def test_conditioning_accuracy_counts_agreement_with_the_conditioning_label() -> None:
    split = digits_split()
    judge = digits_judge()
    x = torch.tensor(split.x_test)
    predicted = judge.predict(x)
    assert conditioning_accuracy(judge, x, predicted) == 1.0
    assert conditioning_accuracy(judge, x, (predicted + 1) % 10) == 0.0
    half = predicted.clone()
    half[::2] = (half[::2] + 1) % 10
    assert conditioning_accuracy(judge, x, half) == 0.5
    with pytest.raises(FLError, match="360 samples but 359 labels"):
        conditioning_accuracy(judge, x, predicted[1:])


def test_frechet_distance_of_a_set_with_itself_is_zero() -> None:
    features = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_a_shifted_set_is_the_squared_shift() -> None:
    features = np.random.default_rng(0).normal(size=(300, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(features, features + shift) == pytest.approx(1.0 + 4.0 + 0.25, rel=1e-9)


def test_frechet_distance_one_dimensional_hand_case() -> None:
    """Means 1 and 2, variances 2 and 8: 1 + 2 + 8 - 2 * sqrt(2 * 8) = 3."""
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[0.0], [4.0]])) == pytest.approx(3.0)


def test_frechet_distance_diagonal_hand_case() -> None:
    """Variances (2/3, 8/3) scaled by 9 and means shifted by (1, 2): 5 + (2 sqrt(2/3))^2 + (2 sqrt(8/3))^2."""
    a = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    b = 3.0 * a + np.array([1.0, 2.0])
    assert frechet_distance(a, b) == pytest.approx(5.0 + 8.0 / 3.0 + 32.0 / 3.0)


def test_frechet_distance_matches_scipy_sqrtm_on_correlated_features() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mean_term = ((a.mean(axis=0) - b.mean(axis=0)) ** 2).sum()
    cross = np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    expected = mean_term + np.trace(cov_a + cov_b - 2.0 * cross)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_a_collapsed_set_is_finite() -> None:
    """A generator that always draws the same example: zero covariance, distance = mean term + Tr(S_b)."""
    b = np.random.default_rng(2).normal(size=(100, 3))
    collapsed = np.tile(b[:1], (50, 1))
    expected = ((b[0] - b.mean(axis=0)) ** 2).sum() + np.trace(np.cov(b, rowvar=False))
    assert frechet_distance(collapsed, b) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), r"features_a must be \[n >= 2, d\]"),
        (np.zeros((5, 3)), np.zeros(5), r"features_b must be \[n >= 2, d\]"),
        (np.zeros((5, 3)), np.zeros((5, 2)), "feature widths differ: 3 and 2"),
    ],
)
def test_frechet_distance_rejects_bad_shapes(a: np.ndarray, b: np.ndarray, message: str) -> None:
    with pytest.raises(FLError, match=message):
        frechet_distance(a, b)


def gan_setup(**overrides: object) -> tuple:
    hp = parse_hyperparams(GAN(), {"num_features": 64, "num_classes": 10} | overrides)
    return hp, GAN().init(hp, hp.num_features, seed=0)


def test_sample_grid_has_one_row_per_class_and_is_seeded() -> None:
    hp, params = gan_setup()
    grid = sample_grid(hp, params, per_class=6, seed=1, scale=3)
    assert grid.dtype == np.uint8
    assert grid.shape == ((10 * 9 + 1) * 3, (6 * 9 + 1) * 3)
    assert np.array_equal(grid, sample_grid(hp, params, per_class=6, seed=1, scale=3))
    assert not np.array_equal(grid, sample_grid(hp, params, per_class=6, seed=2, scale=3))
    assert np.all(grid[:3, :] == grid[0, 0])
    assert len(np.unique(grid)) > 10


def test_sample_grid_of_an_unconditional_gan_is_one_row() -> None:
    hp, params = gan_setup(num_classes=None, output="tanh")
    assert sample_grid(hp, params, per_class=5, seed=0, scale=1).shape == (10, 46)


def test_sample_grid_needs_square_examples() -> None:
    hp, params = gan_setup(num_features=10)
    with pytest.raises(FLError, match="square number of features, got 10"):
        sample_grid(hp, params, per_class=2, seed=0)


def test_sample_grid_round_trips_through_png(tmp_path) -> None:
    hp, params = gan_setup()
    grid = sample_grid(hp, params, per_class=4, seed=0)
    path = write_png(tmp_path / "grid.png", grid)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.mode == "L"
        assert np.array_equal(np.asarray(image), grid)
    assert encode_png(grid) == path.read_bytes()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4), dtype=np.float32), "uint8 array"),
        (np.zeros((4, 4, 2), dtype=np.uint8), r"\[h, w\] grey or \[h, w, 3\|4\] colour"),
        (np.zeros((0, 4), dtype=np.uint8), "cannot be empty"),
    ],
)
def test_png_rejects_bad_images(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_png(image)


def test_png_keeps_colour_images() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    with Image.open(io.BytesIO(encode_png(image))) as decoded:
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), image)
