"""Each attack does what it says to the malicious clients only; the harness sees FedAvg hurt, median not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from consortium.fl.core import FLError, LocalData, StackedUpdates
from consortium.bench.attack_matrix import (
    DEFAULT_RULE,
    MatrixConfig,
    RunRecord,
    RunSetting,
    rule_catalogue,
    run_one,
    settings_of,
)
from consortium.bench.attack_suite import Cell, summarise, validity_checks
from consortium.sim.attacks import (
    DIGITS_TRIGGER,
    alie_z,
    build_attack,
    make_tamper,
    malicious_ids,
    poison_partition,
)
from consortium.sim.datasets import SimDataset
from consortium.sim.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GLOBAL = {"w": torch.tensor([1.0, -2.0, 0.5]), "b": torch.tensor([3.0])}
MALICIOUS = ("client-0", "client-1")


def stacked(deltas: list[list[float]]) -> StackedUpdates:
    """Clients client-0, client-1, ... whose updates are GLOBAL plus the given flat deltas ([w..., b])."""
    rows = torch.tensor(deltas)
    tensors = {"w": GLOBAL["w"] + rows[:, :3], "b": GLOBAL["b"] + rows[:, 3:]}
    ids = tuple(f"client-{i}" for i in range(len(deltas)))
    return StackedUpdates(tensors, torch.full((len(deltas),), 10.0, dtype=torch.float64), ids)


def sent_deltas(updates: StackedUpdates) -> torch.Tensor:
    return torch.cat([updates.tensors["w"] - GLOBAL["w"], updates.tensors["b"] - GLOBAL["b"]], dim=1)


def tampered(attack: str, updates: StackedUpdates, clients: int = 20, malicious: int = 4) -> StackedUpdates:
    tamper = make_tamper(build_attack(attack, clients, malicious), MALICIOUS, seed=0)
    assert tamper is not None
    return tamper(GLOBAL, updates)


HONEST = [[0.1, 0.2, -0.3, 0.05], [0.2, 0.1, -0.1, 0.0], [0.3, 0.4, -0.2, 0.1], [0.1, 0.3, -0.4, 0.02]]


def test_sign_flip_sends_four_times_the_own_delta_backwards() -> None:
    out = sent_deltas(tampered("sign_flip", stacked(HONEST)))
    assert torch.allclose(out[:2], -4 * torch.tensor(HONEST[:2]), atol=1e-6)


def test_ipm_points_against_the_benign_mean_scaled_by_epsilon() -> None:
    benign_mean = torch.tensor(HONEST[2:]).mean(0)
    for epsilon in (0.1, 10.0):
        out = sent_deltas(tampered(f"ipm_{epsilon:g}", stacked(HONEST)))
        assert torch.allclose(out[:2], (-epsilon * benign_mean).expand(2, -1), atol=1e-6)
        assert float(out[0] @ benign_mean) < 0


def test_alie_z_follows_the_paper_formula_and_stays_inside_the_benign_range() -> None:
    assert alie_z(20, 4) == pytest.approx(0.3853, abs=1e-4)  # Φ⁻¹((20 - (11 - 4)) / 20) = Φ⁻¹(0.65)
    generator = torch.Generator().manual_seed(0)
    deltas = torch.randn(18, 4, generator=generator).tolist()
    out = sent_deltas(tampered("alie", stacked(deltas), clients=18, malicious=2))
    benign = torch.tensor(deltas[2:])
    expected = benign.mean(0) - alie_z(18, 2) * benign.std(0)
    assert torch.allclose(out[0], expected, atol=1e-5) and torch.allclose(out[1], expected, atol=1e-5)
    assert bool((out[:2] >= benign.min(0).values).all()) and bool((out[:2] <= benign.max(0).values).all())


def test_gaussian_noise_is_centred_on_the_global_params_and_seeded() -> None:
    deltas = [[5.0, 5.0, 5.0, 5.0]] * 2 + HONEST
    first = sent_deltas(tampered("gaussian", stacked(deltas)))
    again = sent_deltas(tampered("gaussian", stacked(deltas)))
    assert torch.equal(first, again)
    assert bool((first[:2].abs() < 5).all()), "the honest delta must not leak into the noise"
    assert not torch.equal(first[0], first[1])


def test_backdoor_boost_scales_the_own_delta_by_n_over_f() -> None:
    out = sent_deltas(tampered("backdoor", stacked(HONEST)))
    assert torch.allclose(out[:2], 5 * torch.tensor(HONEST[:2]), atol=1e-6)


@pytest.mark.parametrize("attack", ["sign_flip", "gaussian", "alie", "ipm_0.1", "ipm_10", "backdoor"])
def test_model_poisoning_leaves_benign_updates_and_weights_untouched(attack: str) -> None:
    updates = stacked(HONEST)
    out = tampered(attack, updates)
    for name in GLOBAL:
        assert torch.equal(out.tensors[name][2:], updates.tensors[name][2:])
        assert out.tensors[name].dtype == updates.tensors[name].dtype
    assert torch.equal(out.num_examples, updates.num_examples) and out.client_ids == updates.client_ids
    assert not torch.equal(out.tensors["w"][:2], updates.tensors["w"][:2])


def test_data_only_attacks_have_no_tamper() -> None:
    assert make_tamper(build_attack("label_flip", 20, 4), MALICIOUS, 0) is None
    assert make_tamper(build_attack("none", 20, 4), MALICIOUS, 0) is None


def small_dataset() -> tuple[SimDataset, list[np.ndarray]]:
    x = torch.rand(12, 64) * 0.5
    y = torch.arange(12) % 10
    dataset = SimDataset("tiny", LocalData(x, y), LocalData(x.clone(), y.clone()), "CC0-1.0")
    return dataset, [np.arange(0, 4), np.arange(4, 8), np.arange(8, 12)]


def test_label_flip_maps_labels_of_malicious_clients_only() -> None:
    dataset, parts = small_dataset()
    attack = build_attack("label_flip", 3, 1)
    poisoned, new_parts = poison_partition(dataset, parts, [0], attack.poison_data, seed=0)
    rows = torch.as_tensor(new_parts[0])
    assert torch.equal(poisoned.train.y[rows], 9 - dataset.train.y[:4])
    assert torch.equal(poisoned.train.x[rows], dataset.train.x[:4])
    for position in (1, 2):
        assert np.array_equal(new_parts[position], parts[position])
    assert torch.equal(poisoned.train.y[:12], dataset.train.y)


def test_backdoor_triggers_and_relabels_half_of_the_malicious_rows_only() -> None:
    dataset, parts = small_dataset()
    attack = build_attack("backdoor", 3, 1)
    poisoned, new_parts = poison_partition(dataset, parts, [0], attack.poison_data, seed=0)
    x, y = poisoned.train.x[torch.as_tensor(new_parts[0])], poisoned.train.y[torch.as_tensor(new_parts[0])]
    pixels = list(DIGITS_TRIGGER.pixels)
    triggered = (x[:, pixels] == 1.0).all(1)
    assert int(triggered.sum()) == 2
    assert bool((y[triggered] == DIGITS_TRIGGER.target).all())
    assert torch.equal(x[~triggered], dataset.train.x[:4][~triggered])
    assert torch.equal(y[~triggered], dataset.train.y[:4][~triggered])
    assert torch.equal(poisoned.train.x[:12], dataset.train.x)
    assert all(np.array_equal(new_parts[p], parts[p]) for p in (1, 2))


def test_triggered_test_set_leaves_out_the_target_class() -> None:
    dataset, _ = small_dataset()
    triggered = DIGITS_TRIGGER.triggered_test(dataset.test)
    assert len(triggered) == int((dataset.test.y != DIGITS_TRIGGER.target).sum())
    assert bool((triggered.y == DIGITS_TRIGGER.target).all())
    assert bool((triggered.x[:, list(DIGITS_TRIGGER.pixels)] == 1.0).all())


def test_malicious_clients_are_the_first_f_ids() -> None:
    assert malicious_ids(20, 4) == ("client-00", "client-01", "client-02", "client-03")


@pytest.mark.parametrize("name", ["ipm_x", "ipm_-1", "flip"])
def test_unknown_attacks_fail_clearly(name: str) -> None:
    with pytest.raises(FLError, match="attack"):
        build_attack(name, 20, 4)


def test_sign_flip_hurts_fedavg_but_not_median() -> None:
    config = MatrixConfig(clients=20, malicious=4, rounds=8)
    accuracy = {
        (attack, rule): run_one(RunSetting(attack, rule, "iid", 0), config).accuracy
        for attack in ("none", "sign_flip")
        for rule in ("fedavg", "median")
    }
    assert accuracy[("none", "fedavg")] - accuracy[("sign_flip", "fedavg")] >= 0.3
    assert accuracy[("none", "median")] - accuracy[("sign_flip", "median")] <= 0.1


def test_every_matrix_run_has_its_no_attack_baseline() -> None:
    runs = settings_of(["fedavg"], ["sign_flip"], ["iid"], [0, 1])
    assert {(s.attack, s.seed) for s in runs} == {
        ("none", 0),
        ("none", 1),
        ("sign_flip", 0),
        ("sign_flip", 1),
    }


def record(attack: str, rule: str, partition: str, accuracy: float, backdoor: float = 0.0) -> RunRecord:
    return RunRecord(attack, rule, partition, 0, accuracy, backdoor, 1.0)


def test_cells_measure_the_drop_against_the_same_rule_without_attack() -> None:
    cells = {
        (c.attack, c.rule): c
        for c in summarise(
            [
                record("none", "fedavg", "iid", 0.9),
                record("sign_flip", "fedavg", "iid", 0.1),
                record("none", "median", "iid", 0.8),
                record("sign_flip", "median", "iid", 0.78),
            ]
        )
    }
    assert cells[("sign_flip", "fedavg")].drop == pytest.approx(0.8)
    assert cells[("sign_flip", "median")].drop == pytest.approx(0.02)


def cell(attack: str, rule: str, partition: str, drop: float, backdoor: float = 0.0) -> Cell:
    return Cell(attack, rule, partition, 3, 0.9 - drop, 0.01, drop, backdoor)


def test_validity_checks_fail_when_the_harness_or_the_default_rule_falls_short() -> None:
    passing = [
        cell("sign_flip", "fedavg", "iid", 0.5),
        cell("backdoor", "fedavg", "iid", 0.1, backdoor=0.95),
        cell("sign_flip", DEFAULT_RULE, "iid", 0.02),
        cell("backdoor", DEFAULT_RULE, "iid", 0.0, backdoor=0.05),
        cell("sign_flip", DEFAULT_RULE, "dirichlet:0.5", 0.05),
    ]
    assert all(check.passed for check in validity_checks(passing))
    failing = [
        cell("sign_flip", "fedavg", "iid", 0.15),
        cell("backdoor", "fedavg", "iid", 0.1, backdoor=0.5),
        cell("sign_flip", DEFAULT_RULE, "iid", 0.04),
        cell("backdoor", DEFAULT_RULE, "iid", 0.0, backdoor=0.2),
        cell("sign_flip", DEFAULT_RULE, "dirichlet:0.5", 0.07),
    ]
    checks = validity_checks(failing)
    assert len(checks) == 5 and not any(check.passed for check in checks)
    assert checks[0].line().startswith("FAIL") and "15.0" in checks[0].line()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("robust-*.json")), ids=lambda p: p.name)
def test_robust_examples_use_the_matrix_settings(path: Path) -> None:
    project, settings = load_spec(path)
    catalogue = rule_catalogue(settings.clients, 4)
    strategy = json.loads(project.strategy.model_dump_json(exclude_none=True))
    assert strategy in [{"options": {}} | rule for name, rule in catalogue.items() if name != "fedavg"], (
        f"{path.name} does not match a rule of the attack matrix"
    )


def test_there_is_an_example_for_every_robust_rule() -> None:
    names = {p.stem.removeprefix("robust-") for p in EXAMPLES.glob("robust-*.json")}
    assert names == {name.replace("_", "-") for name in rule_catalogue(20, 4)} - {"fedavg"}
