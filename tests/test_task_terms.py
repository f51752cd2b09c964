"""Task terms sent once per run: the hub's brief messages complete, on the node, to the task the hub holds."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.codec import encode_tensors
from consortium.hub.services.task_messages import ProjectMessages, task_json
from consortium.preprocessing_wire import FittedPreprocessing, PreprocessingSpec
from consortium.protocol import SAFETENSORS_MEDIA_TYPE, ProjectCreate, TaskKind, TaskOut
from consortium.task_terms import (
    MAX_KNOWN_TERMS, TermsCache, UnknownTerms, decode_delivery, known_terms, terms_json, terms_sha256,
)

ORGS = [f"org{i:04d}" for i in range(50)]


def spec(**overrides: Any) -> ProjectCreate:
    fields: dict[str, Any] = {
        "name": "terms", "algorithm": {"name": "classifier", "hyperparameters": {"layers": [4, 8, 2], "lr": 0.1}},
        "datasets": [f"{org}/digits" for org in ORGS], "rounds": 3, "min_nodes": 2, "round_timeout": 60.0,
        "seed": 7,
    }
    return ProjectCreate.model_validate(fields | overrides)


def fitted(shift: list[float]) -> FittedPreprocessing:
    return FittedPreprocessing(input_features=len(shift), feature_names=[f"f{i}" for i in range(len(shift))],
                               numeric=list(range(len(shift))), shift=shift, scale=[1.5] * len(shift), rows=10,
                               spec=PreprocessingSpec(scale="standardise"))


def messages(outcome: dict[str, Any] | None = None, preprocessing: FittedPreprocessing | None = None,
             **overrides: Any) -> ProjectMessages:
    return ProjectMessages(project_id=3, spec_hash="a" * 64, spec=spec(**overrides), test_set_sha256="b" * 64,
                           outcome=outcome if outcome is not None else {"proposal": 9, "yes": ["org0000"]},
                           outcome_signature="sig", preprocessing=preprocessing)


def task(project: ProjectMessages, task_id: int, kind: TaskKind = TaskKind.fit, round_number: int = 2) -> TaskOut:
    return project.task(task_id=task_id, kind=kind, run_id=5, round_number=round_number, dataset="digits",
                        params_sha256="c" * 64, seed=task_id * 11)


def same(received: TaskOut, sent: TaskOut) -> bool:
    """The node holds the task the hub sent (the hub's is a ``ComposedTask``, which compares by type)."""
    return type(received) is TaskOut and received.model_dump() == sent.model_dump()


def test_a_node_names_the_terms_it_received_and_the_next_task_comes_brief() -> None:
    project = messages()
    first, second = task(project, 1), task(project, 2, TaskKind.evaluate, 3)
    cache = TermsCache()
    assert cache.query() == {}
    assert same(cache.task(task_json(first, known_terms(None))), first)
    held = known_terms(cache.query()["terms"])
    assert held == {second._terms_sha256}
    brief = task_json(second, held)
    assert len(brief) < 300 < len(task_json(second))
    assert same(cache.task(brief), second)


@settings(max_examples=40, deadline=None)
@given(outcome=st.dictionaries(st.text(max_size=8), st.recursive(
           st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=12), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
               st.text(max_size=5), inner, max_size=3), max_leaves=12), max_size=5),
       shift=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=6),
       lr=st.floats(min_value=1e-9, max_value=10.0))
def test_the_node_computes_the_same_name_for_terms_as_the_hub(outcome, shift, lr) -> None:
    """Terms that pass through the wire render to the same bytes on the node as on the hub, whatever their
    values, so the node's name for them is the hub's and the brief path is taken."""
    project = messages(outcome, fitted(shift),
                       algorithm={"name": "classifier", "hyperparameters": {"layers": [4, 2], "lr": lr}})
    sent = task(project, 1)
    received = TermsCache().task(task_json(sent))
    assert terms_sha256(terms_json(received)) == sent._terms_sha256


def test_a_run_s_two_terms_are_held_side_by_side_and_the_oldest_give_way() -> None:
    """Statistics tasks go without the fitted transform, later tasks with it: two terms per run."""
    cache = TermsCache()
    before, after = messages(), messages(preprocessing=fitted([0.5, 2.0]))
    stats, fit = task(before, 1, TaskKind.stats, 0), task(after, 2)
    cache.task(task_json(stats))
    cache.task(task_json(fit))
    held = known_terms(cache.query()["terms"])
    assert held == {stats._terms_sha256, fit._terms_sha256}
    assert cache.task(task_json(task(before, 3, TaskKind.stats, 0), held)).preprocessing is None
    assert cache.task(task_json(task(after, 4), held)).preprocessing == fit.preprocessing
    for version in range(MAX_KNOWN_TERMS):
        cache.task(task_json(task(messages(name=f"v{version}"), 10 + version)))
    with pytest.raises(UnknownTerms, match="does not hold terms"):
        cache.task(task_json(task(before, 5, TaskKind.stats, 0), held))
    assert len(known_terms(cache.query()["terms"])) == MAX_KNOWN_TERMS


def test_a_brief_task_for_terms_never_received_is_refused() -> None:
    project = messages()
    sent = task(project, 1)
    with pytest.raises(UnknownTerms):
        TermsCache().task(task_json(sent, frozenset({sent._terms_sha256})))


def test_a_brief_task_under_params_completes_as_well() -> None:
    project = messages()
    first, second = task(project, 1), task(project, 2)
    cache = TermsCache()
    cache.task(task_json(first))
    params = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    body = encode_tensors(params, {"task": task_json(second, known_terms(cache.query()["terms"]))})
    delivered, tensors = decode_delivery(SAFETENSORS_MEDIA_TYPE, body, cache)
    assert same(delivered, second)
    assert torch.equal(tensors["w"], params["w"])
    with pytest.raises(ValueError, match="without a task"):
        decode_delivery(SAFETENSORS_MEDIA_TYPE, encode_tensors(params), cache)
