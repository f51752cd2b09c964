"""A small LRU of parameter blobs, decoded (so validating each update does not re-read the global model) and
as the safetensors bytes a task delivery is made of (so each of N deliveries of a round's params costs a new
header and one copy of the data block, not an encoding of the tensors)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from consortium.fl.core import Params
from consortium.hub.blobs import BlobStore
from typing import Any

from consortium.codec import decode_tensors, tensor_block, with_metadata


class TensorCache:
    def __init__(self, blobs: BlobStore, capacity: int = 8) -> None:
        self._blobs = blobs
        self._capacity = capacity
        self._items: OrderedDict[str, Params] = OrderedDict()
        self._blocks: OrderedDict[str, tuple[dict[str, Any], memoryview]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, sha256: str, params: Params) -> None:
        with self._lock:
            self._items[sha256] = params
            self._items.move_to_end(sha256)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def get(self, sha256: str) -> Params:
        with self._lock:
            if sha256 in self._items:
                self._items.move_to_end(sha256)
                return self._items[sha256]
        params = decode_tensors(self._blobs.get(sha256))
        self.put(sha256, params)
        return params

    def delivery(self, sha256: str, metadata: dict[str, str]) -> bytes:
        """The params ``sha256`` as safetensors bytes with ``metadata`` (a task's) in their header."""
        with self._lock:
            block = self._blocks.get(sha256)
            if block is not None:
                self._blocks.move_to_end(sha256)
        if block is None:
            block = tensor_block(self._blobs.get(sha256))
            with self._lock:
                self._blocks[sha256] = block
                while len(self._blocks) > self._capacity:
                    self._blocks.popitem(last=False)
        return with_metadata(*block, metadata)
