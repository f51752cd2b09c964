"""The reference workload in the checkout: deterministic, complete partitions and the simulator's parameter names.

That it equals the workload the published figures were measured on was checked once by hand (see NOTES.md);
these tests keep it stable and self-contained.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

from consortium.bench.peers import workload
from consortium.bench.sim_worker import reference_workload, spec
from consortium.fl.core import parse_hyperparams
from consortium.fl.registry import get_algorithm

PEERS = Path(workload.__file__).parent


def test_digits_split_has_the_documented_sizes() -> None:
    x_train, y_train, x_test, y_test = workload.digits()
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert float(x_train.min()) >= 0.0 and float(x_train.max()) <= 1.0
    assert set(y_test.tolist()) == set(range(10))


def test_the_partition_is_deterministic_disjoint_complete_and_leaves_no_client_empty() -> None:
    for clients in (1, 7, 500):
        rows = workload.client_rows(clients)
        again = workload.client_rows.__wrapped__(clients)
        assert len(rows) == clients and all(np.array_equal(a, b) for a, b in zip(rows, again, strict=True))
        assert min(len(r) for r in rows) >= 1
        joined = np.concatenate(rows)
        assert joined.dtype == np.int64 and np.array_equal(np.sort(joined), np.arange(1437))
    assert not np.array_equal(workload.client_rows(7)[0], workload.client_rows(7, seed=1)[0])


def test_initial_weights_are_the_same_each_time_and_fit_the_classifier() -> None:
    dataset, parts, initial = reference_workload(4)
    _, _, again = reference_workload(4)
    assert len(parts) == 4 and len(dataset.train) == 1437
    assert all(torch.equal(initial[k], again[k]) for k in initial)
    algorithm = get_algorithm("classifier")
    hp = parse_hyperparams(algorithm, spec(1)["algorithm"]["hyperparameters"])
    expected = algorithm.init(hp, dataset.num_features, 0)
    assert {k: v.shape for k, v in initial.items()} == {k: v.shape for k, v in expected.items()}


def test_a_local_epoch_is_reproducible_from_its_seed() -> None:
    x, y = workload.client_data(0, 3)
    first, second = workload.initial_model(), workload.initial_model()
    assert workload.train_epoch(first, x, y, 5) == workload.train_epoch(second, x, y, 5)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    loss, accuracy = workload.test_accuracy(first)
    assert loss > 0 and 0.0 <= accuracy <= 1.0


def test_the_peer_scripts_never_import_consortium() -> None:
    """They run in a Flower virtual environment that does not have the project installed."""
    for script in PEERS.glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "consortium" for n in names), script.name
