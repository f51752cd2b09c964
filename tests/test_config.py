"""Process settings: a CLI flag wins over its environment variable, which wins over the default; a missing
or out-of-range value is refused naming the flag and the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.config import NodeSettings

NODE_VARIABLES = ("CONSORTIUM_HUB", "CONSORTIUM_ORG_DIR", "CONSORTIUM_POLL_WAIT", "CONSORTIUM_ENROL_TOKEN",
                  "CONSORTIUM_TORCH_THREADS")
HUB, ORG = "http://hub:1", Path("org")


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in NODE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_node_settings_come_from_flags_then_environment_then_defaults(environ, tmp_path: Path) -> None:
    settings = NodeSettings.from_args("http://hub:1", tmp_path)
    assert settings == NodeSettings("http://hub:1", tmp_path.resolve(), 25.0, None, 10.0, 1)

    environ.setenv("CONSORTIUM_HUB", "http://env-hub:2")
    environ.setenv("CONSORTIUM_ORG_DIR", str(tmp_path / "env-org"))
    environ.setenv("CONSORTIUM_POLL_WAIT", "7.5")
    environ.setenv("CONSORTIUM_ENROL_TOKEN", "csm_enrol")
    environ.setenv("CONSORTIUM_TORCH_THREADS", "3")
    from_env = NodeSettings.from_args()
    assert from_env == NodeSettings("http://env-hub:2", (tmp_path / "env-org").resolve(), 7.5, "csm_enrol", 10.0, 3)

    flags = NodeSettings.from_args("http://hub:1", tmp_path, 0.0, "csm_flag")
    assert (flags.hub_url, flags.org_dir, flags.poll_wait_s, flags.enrol_token) == (
        "http://hub:1", tmp_path.resolve(), 0.0, "csm_flag")
    with pytest.raises(AttributeError):
        flags.hub_url = "http://elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variables", "args", "message"),
    [
        ({}, (None, Path("org")), r"--hub \(or CONSORTIUM_HUB\) is required"),
        ({}, ("http://hub:1", None), r"--org-dir \(or CONSORTIUM_ORG_DIR\) is required"),
        ({}, (HUB, ORG, 61.0), r"--poll-wait \(or CONSORTIUM_POLL_WAIT\) must be within 0..60"),
        ({"CONSORTIUM_POLL_WAIT": "-1"}, (HUB, ORG), "must be within 0..60 s, got -1"),
        ({"CONSORTIUM_POLL_WAIT": "soon"}, (HUB, ORG), "CONSORTIUM_POLL_WAIT must be a number"),
        ({"CONSORTIUM_TORCH_THREADS": "0"}, (HUB, ORG), "CONSORTIUM_TORCH_THREADS must be at least 1"),
    ],
)
def test_node_settings_refuse_a_missing_or_bad_value(environ, variables, args, message: str) -> None:
    for name, value in variables.items():
        environ.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        NodeSettings.from_args(*args)


def test_the_node_command_reports_a_bad_setting_without_a_traceback(environ, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["node", "--org-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "CONSORTIUM_HUB" in result.output and "Traceback" not in result.output
