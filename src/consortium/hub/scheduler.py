"""The run scheduler: one driver thread per running run, a state machine persisted in the database.

A round: open one fit task per active dataset, wait until every node answered or the round timeout passed
(dropping the late ones), aggregate (with secure aggregation: run its stages first, see
:mod:`consortium.hub.secagg_driver`), open the next round's tasks (one short transaction; the nodes start on
them at once), and then, while they compute, write the new params durably, evaluate them on the hub test set,
and checkpoint params + metrics + ledger entry in a second transaction. Federated evaluation costs no extra
phase: from round 2 on each fit task first evaluates the params it receives on the node's validation split,
and those metrics are stored on the previous round; only the last round's params get an evaluate-only phase.
After a crash the driver abandons the unfinished rounds and replays from the last checkpoint; node seeds
depend only on the project seed, the round and the dataset, so the replay computes what the lost rounds would.

Plain values live in :mod:`consortium.hub.phases`, the HTTP layer's share in :mod:`consortium.hub.state`, the
SQL in :mod:`consortium.hub.services.run_store`, the card in :mod:`consortium.hub.services.models`, the threads
in :mod:`consortium.hub.drivers`, waiting for a phase's answers in :mod:`consortium.hub.collect`, the statistics phase (spec preprocessing) in :mod:`consortium.hub.preprocess_driver`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from consortium.fl.baseline import majority_baseline
from consortium.fl.core import Evaluation, FLError, LocalData, Params, derive_seed, weighted_metrics
from consortium.fl.preprocessing import transform_data
from consortium.hub import preprocess_driver
from consortium.hub.collect import PhaseCollector
from consortium.hub.db.models import Run
from consortium.hub.live import Answer, LivePhase
from consortium.hub.phases import (
    LEAVE_RUN, OpenPhase, Participant, PhasePlan, RunFailed, refusals_note, updates_of,
)
from consortium.hub.secagg_driver import SecureRounds
from consortium.hub.services import credits, leases, ledger, run_store
from consortium.hub.services.answer_rules import AnswerRules
from consortium.hub.services.task_messages import ProjectMessages
from consortium.hub.services import models as model_service
from consortium.hub.services import projects as project_service
from consortium.hub.state import HubState, org_key, progress_key
from consortium.hub.valuation import RoundJob, card_contributions, valued
from consortium.plan import RunPlan
from consortium.codec import decode_tensors, encode_tensors
from consortium.preprocessing_wire import FittedPreprocessing
from consortium.protocol import ProjectCreate, RoundMetrics, TaskKind
from consortium.statuses import RunStatus

log = logging.getLogger("consortium.scheduler")

HAND_OUT_GRACE_S = 0.05
"""How long a driver waits for its new phase's tasks to be handed out before its own bookkeeping."""


class RunDriver:
    """Drives one run to completion (or failure) from whatever its last checkpoint is."""

    def __init__(self, state: HubState, run_id: int, stop: threading.Event, lease: leases.Lease | None = None) -> None:
        self.state, self.run_id, self.stop, self.lease = state, run_id, stop, lease
        self.secure: SecureRounds | None = None
        self.staged: list[str] = []
        """Digests of params staged in the blob store and not yet persisted."""
        self.last_closed: tuple[int, run_store.ClosedRound] | None = None
        """The round this driver closed last (its number and row), so the next close need not read it back."""

    def __call__(self) -> None:
        try:
            self.drive()
        except (*LEAVE_RUN, leases.LeaseLost):
            return
        except RunFailed as exc:
            self._fail(str(exc))
        except Exception as exc:  # a bug must fail the run visibly, not kill the thread silently
            log.exception("run %s failed", self.run_id)
            self._fail(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.state.board.withdraw_run(self.run_id)
            self.state.run_rules.pop(self.run_id, None)
            self.state.live.pop(self.run_id, None)
            if self.secure is not None:
                self.secure.forget()
            self._persist_staged()

    def fence(self, session: Session) -> None:
        """First statement of each of the driver's write transactions: with replicas, the run's lease still
        this driver's (renewed), else :class:`leases.LeaseLost` and nothing of the transaction is kept."""
        if self.lease is not None:
            leases.fence(session, self.lease, time.time())

    # ------------------------------------------------------------------------------------------ setup

    def drive(self) -> None:
        sessions = self.state.sessions
        with sessions() as session:
            run = session.get(Run, self.run_id)
            project = run.project
            self.spec = ProjectCreate.model_validate(project.spec)
            self.project_id, self.project_name, self.spec_hash = project.id, project.name, project.spec_hash
            self.messages = ProjectMessages.of(session, project, self.spec)
            sources = project_service.project_datasets(session, project)
            self.participants = [
                Participant(d.id, f"{d.org.name}/{d.name}", d.org_id, d.org.name, d.license, d.sha256, d.rows)
                for d in sources
            ]
            kinds = {d.id: d.kind for d in sources}
            schema = sources[0].schema
            test_sha = project.test_set_sha256
            current, params_sha = run.current_round, run.params_sha256
            self.server_state_sha = run.server_state_sha256
            fitted = FittedPreprocessing.model_validate(run.preprocessing) if run.preprocessing else None
            if run.status != RunStatus.running:
                return  # another replica ended it just before this one took the lease
            self.fence(session)
            run_store.abandon_open_rounds(session, self.run_id, ledger.project_scope(self.project_id))
            session.commit()
            # uploads other replicas stored for the abandoned rounds, or for a round checkpointed just before
            # its driver died
            lost = run_store.spent_uploads(session, self.run_id) if self.state.replication is not None else []
        self.state.blobs.remove(lost)
        self.phases = PhaseCollector(self.state, self.run_id, self.project_id, self.stop, self.fence)
        num_features = project_service.num_features(schema)
        self.plan = RunPlan.of(self.spec, num_features, len(self.participants))
        self.state.run_rules[self.run_id] = AnswerRules(
            self.plan.algorithm, self.plan.hp, num_features,
            {p.dataset_id: AnswerRules.source(p.ref, kinds[p.dataset_id], p.rows) for p in self.participants},
            self.plan.secure, *preprocess_driver.stats_rules(self.spec, schema))
        self.secure = (SecureRounds(self.state, self.stop, self.plan, self.run_id, self.project_id, self.fence)
                       if self.plan.secure else None)
        tensors = decode_tensors(self.state.blobs.get(test_sha)) if test_sha is not None else None
        self.test_data = LocalData(tensors["x"], tensors["y"]) if tensors is not None else None
        self.baseline = majority_baseline(self.test_data.y) if self.test_data is not None else None
        fitted, stats_round = self._preprocessing() if self.spec.preprocessing and not fitted else (fitted, None)
        if fitted is not None:
            self._prepared(fitted)
        if current < 0 or params_sha is None:
            params, init_round_id = self._initial_params(stats_round)
            self.params_sha = self._store_params(params)
            if self.plan.stateful:
                self.server_state_sha = self._store_params(self.plan.init_server_state(params))
            self._checkpoint(0, init_round_id, None)
        else:
            params = self.state.cache.get(params_sha)
            self.params_sha = params_sha
        current = max(current, 0)
        if current < self.spec.rounds:
            phase = self._open(self._fit_plan(current + 1, params))
            while phase.kind == TaskKind.fit:
                params, phase = self._round(phase, params)
        else:
            with self.state.sessions() as session:
                round_id = run_store.closed_round_id(session, self.run_id, current)
            phase = self._open(self._evaluate_plan(current, round_id))
        self._final_evaluation(phase)
        self._finish()

    def _preprocessing(self) -> tuple[FittedPreprocessing, int]:
        """The statistics phase (round 0): the transform fitted from the nodes' statistics, stored with the
        run (:mod:`consortium.hub.preprocess_driver`), and the round it ran in."""
        phase = self._open(PhasePlan(0, TaskKind.stats, None, self.participants))
        done, _ = self.phases.collect(phase, self.spec.min_nodes)
        fitted = preprocess_driver.fitted_from(self.spec, self.state.run_rules[self.run_id].stats_layout, done)
        preprocess_driver.store(self.state.sessions, self.run_id, self.project_id, fitted, [p.ref for p, _ in done],
                                self.fence)
        self._used(done)
        return fitted, phase.round_id

    def _prepared(self, fitted: FittedPreprocessing) -> None:
        """From now on: the transformed width, tasks carrying the transform, the test set transformed."""
        self.plan = self.plan.knowing(fitted.output_features, len(self.participants))
        rules = self.state.run_rules[self.run_id]
        self.state.run_rules[self.run_id] = replace(rules, num_features=fitted.output_features)
        self.messages = replace(self.messages, preprocessing=fitted)
        self.test_data = transform_data(fitted, self.test_data) if self.test_data is not None else None

    def _initial_params(self, round_id: int | None) -> tuple[Params, int | None]:
        """The initial params, and the round 0 the statistics or the nodes' init phase ran in (None without)."""
        if not self.plan.algorithm.needs_client_init:
            try:
                return self.plan.init_params(), round_id
            except FLError as exc:
                raise RunFailed(f"algorithm.hyperparameters: {exc}") from exc
        phase = self._open(PhasePlan(0, TaskKind.init, None, self.participants, round_id))
        done, _ = self.phases.collect(phase, self.spec.min_nodes)
        updates, _ = updates_of(done)
        if len(updates) < self.spec.min_nodes:
            raise RunFailed(
                f"initialisation: {len(updates)} of the required min_nodes={self.spec.min_nodes} nodes answered"
                f"{refusals_note(self.phases.refusals)}"
            )
        params = self.plan.init_params(updates)
        self._used(done)
        return params, phase.round_id

    # ------------------------------------------------------------------------------------------ rounds

    def _round(self, phase: OpenPhase, params: Params) -> tuple[Params, OpenPhase]:
        """Collect and aggregate a round's fit phase; its checkpoint also opens the next phase."""
        number = phase.number
        done, dropped = self.phases.collect(phase, self.spec.min_nodes)
        updates, previous_eval = updates_of(done)
        secured = self.secure.close(phase, done, params) if self.secure is not None else None
        if secured is not None:
            done, dropped = secured.done, dropped + secured.dropped
            self.phases.mark_dropped(secured.missed)
        if len(done) < self.spec.min_nodes:
            why = f" ({secured.failure})" if secured is not None and secured.failure else ""
            why += refusals_note(self.phases.refusals)
            raise RunFailed(f"round {number}: {len(done)} of the required min_nodes={self.spec.min_nodes} nodes "
                            f"answered within round_timeout={self.spec.round_timeout}s{why}")
        server_state = self.state.cache.get(self.server_state_sha) if self.plan.stateful else {}
        plan = self.plan.for_round(server_state)  # with adaptive clipping: this round's clip norm
        aggregate = secured.aggregate if secured is not None else plan.noised(
            params, plan.aggregate(params, updates), len(updates), number)
        if self.state.valuer is not None and valued(self.spec, self.secure is not None, self.test_data):
            self.state.valuer.submit(RoundJob(self.run_id, self.project_id, number, plan, self.spec.valuation,
                                              params, server_state, updates, [p.ref for p, _ in done], self.test_data))
        new_params, server_state = plan.close_round(params, aggregate, server_state)
        if self.plan.stateful:
            self.server_state_sha = self._store_params(server_state)
        self.params_sha = new_sha = self._store_params(new_params)

        def measure() -> RoundMetrics:
            """The round's metrics; a NaN or infinite one (the aggregate diverged) is named in ``diverged``."""
            scores = self.plan.scores(new_params, aggregate.train_metrics, self.test_data)
            return RoundMetrics(
                round=number,
                participants=sorted(p.ref for p, _ in done),
                dropped=sorted({p.ref for p in dropped}),
                train=scores.train, federated_eval={}, federated_eval_pending=True,
                test=scores.test, diverged=scores.diverged, baseline=self.baseline,
                secure_aggregation=secured.summary if secured is not None else None,
                params_sha256=new_sha,
                opened_at=phase.opened_at,
                wall_s=time.perf_counter() - phase.started,
                max_fit_compute_s=max((a.result["compute_s"] for _, a in done), default=0.0),
                max_eval_compute_s=0.0,
            )

        previous = weighted_metrics(previous_eval) if number > 1 else None
        then = (self._fit_plan(number + 1, new_params) if number < self.spec.rounds
                else self._evaluate_plan(number, phase.round_id))
        next_phase = self._open_next(then)
        self._checkpoint(number, phase.round_id, measure, previous)
        self._used(done)
        return new_params, next_phase

    def _used(self, done: list[tuple[Participant, Answer]]) -> None:
        """With replicas: delete the uploads other replicas wrote to the blob store for answers now used (a
        single hub only ever held them in memory)."""
        if self.state.replication is not None:
            self.state.blobs.remove(a.blob for _, a in done if a.blob is not None)

    def _fit_plan(self, number: int, params: Params) -> PhasePlan:
        return PhasePlan(number, TaskKind.fit, self._fit_params_sha(params), self.phases.active(self.participants))

    def _evaluate_plan(self, number: int, round_id: int) -> PhasePlan:
        """The final federated evaluation: evaluate tasks of the last round's params, added to that round."""
        return PhasePlan(number, TaskKind.evaluate, self.params_sha, self.phases.active(self.participants), round_id)

    def _final_evaluation(self, phase: OpenPhase) -> None:
        """Federated evaluation of the last round's params: the one evaluate-only phase of a run."""
        done, _ = self.phases.collect(phase, self.spec.min_nodes)
        evaluation = weighted_metrics(
            [Evaluation(a.result["num_examples"], a.result["metrics"]) for _, a in done]
        )
        compute = max((a.result["compute_s"] for _, a in done), default=0.0)
        with self.state.sessions() as session:
            self.fence(session)
            event = run_store.federated_eval_event(
                session, self.run_id, phase.number, evaluation.metrics, evaluation.num_examples, compute
            )
            ledger.record_many(session, [event] if event else [],
                               scope=ledger.project_scope(self.project_id))
            session.commit()
        self.state.broker.notify(progress_key(self.run_id))

    def _fit_params_sha(self, params: Params) -> str:
        """What the round's fit tasks carry: the global params, plus the server's control variate with
        SCAFFOLD (rebuilt from the checkpointed server state, so a replayed round carries the same)."""
        if not self.plan.uses_scaffold:
            return self.params_sha
        return self._store_params(self.plan.broadcast(params, self.state.cache.get(self.server_state_sha)))

    def _store_params(self, params: Params) -> str:
        """Stage ``params`` in the blob store (readable at once, persisted before the next commit)."""
        digest = self.state.blobs.stage(encode_tensors(params))
        self.state.cache.put(digest, params)
        self.staged.append(digest)
        return digest

    def _persist_staged(self) -> None:
        self.state.blobs.persist(self.staged)
        self.staged.clear()

    def _open(self, plan: PhasePlan) -> OpenPhase:
        """One transaction: the round (unless the plan names an existing one) and its tasks; then the phase
        goes live and the nodes hear of it (before any of them can answer, so no answer misses it)."""
        if self.state.replication is not None:  # another replica may hand the task out with its params
            self._persist_staged()
        opened_at, started = time.time(), time.perf_counter()
        deadline = self.state.clock() + timedelta(seconds=self.spec.round_timeout)
        participants = plan.participants
        seeds = [derive_seed(self.spec.seed, plan.kind.value, plan.number, p.ref) for p in participants]
        with self.state.sessions() as session:
            self.fence(session)
            opened = run_store.open_phase(
                session, self.run_id, plan.number, plan.kind.value, plan.params_sha,
                [run_store.NewTask(p.org_id, p.dataset_id, s) for p, s in zip(participants, seeds, strict=True)],
                deadline, round_id=plan.round_id,
            )
            session.commit()
        live = LivePhase(opened.task_ids, self.spec.min_nodes if plan.kind != TaskKind.evaluate else 0)
        phase = OpenPhase(plan.number, plan.kind, opened.round_id, deadline, live,
                          dict(zip(opened.task_ids, participants, strict=True)), opened_at, started)
        self.state.live[self.run_id] = phase.live
        if self.secure is not None:
            self.secure.expect(phase)
        for row, message in self.messages.phase(
                run_id=self.run_id, kind=plan.kind, round_number=plan.number, params_sha256=plan.params_sha,
                task_ids=opened.task_ids, participants=participants, seeds=seeds):
            self.state.board.post(row, message, deadline)
        self.state.broker.notify_many(org_key(org_id) for org_id in {p.org_id for p in participants})
        return phase

    # ------------------------------------------------------------------------------------------ persistence

    def _open_next(self, then: PhasePlan) -> OpenPhase:
        """Open the next phase before the round's checkpoint, in its own short transaction: the nodes compute
        while the params are persisted, the round is measured (the hub test set) and the checkpoint commits. A
        hub that dies between the two transactions finds both rounds open and replays from the previous
        checkpoint, as after any crash mid-round."""
        phase = self._open(then)
        # Let the event loop send the nodes their tasks before this thread's bookkeeping competes with it for
        # the interpreter: the round's start is on the critical path, the bookkeeping is not.
        self.state.board.wait_handed_out(phase.participants, HAND_OUT_GRACE_S)
        return phase

    def _checkpoint(self, number: int, round_id: int | None, measure: Callable[[], RoundMetrics] | None,
                    previous_eval: Evaluation | None = None) -> None:
        """Checkpoint round ``number``: round closed with its metrics, run advanced to the params staged under
        ``self.params_sha`` (persisted first), ledger entry (+ the previous round's federated evaluation)."""
        self._persist_staged()
        metrics = measure() if measure is not None else None
        with self.state.sessions() as session:
            self.fence(session)
            closed = self._close(session, number, round_id, metrics, previous_eval)
            session.commit()
        self.last_closed = closed
        self.state.broker.notify(progress_key(self.run_id))

    def _close(self, session: Session, number: int, round_id: int | None, metrics: RoundMetrics | None,
               previous_eval: Evaluation | None) -> tuple[int, run_store.ClosedRound]:
        """Round ``number`` closed with ``metrics``, the run advanced, ledger entries (all uncommitted)."""
        digest = self.params_sha
        payload: dict[str, Any] = {"run_id": self.run_id, "round": number, "params_sha256": digest}
        if self.server_state_sha is not None:
            payload["server_state_sha256"] = self.server_state_sha
        if metrics is not None:
            payload.update(participants=metrics.participants, dropped=metrics.dropped, test=metrics.test)
            if metrics.diverged:
                payload["diverged"] = metrics.diverged
            if metrics.secure_aggregation is not None:
                payload["secure_aggregation"] = metrics.secure_aggregation
        events = []
        if previous_eval is not None:
            closed = self.last_closed[1] if self.last_closed and self.last_closed[0] == number - 1 else None
            event = run_store.federated_eval_event(
                session, self.run_id, number - 1, previous_eval.metrics, previous_eval.num_examples, 0.0, closed
            )
            events += [event] if event else []
        events.append(("round.completed" if number else "run.initialised", "hub", payload))
        written = metrics.model_dump(mode="json") if metrics else None
        round_id = run_store.close_round(
            session, self.run_id, number, round_id, metrics=written, params_sha256=digest,
            server_state_sha256=self.server_state_sha, now=self.state.clock(), events=events,
            scope=ledger.project_scope(self.project_id),
        )
        return number, run_store.ClosedRound(round_id, written)

    def _finish(self) -> None:
        with self.state.sessions() as session:
            self.fence(session)
            run = session.get(Run, self.run_id)
            contributions = card_contributions(self.state.valuer, session, self.spec, self.project_id, self.run_id,
                                               secure=self.secure is not None, has_test_set=self.test_data is not None)
            model = model_service.record_run_model(
                session, run, project_name=self.project_name, spec=self.spec, spec_hash=self.spec_hash,
                algorithm=self.plan.algorithm, hp=self.plan.hp, blobs=self.state.blobs, cache=self.state.cache,
                code_version=self.state.code_version, now=self.state.clock(), contributions=contributions,
            )
            run.status, run.finished_at = RunStatus.completed, self.state.clock()
            ledger.record(
                session, "run.completed", "hub",
                {"run_id": self.run_id, "model_id": model.id, "params_sha256": run.params_sha256,
                 "license": model.license, **({"warnings": model.card["warnings"]} if model.card.get("warnings") else {})},
                scope=ledger.project_scope(self.project_id),
            )
            credits.award_run(session, run)
            session.commit()
        self.state.broker.notify(progress_key(self.run_id))

    def _fail(self, reason: str) -> None:
        """Fail the run and cancel its open tasks. They leave the board first: a node that took one just
        before gets a 410 naming the failure, and none can take it again."""
        self.state.board.withdraw_run(self.run_id)
        try:
            with self.state.sessions() as session:
                self.fence(session)
                run_store.fail_run(session, self.run_id, reason, self.state.clock())
                session.commit()
        except leases.LeaseLost:
            return  # the replica that took the run over decides its fate
        self.state.broker.notify(progress_key(self.run_id))
