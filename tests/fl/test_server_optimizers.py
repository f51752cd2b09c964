"""Server optimisers: hand-computed steps (numbers chosen to be exact in binary), options, state, identity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.core import FLError
from consortium.fl.server_optimizers import ServerOptimizer
from consortium.fl.registry import get_server_optimizer, server_optimizer_names


def tensor(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def steps(optimizer: ServerOptimizer, params: dict, *aggregates: dict) -> tuple[dict, dict]:
    """Run one step per aggregate from a fresh state; the last params and state."""
    state = optimizer.init_state(params)
    for aggregated in aggregates:
        params, state = optimizer.step(params, aggregated, state)
    return params, state


def test_registered_names_and_protocol() -> None:
    assert server_optimizer_names() == ["adagrad", "adam", "sgd", "yogi"]
    for name in server_optimizer_names():
        assert isinstance(get_server_optimizer(name), ServerOptimizer)


def test_defaults_follow_the_paper() -> None:
    assert get_server_optimizer("sgd").options.model_dump() == {"lr": 1.0, "momentum": 0.0}
    for name in ("adam", "yogi"):
        expected = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
        assert get_server_optimizer(name).options.model_dump() == expected
    assert get_server_optimizer("adagrad").options.model_dump() == {"lr": 1e-1, "beta1": 0.9, "tau": 1e-3}


def test_default_sgd_replaces_params_by_the_aggregate() -> None:
    params, state = steps(get_server_optimizer("sgd"), {"w": tensor(1.0, 2.0)}, {"w": tensor(3.0, 5.0)})
    assert torch.equal(params["w"], tensor(3.0, 5.0))
    assert state == {}


def test_sgd_with_a_smaller_lr_moves_part_way() -> None:
    params, _ = steps(get_server_optimizer("sgd", lr=0.5), {"w": tensor(1.0, 2.0)}, {"w": tensor(3.0, 5.0)})
    assert torch.equal(params["w"], tensor(2.0, 3.5))


def test_fedavgm_hand_case() -> None:
    # lr=0.5, momentum=0.5. Round 1: g = 1 - 0 = 1, b = 1, x = 1 - 0.5 = 0.5.
    # Round 2: g = 0.5 - (-0.5) = 1, b = 0.5 * 1 + 1 = 1.5, x = 0.5 - 0.75 = -0.25.
    sgdm = get_server_optimizer("sgd", lr=0.5, momentum=0.5)
    params, state = steps(sgdm, {"w": tensor(1.0)}, {"w": tensor(0.0)}, {"w": tensor(-0.5)})
    assert torch.equal(params["w"], tensor(-0.25))
    assert torch.equal(state["momentum/w"], torch.tensor([1.5], dtype=torch.float64))


def test_adam_hand_case() -> None:
    # lr=1, beta1=beta2=0.5, tau=1, so v starts at 1. Round 1: g = (1, -1); m = 0.5 g = (0.5, -0.5);
    # v = 0.5 * 1 + 0.5 * 1 = 1; x = x - m / (1 + 1) = (0.75, 2.25).
    # Round 2: g = (0.75, 2.25) - (-0.25, 1.25) = (1, 1); m = (0.25 + 0.5, -0.25 + 0.5) = (0.75, 0.25); v = 1;
    # x = (0.75 - 0.375, 2.25 - 0.125).
    adam = get_server_optimizer("adam", lr=1.0, beta1=0.5, beta2=0.5, tau=1.0)
    params, state = steps(adam, {"w": tensor(1.0, 2.0)}, {"w": tensor(0.0, 3.0)}, {"w": tensor(-0.25, 1.25)})
    assert torch.equal(params["w"], tensor(0.375, 2.125))
    assert torch.equal(state["m/w"], torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert torch.equal(state["v/w"], torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_yogi_hand_cases() -> None:
    # g = 5 - 1 = 4, v0 = tau² = 1: v = 1 - 0.5 * 16 * sign(1 - 16) = 9 (Adam would give 8.5); m = 2;
    # x = 5 - 2 / (3 + 1) = 4.5.
    yogi = get_server_optimizer("yogi", lr=1.0, beta1=0.5, beta2=0.5, tau=1.0)
    params, state = steps(yogi, {"w": tensor(5.0)}, {"w": tensor(1.0)})
    assert torch.equal(params["w"], tensor(4.5))
    assert torch.equal(state["v/w"], torch.tensor([9.0], dtype=torch.float64))
    # v above g²: from v = 13.5, g = 1 - (-2) = 3: v = 13.5 - 0.5 * 9 = 9, m = 1.5, x = 1 - 1.5 / 4.
    start = {"m/w": torch.zeros(1, dtype=torch.float64), "v/w": torch.tensor([13.5], dtype=torch.float64)}
    params, state = yogi.step({"w": tensor(1.0)}, {"w": tensor(-2.0)}, start)
    assert torch.equal(params["w"], tensor(0.625))
    assert torch.equal(state["v/w"], torch.tensor([9.0], dtype=torch.float64))


def test_adagrad_hand_case() -> None:
    # lr=1, beta1=0.5, tau=0.75, v starts at 0.5625. Round 1: g = 1, v = 1.5625 (sqrt 1.25), m = 0.5,
    # x = 1 - 0.5 / (1.25 + 0.75) = 0.75. Round 2: g = 3, v = 10.5625 (sqrt 3.25), m = 0.25 + 1.5 = 1.75,
    # x = 0.75 - 1.75 / 4 = 0.3125.
    adagrad = get_server_optimizer("adagrad", lr=1.0, beta1=0.5, tau=0.75)
    params, state = steps(adagrad, {"w": tensor(1.0)}, {"w": tensor(0.0)}, {"w": tensor(-2.25)})
    assert torch.equal(params["w"], tensor(0.3125))
    assert torch.equal(state["v/w"], torch.tensor([10.5625], dtype=torch.float64))


def test_init_state_covers_floating_tensors_only() -> None:
    params = {"w": torch.zeros(2, 3), "steps": torch.tensor([4])}
    state = get_server_optimizer("adam", tau=0.5).init_state(params)
    assert set(state) == {"m/w", "v/w"}
    assert torch.equal(state["m/w"], torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(state["v/w"], torch.full((2, 3), 0.25, dtype=torch.float64))
    assert get_server_optimizer("sgd").init_state(params) == {}


@pytest.mark.parametrize("name", ["sgd", "adam", "yogi", "adagrad"])
def test_integer_tensors_come_from_the_aggregate(name: str) -> None:
    optimizer = get_server_optimizer(name)
    params = {"w": tensor(1.0), "steps": torch.tensor([4])}
    aggregated = {"w": tensor(0.0), "steps": torch.tensor([9])}
    new_params, _ = optimizer.step(params, aggregated, optimizer.init_state(params))
    assert new_params["steps"].dtype == torch.int64 and int(new_params["steps"]) == 9
    assert new_params["w"].dtype == torch.float32


def test_step_leaves_its_inputs_alone() -> None:
    adam = get_server_optimizer("adam")
    params, aggregated = {"w": tensor(1.0, 2.0)}, {"w": tensor(0.0, 0.0)}
    state = adam.init_state(params)
    before = {k: v.clone() for k, v in state.items()}
    adam.step(params, aggregated, state)
    assert torch.equal(params["w"], tensor(1.0, 2.0)) and torch.equal(aggregated["w"], tensor(0.0, 0.0))
    assert all(torch.equal(state[k], before[k]) for k in before)


def test_step_errors() -> None:
    adam = get_server_optimizer("adam")
    params = {"w": tensor(1.0, 2.0)}
    with pytest.raises(FLError, match="the aggregate has no tensor 'w'"):
        adam.step(params, {}, adam.init_state(params))
    with pytest.raises(FLError, match=r"aggregate tensor 'w' has shape \(3,\), expected \(2,\)"):
        adam.step(params, {"w": tensor(1.0, 2.0, 3.0)}, adam.init_state(params))
    with pytest.raises(FLError, match="server optimizer 'adam' state has no 'm/w'; start it with init_state"):
        adam.step(params, {"w": tensor(0.0, 0.0)}, {})


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("lamb", {}, "unknown server optimizer 'lamb'; known: adagrad, adam, sgd, yogi"),
        ("adam", {"lr": 0}, "bad options for server optimizer 'adam': lr: Input should be greater than 0"),
        ("adam", {"beta3": 0.5}, "beta3: Extra inputs are not permitted"),
        ("adagrad", {"beta2": 0.5}, "beta2: Extra inputs are not permitted"),
        ("yogi", {"beta2": 1.0}, "beta2: Input should be less than 1"),
        ("sgd", {"momentum": -0.1}, "momentum: Input should be greater than or equal to 0"),
        ("sgd", {"lr": "fast"}, "lr: Input should be a valid number"),
    ],
)
def test_bad_options_name_the_field(name: str, options: dict, message: str) -> None:
    with pytest.raises(FLError) as info:
        get_server_optimizer(name, **options)
    assert message in str(info.value)


finite = st.floats(-1e30, 1e30, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(finite, finite), min_size=1, max_size=6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_sgd_lr_1_momentum_0_is_the_identity_on_the_aggregate(pairs: list, dtype: torch.dtype) -> None:
    params = {"w": torch.tensor([p for p, _ in pairs], dtype=dtype)}
    aggregated = {"w": torch.tensor([a for _, a in pairs], dtype=dtype)}
    sgd = get_server_optimizer("sgd", lr=1.0, momentum=0.0)
    new_params, state = sgd.step(params, aggregated, sgd.init_state(params))
    assert torch.equal(new_params["w"], aggregated["w"]) and new_params["w"].dtype == dtype
    assert state == {}
