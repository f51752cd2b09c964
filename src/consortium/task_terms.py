"""A task's terms travel once per run, not with every task.

The terms of a task (:data:`TERMS_FIELDS`: the project version's spec and test set, the hub's signed approval
of it, the run's fitted transform) are the same for every task of a run phase, and large: 35 KB in a
consortium of a thousand datasets, which every node would otherwise receive and parse every round. A node
names the terms it holds by the SHA-256 of their JSON (``terms`` on the long poll and on the upload that
waits for the next task); for a task with those terms the hub sends a :class:`~consortium.protocol.TaskBrief`
in place of the :class:`~consortium.protocol.TaskOut`, and the node completes it from its copy into the same
``TaskOut``, which its policy then checks as always.

The node computes each SHA-256 itself, from terms it received and validated, so a brief can only be completed
with terms whose JSON is byte for byte the one the hub named.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch
from pydantic import TypeAdapter

from consortium.codec import decode_tensors, safetensors_metadata
from consortium.protocol import SAFETENSORS_MEDIA_TYPE, TaskBrief, TaskFields, TaskOut

TERMS_FIELDS = frozenset(TaskOut.model_fields) - frozenset(TaskFields.model_fields)
"""The fields of a task message that every task of a project version (and run phase) has alike."""
OWN_FIELDS = frozenset(TaskFields.model_fields)
MAX_KNOWN_TERMS = 4
"""How many terms a node keeps and names (a run has two: before and after its statistics phase)."""
KNOWN_TERMS_MAX_LENGTH = MAX_KNOWN_TERMS * 65
"""The longest ``terms`` query a node sends: that many SHA-256 digests, comma-separated."""

_DELIVERED = TypeAdapter(TaskOut | TaskBrief)


class UnknownTerms(ValueError):
    """The hub sent a brief task whose terms this node does not hold (it never names terms it lacks)."""


def terms_json(task: TaskOut) -> str:
    """The JSON of the task's terms, as the hub renders and hashes them."""
    return task.model_dump_json(include=TERMS_FIELDS)


def terms_sha256(rendered_terms: str) -> str:
    """The name of terms: the SHA-256 of their JSON (:func:`terms_json`)."""
    return hashlib.sha256(rendered_terms.encode()).hexdigest()


def known_terms(query: str | None) -> frozenset[str]:
    """The terms a poll's ``terms`` query names."""
    return frozenset(query.split(",")) if query else frozenset()


class TermsCache:
    """The terms of the last few task messages a node received, by SHA-256, to complete brief tasks with."""

    def __init__(self, size: int = MAX_KNOWN_TERMS) -> None:
        self._size = size
        self._terms: OrderedDict[str, TaskOut] = OrderedDict()
        self._lock = threading.Lock()

    def query(self) -> dict[str, str]:
        """The ``terms`` query parameter naming what this node holds (nothing before its first task)."""
        with self._lock:
            return {"terms": ",".join(self._terms)} if self._terms else {}

    def task(self, message: str | bytes) -> TaskOut:
        """The task a delivered message (a ``TaskOut`` or a ``TaskBrief``, JSON) stands for."""
        delivered = _DELIVERED.validate_json(message)
        if isinstance(delivered, TaskOut):
            self._remember(delivered)
            return delivered
        with self._lock:
            terms = self._terms.get(delivered.terms_sha256)
            if terms is None:
                raise UnknownTerms(f"the hub sent task {delivered.id} without its terms, and this node does not "
                                   f"hold terms {delivered.terms_sha256[:12]}")
            self._terms.move_to_end(delivered.terms_sha256)
        return terms.model_copy(update=delivered.model_dump(exclude={"terms_sha256"}))

    def _remember(self, task: TaskOut) -> None:
        name = terms_sha256(terms_json(task))
        with self._lock:
            self._terms[name] = task
            self._terms.move_to_end(name)
            while len(self._terms) > self._size:
                self._terms.popitem(last=False)


def decode_delivery(content_type: str, body: bytes,
                    terms: TermsCache) -> tuple[TaskOut, dict[str, torch.Tensor] | None]:
    """A long poll's (or waiting upload's) task, and its params when they came along (safetensors with the
    task's JSON under ``__metadata__['task']``)."""
    if content_type.startswith(SAFETENSORS_MEDIA_TYPE):
        message = safetensors_metadata(body).get("task")
        if message is None:
            raise ValueError("hub sent params without a task in their metadata")
        return terms.task(message), decode_tensors(body)
    return terms.task(body), None
