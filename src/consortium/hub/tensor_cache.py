"""A small LRU of parameter blobs, decoded (so validating each update does not re-read the global model) and
as the safetensors bytes a task delivery is made of (so each of N deliveries of a round's params costs a new
header and one copy of the data block, not an encoding of the tensors)."""

from __future__ import annotations

from typing import Any

from consortium.codec import decode_tensors, tensor_block, with_metadata
from consortium.fl.core import Params
from consortium.hub.blobs import BlobStore
from consortium.lru import LRU


class TensorCache:
    def __init__(self, blobs: BlobStore, capacity: int = 8) -> None:
        self._blobs = blobs
        self._params: LRU[str, Params] = LRU(capacity)
        self._blocks: LRU[str, tuple[dict[str, Any], memoryview]] = LRU(capacity)

    def put(self, sha256: str, params: Params) -> None:
        self._params.put(sha256, params)

    def get(self, sha256: str) -> Params:
        params = self._params.get(sha256)
        if params is None:
            params = decode_tensors(self._blobs.get(sha256))
            self._params.put(sha256, params)
        return params

    def delivery(self, sha256: str, metadata: dict[str, str]) -> bytes:
        """The params ``sha256`` as safetensors bytes with ``metadata`` (a task's) in their header."""
        block = self._blocks.get(sha256)
        if block is None:
            block = tensor_block(self._blobs.get(sha256))
            self._blocks.put(sha256, block)
        return with_metadata(*block, metadata)
