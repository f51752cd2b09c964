"""A project's secure aggregation settings: refused at proposal time with the reason, and each round's setup
(threshold, graph, quantiser) fixed from the nodes that trained."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consortium.fl.core import FLError
from consortium.fl.privacy.secagg.errors import SecAggAborted
from consortium.fl.privacy.secagg.setup import plan_round, threshold
from consortium.plan import RunPlan
from consortium.privacy_wire import SecureAggregationSpec
from consortium.protocol import ProjectCreate

PRIVACY = {"clip": 1.0, "epsilon": 4.0, "delta": 1e-5}


def project(strategy: dict[str, Any], sources: int = 3, **fields: Any) -> ProjectCreate:
    return ProjectCreate.model_validate({
        "name": "p", "algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 3]}},
        "strategy": strategy, "datasets": [f"o{i}/d" for i in range(sources)], "rounds": 2, **fields})


def secure(**options: Any) -> dict[str, Any]:
    return {"clip_range": 2.0, **options}


@pytest.mark.parametrize(("strategy", "fields", "message"), [
    ({"name": "median", "secure_aggregation": secure()}, {}, "needs individual updates"),
    ({"name": "krum", "options": {"f": 1}, "secure_aggregation": secure()}, {}, "needs individual updates"),
    ({"name": "fedavg", "secure_aggregation": secure()}, {"privacy": {**PRIVACY, "noise": "central"}},
     "central noise"),
    ({"name": "fedavg", "secure_aggregation": secure(threshold=4)}, {}, "threshold"),
    ({"name": "fedavg", "secure_aggregation": secure(bits=32)}, {}, "overflow"),
    ({"name": "fedavg"}, {"privacy": {**PRIVACY, "noise": "distributed"}}, "needs secure aggregation"),
])
def test_a_spec_that_cannot_aggregate_securely_is_refused_with_the_reason(strategy, fields, message) -> None:
    with pytest.raises(FLError, match=message):
        RunPlan.of(project(strategy, **fields))


def test_distributed_noise_under_secure_aggregation_is_split_among_the_sources() -> None:
    plan = RunPlan.of(project({"name": "fedavg", "secure_aggregation": secure()},
                              privacy={**PRIVACY, "noise": "distributed"}))
    assert plan.secure and plan.privacy.expected_clients == 3
    assert plan.privacy.client_std() == pytest.approx(plan.privacy.noise_multiplier * 1.0 / 3 ** 0.5)
    assert "secure_aggregation" not in RunPlan.of(project({"name": "fedavg"})).spec.strategy.model_dump_json()


def test_both_thresholds_at_once_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        SecureAggregationSpec(clip_range=1.0, threshold=2, threshold_fraction=0.6)


@given(st.integers(2, 60), st.one_of(st.none(), st.integers(2, 70)), st.one_of(st.none(), st.floats(0.51, 1.0)))
def test_a_rounds_threshold_is_a_majority_of_each_neighbourhood(clients: int, given_t: int | None,
                                                                fraction: float | None) -> None:
    spec = SecureAggregationSpec(clip_range=1.0, threshold=given_t,
                                 threshold_fraction=fraction if given_t is None else None)
    t = threshold(spec, clients)
    assert 2 * t > clients and t >= (given_t or 0)
    if t <= clients:
        setup = plan_round(spec, 9, [str(i) for i in range(clients)], 5, 0)
        assert setup.config.threshold == t and clients <= setup.quantiser().max_inputs
    else:
        with pytest.raises(SecAggAborted):
            plan_round(spec, 9, [str(i) for i in range(clients)], 5, 0)
