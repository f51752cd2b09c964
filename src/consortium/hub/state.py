"""What the run scheduler shares with the HTTP layer inside one hub process, and the broker keys they wait on."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from consortium.hub.blobs import BlobStore
from consortium.hub.coalesce import Coalescer
from consortium.hub.events import Broker
from consortium.hub.live import LivePhase, TaskBoard
from consortium.hub.secagg import SecAggRound
from consortium.hub.services.identity import KeyCache, TokenCache
from consortium.hub.services.answer_rules import AnswerRules, answer_rules
from consortium.hub.services import task_claims
from consortium.hub.services.run_state_cache import RunStateCache
from consortium.hub.services.task_messages import ProjectMessages
from consortium.hub.tensor_cache import TensorCache
from consortium.hub.valuation import Valuer
from consortium.hub.web.sessions import WebSessions
from consortium.protocol import TaskOut


def progress_key(run_id: int) -> str:
    """Broker key that watchers of a run's progress wait on."""
    return f"progress:{run_id}"


def org_key(org_id: int) -> str:
    """Broker key that an org's long-polling node waits on."""
    return f"org:{org_id}"


def answer_key(run_id: int, task_id: int, failed: bool) -> str:
    """Broker key a replica notifies after committing an answer to a task of a run it does not drive (the
    driving replica then reads it from the database, see :mod:`consortium.hub.replicas`)."""
    return f"answer:{run_id}:{task_id}:{'failed' if failed else 'done'}"


def parse_answer_key(key: str) -> tuple[int, int, bool] | None:
    """(run id, task id, failed) of an :func:`answer_key`; None for any other key."""
    parts = key.split(":")
    if len(parts) != 4 or parts[0] != "answer" or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[1]), int(parts[2]), parts[3] == "failed"


@dataclass(frozen=True)
class Replication:
    """This hub is one of several replicas on one PostgreSQL database and one blob store (docs/deploy.md)."""

    replica_id: str
    """Unique per process: the holder named in the run leases it takes."""
    lease_s: float = 10.0
    """How long a run's lease lasts unless renewed: what a killed replica costs its runs at most."""


@dataclass
class HubState:
    """What the scheduler shares with the HTTP layer inside one hub process."""

    sessions: sessionmaker[Session]
    blobs: BlobStore
    cache: TensorCache
    broker: Broker
    code_version: str
    presence: dict[int, float] = field(default_factory=dict)
    keys: KeyCache = field(default_factory=KeyCache)
    tokens: TokenCache = field(default_factory=TokenCache)
    """API tokens the gate checked lately; a revocation or a change of their user forgets them here."""
    board: TaskBoard = field(default_factory=TaskBoard)
    """Task messages composed by the drivers when they open a phase; the long poll hands them out."""
    run_rules: dict[int, AnswerRules] = field(default_factory=dict)
    """What the upload handlers check answers against, for each run a driver of this process is driving."""
    foreign_rules: RunStateCache[AnswerRules] = field(
        default_factory=lambda: RunStateCache(lambda session, run: answer_rules(session, run.id)))
    """With replicas: the answer rules of runs another replica drives."""
    foreign_messages: RunStateCache[ProjectMessages] = field(
        default_factory=lambda: RunStateCache(lambda session, run: ProjectMessages.of(
            session, run.project, preprocessing=run.preprocessing)))
    """With replicas: what the task messages of runs another replica drives carry (their board has them)."""
    live: dict[int, LivePhase] = field(default_factory=dict)
    """The open phase of each run a driver of this process is driving; handlers hand it their answers."""
    web: WebSessions = field(default_factory=WebSessions)
    """The web pages' login sessions (:mod:`consortium.hub.web.sessions`)."""
    secagg: dict[int, SecAggRound] = field(default_factory=dict)
    """The secure aggregation of each fit task's round, for the rounds this process's drivers run."""
    valuer: Valuer | None = None
    """Values the rounds of runs whose spec asks for it, off the drivers' threads (started with the hub)."""
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    """Hub time: round deadlines are set and checked on it (drivers, and the board handing tasks out)."""
    recheck_s: float = 1.0
    """How often a driver waiting for a phase's answers looks at the clock and the database."""
    replication: Replication | None = None
    """None: this process drives every running run (one hub). Else run leases decide (``hub/drivers.py``)."""

    claims: Coalescer[int, TaskOut | None] = field(init=False)
    """Org id -> its next task from the database, for long polls the board has nothing for: the polls woken
    together (a phase opened by another replica) are claimed in one batch."""
    open_tasks: Coalescer[int, bool] = field(init=False)
    """Task id -> whether it still waits for its answer (with replicas, before the board hands one out)."""

    def __post_init__(self) -> None:
        self.claims = Coalescer(self._claim_many, None)
        self.open_tasks = Coalescer(self._still_open, False)

    def _claim_many(self, org_ids: Collection[int]) -> dict[int, TaskOut]:
        with self.sessions() as session:
            return task_claims.claim_many(session, org_ids, self.clock(), self.board.message,
                                          self.foreign_messages.get)

    def _still_open(self, task_ids: Collection[int]) -> dict[int, bool]:
        with self.sessions() as session:
            return dict.fromkeys(task_claims.still_open(session, task_ids), True)

    def seen(self, org_id: int) -> None:
        self.presence[org_id] = time.monotonic()

    def durable_upload(self, run_id: int, task_id: int) -> bool:
        """Whether an update upload for task ``task_id`` of ``run_id`` must be written to the blob store at
        once, because no live phase of this process waits for it: another replica drives the run (a single
        hub, or the driving replica, keeps it in memory until it is aggregated)."""
        if self.replication is None:
            return False
        live = self.live.get(run_id)
        return live is None or not live.expects(task_id)

    def answer_rules(self, session: Session, run_id: int) -> AnswerRules:
        """A run's answer rules: its driver's in this process, else read once from the database."""
        driven = self.run_rules.get(run_id)
        return driven if driven is not None else self.foreign_rules.get(session, run_id)
