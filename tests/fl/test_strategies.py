"""FedAvg and the k-means merge: hand-computed cases and order-independence properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.fl.core import FLError, Update, get_strategy
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
    with pytest.raises(FLError, match=r"expected \(2, 2\) and \(2,\)"):
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
