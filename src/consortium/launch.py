"""Starting real hub and node processes on this machine (demo, benchmarks, end-to-end tests)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from consortium.client import HubClient
from consortium.crypto import OrgIdentity, generate_org_key, load_org_identity
from consortium.protocol import EnrolRequest
from consortium.tls import tls_context


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONSORTIUM_TORCH_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Process:
    """A child process with its log file; ``stop`` is graceful (SIGTERM), ``kill`` is SIGKILL."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._close()

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait()
        self._close()

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(name: str, args: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    popen = subprocess.Popen(
        [sys.executable, "-m", "consortium", *args],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**child_env(), **(env or {})},
        start_new_session=True,
    )
    return Process(name, popen, log_path, log)


@dataclass(frozen=True)
class HubTLS:
    """What an HTTPS hub serves (its certificate chain and key, PEM) and the CA bundle its clients trust."""

    cert: Path
    key: Path
    ca_file: Path


@dataclass
class HubProcess(Process):
    url: str = ""
    admin_token: str = ""
    data_dir: Path = Path()
    db_url: str | None = None
    port: int = 0
    tls: HubTLS | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def ca_file(self) -> Path | None:
        """The CA bundle a client of this hub trusts (None: plain HTTP)."""
        return self.tls.ca_file if self.tls else None

    def client(self) -> HubClient:
        return HubClient(self.url, token=self.admin_token, ca_file=self.ca_file)


def start_hub(
    data_dir: Path,
    *,
    db_url: str | None = None,
    port: int | None = None,
    admin_token: str | None = None,
    max_upload_mb: float | None = None,
    startup_timeout: float = 60.0,
    auth_failure_limit: int | None = None,
    auth_failure_window_s: float | None = None,
    extra_args: tuple[str, ...] = (),
    tls: HubTLS | None = None,
    env: Mapping[str, str] | None = None,
) -> HubProcess:
    """Start ``consortium hub`` as a child process and wait until it answers /api/health (``extra_args``: more
    ``consortium hub`` options, e.g. ``("--checkpoint-interval", "0.5")``; ``tls``: serve HTTPS; ``env``: more
    environment variables, e.g. a kill point of :mod:`consortium.faults`)."""
    port = port or free_port()
    admin_token = admin_token or "csm_" + secrets.token_urlsafe(32)
    data_dir = Path(data_dir)
    args = ["hub", "--port", str(port), "--host", "127.0.0.1", "--data-dir", str(data_dir),
            "--admin-token", admin_token]
    if db_url:
        args += ["--db", db_url]
    if max_upload_mb:
        args += ["--max-upload-mb", str(max_upload_mb)]
    if auth_failure_limit:
        args += ["--auth-failure-limit", str(auth_failure_limit)]
    if auth_failure_window_s:
        args += ["--auth-failure-window", str(auth_failure_window_s)]
    if tls:
        args += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    args += list(extra_args)
    proc = _spawn("hub", args, data_dir / "hub.log", env)
    scheme = "https" if tls else "http"
    hub = HubProcess(proc.name, proc.popen, proc.log_path, proc._log, url=f"{scheme}://127.0.0.1:{port}",
                     admin_token=admin_token, data_dir=data_dir, db_url=db_url, port=port, tls=tls,
                     extra_args=tuple(extra_args))
    wait_healthy(hub, startup_timeout)
    return hub


def wait_healthy(hub: HubProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    verify = tls_context(hub.ca_file)
    while time.monotonic() < deadline:
        if not hub.alive():
            raise RuntimeError(f"hub exited during start-up:\n{hub.log_tail()}")
        try:
            if httpx.get(f"{hub.url}/api/health", timeout=2.0, trust_env=False, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    hub.kill()
    raise RuntimeError(f"hub did not become healthy within {timeout}s:\n{hub.log_tail()}")


def restart_hub(hub: HubProcess, startup_timeout: float = 60.0, env: Mapping[str, str] | None = None) -> HubProcess:
    """Start a hub again on the same port, database, data directory and options (``env``: as for
    :func:`start_hub`)."""
    return start_hub(hub.data_dir, db_url=hub.db_url, port=hub.port, admin_token=hub.admin_token,
                     startup_timeout=startup_timeout, tls=hub.tls, extra_args=hub.extra_args, env=env)


def haproxy_config(port: int, backends: Sequence[int], host: str = "127.0.0.1") -> str:
    """An HAProxy configuration spreading requests round-robin over hub replicas listening on ``host`` at
    ``backends``, answering on ``port``: health checks on ``/api/health`` every 500 ms (a dead replica is out
    after two misses), a request that could not reach a replica sent to another, and timeouts above the long
    poll's 60 s (docs/deploy.md shows it with TLS)."""
    servers = "\n".join(f"    server replica{i} {host}:{p} check inter 500 fall 2 rise 1"
                         for i, p in enumerate(backends, 1))
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 90s
    timeout server 90s
    retries 3
    option redispatch
    retry-on conn-failure

frontend hub
    bind {host}:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /api/health
    http-check expect status 200
{servers}
"""


def start_haproxy(workdir: Path, backends: Sequence[int], port: int | None = None,
                  startup_timeout: float = 20.0) -> tuple[Process, str]:
    """Start Debian's ``haproxy`` in the foreground over hub replicas (:func:`haproxy_config`); the process
    and the URL it answers on, once a health check through it passed."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = port or free_port()
    config = Path(workdir) / "haproxy.cfg"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(haproxy_config(port, backends))
    log_path = config.with_name("haproxy.log")
    log = open(log_path, "ab")
    popen = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    proxy, url = Process("haproxy", popen, log_path, log), f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if not proxy.alive():
            raise RuntimeError(f"haproxy exited during start-up:\n{proxy.log_tail()}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2.0, trust_env=False).status_code == 200:
                return proxy, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proxy.kill()
    raise RuntimeError(f"haproxy did not pass a health check within {startup_timeout}s:\n{proxy.log_tail()}")


def start_node(hub_url: str, org_dir: Path, *, poll_wait: float = 25.0, log_path: Path | None = None,
               ca_file: Path | None = None, env: Mapping[str, str] | None = None) -> Process:
    """Start ``consortium node`` for an enrolled org directory (``ca_file``: the CA an https hub's certificate
    must chain to; ``env``: more environment variables)."""
    org_dir = Path(org_dir)
    args = ["node", "--hub", hub_url, "--org-dir", str(org_dir), "--poll-wait", str(poll_wait)]
    if ca_file:
        args += ["--ca-file", str(ca_file)]
    return _spawn(f"node-{org_dir.name}", args, log_path or org_dir / "node.log", env)


def provision_org(
    admin: HubClient, hub_url: str, org_dir: Path, name: str, voters: Mapping[str, Path] | None = None,
    ca_file: Path | None = None,
) -> OrgIdentity:
    """Make an org key, propose the org on the hub, enrol its node with a one-time token, and have each of
    ``voters`` (admitted members: org name -> org directory) vote yes to admit it. The consortium's first
    org is admitted on proposal (nobody is there to vote)."""
    from consortium.node.actions import cast_vote

    identity = generate_org_key(Path(org_dir), name)
    admin.create_org(name)
    token = admin.enrolment_token(name)
    with HubClient(hub_url, ca_file=ca_file) as anonymous:
        anonymous.enrol(EnrolRequest(org=name, token=token, public_key=identity.public_key_b64))
    pending = [p for p in admin.proposals(status="open", kind="admit_org") if p["subject"]["org"] == name]
    for proposal in pending:
        for voter, voter_dir in (voters or {}).items():
            with HubClient(hub_url, identity=load_org_identity(voter_dir), ca_file=ca_file) as client:
                if client.proposal(proposal["id"])["status"] != "open":
                    break  # decided: the votes cast so far were enough
                cast_vote(client, voter_dir, proposal["id"], "yes", f"{voter} admits {name}")
    return identity
