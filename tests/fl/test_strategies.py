"""Aggregation strategies: hand-computed cases, preconditions and order-independence properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.core import (
    TOTAL_WEIGHT,
    FLError,
    LinearStrategy,
    Strategy,
    Update,
    merge_partials,
    stack_updates,
)
from consortium.fl.registry import get_strategy, strategy_names
from consortium.fl.robust import Bulyan, CenteredClipping, Krum, Median, MultiKrum, TrimmedMean
from consortium.fl.strategies import FedAvg, KMeansMerge

PROPERTY = settings(max_examples=60, deadline=None)


def update(client: str, n: int, **tensors: list) -> Update:
    return Update({k: torch.tensor(v, dtype=torch.float32) for k, v in tensors.items()}, n, client_id=client)


def test_fedavg_hand_case() -> None:
    params = {"w": torch.zeros(2), "b": torch.zeros(1)}
    updates = [update("a", 1, w=[1.0, 2.0], b=[0.0]), update("b", 3, w=[5.0, 6.0], b=[4.0])]
    result = FedAvg().aggregate(params, updates)
    assert list(result) == ["w", "b"]
    assert torch.equal(result["w"], torch.tensor([4.0, 5.0]))
    assert torch.equal(result["b"], torch.tensor([3.0]))
    assert result["w"].dtype == torch.float32


def test_fedavg_ignores_empty_updates_and_extra_tensors() -> None:
    params = {"w": torch.zeros(2)}
    updates = [update("a", 2, w=[1.0, 1.0], extra=[9.0]), update("b", 0, w=[100.0, 100.0])]
    assert torch.equal(FedAvg().aggregate(params, updates)["w"], torch.tensor([1.0, 1.0]))


def test_fedavg_keeps_integer_dtypes() -> None:
    params = {"steps": torch.tensor([0], dtype=torch.int64)}
    updates = [
        Update({"steps": torch.tensor([2])}, 1, client_id="a"),
        Update({"steps": torch.tensor([4])}, 1, client_id="b"),
    ]
    result = FedAvg().aggregate(params, updates)["steps"]
    assert result.dtype == torch.int64 and int(result) == 3


def test_fedavg_errors() -> None:
    params = {"w": torch.zeros(2)}
    with pytest.raises(FLError, match="at least one update"):
        FedAvg().aggregate(params, [])
    with pytest.raises(FLError, match="0 examples in total"):
        FedAvg().aggregate(params, [update("a", 0, w=[1.0, 1.0])])
    with pytest.raises(FLError, match="the update from a has no tensor 'w'"):
        FedAvg().aggregate(params, [update("a", 1, v=[1.0, 1.0])])
    with pytest.raises(FLError, match=r"'w' from a has shape \(3,\), expected \(2,\)"):
        FedAvg().aggregate(params, [update("a", 1, w=[1.0, 1.0, 1.0])])


def test_strategies_are_registered() -> None:
    assert isinstance(get_strategy("fedavg"), FedAvg)
    assert isinstance(get_strategy("kmeans"), KMeansMerge)


values = st.floats(-1e3, 1e3, allow_nan=False, width=32)
client_updates = st.lists(
    st.tuples(st.integers(0, 1000), st.lists(values, min_size=3, max_size=3)), min_size=1, max_size=6
).filter(lambda items: sum(n for n, _ in items) > 0)


def as_updates(items: list[tuple[int, list[float]]]) -> list[Update]:
    return [update(f"client-{i}", n, w=v) for i, (n, v) in enumerate(items)]


@PROPERTY
@given(items=client_updates, data=st.data())
def test_fedavg_is_permutation_invariant(items: list, data: st.DataObject) -> None:
    updates = as_updates(items)
    shuffled = data.draw(st.permutations(updates))
    params = {"w": torch.zeros(3)}
    assert torch.equal(FedAvg().aggregate(params, updates)["w"], FedAvg().aggregate(params, shuffled)["w"])


@PROPERTY
@given(
    w=st.lists(values, min_size=3, max_size=3), counts=st.lists(st.integers(1, 10**6), min_size=1, max_size=5)
)
def test_fedavg_of_identical_updates_is_that_update(w: list[float], counts: list[int]) -> None:
    updates = [update(f"c{i}", n, w=w) for i, n in enumerate(counts)]
    result = FedAvg().aggregate({"w": torch.zeros(3)}, updates)["w"]
    assert torch.equal(result, torch.tensor(w, dtype=torch.float32))


@PROPERTY
@given(items=client_updates, scale=st.integers(2, 50))
def test_fedavg_weights_are_scale_invariant(items: list, scale: int) -> None:
    params = {"w": torch.zeros(3)}
    scaled = [(n * scale, v) for n, v in items]
    base = FedAvg().aggregate(params, as_updates(items))["w"]
    assert torch.allclose(FedAvg().aggregate(params, as_updates(scaled))["w"], base, rtol=1e-6, atol=1e-4)


def kmeans_update(client: str, sums: list, counts: list) -> Update:
    tensors = {
        "sums": torch.tensor(sums, dtype=torch.float64),
        "counts": torch.tensor(counts, dtype=torch.float64),
    }
    return Update(tensors, int(sum(counts)), client_id=client)


def test_kmeans_merge_hand_case() -> None:
    params = {"centroids": torch.tensor([[0.0, 0.0], [10.0, 10.0], [7.0, 7.0]], dtype=torch.float64)}
    updates = [
        kmeans_update("a", [[2.0, 4.0], [30.0, 33.0], [0.0, 0.0]], [2.0, 3.0, 0.0]),
        kmeans_update("b", [[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]], [1.0, 0.0, 0.0]),
    ]
    result = KMeansMerge().aggregate(params, updates)["centroids"]
    expected = torch.tensor([[1.0, 1.0], [10.0, 11.0], [7.0, 7.0]], dtype=torch.float64)
    assert torch.equal(result, expected)
    assert result.dtype == torch.float64


def test_kmeans_merge_zero_count_keeps_previous_centroid() -> None:
    params = {"centroids": torch.tensor([[3.0, -3.0], [1.0, 1.0]], dtype=torch.float64)}
    result = KMeansMerge().aggregate(params, [kmeans_update("a", [[0.0, 0.0], [4.0, 2.0]], [0.0, 2.0])])
    assert torch.equal(result["centroids"], torch.tensor([[3.0, -3.0], [2.0, 1.0]], dtype=torch.float64))
    assert torch.equal(params["centroids"], torch.tensor([[3.0, -3.0], [1.0, 1.0]], dtype=torch.float64))


def test_kmeans_merge_errors() -> None:
    params = {"centroids": torch.zeros(2, 2, dtype=torch.float64)}
    with pytest.raises(FLError, match="at least one update"):
        KMeansMerge().aggregate(params, [])
    with pytest.raises(FLError, match=r"tensor 'sums' from a has shape \(1, 2\), expected \(2, 2\)"):
        KMeansMerge().aggregate(params, [kmeans_update("a", [[1.0, 1.0]], [1.0])])
    with pytest.raises(FLError, match="no tensor 'counts'"):
        KMeansMerge().aggregate(params, [Update({"sums": torch.zeros(2, 2)}, 1, client_id="a")])


@PROPERTY
@given(
    rows=st.lists(
        st.tuples(
            st.lists(values, min_size=4, max_size=4), st.lists(st.integers(0, 20), min_size=2, max_size=2)
        ),
        min_size=1,
        max_size=5,
    ),
    data=st.data(),
)
def test_kmeans_merge_is_permutation_invariant(rows: list, data: st.DataObject) -> None:
    updates = [
        kmeans_update(f"c{i}", [sums[:2], sums[2:]], [float(c) for c in counts])
        for i, (sums, counts) in enumerate(rows)
    ]
    shuffled = data.draw(st.permutations(updates))
    params = {"centroids": torch.ones(2, 2, dtype=torch.float64)}
    merge = KMeansMerge()
    assert torch.equal(
        merge.aggregate(params, updates)["centroids"], merge.aggregate(params, shuffled)["centroids"]
    )


# ---------------------------------------------------------------------------------------------- streaming


def test_fedavg_partial_finish_hand_case() -> None:
    params = {"w": torch.zeros(2)}
    updates = [update("a", 1, w=[1.0, 2.0]), update("b", 3, w=[5.0, 6.0]), update("c", 0, w=[9.0, 9.0])]
    partial = FedAvg().partial(stack_updates(updates))
    assert set(partial) == {"w", TOTAL_WEIGHT}
    assert torch.equal(partial["w"], torch.tensor([16.0, 20.0], dtype=torch.float64))
    assert float(partial[TOTAL_WEIGHT]) == 4.0
    assert torch.equal(FedAvg().finish(params, partial)["w"], torch.tensor([4.0, 5.0]))


def test_fedavg_partial_of_weighted_sums_equals_its_partial() -> None:
    updates = [update("a", 1, w=[1.0, 2.0]), update("b", 3, w=[5.0, 6.0]), update("c", 0, w=[9.0, 9.0])]
    sums = {"w": torch.tensor([1.0 * 1 + 3 * 5, 1.0 * 2 + 3 * 6], dtype=torch.float64)}
    built = FedAvg().partial_of_weighted_sums(sums, torch.tensor([1, 3, 0]).sum())
    expected = FedAvg().partial(stack_updates(updates))
    assert set(built) == set(expected)
    for name in expected:
        assert torch.equal(built[name], expected[name]), name
    with pytest.raises(FLError, match="reserved"):
        FedAvg().partial_of_weighted_sums({TOTAL_WEIGHT: torch.zeros(1)}, torch.tensor(1))


def test_merge_partials_adds_and_checks_names() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), TOTAL_WEIGHT: torch.tensor(1.0)}
    b = {"w": torch.tensor([3.0, 5.0]), TOTAL_WEIGHT: torch.tensor(2.0)}
    merged = merge_partials(a, b)
    assert torch.equal(merged["w"], torch.tensor([4.0, 7.0])) and float(merged[TOTAL_WEIGHT]) == 3.0
    with pytest.raises(FLError, match=r"different tensors: \['v'\]"):
        merge_partials(a, b | {"v": torch.zeros(1)})
    with pytest.raises(FLError, match=r"partial tensor 'w' has shapes \(2,\) and \(3,\)"):
        merge_partials(a, b | {"w": torch.zeros(3)})


def test_fedavg_finish_errors() -> None:
    params = {"w": torch.zeros(2)}
    with pytest.raises(FLError, match="0 examples in total"):
        FedAvg().finish(params, {"w": torch.zeros(2, dtype=torch.float64), TOTAL_WEIGHT: torch.tensor(0.0)})
    with pytest.raises(FLError, match="the partial sums have no tensor 'w'"):
        FedAvg().finish(params, {TOTAL_WEIGHT: torch.tensor(1.0)})
    with pytest.raises(FLError, match="reserved"):
        FedAvg().partial(stack_updates([Update({TOTAL_WEIGHT: torch.zeros(1)}, 1, client_id="a")]))


def test_aggregate_stacked_checks_the_stacked_tensors() -> None:
    stacked = stack_updates([update("a", 1, w=[1.0, 2.0, 3.0])])
    for strategy in (FedAvg(), Median()):
        with pytest.raises(FLError, match=r"tensor 'w' of the updates has shape \(3,\), expected \(2,\)"):
            strategy.aggregate_stacked({"w": torch.zeros(2)}, stacked)
        with pytest.raises(FLError, match="the updates have no tensor 'b'"):
            strategy.aggregate_stacked({"b": torch.zeros(3)}, stacked)


def test_linear_flags_and_protocols() -> None:
    for name in strategy_names():
        strategy = get_strategy(name, **ROBUST_OPTIONS.get(name, {}))
        assert isinstance(strategy, Strategy)
        assert strategy.linear == (name in ("fedavg", "kmeans"))
        assert isinstance(strategy, LinearStrategy) == strategy.linear
        strategy.check_cohort(7)


def test_kmeans_partial_merges_over_chunks() -> None:
    params = {"centroids": torch.tensor([[0.0, 0.0], [10.0, 10.0], [7.0, 7.0]], dtype=torch.float64)}
    first = [kmeans_update("a", [[2.0, 4.0], [30.0, 33.0], [0.0, 0.0]], [2.0, 3.0, 0.0])]
    second = [kmeans_update("b", [[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]], [1.0, 0.0, 0.0])]
    merge = KMeansMerge()
    partial = merge_partials(merge.partial(stack_updates(first)), merge.partial(stack_updates(second)))
    assert float(partial[TOTAL_WEIGHT]) == 6.0
    whole = merge.aggregate(params, first + second)["centroids"]
    assert torch.equal(merge.finish(params, partial)["centroids"], whole)


weights = st.integers(0, 1000)
integer_values = st.lists(st.integers(-1000, 1000).map(float), min_size=3, max_size=3)


@PROPERTY
@given(items=st.lists(st.tuples(weights, integer_values), min_size=2, max_size=8), data=st.data())
def test_fedavg_partial_is_additive_over_any_split(items: list, data: st.DataObject) -> None:
    updates = as_updates(items)
    chosen = data.draw(st.sets(st.integers(0, len(updates) - 1), min_size=1, max_size=len(updates) - 1))
    first = [u for i, u in enumerate(updates) if i in chosen]
    rest = [u for i, u in enumerate(updates) if i not in chosen]
    fedavg = FedAvg()
    whole = fedavg.partial(stack_updates(updates))
    merged = merge_partials(fedavg.partial(stack_updates(first)), fedavg.partial(stack_updates(rest)))
    assert set(whole) == set(merged)
    for name in whole:  # integer-valued inputs: every float64 sum is exact
        assert torch.equal(whole[name], merged[name])


# ---------------------------------------------------------------------------------------------- robust rules

ROBUST_OPTIONS: dict[str, dict] = {
    "krum": {"f": 1},
    "multikrum": {"f": 1},
    "median": {},
    "trimmed_mean": {"beta": 0.2, "f": 1},
    "bulyan": {"f": 1},
    "centered_clipping": {"tau": 1.0, "iterations": 2},
}
IN_HULL = ["krum", "multikrum", "median", "trimmed_mean", "bulyan"]
"""Rules whose every coordinate is a mean of some of the clients' values at that coordinate."""


def rows(*vectors: list[float], n: int = 1) -> list[Update]:
    """One update per vector, client ids in the listed order, every update with ``n`` examples."""
    return [update(f"c{i}", n, w=v) for i, v in enumerate(vectors)]


def aggregate_w(strategy, updates: list[Update], params_w: list[float] | None = None) -> torch.Tensor:
    width = updates[0].tensors["w"].shape[0]
    params = {"w": torch.tensor(params_w) if params_w is not None else torch.zeros(width)}
    return strategy.aggregate(params, updates)["w"]


def test_krum_hand_case_over_two_tensors() -> None:
    # Points: c0 (10,0), c1 (3,3), c2 (0,2), c3 (1,0), c4 (0,0); n=5, f=1, so scores sum the 2 nearest.
    # Squared distances to the others, nearest two: c0 81+58=139, c1 10+13=23, c2 4+5=9, c3 1+5=6, c4 1+4=5.
    points = [(10.0, 0.0), (3.0, 3.0), (0.0, 2.0), (1.0, 0.0), (0.0, 0.0)]
    updates = [update(f"c{i}", 1, x=[x], y=[y]) for i, (x, y) in enumerate(points)]
    params = {"x": torch.zeros(1), "y": torch.zeros(1)}
    krum = Krum(f=1).aggregate(params, updates)
    assert (float(krum["x"]), float(krum["y"])) == (0.0, 0.0)
    # Multi-Krum keeps the n - f = 4 best (all but c0): mean of (3,3), (0,2), (1,0), (0,0).
    multi = MultiKrum(f=1).aggregate(params, updates)
    assert (float(multi["x"]), float(multi["y"])) == (1.0, 1.25)
    # m=2: c4 (5) and c3 (6).
    two = MultiKrum(f=1, m=2).aggregate(params, updates)
    assert (float(two["x"]), float(two["y"])) == (0.5, 0.0)


def test_median_hand_cases() -> None:
    odd = rows([1.0, 10.0], [5.0, -1.0], [2.0, 4.0])
    assert torch.equal(aggregate_w(Median(), odd), torch.tensor([2.0, 4.0]))
    # Even count: the mean of the two middle values, (2+5)/2 and (0+4)/2.
    even = odd + [update("c3", 1, w=[100.0, 0.0])]
    assert torch.equal(aggregate_w(Median(), even), torch.tensor([3.5, 2.0]))


def test_median_keeps_integer_dtypes() -> None:
    updates = [Update({"steps": torch.tensor([v])}, 1, client_id=f"c{v}") for v in (1, 2, 7, 8)]
    result = Median().aggregate({"steps": torch.tensor([0])}, updates)["steps"]
    assert result.dtype == torch.int64 and int(result) == 4  # (2 + 7) / 2 = 4.5, rounded half to even


def test_trimmed_mean_hand_cases() -> None:
    updates = rows([1.0, -50.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0], [100.0, 6.0])
    # beta=0.2, n=5: trim ⌊1⌋ = 1 from each end: mean(2,3,4) and mean(0,1,2).
    assert torch.equal(aggregate_w(TrimmedMean(beta=0.2), updates), torch.tensor([3.0, 1.0]))
    # beta=0.1: ⌊0.5⌋ = 0 trimmed, the plain mean: 110/5 and -41/5.
    assert torch.equal(aggregate_w(TrimmedMean(beta=0.1), updates), torch.tensor([22.0, -8.2]))
    assert TrimmedMean().options.beta == 0.1


def test_trimmed_mean_counts_beta_as_written() -> None:
    TrimmedMean(beta=0.29, f=29).check_cohort(100)  # 0.29 * 100 is 28.999... in binary floats
    with pytest.raises(FLError, match="f=30"):
        TrimmedMean(beta=0.29, f=30).check_cohort(100)


def test_bulyan_hand_case() -> None:
    # n=7, f=1: θ = n - 2f = 5 picks by iterated Krum, then the β = θ - 2f = 3 values closest to the median.
    # The first coordinate decides the picks (the second adds at most 1/16 to a squared distance): Krum with
    # 4 neighbours picks 5 (score 1+4+9+625 = 639); with 3 on the rest, 4 (1+4+676 = 681); with 2, 3
    # (1+729 = 730); with 1 neighbour (never fewer), the mutual nearest 32 and 30 (4 each), ahead of 2 in
    # client order.
    # First coordinate: the median of {3, 4, 5, 30, 32} is 5; the 3 values closest to it are 5, 4, 3 -> 4.
    # Second: the median of {0, 1/32, 1/16, 3/16, 1/4} is 1/16; the closest are 1/16, 1/32, 0 -> 1/32
    # (a trimmed mean, or the values closest to the mean, would give 3/32; picking 1000 would give 1/16).
    updates = rows(
        [1000.0, 3 / 32], [32.0, 3 / 16], [30.0, 1 / 4], [5.0, 1 / 16], [4.0, 1 / 32], [3.0, 0.0], [2.0, 0.0]
    )
    assert torch.equal(aggregate_w(Bulyan(f=1), updates), torch.tensor([4.0, 1 / 32]))


def test_centered_clipping_hand_cases() -> None:
    # Offsets from the center (0, 0) clipped to norm 2.5: (3,4)/2, (0,1), (-6,8)/4, (0,-1); mean (0, 1).
    updates = rows([3.0, 4.0], [0.0, 1.0], [-6.0, 8.0], [0.0, -1.0])
    assert torch.equal(aggregate_w(CenteredClipping(tau=2.5), updates), torch.tensor([0.0, 1.0]))
    # Two iterations with tau=2 in 1-D: from 0, offsets 4->2, 1, -1, 0 give 0.5; from 0.5, offsets 3.5->2,
    # 0.5, -1.5, -0.5 give 0.5 + 0.125.
    line = rows([4.0], [1.0], [-1.0], [0.0])
    assert torch.equal(aggregate_w(CenteredClipping(tau=2.0, iterations=2), line), torch.tensor([0.625]))
    # The reference is the current global params: from 4, every offset is within tau of it.
    assert torch.equal(aggregate_w(CenteredClipping(tau=10.0), line, params_w=[4.0]), torch.tensor([1.0]))


def test_robust_rules_are_unweighted() -> None:
    light = rows([0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], n=1)
    heavy = [Update(u.tensors, 1000 * (i + 1), client_id=u.client_id) for i, u in enumerate(light)]
    for name, options in ROBUST_OPTIONS.items():
        strategy = get_strategy(name, **options)
        assert torch.equal(aggregate_w(strategy, light), aggregate_w(strategy, heavy)), name


@pytest.mark.parametrize(
    ("name", "options", "n", "message"),
    [
        ("krum", {"f": 4}, 8, "krum with f=4 needs more than 2f+2 = 10 updates per round, got 8"),
        ("multikrum", {"f": 1}, 4, "multikrum with f=1 needs more than 2f+2 = 4 updates per round, got 4"),
        ("multikrum", {"f": 1, "m": 6}, 5, "multikrum with m=6 needs at least m updates per round, got 5"),
        ("bulyan", {"f": 2}, 10, "bulyan with f=2 needs at least 4f+3 = 11 updates per round, got 10"),
        (
            "trimmed_mean", {"beta": 0.1, "f": 2}, 10,
            (
                "trimmed_mean with f=2 needs beta >= f/n = 2/10 = 0.2 to trim every Byzantine value, "
                "got beta=0.1 with 10 updates per round"
            ),
        ),
        ("median", {}, 0, "median needs at least one update per round, got 0"),
    ],
)
def test_preconditions_are_refused_with_the_reason(name: str, options: dict, n: int, message: str) -> None:
    strategy = get_strategy(name, **options)
    with pytest.raises(FLError) as info:
        strategy.check_cohort(n)
    assert str(info.value) == message


def test_preconditions_hold_at_the_boundary() -> None:
    get_strategy("krum", f=4).check_cohort(11)
    get_strategy("multikrum", f=1, m=5).check_cohort(5)
    get_strategy("bulyan", f=2).check_cohort(11)
    get_strategy("trimmed_mean", beta=0.2, f=2).check_cohort(10)


def test_aggregate_refuses_a_cohort_too_small() -> None:
    with pytest.raises(FLError, match="krum with f=1 needs more than 2f\\+2 = 4 updates per round, got 3"):
        aggregate_w(Krum(f=1), rows([0.0], [1.0], [2.0]))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("krum", {}, "bad options for strategy 'krum': f: Field required"),
        ("krum", {"f": -1}, "f: Input should be greater than or equal to 0"),
        ("multikrum", {"f": 1, "m": 0}, "m: Input should be greater than or equal to 1"),
        ("median", {"f": 1}, "bad options for strategy 'median': f: Extra inputs are not permitted"),
        ("trimmed_mean", {"beta": 0.5}, "beta: Value error, beta=0.5 would trim"),
        ("bulyan", {"f": "many"}, "f: Input should be a valid integer"),
        ("centered_clipping", {}, "tau: Field required"),
        ("centered_clipping", {"tau": 1, "iterations": 0}, "iterations: Input should be greater than"),
    ],
)
def test_bad_options_name_the_option(name: str, options: dict, message: str) -> None:
    with pytest.raises(FLError) as info:
        get_strategy(name, **options)
    assert message in str(info.value)


def honest_and_one_outlier() -> tuple[list[Update], torch.Tensor, torch.Tensor]:
    honest = [[1.0 + 0.01 * i, 1.0 - 0.02 * i, 1.0 + 0.005 * i * i] for i in range(-3, 4)]
    updates = rows(*honest, [1e6, -1e6, 1e6])
    values = torch.tensor(honest)
    return updates, values.min(0).values, values.max(0).values


@pytest.mark.parametrize("name", IN_HULL)
def test_robust_rules_ignore_one_huge_outlier(name: str) -> None:
    updates, low, high = honest_and_one_outlier()
    result = aggregate_w(get_strategy(name, **ROBUST_OPTIONS[name]), updates)
    assert bool(((low <= result) & (result <= high)).all()), result
    assert not bool((aggregate_w(FedAvg(), updates).abs() < 1e4).all())


def test_centered_clipping_bounds_the_outlier_by_tau() -> None:
    updates, _, _ = honest_and_one_outlier()
    result = aggregate_w(CenteredClipping(tau=1.0), updates, params_w=[1.0, 1.0, 1.0])
    assert float(torch.linalg.vector_norm(result - 1.0)) <= 1.0


def test_stacked_and_list_entry_points_agree() -> None:
    updates, _, _ = honest_and_one_outlier()
    params = {"w": torch.zeros(3)}
    for name in strategy_names():
        if name == "kmeans":
            continue
        strategy = get_strategy(name, **ROBUST_OPTIONS.get(name, {}))
        expected = strategy.aggregate(params, updates)["w"]
        assert torch.equal(strategy.aggregate_stacked(params, stack_updates(updates))["w"], expected), name


robust_cohort = st.lists(st.lists(values, min_size=3, max_size=3), min_size=7, max_size=9)
ROBUST_PROPERTY = settings(max_examples=25, deadline=None)


@ROBUST_PROPERTY
@given(vectors=robust_cohort, data=st.data())
def test_robust_rules_are_permutation_invariant(vectors: list, data: st.DataObject) -> None:
    updates = rows(*vectors)
    shuffled = data.draw(st.permutations(updates))
    for name, options in ROBUST_OPTIONS.items():
        strategy = get_strategy(name, **options)
        assert torch.equal(aggregate_w(strategy, updates), aggregate_w(strategy, shuffled)), name


@ROBUST_PROPERTY
@given(w=st.lists(values, min_size=3, max_size=3), n=st.integers(7, 9))
def test_robust_rules_of_identical_updates_are_that_update(w: list[float], n: int) -> None:
    updates = rows(*[w] * n)
    for name in IN_HULL:
        result = aggregate_w(get_strategy(name, **ROBUST_OPTIONS[name]), updates)
        assert torch.equal(result, torch.tensor(w, dtype=torch.float32)), name


@ROBUST_PROPERTY
@given(vectors=robust_cohort)
def test_robust_rules_stay_within_the_coordinate_range(vectors: list) -> None:
    updates = rows(*vectors)
    stacked = torch.tensor(vectors, dtype=torch.float32)
    low, high = stacked.min(0).values, stacked.max(0).values
    for name in IN_HULL:
        result = aggregate_w(get_strategy(name, **ROBUST_OPTIONS[name]), updates)
        assert bool(((low <= result) & (result <= high)).all()), name
