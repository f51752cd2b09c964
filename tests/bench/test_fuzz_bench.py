"""`consortium bench fuzz --replicas 2`: Schemathesis through HAProxy in front of two hub replicas on a scratch
PostgreSQL database (a seeded sample; the full run is 10,000 calls), and the refusals of its options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.cli import app

CALLS = 150


@pytest.mark.e2e
@pytest.mark.postgres
def test_two_replicas_behind_the_proxy_answer_generated_requests_without_a_5xx(
        tmp_path: Path, pg_admin_url: str, haproxy: None) -> None:
    out, markdown = tmp_path / "fuzz.json", tmp_path / "BENCHMARKS.md"
    result = CliRunner().invoke(app, ["bench", "fuzz", "--calls", str(CALLS), "--replicas", "2",
                                      "--json", str(out), "--markdown", str(markdown)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["calls"] == CALLS and report["server_errors"] == 0 and report["violations"] == 0
    assert sum(kind["transport_errors"] for kind in report["kinds"].values()) == 0
    assert report["kinds"]["org"]["statuses"].get("200", 0) > 0  # the signed caller got through the proxy
    section = markdown.read_text()
    assert "<!-- bench:fuzz-replicas:begin -->" in section and "2 replicas behind HAProxy" in section
    # The command as it runs again: the scratch database was the command's own, not an option given to it.
    assert f"`consortium bench fuzz --calls {CALLS} --seed 0 --replicas 2`" in section


def test_replicas_on_sqlite_are_refused() -> None:
    refused = CliRunner().invoke(app, ["bench", "fuzz", "--calls", "1", "--replicas", "2",
                                       "--db", "sqlite:///x.db"])
    assert refused.exit_code == 2
    assert "--replicas 2: hub replicas need PostgreSQL" in " ".join(refused.output.split())


def test_a_given_database_url_is_reported_without_its_password() -> None:
    from consortium.cli.bench import _shown_url

    assert _shown_url("postgresql+psycopg://fuzz:secret@127.0.0.1:5432/test") == (
        "postgresql+psycopg://fuzz:***@127.0.0.1:5432/test")
    assert _shown_url("postgresql://127.0.0.1:5432/test") == "postgresql://127.0.0.1:5432/test"
