"""The whole consortium over HTTPS with a private CA: a real hub serving TLS, real node processes and the CLI
trusting that CA with --ca-file (or CONSORTIUM_CA_FILE), and every client refusing a certificate from another
CA with a clear message instead of a traceback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.launch import HubTLS, start_hub, start_node
from consortium.scenario import ORGS, DigitsConsortium, digits_spec, propose_and_approve, provision_digits

pytestmark = pytest.mark.e2e

MEMBERS = ORGS[:2]


@pytest.fixture(scope="module")
def https_consortium(private_pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DigitsConsortium]:
    workdir = tmp_path_factory.mktemp("https")
    hub = start_hub(workdir / "hub", tls=HubTLS(private_pki.cert, private_pki.key, private_pki.ca))
    try:
        yield provision_digits(hub, workdir, MEMBERS)
    finally:
        hub.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, " ".join(result.output.split())


def test_nodes_and_the_cli_trusting_the_private_ca_complete_a_run(https_consortium, private_pki) -> None:
    hub = https_consortium.hub
    assert hub.url.startswith("https://") and f"hub serving {hub.url}" in hub.log_tail()
    nodes = [start_node(hub.url, https_consortium.org_dirs[org], poll_wait=5.0, ca_file=private_pki.ca)
             for org in MEMBERS]
    try:
        with hub.client() as admin:
            admin.wait_online(list(MEMBERS))
            project = propose_and_approve(https_consortium, digits_spec("https-digits", MEMBERS, rounds=2))
            run = admin.start_run(project["id"])
            deadline = time.monotonic() + 240
            while admin.run(run["id"])["status"] == "running" and time.monotonic() < deadline:
                admin.progress(run["id"], wait=5.0)
            progress = admin.progress(run["id"])
        logs = "\n".join(node.log_tail() for node in nodes)
        assert progress.run.status == "completed", logs
        assert [r.round for r in progress.rounds] == [1, 2]
        assert "TLS" not in logs and "certificate" not in logs
    finally:
        for node in nodes:
            node.stop()

    code, output = cli("ledger", "verify", "--hub", hub.url, "--token", hub.admin_token,
                       env={"CONSORTIUM_CA_FILE": str(private_pki.ca)})
    assert code == 0 and "ledger OK" in output, output
    code, output = cli("user", "list", "--hub", hub.url, "--token", hub.admin_token, "--ca-file", str(private_pki.ca))
    assert code == 0 and "admin" in output, output


@pytest.mark.parametrize("trust", ["other CA", "system store"])
def test_the_cli_refuses_a_hub_certificate_it_cannot_trust(https_consortium, private_pki, trust: str) -> None:
    hub = https_consortium.hub
    ca_args = ("--ca-file", str(private_pki.other_ca)) if trust == "other CA" else ()
    code, output = cli("ledger", "verify", "--hub", hub.url, "--token", hub.admin_token, *ca_args)
    assert code == 2, output
    assert f"the hub at {hub.url} presented a TLS certificate that failed verification" in output
    assert "unable to get local issuer certificate" in output and "--ca-file" in output
    assert "Traceback" not in output


def test_a_node_with_the_wrong_ca_stops_with_a_clear_message(https_consortium, private_pki, tmp_path: Path) -> None:
    hub = https_consortium.hub
    node = start_node(hub.url, https_consortium.org_dirs[MEMBERS[0]], poll_wait=1.0,
                      ca_file=private_pki.other_ca, log_path=tmp_path / "wrong-ca.log")
    try:
        assert node.popen.wait(timeout=120) == 2
    finally:
        node.kill()
    log = " ".join(node.log_tail().split())
    assert f"the hub at {hub.url} presented a TLS certificate that failed verification" in log
    assert "unable to get local issuer certificate" in log and "Traceback" not in log


def test_plain_http_to_the_https_port_fails_cleanly(https_consortium) -> None:
    hub = https_consortium.hub
    plain = f"http://127.0.0.1:{hub.port}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/api/health", timeout=10.0, trust_env=False)
    code, output = cli("user", "list", "--hub", plain, "--token", hub.admin_token)
    assert code == 2 and f"cannot reach the hub at {plain}" in output and "Traceback" not in output
    with hub.client() as admin:
        assert admin.health()["status"] == "ok"


def test_answers_over_https_carry_hsts_and_the_security_headers(https_consortium) -> None:
    from consortium.tls import tls_context

    hub = https_consortium.hub
    for path in ("/api/health", "/api/runs", "/login", "/static/web.css", "/nowhere"):
        response = httpx.get(f"{hub.url}{path}", verify=tls_context(hub.ca_file), trust_env=False, timeout=10.0)
        assert response.headers["strict-transport-security"] == "max-age=31536000", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
