"""Lightweight node workers for `consortium bench scale`: many orgs' nodes in one asyncio process.

Each worker speaks the node protocol for real (``node/agent.py`` over ``client.HubClient``): long polls
``GET /api/node/tasks/next`` with ``have`` and ``terms`` (a task's terms come once per run), takes params
delivered as safetensors with the task, fetches them with ``GET /api/node/tasks/{id}/params`` when it was
sent the task alone, uploads a safetensors update with an ``UpdateMeta`` header and ``wait``/``have``/``terms``
so the answer brings its next task, posts evaluate results as JSON;
every request is signed with the org's Ed25519 key (``crypto.SignedAuth``). Only the local training is cheap:
the update is the received params plus a small perturbation seeded by the task's seed (simulated work may be
added: ``compute_ms`` for every task plus up to ``compute_spread_ms`` drawn per task, seeded, so that nodes
finish one after another as real ones do), so a thousand nodes fit on a small machine.

Run as ``python -m consortium.bench.scale_worker CONFIG.json OUT.json``; SIGTERM ends it and writes what it
saw (every delivery with its wall-clock time, every failed request) to ``OUT.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from consortium.config import freeze_startup_heap
from consortium.codec import decode_tensors, encode_update
from consortium.crypto import OrgIdentity, SignedAuth, load_org_identity
from consortium.protocol import SAFETENSORS_MEDIA_TYPE, TaskOut, TaskResult, UpdateMeta
from consortium.task_terms import TermsCache, decode_delivery
from consortium.tls import tls_context

OK_STATUSES = frozenset({200, 202, 204})


@dataclass
class WorkerLog:
    """What one worker process saw: deliveries (one dict per task received) and failed requests."""

    deliveries: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0


@dataclass
class _Node:
    identity: OrgIdentity
    auth: SignedAuth
    params: tuple[str, dict[str, torch.Tensor]] | None = None
    terms: TermsCache = field(default_factory=TermsCache)


class _Failed(Exception):
    pass


async def _call(client: httpx.AsyncClient, node: _Node, log: WorkerLog, method: str, path: str,
                **kwargs: Any) -> httpx.Response:
    log.requests += 1
    try:
        response = await client.request(method, path, auth=node.auth, **kwargs)
    except httpx.HTTPError as exc:
        log.failures.append(f"{node.identity.org} {method} {path}: {type(exc).__name__}: {exc}")
        raise _Failed from exc
    if response.status_code not in OK_STATUSES:
        log.failures.append(f"{node.identity.org} {method} {path}: {response.status_code} {response.text[:200]}")
        raise _Failed
    return response


def _holds(node: _Node) -> dict[str, str]:
    """The query naming the params and task terms the node holds (the hub sends neither again)."""
    return ({"have": node.params[0]} if node.params else {}) | node.terms.query()


def simulated_compute_ms(cfg: dict[str, Any], org: str, seed: int) -> float:
    """The simulated local compute of one task: ``compute_ms`` plus a uniform draw in
    [0, ``compute_spread_ms``) seeded by the org and the task's seed (the same in every repetition)."""
    spread = cfg.get("compute_spread_ms", 0.0)
    draw = random.Random(f"{org}:{seed}").random() if spread else 0.0
    return cfg["compute_ms"] + spread * draw


def perturbed(params: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The stand-in for local training: every tensor moved by a small step seeded by the task's seed."""
    generator = torch.Generator().manual_seed(seed % (2**63))
    return {name: (tensor + 1e-3 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)).contiguous()
            for name, tensor in params.items()}


async def _params(client: httpx.AsyncClient, node: _Node, log: WorkerLog, task: TaskOut,
                  delivered: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    if delivered is not None:
        node.params = (task.params_sha256, delivered)
    elif node.params is None or node.params[0] != task.params_sha256:
        response = await _call(client, node, log, "GET", f"/api/node/tasks/{task.id}/params")
        if hashlib.sha256(response.content).hexdigest() != task.params_sha256:
            log.failures.append(f"{node.identity.org}: params of task {task.id} do not match their SHA-256")
            raise _Failed
        node.params = (task.params_sha256, decode_tensors(response.content))
    return node.params[1]


async def _work(client: httpx.AsyncClient, node: _Node, log: WorkerLog, task: TaskOut,
                delivered: dict[str, torch.Tensor] | None, cfg: dict[str, Any]) -> httpx.Response | None:
    """Answer one task; the response of an update upload that waited for the next task (None otherwise)."""
    params = await _params(client, node, log, task, delivered)
    started = time.perf_counter()
    compute_ms = simulated_compute_ms(cfg, node.identity.org, task.seed)
    if compute_ms:
        await asyncio.sleep(compute_ms / 1000.0)
    evaluation = TaskResult(num_examples=1, metrics={"accuracy": 0.5, "loss": 1.0}, compute_s=0.0)
    if task.kind == "evaluate":
        evaluation = evaluation.model_copy(update={"compute_s": time.perf_counter() - started})
        await _call(client, node, log, "POST", f"/api/node/tasks/{task.id}/result", json=evaluation.model_dump())
        return None
    tensors = perturbed(params, task.seed)
    meta = UpdateMeta(num_examples=1, metrics={"loss": 1.0}, compute_s=time.perf_counter() - started,
                      evaluation=evaluation if task.evaluate_first else None)
    query = {"wait": cfg["poll_wait"], **_holds(node)}
    return await _call(client, node, log, "POST", f"/api/node/tasks/{task.id}/update",
                       content=encode_update(tensors, meta), params=query,
                       headers={"Content-Type": SAFETENSORS_MEDIA_TYPE}, timeout=cfg["poll_wait"] + 60.0)


async def node_loop(client: httpx.AsyncClient, node: _Node, log: WorkerLog, cfg: dict[str, Any]) -> None:
    """One org's node: long poll, answer, and take the next task from the upload's answer, until cancelled."""
    pending: httpx.Response | None = None
    while True:
        try:
            if pending is None or pending.status_code != 200:
                sent = time.perf_counter()
                pending = await _call(client, node, log, "GET", "/api/node/tasks/next",
                                      params={"wait": cfg["poll_wait"], **_holds(node)},
                                      timeout=cfg["poll_wait"] + 60.0)
                via = "poll"
            else:
                sent, via = None, "upload"
            if pending.status_code != 200:
                continue
            received = time.time()
            task, delivered = decode_delivery(pending.headers.get("content-type", ""), pending.content,
                                              node.terms)
            log.deliveries.append({
                "org": node.identity.org, "task": task.id, "run": task.run_id, "round": task.round,
                "kind": str(task.kind), "received": received, "via": via, "with_params": delivered is not None,
                "bytes": len(pending.content),
                "request_s": time.perf_counter() - sent if sent is not None else None})
            pending = await _work(client, node, log, task, delivered, cfg)
        except _Failed:
            pending = None
            await asyncio.sleep(0.5)


def _client(cfg: dict[str, Any]) -> httpx.AsyncClient:
    """A node's own keep-alive client, as each real node has (one shared pool of N connections would cost
    httpcore a scan of all of them per request)."""
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    transport = httpx.AsyncHTTPTransport(verify=tls_context(cfg.get("ca_file")), limits=limits,
                                         socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.AsyncClient(base_url=cfg["hub"], transport=transport, trust_env=False, timeout=60.0)


async def run_workers(cfg: dict[str, Any], log: WorkerLog) -> None:
    """Every org's node loop, each on its own client, until SIGTERM."""
    torch.set_num_threads(1)
    nodes = [_Node(identity, SignedAuth(identity)) for identity in map(load_org_identity, map(Path, cfg["org_dirs"]))]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    clients = [_client(cfg) for _ in nodes]
    try:
        tasks = [asyncio.create_task(node_loop(client, node, log, cfg)) for client, node in zip(clients, nodes)]
        print(f"ready {len(nodes)}", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)


def main(argv: list[str]) -> int:
    config_path, out_path = map(Path, argv)
    # httpcore tries ``import sniffio`` on every request; where sniffio is not installed that is a failed
    # import (a search of sys.path) each time. None in sys.modules makes it fail at once (asyncio is used).
    if importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    cfg = json.loads(config_path.read_text())
    log = WorkerLog()
    freeze_startup_heap()
    asyncio.run(run_workers(cfg, log))
    out_path.write_text(json.dumps({"deliveries": log.deliveries, "failures": log.failures,
                                    "requests": log.requests}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
