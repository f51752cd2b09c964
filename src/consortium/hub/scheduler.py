"""The run scheduler: one driver thread per running run, a state machine persisted in the database.

A round: write the global params, open one fit task per active dataset, wait until every node answered or
the round timeout passed (dropping the late ones), aggregate, evaluate on the hub test set, then checkpoint
params + metrics + ledger entry in one transaction. Federated evaluation costs no extra phase: from round 2 on
each fit task first evaluates the params it receives (the previous round's aggregate) on the node's
validation split, and those metrics are stored on the previous round; only the last round's params get an
evaluate-only phase. After a crash the driver abandons
the unfinished round and replays it from the last checkpoint; node seeds depend only on the project seed,
the round and the dataset, so the replay computes exactly what the lost round would have.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consortium.fl import scaffold
from consortium.fl.core import (
    Evaluation,
    LocalData,
    Params,
    Update,
    derive_seed,
    get_algorithm,
    get_strategy,
    parse_hyperparams,
    weighted_metrics,
)
from consortium.fl.server_optimizers import server_step
from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Model, Round, Run, Task
from consortium.hub.events import Broker
from consortium.hub.services import ledger
from consortium.hub.services.identity import KeyCache
from consortium.hub.services.runs import evaluates_previous_round
from consortium.hub.services import models as model_service
from consortium.hub.services import projects as project_service
from consortium.hub.tensor_cache import TensorCache
from consortium.protocol import (
    ProjectCreate,
    RoundMetrics,
    TaskKind,
    TaskOut,
    decode_tensors,
    decode_update,
    encode_tensors,
)

log = logging.getLogger("consortium.scheduler")


def run_key(run_id: int) -> str:
    """Broker key a run driver waits on (task results arrive)."""
    return f"run:{run_id}"


def progress_key(run_id: int) -> str:
    """Broker key that watchers of a run's progress wait on."""
    return f"progress:{run_id}"


def org_key(org_id: int) -> str:
    """Broker key that an org's long-polling node waits on."""
    return f"org:{org_id}"


class StopRequested(Exception):
    pass


class RunFailed(Exception):
    pass


@dataclass(frozen=True)
class Participant:
    dataset_id: int
    ref: str
    org_id: int
    org: str
    license: str
    sha256: str
    rows: int


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
    task_messages: dict[int, TaskOut] = field(default_factory=dict)
    """Task messages composed by the drivers when they open a round; the long poll hands them out."""
    run_algorithms: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    """(algorithm, hyper-parameters) of each run a driver of this process is driving."""
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def seen(self, org_id: int) -> None:
        self.presence[org_id] = time.monotonic()


class Scheduler:
    """Starts and tracks one driver thread per running run."""

    def __init__(self, state: HubState) -> None:
        self.state = state
        self._threads: dict[int, threading.Thread] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def resume_all(self) -> None:
        with self.state.sessions() as session:
            ids = list(session.scalars(select(Run.id).where(Run.status == "running")))
        for run_id in ids:
            self.ensure(run_id)

    def ensure(self, run_id: int) -> None:
        with self._lock:
            thread = self._threads.get(run_id)
            if thread is not None and thread.is_alive():
                return
            driver = RunDriver(self.state, run_id, self._stop)
            thread = threading.Thread(target=driver, name=f"run-{run_id}", daemon=True)
            self._threads[run_id] = thread
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)


class RunDriver:
    """Drives one run to completion (or failure) from whatever its last checkpoint is."""

    def __init__(self, state: HubState, run_id: int, stop: threading.Event) -> None:
        self.state = state
        self.run_id = run_id
        self.stop = stop
        self.dropped_at: dict[int, float] = {}

    def __call__(self) -> None:
        try:
            self.drive()
        except StopRequested:
            return
        except RunFailed as exc:
            self._fail(str(exc))
        except Exception as exc:  # a bug must fail the run visibly, not kill the thread silently
            log.exception("run %s failed", self.run_id)
            self._fail(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.state.run_algorithms.pop(self.run_id, None)

    # ------------------------------------------------------------------------------------------ setup

    def drive(self) -> None:
        sessions = self.state.sessions
        with sessions() as session:
            run = session.get(Run, self.run_id)
            project = run.project
            self.spec = ProjectCreate.model_validate(project.spec)
            self.project_id, self.project_name, self.spec_hash = project.id, project.name, project.spec_hash
            self.participants = [
                Participant(d.id, f"{d.org.name}/{d.name}", d.org_id, d.org.name, d.license, d.sha256, d.rows)
                for d in project_service.project_datasets(session, project)
            ]
            self.num_features = project_service.num_features(
                project_service.project_datasets(session, project)[0].schema
            )
            test_sha = project.test_set_sha256
            current, params_sha = run.current_round, run.params_sha256
            self.server_state_sha = run.server_state_sha256
            self._abandon_open_rounds(session)
        self.algorithm = get_algorithm(self.spec.algorithm.name)
        self.hp = parse_hyperparams(self.algorithm, self.spec.algorithm.hyperparameters)
        self.strategy = get_strategy(
            self.spec.strategy.name or self.algorithm.default_strategy, **self.spec.strategy.options
        )
        optimizer = self.spec.strategy.server_optimizer
        self.server = server_step(
            optimizer.name if optimizer else None, dict(optimizer.options) if optimizer else {},
            len(self.participants) if scaffold.uses_scaffold(self.algorithm, self.hp) else None,
        )
        self.state.run_algorithms[self.run_id] = (self.algorithm, self.hp)
        self.test_data = None
        if test_sha is not None:
            tensors = decode_tensors(self.state.blobs.get(test_sha))
            self.test_data = LocalData(tensors["x"], tensors["y"])

        if current < 0 or params_sha is None:
            params = self._initial_params()
            self.params_sha = self._store_params(params)
            if self.server.stateful:
                self.server_state_sha = self._store_params(self.server.init_state(params))
            self._checkpoint(0, None, None)
        else:
            params = self.state.cache.get(params_sha)
            self.params_sha = params_sha
        for number in range(max(current, 0) + 1, self.spec.rounds + 1):
            params = self._round(number, params)
        self._final_evaluation(self.spec.rounds)
        self._finish()

    def _abandon_open_rounds(self, session: Session) -> None:
        open_rounds = list(
            session.scalars(select(Round).where(Round.run_id == self.run_id, Round.status == "open"))
        )
        for task in session.scalars(
            select(Task).where(Task.run_id == self.run_id, Task.status.in_(("pending", "claimed")))
        ):
            task.status = "cancelled"
        for rnd in open_rounds:
            rnd.status = "abandoned"
            ledger.record(
                session, "round.abandoned", "hub",
                {"run_id": self.run_id, "round": rnd.number, "attempt": rnd.attempt,
                 "reason": "hub restarted; the round is replayed from the last checkpoint"},
            )
        session.commit()

    def _initial_params(self) -> Params:
        if not self.algorithm.needs_client_init:
            return self.algorithm.init(self.hp, self.num_features, self.spec.seed)
        round_id, _ = self._open(0, TaskKind.init, None, self.participants)
        done, _ = self._collect(round_id, self._deadline(), kind=TaskKind.init)
        updates, _ = self._load_updates(done)
        if len(updates) < self.spec.min_nodes:
            raise RunFailed(
                f"initialisation: {len(updates)} of the required min_nodes={self.spec.min_nodes} nodes answered"
            )
        return self.algorithm.init_from_updates(self.hp, updates, self.spec.seed)

    # ------------------------------------------------------------------------------------------ rounds

    def _round(self, number: int, params: Params) -> Params:
        started, opened_at = time.perf_counter(), time.time()
        params_sha = self._fit_params_sha(params)
        active = self._active_participants()
        round_id, _ = self._open(number, TaskKind.fit, params_sha, active)
        done, dropped = self._collect(round_id, self._deadline(), kind=TaskKind.fit)
        updates, previous_eval = self._load_updates(done)
        if len(updates) < self.spec.min_nodes:
            raise RunFailed(
                f"round {number}: {len(updates)} of the required min_nodes={self.spec.min_nodes} nodes answered "
                f"within round_timeout={self.spec.round_timeout}s"
            )
        new_params = self.strategy.aggregate(params, updates)
        if self.server.stateful:
            server_state = self.state.cache.get(self.server_state_sha)
            deltas = scaffold.delta_sum(updates) if self.server.scaffold_clients else None
            new_params, server_state = self.server.step(params, new_params, server_state, deltas)
            self.server_state_sha = self._store_params(server_state)
        new_sha = self._store_params(new_params)
        test = self.algorithm.evaluate(self.hp, new_params, self.test_data).metrics if self.test_data else {}
        train = weighted_metrics([Evaluation(u.num_examples, u.metrics) for u in updates])
        ref_of = {p.dataset_id: p.ref for p in self.participants}
        metrics = RoundMetrics(
            round=number,
            participants=sorted(ref_of[t.dataset_id] for t in done),
            dropped=sorted({ref_of[t.dataset_id] for t in dropped}),
            train=train.metrics,
            federated_eval={},
            federated_eval_pending=True,
            test=test,
            params_sha256=new_sha,
            opened_at=opened_at,
            wall_s=time.perf_counter() - started,
            max_fit_compute_s=max((t.result["compute_s"] for t in done), default=0.0),
            max_eval_compute_s=0.0,
        )
        previous = weighted_metrics(previous_eval) if number > 1 else None
        self.params_sha = new_sha
        self._checkpoint(number, round_id, metrics, previous)
        return new_params

    def _final_evaluation(self, number: int) -> None:
        """Federated evaluation of the last round's params: the one evaluate-only phase of a run."""
        with self.state.sessions() as session:
            round_id = session.scalar(
                select(Round.id).where(Round.run_id == self.run_id, Round.number == number, Round.status == "closed")
            )
        responders = self._active_participants()
        self._open_tasks(round_id, number, TaskKind.evaluate, self.params_sha, responders)
        done, _ = self._collect(round_id, self._deadline(), kind=TaskKind.evaluate)
        evaluation = weighted_metrics([Evaluation(t.result["num_examples"], t.result["metrics"]) for t in done])
        compute = max((t.result["compute_s"] for t in done), default=0.0)
        with self.state.sessions() as session:
            self._store_federated_eval(session, number, evaluation, compute)
            session.commit()
        self.state.broker.notify(progress_key(self.run_id))

    def _store_federated_eval(
        self, session: Session, number: int, evaluation: Evaluation, eval_compute_s: float = 0.0
    ) -> None:
        rnd = session.scalar(
            select(Round).where(Round.run_id == self.run_id, Round.number == number, Round.status == "closed")
        )
        if rnd is None or rnd.metrics is None:
            return
        metrics = dict(rnd.metrics)
        metrics.update(federated_eval=evaluation.metrics, federated_eval_pending=False,
                       max_eval_compute_s=eval_compute_s)
        rnd.metrics = metrics
        ledger.record(
            session, "round.evaluated", "hub",
            {"run_id": self.run_id, "round": number, "federated_eval": evaluation.metrics,
             "num_examples": evaluation.num_examples},
        )

    def _deadline(self) -> datetime:
        return self.state.clock() + timedelta(seconds=self.spec.round_timeout)

    def _active_participants(self) -> list[Participant]:
        """Datasets whose node has not been dropped, or has polled again since it was."""
        active = []
        for p in self.participants:
            dropped = self.dropped_at.get(p.org_id)
            if dropped is None or self.state.presence.get(p.org_id, 0.0) > dropped:
                active.append(p)
        return active

    def _fit_params_sha(self, params: Params) -> str:
        """What the round's fit tasks carry: the global params, plus the server's control variate with
        SCAFFOLD (rebuilt from the checkpointed server state, so a replayed round carries the same)."""
        if not self.server.scaffold_clients:
            return self.params_sha
        return self._store_params(self.server.broadcast(params, self.state.cache.get(self.server_state_sha)))

    def _store_params(self, params: Params) -> str:
        digest = self.state.blobs.put(encode_tensors(params))
        self.state.cache.put(digest, params)
        return digest

    def _open(
        self, number: int, kind: TaskKind, params_sha: str | None, participants: list[Participant]
    ) -> tuple[int, list[int]]:
        with self.state.sessions() as session:
            attempts = session.scalars(
                select(Round.attempt).where(Round.run_id == self.run_id, Round.number == number)
            ).all()
            rnd = Round(run_id=self.run_id, number=number, attempt=max(attempts, default=0) + 1)
            session.add(rnd)
            session.commit()
            round_id = rnd.id
        return self._open_tasks(round_id, number, kind, params_sha, participants)

    def _open_tasks(
        self, round_id: int, number: int, kind: TaskKind, params_sha: str | None, participants: list[Participant]
    ) -> tuple[int, list[int]]:
        deadline = self._deadline()
        with self.state.sessions() as session:
            tasks = [
                Task(
                    run_id=self.run_id,
                    round_id=round_id,
                    org_id=p.org_id,
                    dataset_id=p.dataset_id,
                    kind=kind.value,
                    params_sha256=params_sha,
                    seed=derive_seed(self.spec.seed, kind.value, number, p.ref),
                    deadline=deadline,
                )
                for p in participants
            ]
            session.add_all(tasks)
            session.commit()
            ids = [t.id for t in tasks]
        for task, participant in zip(tasks, participants, strict=True):
            self.state.task_messages[task.id] = TaskOut(
                id=task.id, kind=kind, run_id=self.run_id, round=number, project_id=self.project_id,
                spec_hash=self.spec_hash, spec=self.spec, dataset=participant.ref.split("/", 1)[1],
                params_sha256=params_sha, seed=task.seed,
                evaluate_first=evaluates_previous_round(kind.value, number),
            )
        for org_id in {p.org_id for p in participants}:
            self.state.broker.notify(org_key(org_id))
        return round_id, ids

    def _collect(
        self, round_id: int, deadline: datetime, kind: TaskKind | None = None
    ) -> tuple[list[Task], list[Task]]:
        """Wait until every task of the round (of ``kind``) is answered or the deadline passes."""
        wake = self.state.broker.thread_event(run_key(self.run_id))
        while True:
            wake.clear()
            with self.state.sessions() as session:
                query = select(Task).where(Task.round_id == round_id)
                if kind is not None:
                    query = query.where(Task.kind == kind.value)
                tasks = list(session.scalars(query.order_by(Task.id)))
                now = self.state.clock()
                pending = [t for t in tasks if t.status in ("pending", "claimed")]
                if pending and now >= deadline:
                    monotonic_now = time.monotonic()
                    for task in pending:
                        task.status = "dropped"
                        self.dropped_at[task.org_id] = monotonic_now
                        ledger.record(
                            session, "task.dropped", "hub",
                            {"run_id": self.run_id, "task_id": task.id, "org": task.org.name,
                             "reason": "no answer within round_timeout"},
                        )
                    session.commit()
                    pending = []
                if not pending:
                    for task in tasks:
                        session.expunge(task)
                        self.state.task_messages.pop(task.id, None)
                    done = [t for t in tasks if t.status == "done"]
                    dropped = [t for t in tasks if t.status in ("dropped", "refused")]
                    return done, dropped
            if self.stop.is_set():
                raise StopRequested
            remaining = (deadline - self.state.clock()).total_seconds()
            wake.wait(max(0.0, min(remaining, 1.0)))

    def _load_updates(self, tasks: list[Task]) -> tuple[list[Update], list[Evaluation]]:
        """The updates of answered tasks, and the evaluations of the received params they carried."""
        updates, evaluations = [], []
        for task in tasks:
            tensors, meta = decode_update(self.state.blobs.get(task.update_sha256))
            updates.append(
                Update(tensors=tensors, num_examples=meta.num_examples, metrics=meta.metrics,
                       client_id=f"{task.dataset_id:012d}")
            )
            if meta.evaluation is not None:
                evaluations.append(Evaluation(meta.evaluation.num_examples, meta.evaluation.metrics))
        return updates, evaluations

    # ------------------------------------------------------------------------------------------ persistence

    def _checkpoint(
        self,
        number: int,
        round_id: int | None,
        metrics: RoundMetrics | None,
        previous_eval: Evaluation | None = None,
    ) -> None:
        """One transaction: round closed with its metrics, run advanced to the params already stored under
        ``self.params_sha``, ledger entry (+ the previous round's federated evaluation)."""
        digest = self.params_sha
        with self.state.sessions() as session:
            if previous_eval is not None:
                self._store_federated_eval(session, number - 1, previous_eval)
            run = session.get(Run, self.run_id)
            if round_id is None:
                rnd = Round(run_id=self.run_id, number=number,
                            attempt=1 + len(session.scalars(select(Round.id).where(
                                Round.run_id == self.run_id, Round.number == number)).all()))
                session.add(rnd)
            else:
                rnd = session.get(Round, round_id)
            rnd.status, rnd.closed_at = "closed", self.state.clock()
            rnd.metrics = metrics.model_dump(mode="json") if metrics else None
            run.current_round, run.params_sha256 = number, digest
            run.server_state_sha256 = self.server_state_sha
            payload: dict[str, Any] = {"run_id": self.run_id, "round": number, "params_sha256": digest}
            if self.server_state_sha is not None:
                payload["server_state_sha256"] = self.server_state_sha
            if metrics is not None:
                payload.update(participants=metrics.participants, dropped=metrics.dropped, test=metrics.test)
            ledger.record(session, "round.completed" if number else "run.initialised", "hub", payload)
            session.commit()
        self.state.broker.notify(progress_key(self.run_id))

    def _finish(self) -> None:
        with self.state.sessions() as session:
            run = session.get(Run, self.run_id)
            rounds = [
                RoundMetrics.model_validate(r.metrics)
                for r in session.scalars(
                    select(Round).where(Round.run_id == self.run_id, Round.status == "closed", Round.number > 0)
                    .order_by(Round.number)
                )
            ]
            card = model_service.build_card(
                project_id=self.project_id,
                project_name=self.project_name,
                spec=self.spec,
                spec_hash=self.spec_hash,
                run_id=self.run_id,
                datasets=model_service.source_entries(project_service.project_datasets(session, run.project)),
                rounds=rounds,
                params_sha256=run.params_sha256,
                code_version=self.state.code_version,
                created_at=self.state.clock(),
                files=model_service.store_files(self.state.blobs, self.algorithm, self.hp,
                                                self.state.cache.get(run.params_sha256), self.spec.seed),
            )
            model = Model(
                run_id=self.run_id,
                project_id=self.project_id,
                params_sha256=run.params_sha256,
                license=card["license"],
                card=card,
                card_markdown=model_service.render_markdown(card),
            )
            session.add(model)
            run.status, run.finished_at = "completed", self.state.clock()
            session.flush()
            ledger.record(
                session, "run.completed", "hub",
                {"run_id": self.run_id, "model_id": model.id, "params_sha256": run.params_sha256,
                 "license": card["license"]},
            )
            session.commit()
        self.state.broker.notify(progress_key(self.run_id))

    def _fail(self, reason: str) -> None:
        with self.state.sessions() as session:
            run = session.get(Run, self.run_id)
            run.status, run.error, run.finished_at = "failed", reason, self.state.clock()
            for task in session.scalars(
                select(Task).where(Task.run_id == self.run_id, Task.status.in_(("pending", "claimed")))
            ):
                task.status = "cancelled"
            ledger.record(session, "run.failed", "hub", {"run_id": self.run_id, "reason": reason})
            session.commit()
        self.state.broker.notify(progress_key(self.run_id))
