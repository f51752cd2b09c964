"""SCAFFOLD: hand-computed rounds, the classifier's corrected local training, the server step, invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl import scaffold
from consortium.fl.algorithms.classifier import Classifier
from consortium.fl.cohort import Cohort, by_decreasing_size
from consortium.fl.core import FLError, LocalData, Update, check_update, derive_seed, parse_hyperparams
from consortium.fl.registry import get_strategy
from consortium.fl.server_optimizers import ServerStep
from consortium.fl.registry import get_server_optimizer
from consortium.fl.scaffold import Controls


def scalar(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor([value], dtype=torch.float32)}


def quadratic_client(b: float, x: dict, controls: Controls, steps: int, lr: float) -> Update:
    """SCAFFOLD local work on f(w) = (w - b)^2 / 2 (gradient w - b), written with the module's pieces."""
    correction = scaffold.corrections(controls, ["w"])[0]
    w = x["w"].clone()
    for _ in range(steps):
        w = w - lr * ((w - b) + correction)
    deltas = scaffold.control_deltas(controls.server, x, {"w": w.unsqueeze(0)}, torch.tensor([steps]), lr)
    return Update({"w": w} | scaffold.prefixed_deltas({"w": deltas["w"][0]}), 1, client_id=f"b={b}")


def test_two_quadratic_clients_match_the_hand_computed_rounds() -> None:
    """Clients f1 = w^2/2 and f2 = (w - 4)^2/2, lr 0.5, K = 2 steps, N = 2, plain averaging.

    Round 1 (c = c_i = 0, x = 0): client 1 stays at 0 (delta_c 0); client 2 goes 0 -> 2 -> 3, so
    delta_c2 = (0 - 3) / (2 * 0.5) - 0 = -3. Server: x = 1.5, c = (0 - 3) / 2 = -1.5.
    Round 2: client 1's correction c - c_1 = -1.5 cancels its gradient at 1.5: it stays at 1.5, delta_c1 =
    0 / 1 + 1.5 = 1.5. Client 2 (correction 1.5) goes 1.5 -> 2 -> 2.25, delta_c2 = (1.5 - 2.25) / 1 + 1.5 =
    0.75. Server: x = 1.875, c = -1.5 + (1.5 + 0.75) / 2 = -0.375 = mean(c_1, c_2) = (1.5 - 2.25) / 2.
    """
    server = ServerStep(scaffold_clients=2)
    fedavg = get_strategy("fedavg")
    x = scalar(0.0)
    state = server.init_state(x)
    clients = {0.0: scalar(0.0), 4.0: scalar(0.0)}
    expected = [(1.5, -1.5, {0.0: 0.0, 4.0: -3.0}), (1.875, -0.375, {0.0: 1.5, 4.0: -2.25})]
    for want_x, want_c, want_clients in expected:
        c = server.control(state)
        updates = [quadratic_client(b, x, Controls(c, clients[b]), steps=2, lr=0.5) for b in clients]
        for b, update in zip(clients, updates, strict=True):
            clients[b] = scaffold.advanced(clients[b], scaffold.split_deltas(update.tensors)[1])
        x, state = server.step(x, fedavg.aggregate(x, updates), state, scaffold.delta_sum(updates))
        assert float(x["w"]) == want_x
        assert float(server.control(state)["w"]) == want_c
        assert {b: float(ci["w"]) for b, ci in clients.items()} == want_clients


def hyperparams(**overrides: object):
    return parse_hyperparams(Classifier(), {"layers": [4, 8, 3], "lr": 0.1, "scaffold": True} | overrides)


def toy_data(n: int = 40, seed: int = 0) -> LocalData:
    generator = torch.Generator().manual_seed(seed)
    return LocalData(torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator))


def random_control(params: dict, seed: int, scale: float = 0.1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(t.shape, generator=generator) * scale for name, t in params.items()}


def test_classifier_applies_the_hand_computed_correction() -> None:
    """One class: the cross-entropy and its gradient are 0, so local training is the correction alone.

    4 rows, batch 2, 1 epoch: K = 2 steps of lr 0.5, so y = x - K * lr * (c - c_i) = x - (c - c_i), and
    delta_c = (x - y) / (K * lr) - c = (c - c_i) - c = -c_i.
    """
    hp = parse_hyperparams(Classifier(), {"layers": [1, 1], "lr": 0.5, "batch_size": 2, "scaffold": True})
    params = {"layers.0.weight": torch.tensor([[1.0]]), "layers.0.bias": torch.tensor([0.5])}
    c = {"layers.0.weight": torch.tensor([[0.5]]), "layers.0.bias": torch.tensor([-1.0])}
    c_i = {"layers.0.weight": torch.tensor([[0.25]]), "layers.0.bias": torch.tensor([0.5])}
    data = LocalData(torch.tensor([[1.0], [2.0], [3.0], [4.0]]), torch.zeros(4, dtype=torch.int64))
    update = Classifier().local_update(hp, params, data, seed=0, controls=Controls(c, c_i))
    assert update.tensors["layers.0.weight"].tolist() == [[0.75]]
    assert update.tensors["layers.0.bias"].tolist() == [2.0]
    assert update.tensors["scaffold.delta_c/layers.0.weight"].tolist() == [[-0.25]]
    assert update.tensors["scaffold.delta_c/layers.0.bias"].tolist() == [-0.5]
    _, deltas = scaffold.split_deltas(update.tensors)
    assert all(float(t.abs().max()) == 0.0 for t in scaffold.advanced(c_i, deltas).values())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 50), batch=st.integers(1, 16), epochs=st.integers(1, 3))
def test_with_zero_controls_the_first_update_is_plain_sgd(seed: int, n: int, batch: int, epochs: int) -> None:
    """Round 1 (c = c_i = 0): the corrected steps are the plain SGD steps, bit for bit."""
    algorithm = Classifier()
    hp = hyperparams(batch_size=batch, local_epochs=epochs)
    plain = hyperparams(batch_size=batch, local_epochs=epochs, scaffold=False)
    params = algorithm.init(hp, 4, seed=seed)
    data = toy_data(n, seed)
    zero = scaffold.zero_control(params)
    controlled = algorithm.local_update(hp, params, data, seed, controls=Controls(zero, zero))
    reference = algorithm.local_update(plain, params, data, seed)
    trained, deltas = scaffold.split_deltas(controlled.tensors)
    assert set(trained) == set(reference.tensors)
    for name, tensor in reference.tensors.items():
        assert torch.equal(trained[name], tensor)
    steps = epochs * -(-n // batch)
    for name, delta in deltas.items():
        torch.testing.assert_close(delta, (params[name] - reference.tensors[name]) / (steps * hp.lr))
    assert controlled.metrics == reference.metrics


def test_the_correction_changes_training_and_the_controls_must_fit() -> None:
    algorithm = Classifier()
    hp = hyperparams()
    params = algorithm.init(hp, 4, seed=1)
    data = toy_data()
    zero = scaffold.zero_control(params)
    corrected = algorithm.local_update(hp, params, data, 0, Controls(random_control(params, 1), zero))
    plain = algorithm.local_update(hp, params, data, 0, Controls(zero, zero))
    assert not torch.equal(corrected.tensors["layers.0.weight"], plain.tensors["layers.0.weight"])
    with pytest.raises(FLError, match="needs the control variates"):
        algorithm.local_update(hp, params, data, 0)
    with pytest.raises(FLError, match="scaffold is off"):
        algorithm.local_update(hyperparams(scaffold=False), params, data, 0, Controls(zero, zero))
    short = {k: v for k, v in zero.items() if k != "layers.2.bias"}
    with pytest.raises(FLError, match="client control variate c_i has tensors"):
        algorithm.local_update(hp, params, data, 0, Controls(zero, short))
    wrong = zero | {"layers.0.bias": torch.zeros(8, dtype=torch.float64)}
    with pytest.raises(FLError, match="server control variate c tensor 'layers.0.bias' is torch.float64"):
        algorithm.local_update(hp, params, data, 0, Controls(wrong, zero))


def test_an_empty_client_sends_zero_deltas_and_keeps_its_params() -> None:
    algorithm = Classifier()
    hp = hyperparams()
    params = algorithm.init(hp, 4, seed=1)
    c = random_control(params, 2)
    empty = LocalData(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    update = algorithm.local_update(hp, params, empty, 0, Controls(c, random_control(params, 3)))
    trained, deltas = scaffold.split_deltas(update.tensors)
    assert update.num_examples == 0
    assert all(torch.equal(trained[k], params[k]) for k in params)
    assert all(float(d.abs().max()) == 0.0 for d in deltas.values())


@pytest.mark.parametrize("bad", [{"optimizer": "adam"}, {"momentum": 0.9}])
def test_scaffold_needs_plain_sgd(bad: dict) -> None:
    with pytest.raises(FLError, match="scaffold needs optimizer 'sgd' with momentum 0"):
        hyperparams(**bad)


def test_the_update_template_carries_delta_c_and_check_update_validates_it() -> None:
    algorithm = Classifier()
    hp = hyperparams()
    params = algorithm.init(hp, 4, seed=0)
    broadcast = scaffold.with_control(params, scaffold.zero_control(params))
    template = algorithm.update_template(hp, broadcast)
    assert set(template) == set(params) | {f"scaffold.delta_c/{name}" for name in params}
    assert algorithm.update_template(hyperparams(scaffold=False), params).keys() == params.keys()
    zero = scaffold.zero_control(params)
    update = algorithm.local_update(hp, params, toy_data(), 0, Controls(zero, zero))
    check_update(template, update.tensors)
    missing = {k: v for k, v in update.tensors.items() if k != "scaffold.delta_c/layers.0.bias"}
    with pytest.raises(FLError, match=r"missing \['scaffold.delta_c/layers.0.bias'\]"):
        check_update(template, missing)
    bad_shape = update.tensors | {"scaffold.delta_c/layers.0.bias": torch.zeros(3)}
    with pytest.raises(FLError, match="'scaffold.delta_c/layers.0.bias' has shape"):
        check_update(template, bad_shape)


def test_broadcast_round_trip_and_server_state() -> None:
    params = {"w": torch.ones(2, 3), "count": torch.tensor([4])}
    control = scaffold.zero_control(params)
    assert set(control) == {"w"}, "integer tensors get no control variate"
    twos = {"w": torch.full((2, 3), 2.0)}
    received, got = scaffold.split_broadcast(scaffold.with_control(params, twos))
    assert set(received) == set(params) and torch.equal(got["w"], torch.full((2, 3), 2.0))
    assert scaffold.split_broadcast(params) == (params, None)

    momentum = ServerStep(get_server_optimizer("sgd", lr=1.0, momentum=0.5), scaffold_clients=4)
    state = momentum.init_state(params)
    assert set(state) == {"momentum/w", "scaffold.c/w"}
    aggregated = {"w": torch.zeros(2, 3), "count": torch.tensor([4])}
    deltas_sum = {"w": torch.full((2, 3), 2.0, dtype=torch.float64)}
    new_params, state = momentum.step(params, aggregated, state, deltas_sum)
    assert torch.equal(new_params["w"], torch.zeros(2, 3))
    assert torch.equal(state["momentum/w"], torch.ones(2, 3, dtype=torch.float64))
    assert torch.equal(momentum.control(state)["w"], torch.full((2, 3), 0.5))
    assert set(momentum.broadcast(new_params, state)) == {"w", "count", "scaffold.c/w"}
    with pytest.raises(FLError, match="sum of delta_c"):
        momentum.step(params, aggregated, state)

    plain = ServerStep()
    assert not plain.stateful and plain.init_state(params) == {}
    assert plain.broadcast(params, {}) is params
    assert plain.step(params, aggregated, {}) == (aggregated, {})


@settings(max_examples=25, deadline=None)
@given(
    clients=st.integers(1, 6),
    rounds=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_server_control_stays_the_mean_of_the_client_controls(clients: int, rounds: int, seed: int) -> None:
    """With every client in every round, c = mean_i c_i after any number of rounds (both start at 0)."""
    generator = torch.Generator().manual_seed(seed)
    server = ServerStep(scaffold_clients=clients)
    params = {"w": torch.zeros(3)}
    state = server.init_state(params)
    controls = [scaffold.zero_control(params) for _ in range(clients)]
    for _ in range(rounds):
        updates = []
        for i in range(clients):
            delta = {"w": torch.randn(3, generator=generator)}
            controls[i] = scaffold.advanced(controls[i], delta)
            updates.append(Update({"w": params["w"]} | scaffold.prefixed_deltas(delta), 1, client_id=str(i)))
        params, state = server.step(params, params, state, scaffold.delta_sum(updates))
    mean = torch.stack([c["w"] for c in controls]).mean(dim=0)
    torch.testing.assert_close(server.control(state)["w"], mean, atol=1e-5, rtol=1e-5)


def test_cohort_update_with_controls_equals_each_client_alone() -> None:
    algorithm = Classifier()
    hp = hyperparams(batch_size=5, local_epochs=2)
    params = algorithm.init(hp, 4, seed=3)
    sizes = [12, 1, 30, 7, 7, 0, 19]
    data = toy_data(sum(sizes), seed=5)
    order = by_decreasing_size(np.array(sizes))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    cohort = Cohort.from_parts(
        [f"c{i}" for i in order],
        [np.arange(starts[i], starts[i + 1]) for i in order],
        [derive_seed("t", int(i)) for i in order],
    )
    c = random_control(params, 7)
    client_controls = [random_control(params, 100 + c_index) for c_index in range(len(cohort))]
    stacked_controls = {name: torch.stack([cc[name] for cc in client_controls]) for name in params}
    stacked, _ = algorithm.local_update_cohort(hp, params, data, cohort, Controls(c, stacked_controls))
    for position in range(len(cohort)):
        rows = torch.as_tensor(cohort.rows[cohort.offsets[position] : cohort.offsets[position + 1]])
        alone = algorithm.local_update(
            hp, params, LocalData(data.x[rows], data.y[rows]), cohort.seeds[position],
            Controls(c, client_controls[position]),
        )
        assert set(alone.tensors) == set(stacked)
        for name, tensor in alone.tensors.items():
            torch.testing.assert_close(stacked[name][position], tensor, rtol=1e-4, atol=1e-4)


def test_server_control_step_checks_its_inputs() -> None:
    with pytest.raises(FLError, match="N >= 1"):
        scaffold.server_control_step({"w": torch.zeros(1)}, {"w": torch.zeros(1)}, 0)
    with pytest.raises(FLError, match=r"no tensor for \['w'\]"):
        scaffold.server_control_step({"w": torch.zeros(1)}, {}, 3)
    with pytest.raises(FLError, match="carries no SCAFFOLD delta_c"):
        scaffold.delta_sum([Update({"w": torch.zeros(1)}, 1, client_id="a")])
