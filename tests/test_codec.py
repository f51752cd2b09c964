"""A task delivery's payload made from the params' stored bytes with a new header holds the same tensors and
metadata as the library's own payload (byte for byte with one metadata key, as a task has), and the hub's cache makes it from the stored blob."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consortium.codec import decode_tensors, encode_tensors, safetensors_metadata, tensor_block, with_metadata
from consortium.hub.blobs import BlobStore
from consortium.hub.tensor_cache import TensorCache

DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8]
text = st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00")
names = st.text(text, min_size=1, max_size=12).filter(lambda name: name != "__metadata__")
tensors = st.dictionaries(names, st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 4), max_size=3)),
                          min_size=1, max_size=6)
metadata = st.dictionaries(st.text(text, max_size=8), st.text(text, max_size=40), max_size=3)


def made(spec: dict) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {name: (torch.rand(shape, generator=generator) * 100).to(dtype) for name, (dtype, shape) in spec.items()}


@settings(max_examples=150, deadline=None)
@given(tensors, metadata)
def test_a_new_header_on_stored_bytes_is_the_librarys_own_payload(spec: dict, meta: dict[str, str]) -> None:
    params = made(spec)
    payload = with_metadata(*tensor_block(encode_tensors(params)), meta)
    if len(meta) <= 1:  # the library orders several metadata keys at random (a hash map)
        assert payload == encode_tensors(params, meta)
    assert safetensors_metadata(payload) == meta
    assert {k: v.tolist() for k, v in decode_tensors(payload).items()} == {k: v.tolist() for k, v in params.items()}


def test_the_cache_delivers_a_stored_blob_with_each_tasks_metadata(tmp_path) -> None:
    blobs = BlobStore(tmp_path)
    params = {"w": torch.randn(4, 3), "b": torch.zeros(3)}
    sha = blobs.put(encode_tensors(params))
    cache = TensorCache(blobs, capacity=1)
    for task in ('{"id": 1}', '{"id": 2}'):
        assert cache.delivery(sha, {"task": task}) == encode_tensors(params, {"task": task})
    other = blobs.put(encode_tensors({"v": torch.ones(2)}))
    assert safetensors_metadata(cache.delivery(other, {"task": "3"})) == {"task": "3"}
    assert cache.delivery(sha, {}) == encode_tensors(params, {})  # evicted, read again
