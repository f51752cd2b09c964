"""FastAPI's OpenTelemetry instrumentation is off unless the deployment asks for it: off, no request looks
for a tracer provider (a cost every node request would pay); ``CONSORTIUM_HUB_TELEMETRY=1`` switches it on."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace

from consortium.config import HubSettings
from consortium.hub.app import create_app


@pytest.mark.parametrize("variable, looked_up", [(None, False), ("0", False), ("1", True)])
def test_telemetry_is_off_unless_the_environment_asks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       variable: str | None, looked_up: bool) -> None:
    if variable is None:
        monkeypatch.delenv("CONSORTIUM_HUB_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("CONSORTIUM_HUB_TELEMETRY", variable)
    settings = HubSettings.from_args(None, tmp_path)
    assert settings.telemetry is looked_up
    calls = []
    real = trace.get_tracer_provider
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: calls.append(1) or real())
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/health").status_code == 200
    assert bool(calls) is looked_up
