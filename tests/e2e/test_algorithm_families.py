"""Each algorithm family and the robust strategies as a real project across three node processes."""

from __future__ import annotations

import pytest
import torch

from consortium.node.store import ControlKey, ControlStore
from consortium.protocol import decode_tensors
from consortium.scenario import DIGITS_HYPERPARAMETERS, ORGS, digits_spec, propose_and_approve

from test_federated_run import wait_run

pytestmark = pytest.mark.e2e


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
    assert any(name.startswith("generator.") for name in weights)
    assert any(name.startswith("discriminator.") for name in weights)


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
