"""Model cards: environments (with their licences and physics, or only a commitment) instead of datasets,
the licence derived from the data with its obligations, and files released with the weights (a GAN's sample
grid) stored as blobs and linked from the Markdown."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consortium.fl.algorithms.gan import GAN
from consortium.fl.core import parse_hyperparams
from consortium.fl.registry import get_algorithm
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset, Model, Org
from consortium.hub.services.errors import NotFound
from consortium.hub.services.model_cards import build_card, render_markdown, source_entries, store_files
from consortium.hub.services.models import file_entry
from consortium.protocol import ProjectCreate, RoundMetrics

PHYSICS = {"gravity": 9.8, "masscart": 1.0, "masspole": 0.12, "length": 0.6, "force_mag": 10.0}


def environment(org: str, physics: dict | None, license: str = "MIT") -> Dataset:
    return Dataset(org=Org(name=org), name="cartpole", kind="environment", rows=0, sha256=org[0] * 64,
                   license=license, environment={"env_id": "CartPole-v1", "physics": physics,
                                                 "physics_salt": None if physics is None else "0" * 32})


def table(org: str, license: str = "CC-BY-4.0") -> Dataset:
    return Dataset(org=Org(name=org), name="digits", kind="table", rows=120, sha256="ab" * 32,
                   license=license, environment=None)


def card_for(sources: list[Dataset], files: list[dict] | None = None, algorithm: str = "ppo",
             privacy: dict | None = None) -> dict:
    refs = [f"{s.org.name}/{s.name}" for s in sources]
    key = "environments" if sources[0].environment is not None else "datasets"
    spec = ProjectCreate.model_validate(
        {"name": "p", "algorithm": {"name": algorithm}, key: refs, "rounds": 1}
        | ({"privacy": privacy} if privacy else {})
    )
    rounds = [RoundMetrics(round=1, participants=refs, dropped=[], train={"train_return": 20.0},
                           federated_eval={"mean_return": 25.0}, test={}, params_sha256="c" * 64,
                           opened_at=0.0, wall_s=1.0, max_fit_compute_s=0.5, max_eval_compute_s=0.1)]
    return build_card(project_id=1, project_name="p", spec=spec, spec_hash="d" * 64, run_id=3,
                      version=2, datasets=source_entries(sources), rounds=rounds, params_sha256="c" * 64,
                      code_version="test", created_at=datetime(2026, 1, 1, tzinfo=UTC), files=files)


def test_card_lists_environments_with_licences_instead_of_datasets() -> None:
    card = card_for([environment("north", PHYSICS), environment("south", None, license="Apache-2.0")])
    assert card["datasets"] == []
    assert [e["ref"] for e in card["environments"]] == ["north/cartpole", "south/cartpole"]
    assert card["environments"][0]["physics"] == PHYSICS
    assert card["environments"][1]["physics"] is None
    assert card["license"] == "Apache-2.0 AND MIT"
    markdown = render_markdown(card)
    assert "## Training environments" in markdown and "## Training data" not in markdown
    assert "| north/cartpole | `CartPole-v1` | MIT | force_mag 10, gravity 9.8, length 0.6," in markdown
    private = f"| south/cartpole | `CartPole-v1` | Apache-2.0 | private (committed: SHA-256 `{'s' * 16}…`) |"
    assert private in markdown


def test_card_of_datasets_keeps_its_shape() -> None:
    card = card_for([table("north")], algorithm="classifier")
    assert "environments" not in card and "files" not in card
    assert card["datasets"] == [{"ref": "north/digits", "org": "north", "license": "CC-BY-4.0",
                                 "sha256": "ab" * 32, "rows": 120}]
    assert "| north/digits | 120 | CC-BY-4.0 |" in render_markdown(card)
    assert "privacy" not in card and "## Privacy" not in render_markdown(card)


def test_card_states_each_datasets_privacy_guarantee() -> None:
    privacy = {"noise": "central", "clip": 1.0, "epsilon": 4.0, "delta": 1e-5}
    card = card_for([table("north"), table("south")], algorithm="classifier", privacy=privacy)
    section = card["privacy"]
    assert section["noise"] == "central"
    assert list(section["per_dataset"]) == ["north/digits", "south/digits"]
    guarantee = section["per_dataset"]["south/digits"]
    assert 3.9 < guarantee["epsilon"] <= 4.0 and guarantee["delta"] == 1e-5
    assert guarantee["rounds"] == 1 and guarantee["sampling_rate"] == 1.0 and guarantee["clip"] == 1.0
    assert guarantee["noise_multiplier"] > 0 and guarantee["accountant"].startswith("dp-accounting PLD")
    markdown = render_markdown(card)
    assert "## Privacy (client-level differential privacy)" in markdown
    assert f"| south/digits | {guarantee['epsilon']:.4g} | 1e-05 | DP-FedAvg" in markdown


def test_card_carries_the_derived_licence_and_its_obligations() -> None:
    card = card_for([table("north", "CC-BY-NC-4.0"), table("south", "cc0-1.0 OR mit"),
                     table("east", "LicenseRef-East-Terms")], algorithm="classifier")
    assert card["license"] == "CC-BY-NC-4.0 AND CC0-1.0 AND LicenseRef-East-Terms"
    assert card["version"] == 2
    obligations = card["obligations"]
    credited = [(e["source"], e["licence"]) for e in obligations["attribution"]]
    assert credited == [("north/digits", "CC-BY-NC-4.0")]
    assert [e["source"] for e in obligations["non_commercial"]] == ["north/digits"]
    assert "§1(i)" in obligations["non_commercial"][0]["clause"]
    assert [e["licence"] for e in obligations["proprietary"]] == ["LicenseRef-East-Terms"]
    assert obligations["share_alike"] == obligations["no_derivatives"] == []
    markdown = render_markdown(card)
    assert "# Model card: p/run-3 (version 2)" in markdown
    assert "## Licence obligations" in markdown
    assert "- **Non-commercial**: north/digits (CC-BY-NC-4.0): §1(i)" in markdown
    assert "- **Proprietary terms**: east/digits (LicenseRef-East-Terms)" in markdown


def test_a_licence_the_table_does_not_know_makes_the_card_say_noassertion() -> None:
    card = card_for([table("north"), table("south", "BSD-3-Clause")], algorithm="classifier")
    assert card["license"] == "NOASSERTION"
    [unknown] = card["obligations"]["unrecognised"]
    assert (unknown["source"], unknown["licence"]) == ("south/digits", "BSD-3-Clause")
    assert "unknown licence id 'BSD-3-Clause'" in unknown["why"]
    assert "- **Licence not recognised**: south/digits (`BSD-3-Clause`)" in render_markdown(card)


def test_gan_sample_grid_is_stored_and_linked(tmp_path) -> None:
    blobs = BlobStore(tmp_path)
    algorithm = GAN()
    hp = parse_hyperparams(algorithm, {"num_features": 16, "num_classes": 2, "latent_dim": 4,
                                       "generator_hidden": [8], "discriminator_hidden": [8]})
    files = store_files(blobs, algorithm, hp, algorithm.init(hp, 16, seed=0), seed=0)
    assert [(f["name"], f["media_type"]) for f in files] == [("samples.png", "image/png")]
    assert blobs.get(files[0]["sha256"]).startswith(b"\x89PNG")
    card = card_for([table("north")], files=files, algorithm="gan")
    assert card["files"] == files
    assert "![generated samples](samples.png)" in render_markdown(card)
    model = Model(id=4, card=card)
    assert file_entry(model, "samples.png") == files[0]
    with pytest.raises(NotFound, match="model 4 has no file 'weights.bin'; its files: samples.png"):
        file_entry(model, "weights.bin")


def test_algorithms_without_a_preview_release_no_files(tmp_path) -> None:
    classifier = get_algorithm("classifier")
    hp = parse_hyperparams(classifier, {"layers": [4, 3]})
    assert store_files(BlobStore(tmp_path), classifier, hp, classifier.init(hp, 4, seed=0), seed=0) == []
    assert not any(tmp_path.rglob("*/*"))
