"""A small LRU of decoded parameter blobs, so validating each update does not re-read the global model."""

from __future__ import annotations

import threading
from collections import OrderedDict

from consortium.fl.core import Params
from consortium.hub.blobs import BlobStore
from consortium.codec import decode_tensors


class TensorCache:
    def __init__(self, blobs: BlobStore, capacity: int = 8) -> None:
        self._blobs = blobs
        self._capacity = capacity
        self._items: OrderedDict[str, Params] = OrderedDict()
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
