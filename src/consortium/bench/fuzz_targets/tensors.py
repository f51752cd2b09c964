"""The safetensors target: every reader of tensor uploads and downloads on the same bytes.

The header parser (:func:`consortium.tensor_header.parse_header`), an update upload
(:func:`consortium.codec.decode_update`, header then tensors), a task download as the node reads it
(:func:`consortium.task_terms.decode_delivery`: its ``__metadata__['task']`` as a
:class:`~consortium.protocol.TaskOut` or a brief task completed from terms the node holds), a test set
(:func:`consortium.test_sets.check_test_set`) and a proposal bundled with its test set
(:func:`consortium.test_sets.unbundle`). Documented refusals: ``ValueError`` from the codec (pydantic's
``ValidationError`` is one), :class:`~consortium.test_sets.TestSetError`.
"""

from __future__ import annotations

import json

import torch

from consortium import strict_json
from consortium.bench.fuzz_targets import Target
from consortium.codec import decode_update, encode_tensors, encode_update
from consortium.protocol import SAFETENSORS_MEDIA_TYPE, TaskOut, UpdateMeta
from consortium.task_terms import TermsCache, decode_delivery
from consortium.tensor_header import parse_header
from consortium.test_sets import TestSetError, bundle, check_test_set, unbundle

WIDTH = 4
"""Features per row of the project whose test set is checked."""


def check(data: bytes) -> None:
    try:
        header = parse_header(data)
    except ValueError:
        header = None
    try:
        tensors, meta = decode_update(data)
    except ValueError:
        pass
    else:
        assert header is not None, "decode_update accepted what parse_header refused"
        assert set(tensors) == set(header.tensors), "the header and the library disagree on the tensor names"
        assert isinstance(meta, UpdateMeta)
    if header is not None and "task" in header.metadata:
        try:
            task, tensors = decode_delivery(SAFETENSORS_MEDIA_TYPE, data, TermsCache())
        except ValueError:
            pass
        else:
            assert isinstance(task, TaskOut) and set(tensors) == set(header.tensors)
    try:
        checked = check_test_set(data, WIDTH)
    except TestSetError:
        pass
    else:
        assert checked.data.x.shape[1] == WIDTH and bool(torch.isfinite(checked.data.x).all())
        assert check_test_set(checked.payload, WIDTH).payload == checked.payload, "canonical form not stable"
    try:
        spec_json, test_set = unbundle(data)
        strict_json.loads(spec_json)
    except (TestSetError, strict_json.StrictJSONError):
        pass
    else:
        assert isinstance(test_set, bytes)


def seeds() -> dict[str, bytes]:
    params = {"w": torch.arange(8, dtype=torch.float32).reshape(2, 4), "b": torch.zeros(2)}
    meta = UpdateMeta(num_examples=10, metrics={"loss": 0.5}, compute_s=0.1)
    x = torch.arange(12, dtype=torch.float32).reshape(3, WIDTH)
    test_set = encode_tensors({"x": x, "y": torch.tensor([0, 1, 0])})
    task = {"id": 1, "run_id": 1, "round": 1, "kind": "fit", "project_id": 1}
    return {
        "update": encode_update(params, meta),
        "update-empty-tensor": encode_update({"e": torch.zeros(0, 3)}, meta),
        "update-bf16": encode_update({"h": torch.ones(3, dtype=torch.bfloat16)}, meta),
        "test-set": test_set,
        "test-set-nan": encode_tensors({"x": torch.full((1, WIDTH), float("nan")), "y": torch.tensor([1])}),
        "bundle": bundle(json.dumps({"name": "p", "datasets": ["north/digits"]}), test_set),
        "task": encode_tensors(params, {"task": json.dumps(task)}),
        "task-brief": encode_tensors(params, {"task": json.dumps({
            "id": 2, "kind": "fit", "run_id": 1, "round": 2, "dataset": "digits", "params_sha256": None, "seed": 3,
            "terms_sha256": "0" * 64})}),
        "header-only": b"\x02\x00\x00\x00\x00\x00\x00\x00{}",
        "metadata-object": encode_tensors({}, {"update": "{\"num_examples\": 1, \"compute_s\": 0}"}),
        "short": b"\x00\x01",
    }


TARGETS = {"safetensors": Target("safetensors", __doc__ or "", check, seeds)}
