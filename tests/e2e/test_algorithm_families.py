"""Each algorithm family and the robust strategies as a real project across three node processes."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from consortium.cli import app
from consortium.node.controls import ControlKey, ControlStore
from consortium.codec import decode_tensors
from consortium.protocol import ProjectCreate
from consortium.scenario import DIGITS_HYPERPARAMETERS, ORGS, digits_spec, propose_and_approve

from test_federated_run import wait_run

pytestmark = pytest.mark.e2e
runner = CliRunner()

PPO_HYPERPARAMETERS = {"hidden": [16], "num_envs": 1, "rollout_steps": 64, "epochs": 2,
                       "minibatch_size": 32, "eval_episodes": 3}
PHYSICS = {
    "north-clinic": {"length": 0.4, "gravity": 11.0},
    "south-lab": {"masspole": 0.13, "length": 0.62},
    "east-institute": {"gravity": 7.5, "masscart": 1.2},
}
PRIVATE_PHYSICS_ORG = "east-institute"


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_conditional_gan_trains_across_three_nodes(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    hyperparameters = {"num_features": 64, "num_classes": 10, "latent_dim": 16, "generator_hidden": [64],
                       "discriminator_hidden": [64], "local_steps": 30, "batch_size": 32}
    spec = digits_spec("e2e-gan", ORGS, rounds=2, min_nodes=3,
                       algorithm={"name": "gan", "hyperparameters": hyperparameters}, strategy={"name": "fedavg"})
    project = propose_and_approve(cluster.consortium, spec)
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        assert [r.round for r in progress.rounds] == [1, 2]
        final = progress.rounds[-1]
        assert {"conditioning_accuracy", "frechet_distance"} <= set(final.test)
        assert {"generator_loss", "discriminator_loss"} <= set(final.train)
        weights = decode_tensors(admin.model_weights(progress.run.model_id))
        model = admin.model(progress.run.model_id)
        assert "![generated samples](samples.png)" in admin.model_card_markdown(progress.run.model_id)
    assert any(name.startswith("generator.") for name in weights)
    assert any(name.startswith("discriminator.") for name in weights)
    [samples] = model["card"]["files"]
    assert (samples["name"], samples["media_type"]) == ("samples.png", "image/png")
    out = cluster.workdir / "gan-model"
    cli("model", "download", str(progress.run.model_id), "--out", str(out), "--hub", cluster.hub.url,
        "--token", cluster.hub.admin_token)
    png = (out / "samples.png").read_bytes()
    assert png.startswith(b"\x89PNG") and hashlib.sha256(png).hexdigest() == samples["sha256"]
    assert "![generated samples](samples.png)" in (out / "MODEL_CARD.md").read_text()


def test_ppo_trains_across_three_nodes_each_in_its_own_physics(cluster) -> None:
    for org, physics in PHYSICS.items():
        private = ["--private-physics"] if org == PRIVATE_PHYSICS_ORG else []
        cli("environment", "add", "cartpole", "--gym", "CartPole-v1", "--physics", json.dumps(physics),
            "--license", "MIT", *private, "--hub", cluster.hub.url,
            "--org-dir", str(cluster.consortium.org_dirs[org]))
    cluster.start_nodes(poll_wait=5.0)
    refs = [f"{org}/cartpole" for org in ORGS]
    spec = ProjectCreate.model_validate({
        "name": "e2e-ppo", "task": "Balance a pole on carts with different physics",
        "algorithm": {"name": "ppo", "hyperparameters": PPO_HYPERPARAMETERS},
        "environments": refs, "rounds": 3, "min_nodes": 3, "round_timeout": 60.0,
    })
    project = propose_and_approve(cluster.consortium, spec, with_test_set=False)
    assert project["required_orgs"] == sorted(ORGS)
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        assert [r.round for r in progress.rounds] == [1, 2, 3]
        for rnd in progress.rounds:
            assert rnd.participants == sorted(refs)
            assert rnd.train["train_return"] > 0 and "train_episodes" in rnd.train
            assert rnd.federated_eval["mean_return"] > 0
            assert not rnd.federated_eval_pending
        card = admin.model(progress.run.model_id)["card"]
        markdown = admin.model_card_markdown(progress.run.model_id)
        weights = decode_tensors(admin.model_weights(progress.run.model_id))
    assert card["datasets"] == [] and card["license"] == "MIT"
    physics = {e["org"]: e["physics"] for e in card["environments"]}
    assert physics[PRIVATE_PHYSICS_ORG] is None
    assert physics["north-clinic"]["length"] == 0.4 and physics["south-lab"]["masspole"] == 0.13
    assert "## Training environments" in markdown
    assert "private (committed: SHA-256" in markdown
    assert {name.split(".")[0] for name in weights} == {"policy", "value"}


def test_robust_rule_with_server_momentum_runs_across_three_nodes(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    strategy = {"name": "median", "server_optimizer": {"name": "sgd", "options": {"lr": 1.0, "momentum": 0.5}}}
    spec = digits_spec("e2e-median", ORGS, rounds=3, min_nodes=3, strategy=strategy)
    project = propose_and_approve(cluster.consortium, spec)
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        assert progress.rounds[-1].test["accuracy"] > 0.5
        assert "`median`" in admin.model_card_markdown(progress.run.model_id)
        checkpoints = [e["payload"] for e in admin.ledger(limit=10_000) if e["event_type"] == "round.completed"]
    assert len({c["server_state_sha256"] for c in checkpoints}) == 3, "the momentum state moves every round"


def test_scaffold_nodes_keep_their_control_variates_across_rounds(cluster) -> None:
    cluster.start_nodes(poll_wait=5.0)
    rounds = 3
    hyperparameters = DIGITS_HYPERPARAMETERS | {"momentum": 0.0, "lr": 0.2, "scaffold": True}
    spec = digits_spec("e2e-scaffold", ORGS, rounds=rounds, min_nodes=3,
                       algorithm={"name": "classifier", "hyperparameters": hyperparameters})
    project = propose_and_approve(cluster.consortium, spec)
    with cluster.hub.client() as admin:
        run = admin.start_run(project["id"])
        progress = wait_run(admin, run["id"])
        assert progress.run.status == "completed", cluster.logs()
        assert progress.rounds[-1].test["accuracy"] > 0.8
        weights = decode_tensors(admin.model_weights(progress.run.model_id))
        checkpoints = [e["payload"] for e in admin.ledger(limit=10_000) if e["event_type"] == "round.completed"]
    assert not any(name.startswith("scaffold.") for name in weights), "the model holds no control variate"
    assert len({c["server_state_sha256"] for c in checkpoints}) == rounds, "the server's c moves every round"
    for org in ORGS:
        store = ControlStore(cluster.consortium.org_dirs[org])
        key = ControlKey(project["id"], project["spec_hash"], run["id"], "digits")
        assert store.path(key).exists(), f"{org} kept no control variate"
        before_last, after_last = store.load(key, rounds), store.load(key, rounds + 1)
        assert set(after_last) == set(weights)
        assert any(float(t.abs().max()) > 0 for t in before_last.values()), f"{org}: c_i moved in round 1..2"
        assert any(not torch.equal(before_last[n], after_last[n]) for n in weights), f"{org}: c_i moved again"
