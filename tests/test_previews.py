"""Model previews: a GAN draws its sample grid as PNG (the same bytes for a real run and a simulation)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from consortium.fl.algorithms.gan import GAN, PREVIEW_PER_CLASS, sample_grid
from consortium.fl.core import parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.previews import markdown_section, preview_png


def gan(num_features: int = 16, num_classes: int = 3):
    algorithm = GAN()
    hp = parse_hyperparams(algorithm, {"num_features": num_features, "num_classes": num_classes,
                                       "latent_dim": 4, "generator_hidden": [8], "discriminator_hidden": [8]})
    return algorithm, hp, algorithm.init(hp, num_features, seed=0)


def test_gan_preview_is_its_seeded_sample_grid_as_png() -> None:
    algorithm, hp, params = gan()
    png = preview_png(algorithm, hp, params, seed=3)
    assert png is not None and png.startswith(b"\x89PNG")
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(image, sample_grid(hp, params, per_class=PREVIEW_PER_CLASS, seed=3))
    assert preview_png(algorithm, hp, params, seed=3) == png
    assert preview_png(algorithm, hp, params, seed=4) != png


def test_no_preview_for_algorithms_without_one_or_non_square_examples() -> None:
    classifier = get_algorithm("classifier")
    hp = parse_hyperparams(classifier, {"layers": [4, 3]})
    assert preview_png(classifier, hp, classifier.init(hp, 4, seed=0), seed=0) is None
    algorithm, hp, params = gan(num_features=6)
    assert preview_png(algorithm, hp, params, seed=0) is None


def test_markdown_links_the_file_next_to_the_card() -> None:
    assert markdown_section("samples.png")[-1] == "![generated samples](samples.png)"
