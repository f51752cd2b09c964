"""The states a run, a round, a task and a model go through, named once.

They are ``StrEnum``s, so a member is the very string the database column stores and the API returns:
``TaskStatus.done == "done"``, rows read back compare equal without any conversion, and JSON carries the
plain value.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run is ``running`` until its last round closes (``completed``) or it stops early (``failed``)."""

    running = "running"
    completed = "completed"
    failed = "failed"


class ModelStatus(StrEnum):
    """A model is ``trained`` when its run completes, ``released`` once a ``release_model`` proposal for it
    passed (its card, licence and rights are then frozen)."""

    trained = "trained"
    released = "released"


class RoundStatus(StrEnum):
    """A round is ``open`` while its tasks are out, then ``closed``; a stopped run ``abandoned`` it."""

    open = "open"
    closed = "closed"
    abandoned = "abandoned"


class TaskStatus(StrEnum):
    """A task is handed out (``pending`` -> ``claimed``), then answered or given up on."""

    pending = "pending"
    claimed = "claimed"
    done = "done"
    """answered with a result the hub accepted"""
    refused = "refused"
    """the node's policy declined it"""
    rejected = "rejected"
    """answered, but the hub refused the answer (bad update, bad metrics...)"""
    dropped = "dropped"
    """its round closed before it was answered"""
    cancelled = "cancelled"
    """its run stopped"""


OPEN_TASK_STATES = (TaskStatus.pending, TaskStatus.claimed)
"""A node may still answer the task."""
ANSWERED_TASK_STATES = (TaskStatus.done, TaskStatus.refused, TaskStatus.rejected)
"""The node answered (whether or not the answer counts)."""
TERMINAL_TASK_STATES = (*ANSWERED_TASK_STATES, TaskStatus.dropped, TaskStatus.cancelled)
"""Nothing more happens to the task."""
