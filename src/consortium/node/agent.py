"""The node's agent loop: long-poll the hub, check policy, train or evaluate locally, send results."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from pydantic import ValidationError

from consortium import faults
from consortium.fl import preprocessing, scaffold
from consortium.fl.preprocessing import transform_data
from consortium.fl.core import FLError, LocalData, Params, Update, derive_seed
from consortium.fl.data import train_validation_split
from consortium.fl.environments import LocalEnvironment
from consortium.client import HubClient, HubError
from consortium.node import actions
from consortium.node.budget import BudgetGuard
from consortium.node.controls import ControlKey, ControlStore
from consortium.node.environments import EnvironmentRegistry
from consortium.node import secagg
from consortium.node.policy import NodePolicy, spec_hash
from consortium.node.registry import LocalRegistry
from consortium.plan import RunPlan
from consortium.codec import decode_tensors, encode_tensors, encode_update
from consortium.protocol import TaskKind, TaskOut, TaskResult, UpdateMeta
from consortium.tables import feature_names

log = logging.getLogger("consortium.node")

FORGET_AFTER = 1024
"""How many gone tasks and ended runs the agent remembers (oldest forgotten first)."""
MAX_REASON = 2000
"""The longest refusal reason the wire takes (``TaskRefusal.reason``); a longer one is cut."""


@contextlib.contextmanager
def _unsendable(what: str) -> Iterator[None]:
    """A result the wire schema refuses (a NaN metric of a diverged model) becomes an FLError, so the node
    refuses the task with the reason instead of leaving it to time out."""
    try:
        yield
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise FLError(f"the local {what} cannot be sent: {problems}"[:1000]) from exc


class Transport(Protocol):
    """The one seam between node and hub (HTTP in deployment: :class:`consortium.client.HubClient`)."""

    def next_task(self, wait: float, have: str | None = None) -> tuple[TaskOut, Params | None] | None: ...

    def task_params(self, task_id: int) -> bytes: ...

    def post_update(
        self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None
    ) -> tuple[TaskOut, Params | None] | None:
        """Send an update; with ``wait`` the answer may carry the next task (as ``next_task`` would)."""
        ...

    def post_result(self, task_id: int, result: TaskResult) -> None: ...

    def post_refusal(self, task_id: int, reason: str) -> None: ...

    def post_privacy_charge(self, task_id: int, noise_multiplier: float, sampling_rate: float,
                            steps: int = 1) -> dict: ...


@dataclass
class Split:
    """Where a task trains and evaluates: a dataset's two splits, or the node's environment for both."""

    train: LocalData | LocalEnvironment
    validation: LocalData | LocalEnvironment


def split_local(data: LocalData, fraction: float, seed: int) -> Split:
    train_idx, val_idx = train_validation_split(len(data), fraction, seed)

    def take(idx) -> LocalData:
        return LocalData(data.x[idx], None if data.y is None else data.y[idx])

    return Split(take(train_idx), take(val_idx))


class NodeAgent:
    """Runs tasks one at a time. Never trusts the hub: every task goes through :class:`NodePolicy`."""

    def __init__(
        self,
        transport: Transport,
        registry: LocalRegistry,
        policy: NodePolicy,
        poll_wait: float = 25.0,
        on_task: Callable[[TaskOut, str], None] | None = None,
        environments: EnvironmentRegistry | None = None,
        budget: BudgetGuard | None = None,
        secagg_halt_before: str | None = None,
    ) -> None:
        self.transport = transport
        self.registry = registry
        self.environments = environments or EnvironmentRegistry(registry.org_dir)
        self.policy = policy
        self.budget = budget or BudgetGuard(policy.org, registry.org_dir)
        self.poll_wait = poll_wait
        self.on_task = on_task
        self.secagg_halt_before = secagg_halt_before
        self._params: tuple[str, Params] | None = None
        self._splits: dict[tuple[str, int, float, str], Split] = {}
        self.controls = ControlStore(registry.org_dir)
        self._next: tuple[TaskOut, Params | None] | None = None
        self._gone_tasks: dict[int, str] = {}
        """Tasks the hub answered 410 for (dropped, cancelled), with why: never run again."""
        self._ended_runs: dict[int, str] = {}
        """Runs the hub said ended (failed, completed): none of their tasks is run again."""

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; back off (up to 5 s) while the hub is unreachable or erroring."""
        backoff = 0.1
        while not stop.is_set():
            try:
                self.step()
                backoff = 0.1
            except Exception as exc:  # the hub may be restarting: keep the node alive
                log.warning("hub unreachable or refused: %s (retrying in %.1fs)", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def step(self) -> bool:
        """Run one task: the one the last update's answer brought, else one long poll's. True if one ran."""
        delivery, self._next = self._next, None
        if delivery is None:
            delivery = self.transport.next_task(self.poll_wait, have=self._held_params())
        if delivery is None:
            return False
        task, params = delivery
        if params is not None:
            self._accept_params(task, params)
        self.handle(task)
        return True

    def handle(self, task: TaskOut) -> None:
        gone = self._ended_runs.get(task.run_id) or self._gone_tasks.get(task.id)
        if gone is not None:
            log.info("skipping task %s of run %s: %s", task.id, task.run_id, gone)
            self._notify(task, f"skipped: {gone}")
            return
        try:
            reason = self.policy.refusal(task)
            if reason is not None and self._adopted_page_vote(task):
                reason = self.policy.refusal(task)
            if reason is not None:
                self._refuse(task, reason)
            elif self._within_budget(task):
                self._execute(task)
        except FLError as exc:  # bad data or spec; results with no wire form come as FLError (_unsendable)
            self._refuse(task, f"local error: {exc}")
        except Exception as exc:  # a fault in training itself: the hub hears why now, not at the round's timeout
            if _transport_error(exc):
                raise
            log.exception("task %s failed", task.id)
            self._refuse(task, f"local error: {type(exc).__name__}: {exc}")

    def _adopted_page_vote(self, task: TaskOut) -> bool:
        """For a project version with no vote of this org on record here: record the vote a steward cast in the
        web page, which the org's key signed there (:func:`actions.adopt_vote` checks that signature, so the
        hub cannot make the node train by claiming a vote). False when there is none to adopt."""
        proposal_id = (task.outcome or {}).get("proposal_id")
        voted = self.policy.votes.voted(task.project_id)
        if not isinstance(self.transport, HubClient) or not isinstance(proposal_id, int) or (
                voted is not None and voted.spec_hash == spec_hash(task.spec)
                and voted.test_set_sha256 == task.test_set_sha256):
            return False
        try:
            actions.adopt_vote(self.transport, self.registry.org_dir, proposal_id)
        except (actions.VoteError, HubError) as exc:
            log.info("task %s: no vote cast in the web page to adopt: %s", task.id, exc)
            return False
        return True

    def _refuse(self, task: TaskOut, reason: str) -> None:
        log.warning("refusing task %s: %s", task.id, reason)
        self._notify(task, f"refused: {reason}")
        reason = reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 1] + "…"
        self._post_ignoring_gone(task, lambda: self.transport.post_refusal(task.id, reason))

    def _within_budget(self, task: TaskOut) -> bool:
        """Check the task against its dataset's privacy budget (:class:`BudgetGuard`): refuse it when it would
        pass the budget; else charge the round on disk and tell the hub, both before training. False when the
        task must not run (refused, or gone by the time the charge reached the hub)."""
        try:
            plan = RunPlan.of(task.spec)
        except FLError:
            return True  # _execute refuses a spec the node cannot resolve, with the reason
        admission = self.budget.admit(task, plan)
        if admission.refusal is not None:
            self._refuse(task, admission.refusal)
            return False
        charge = admission.charge
        if charge is None:
            return True
        return self._post_ignoring_gone(task, lambda: self.transport.post_privacy_charge(
            task.id, charge.noise_multiplier, charge.sampling_rate, charge.steps))

    def _execute(self, task: TaskOut) -> None:
        faults.point(f"node.{task.kind.value}")
        plan = RunPlan.of(task.spec)
        algorithm, hp = plan.algorithm, plan.hp
        if task.kind == TaskKind.stats:
            self._send_stats(task)
            return
        split = self._split(task)
        if task.kind == TaskKind.init:
            started = time.perf_counter()
            update = algorithm.client_init(hp, split.train, task.seed)
            payload = self._encode(update, time.perf_counter() - started)
            self._notify(task, "done")
            self._upload(task, payload)
        elif task.kind == TaskKind.fit:
            params, server_control = scaffold.split_broadcast(self._fetch_params(task))
            started = time.perf_counter()
            evaluation = self._evaluate(algorithm, hp, params, split) if task.evaluate_first else None
            if plan.uses_scaffold:
                update, keep_control = self._scaffold_update(
                    task, algorithm, hp, params, server_control, split
                )
            else:
                update, keep_control = plan.local_update(params, split.train, task.seed), None
            update = self._privatised(plan, task, params, update)
            if plan.secure:
                self._secure_upload(task, params, update, time.perf_counter() - started, evaluation)
                return
            payload = self._encode(update, time.perf_counter() - started, evaluation)
            self._notify(task, "done")
            if self._upload(task, payload) and keep_control is not None:
                keep_control()
        else:
            params, _ = scaffold.split_broadcast(self._fetch_params(task))
            result = self._evaluate(algorithm, hp, params, split)
            self._notify(task, "done")
            self._post_ignoring_gone(task, lambda: self.transport.post_result(task.id, result))

    def _privatised(self, plan: RunPlan, task: TaskOut, params: Params, update: Update) -> Update:
        """With local DP noise, the update clipped and noised before it leaves the node (seeded per task);
        as is otherwise (with central noise the hub clips and noises)."""
        privacy = plan.privacy
        if privacy is None or privacy.client_std() == 0:
            return update
        seed = privacy.client_seed(task.seed, f"{self.policy.org}/{task.dataset}")
        return replace(update, tensors=privacy.privatise_update(params, update.tensors, seed))

    def _secure_upload(self, task: TaskOut, params: Params, update: Update, compute_s: float,
                       evaluation: TaskResult | None) -> None:
        """Under secure aggregation: the update's metrics in clear (no tensors), then its delta masked
        through the SecAgg stages (:mod:`consortium.node.secagg`)."""
        delta = secagg.delta_of(params, update.tensors)
        payload = self._encode(replace(update, tensors={}), compute_s, evaluation)
        if self._upload(task, payload, wait=0.0):
            outcome = secagg.SecAggSession(self.transport, task, self.poll_wait, self.secagg_halt_before).run(delta)
            self._notify(task, outcome)

    def _upload(self, task: TaskOut, payload: bytes, wait: float | None = None) -> bool:
        """Send an update and keep the next task if the hub's answer brought one (one request per round;
        ``wait`` 0: none, the node has more to do for this task first).

        True when the hub holds the update (see :meth:`_post_ignoring_gone`).
        """
        held = self._held_params()
        answers: list[tuple[TaskOut, Params | None] | None] = []
        recorded = self._post_ignoring_gone(task, lambda: answers.append(
            self.transport.post_update(task.id, payload, wait=self.poll_wait if wait is None else wait, have=held)
        ))
        self._next = answers[0] if answers else None
        return recorded

    def _held_params(self) -> str | None:
        return self._params[0] if self._params else None

    def _scaffold_update(
        self, task: TaskOut, algorithm, hp, params: Params, server_control: Params | None, split: Split
    ) -> tuple[Update, Callable[[], None]]:
        """A SCAFFOLD local update from this node's own ``c_i``, and how to keep ``c_i + delta_c`` once the
        hub has accepted the update (an update the round no longer wants must not move ``c_i``)."""
        if server_control is None:
            raise FLError("the task's params carry no server control variate, which SCAFFOLD needs")
        key = ControlKey(task.project_id, task.spec_hash, task.run_id, task.dataset)
        own = self.controls.load(key, task.round)
        if own is None:
            own = scaffold.zero_control(params)
        controls = scaffold.Controls(server_control, own)
        update = algorithm.local_update(hp, params, split.train, task.seed, controls=controls)
        after = scaffold.advanced(own, scaffold.split_deltas(update.tensors)[1])
        return update, lambda: self.controls.save(key, task.round, own, after)

    @staticmethod
    def _evaluate(algorithm, hp, params: Params, split: Split) -> TaskResult:
        """Metrics of ``params`` on the validation split (the training split when there is none)."""
        started = time.perf_counter()
        data = split.validation
        if isinstance(data, LocalData) and not len(data):
            data = split.train
        evaluation = algorithm.evaluate(hp, params, data)
        with _unsendable("evaluation"):
            return TaskResult(num_examples=evaluation.num_examples, metrics=evaluation.metrics,
                              compute_s=time.perf_counter() - started)

    @staticmethod
    def _encode(update, compute_s: float, evaluation: TaskResult | None = None) -> bytes:
        with _unsendable("update"):
            meta = UpdateMeta(num_examples=update.num_examples, metrics=update.metrics, compute_s=compute_s,
                              evaluation=evaluation)
        return encode_update(update.tensors, meta)

    def _send_stats(self, task: TaskOut) -> None:
        """The statistics of this node's training rows for the spec's preprocessing (counts, sums, sums of
        squares, minima, maxima, category counts: docs/privacy.md), uploaded as float64 tensors."""
        spec = task.spec.preprocessing
        if spec is None:
            raise FLError("a stats task for a project without preprocessing")
        started = time.perf_counter()
        train = self._split(task, raw=True).train
        names = feature_names(self.registry.get(task.dataset).card.schema_)
        labels = {names.index(n): texts for n, texts in self.registry.category_labels(task.dataset).items()}
        layout = preprocessing.layout(spec, names)
        stats = preprocessing.column_stats(train.x, layout, spec.max_categories, labels)
        payload = self._encode(Update(preprocessing.to_tensors(stats), stats.rows), time.perf_counter() - started)
        self._notify(task, "done")
        self._upload(task, payload)

    def _split(self, task: TaskOut, raw: bool = False) -> Split:
        """The task's train and validation rows, transformed by the run's preprocessing unless ``raw``."""
        if f"{self.policy.org}/{task.dataset}" in task.spec.environments:
            environment = self.environments.load_local(task.dataset)
            return Split(environment, environment)
        fitted = None if raw else task.preprocessing
        if not raw and task.spec.preprocessing is not None and fitted is None:
            raise FLError("the task carries no fitted preprocessing, which its spec asks for")
        transform_key = fitted.model_dump_json() if fitted is not None else ""
        key = (task.dataset, task.spec.seed, task.spec.validation_fraction, transform_key)
        if key not in self._splits:
            imputes = task.spec.preprocessing is not None and task.spec.preprocessing.impute is not None
            data = self.registry.load_local(task.dataset, allow_missing=imputes)
            seed = derive_seed(task.spec.seed, "split", f"{self.policy.org}/{task.dataset}")
            split = split_local(data, task.spec.validation_fraction, seed)
            if fitted is not None:
                split = Split(transform_data(fitted, split.train), transform_data(fitted, split.validation))
            self._splits[key] = split
        return self._splits[key]

    def _fetch_params(self, task: TaskOut) -> Params:
        if self._params is not None and self._params[0] == task.params_sha256:
            return self._params[1]
        payload = self.transport.task_params(task.id)
        if hashlib.sha256(payload).hexdigest() != task.params_sha256:
            raise FLError(f"params of task {task.id} do not match the announced SHA-256")
        params = decode_tensors(payload)
        self._params = (task.params_sha256, params)
        return params

    def _accept_params(self, task: TaskOut, params: Params) -> None:
        """Keep params delivered with the task if they hash (in canonical safetensors form) as announced."""
        if hashlib.sha256(encode_tensors(params)).hexdigest() == task.params_sha256:
            self._params = (task.params_sha256, params)

    def _notify(self, task: TaskOut, outcome: str) -> None:
        if self.on_task is not None:
            self.on_task(task, outcome)

    def _post_ignoring_gone(self, task: TaskOut, post: Callable[[], None]) -> bool:
        """Send a result; a 409/410 means the round moved on (e.g. the hub restarted), which is fine.

        True when the hub holds the result: it accepted it now, or (409) it already had it from an earlier
        attempt of this node; False when the task is gone (410: dropped, cancelled or refused). A gone task is
        never run again, nor any task of a run the 410 says ended, should the hub offer one.
        """
        from consortium.client import HubError

        try:
            post()
        except HubError as exc:
            if exc.status_code in (409, 410):
                log.info("result not needed any more: %s", exc.detail)
                if exc.status_code == 410:
                    _remember(self._gone_tasks, task.id, exc.detail)
                    if exc.fields.get("run_id") == task.run_id and exc.fields.get("run_status"):
                        _remember(self._ended_runs, task.run_id, exc.detail)
                return exc.status_code == 409
            raise
        return True


def _transport_error(exc: Exception) -> bool:
    """Whether ``exc`` is about talking to the hub (the retry loop's business), not about the task."""
    import httpx

    from consortium.client import HubError

    return isinstance(exc, (HubError, httpx.HTTPError, ConnectionError, TimeoutError))


def _remember(memory: dict[int, str], key: int, why: str) -> None:
    memory[key] = why
    while len(memory) > FORGET_AFTER:
        del memory[next(iter(memory))]
