"""The fl core's contracts: update checks, registries, hyper-parameter parsing, seeds."""

from __future__ import annotations

import hashlib

import pytest
import torch

from consortium.fl.capabilities import example_limit
from consortium.fl.core import (
    MAX_ABS_VALUE,
    Algorithm,
    Evaluation,
    FLError,
    TensorSpec,
    Update,
    check_num_examples,
    check_update,
    derive_seed,
    finite_metrics,
    parse_hyperparams,
    sorted_updates,
    spec_of,
    stack_updates,
    weighted_metrics,
)
from consortium.fl.registry import algorithm_names, get_algorithm, get_strategy, strategy_names

TEMPLATE = {"w": TensorSpec((2, 3), torch.float32), "b": TensorSpec((2,), torch.float32)}


def good_tensors() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(2, 3), "b": torch.ones(2)}


def test_check_update_accepts_matching_tensors() -> None:
    check_update(TEMPLATE, good_tensors())


def test_check_update_names_missing_and_unexpected_tensors() -> None:
    tensors = good_tensors()
    del tensors["b"]
    tensors["extra"] = torch.zeros(1)
    with pytest.raises(FLError, match=r"missing \['b'\], unexpected \['extra'\]"):
        check_update(TEMPLATE, tensors)


def test_check_update_rejects_wrong_shape() -> None:
    tensors = good_tensors() | {"w": torch.zeros(3, 2)}
    with pytest.raises(FLError, match=r"'w' has shape \(3, 2\), expected \(2, 3\)"):
        check_update(TEMPLATE, tensors)


def test_check_update_rejects_wrong_dtype() -> None:
    tensors = good_tensors() | {"b": torch.ones(2, dtype=torch.float64)}
    with pytest.raises(FLError, match=r"'b' has dtype torch.float64, expected torch.float32"):
        check_update(TEMPLATE, tensors)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_update_rejects_non_finite_values(bad: float) -> None:
    tensors = good_tensors()
    tensors["w"][1, 2] = bad
    with pytest.raises(FLError, match=r"'w' contains non-finite values"):
        check_update(TEMPLATE, tensors)


@pytest.mark.parametrize("value", [MAX_ABS_VALUE * 1.001, -3e38, 3.4e38])
def test_check_update_refuses_finite_values_beyond_the_ceiling(value: float) -> None:
    tensors = good_tensors()
    tensors["b"][0] = value
    with pytest.raises(FLError, match=r"'b' has a value of magnitude .* above the hub's ceiling 1e\+15"):
        check_update(TEMPLATE, tensors)


def test_check_update_takes_values_up_to_the_ceiling_and_checks_every_dtype() -> None:
    tensors = good_tensors()
    tensors["w"][0, 0], tensors["w"][1, 1] = MAX_ABS_VALUE, -MAX_ABS_VALUE
    check_update(TEMPLATE, tensors)
    wide = {"c": TensorSpec((2,), torch.float64), "n": TensorSpec((1,), torch.int64),
            "e": TensorSpec((0,), torch.float32), "m": TensorSpec((2,), torch.bool)}
    ok = {"c": torch.tensor([1.0, -2.0], dtype=torch.float64), "n": torch.tensor([7]), "e": torch.zeros(0),
          "m": torch.tensor([True, False])}
    check_update(wide, ok)
    with pytest.raises(FLError, match="'c' contains non-finite"):
        check_update(wide, ok | {"c": torch.tensor([float("nan"), 1.0], dtype=torch.float64)})
    with pytest.raises(FLError, match="'n' has a value of magnitude"):
        check_update(wide, ok | {"n": torch.tensor([2**62])})


def test_num_examples_must_lie_between_one_and_the_limit() -> None:
    check_num_examples(1, 10, "update")
    check_num_examples(10, 10, "update")
    for bad in (0, -1, 11, 10**12):
        with pytest.raises(FLError, match=rf"^update: num_examples = {bad} is outside \[1, 10\] \(x\)$"):
            check_num_examples(bad, 10, "update", "x")


def test_example_limit_is_the_rows_or_what_an_environment_task_plays() -> None:
    classifier = get_algorithm("classifier")
    hp = parse_hyperparams(classifier, {"layers": [4, 2]})
    assert example_limit(classifier, hp, 480, evaluation=False) == 480
    assert example_limit(classifier, hp, 480, evaluation=True) == 480
    with pytest.raises(FLError, match="declares no max_num_examples"):
        example_limit(classifier, hp, None, evaluation=False)
    ppo = get_algorithm("ppo")
    hp = parse_hyperparams(ppo, {"num_envs": 3, "rollout_steps": 100, "eval_episodes": 7})
    assert example_limit(ppo, hp, None, evaluation=False) == 300
    assert example_limit(ppo, hp, None, evaluation=True) == 7


def test_finite_metrics_names_the_diverged_ones() -> None:
    kept, diverged = finite_metrics({"loss": float("nan"), "accuracy": 0.5, "x": float("-inf"), "y": 1e308},
                                    "test")
    assert kept == {"accuracy": 0.5, "y": 1e308}
    assert diverged == ["test.loss", "test.x"]
    assert finite_metrics({}, "train") == ({}, [])


def test_spec_of_describes_tensors() -> None:
    assert spec_of(good_tensors()) == TEMPLATE


def test_unknown_algorithm_lists_the_known_ones() -> None:
    with pytest.raises(FLError, match=r"unknown algorithm 'nope'; known: .*classifier.*kmeans"):
        get_algorithm("nope")


def test_unknown_strategy_and_bad_options() -> None:
    known = "bulyan, centered_clipping, fedavg, kmeans, krum, median, multikrum, trimmed_mean"
    with pytest.raises(FLError, match=f"unknown strategy 'nope'; known: {known}"):
        get_strategy("nope")
    with pytest.raises(FLError, match=r"bad options for strategy 'fedavg'"):
        get_strategy("fedavg", momentum=0.9)


def test_builtins_are_registered_and_follow_the_protocol() -> None:
    assert {"classifier", "kmeans"} <= set(algorithm_names())
    assert {"fedavg", "kmeans"} <= set(strategy_names())
    for name in ("classifier", "kmeans"):
        algorithm = get_algorithm(name)
        assert isinstance(algorithm, Algorithm)
        assert algorithm.name == name
        assert algorithm.default_strategy in strategy_names()


def test_parse_hyperparams_unknown_key_names_the_field() -> None:
    algorithm = get_algorithm("classifier")
    with pytest.raises(FLError, match=r"bad hyper-parameters for 'classifier': learning_rate: Extra inputs"):
        parse_hyperparams(algorithm, {"layers": [4, 2], "learning_rate": 0.1})


def test_parse_hyperparams_bad_value_names_the_field() -> None:
    algorithm = get_algorithm("classifier")
    with pytest.raises(FLError, match=r"lr: Input should be greater than 0"):
        parse_hyperparams(algorithm, {"layers": [4, 2], "lr": -1})
    with pytest.raises(FLError, match=r"k: Field required"):
        parse_hyperparams(get_algorithm("kmeans"), {})


def test_parse_hyperparams_fills_defaults() -> None:
    hp = parse_hyperparams(get_algorithm("classifier"), {"layers": [4, 8, 3]})
    assert hp.layers == [4, 8, 3] and hp.activation == "relu" and hp.optimizer == "sgd"
    assert hp.lr == 0.05 and hp.local_epochs == 1 and hp.batch_size == 32


def test_derive_seed_is_stable_across_processes_and_versions() -> None:
    assert derive_seed(42, 3, "org-a") == 1259371070831466945
    expected = int.from_bytes(hashlib.sha256(b"42\x1f3\x1forg-a").digest()[:8], "big") & ((1 << 63) - 1)
    assert derive_seed(42, 3, "org-a") == expected


def test_derive_seed_separates_its_parts() -> None:
    seeds = {derive_seed(1, r, c) for r in range(20) for c in ("a", "b", "c")}
    assert len(seeds) == 60
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed("1", "2") != derive_seed("12")


def test_weighted_metrics_weights_by_examples() -> None:
    merged = weighted_metrics([Evaluation(1, {"loss": 1.0, "acc": 0.0}), Evaluation(3, {"loss": 3.0})])
    assert merged.num_examples == 4
    assert merged.metrics == {"acc": 0.0, "loss": 2.5}
    assert weighted_metrics([]) == Evaluation(0, {})


def test_sorted_updates_orders_by_client_id() -> None:
    updates = [Update({}, 1, client_id=c) for c in ("b", "c", "a")]
    assert [u.client_id for u in sorted_updates(updates)] == ["a", "b", "c"]


def test_stack_updates_orders_by_client_id_and_stacks() -> None:
    updates = [
        Update({"w": torch.tensor([2.0, 2.0]), "b": torch.tensor([2.0])}, 5, client_id="b"),
        Update({"w": torch.tensor([1.0, 1.0]), "b": torch.tensor([1.0])}, 3, client_id="a"),
    ]
    stacked = stack_updates(updates)
    assert stacked.client_ids == ("a", "b") and len(stacked) == 2
    assert torch.equal(stacked.tensors["w"], torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert torch.equal(stacked.tensors["b"], torch.tensor([[1.0], [2.0]]))
    assert torch.equal(stacked.num_examples, torch.tensor([3.0, 5.0], dtype=torch.float64))


def test_stack_updates_with_shapes_takes_only_those_tensors() -> None:
    updates = [Update({"w": torch.zeros(2), "extra": torch.zeros(1)}, 1, client_id="a")]
    assert set(stack_updates(updates, {"w": (2,)}).tensors) == {"w"}


def test_stack_updates_errors_name_the_client() -> None:
    with pytest.raises(FLError, match="no updates to stack"):
        stack_updates([])
    a = Update({"w": torch.zeros(2)}, 1, client_id="a")
    with pytest.raises(FLError, match=r"from b has tensors \['v'\], the update from a has \['w'\]"):
        stack_updates([a, Update({"v": torch.zeros(2)}, 1, client_id="b")])
    with pytest.raises(FLError, match=r"tensor 'w' from b has shape \(3,\), expected \(2,\)"):
        stack_updates([a, Update({"w": torch.zeros(3)}, 1, client_id="b")])
    with pytest.raises(FLError, match="the update from a has no tensor 'b'"):
        stack_updates([a], {"b": (1,)})
    with pytest.raises(FLError, match=r"the update from b has a negative number of examples \(-2\)"):
        stack_updates([a, Update({"w": torch.zeros(2)}, -2, client_id="b")])
