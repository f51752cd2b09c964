"""Process settings: a CLI flag wins over its environment variable, which wins over the default; a missing
or out-of-range value is refused naming the flag and the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from consortium.cli import app
from consortium.config import HubSettings, NodeSettings

NODE_VARIABLES = ("CONSORTIUM_HUB", "CONSORTIUM_ORG_DIR", "CONSORTIUM_POLL_WAIT", "CONSORTIUM_ENROL_TOKEN",
                  "CONSORTIUM_TORCH_THREADS", "CONSORTIUM_CA_FILE", "CONSORTIUM_TLS_CERT", "CONSORTIUM_TLS_KEY",
                  "CONSORTIUM_DB", "CONSORTIUM_REPLICAS", "CONSORTIUM_LEASE_S", "CONSORTIUM_BLOB_DIR")
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


def test_the_node_ca_file_comes_from_the_flag_then_the_environment(environ, private_pki, tmp_path: Path) -> None:
    assert NodeSettings.from_args(HUB, tmp_path).ca_file is None
    environ.setenv("CONSORTIUM_CA_FILE", str(private_pki.other_ca))
    assert NodeSettings.from_args(HUB, tmp_path).ca_file == private_pki.other_ca.resolve()
    assert NodeSettings.from_args(HUB, tmp_path, ca_file=private_pki.ca).ca_file == private_pki.ca.resolve()
    environ.setenv("CONSORTIUM_CA_FILE", str(tmp_path / "gone.pem"))
    with pytest.raises(ValueError, match=r"--ca-file \(or CONSORTIUM_CA_FILE\): no such file .*gone.pem"):
        NodeSettings.from_args(HUB, tmp_path)


def test_the_hub_serves_https_only_with_both_certificate_and_key(environ, private_pki, tmp_path: Path) -> None:
    plain = HubSettings.from_args(None, tmp_path)
    assert (plain.tls_cert, plain.tls_key) == (None, None)
    both = HubSettings.from_args(None, tmp_path, tls_cert=private_pki.cert, tls_key=private_pki.key)
    assert (both.tls_cert, both.tls_key) == (private_pki.cert.resolve(), private_pki.key.resolve())
    environ.setenv("CONSORTIUM_TLS_CERT", str(private_pki.cert))
    environ.setenv("CONSORTIUM_TLS_KEY", str(private_pki.key))
    assert HubSettings.from_args(None, tmp_path) == both
    environ.delenv("CONSORTIUM_TLS_KEY")
    with pytest.raises(ValueError, match=r"--tls-cert needs --tls-key \(or CONSORTIUM_TLS_KEY\)"):
        HubSettings.from_args(None, tmp_path)
    environ.delenv("CONSORTIUM_TLS_CERT")
    with pytest.raises(ValueError, match=r"--tls-key needs --tls-cert \(or CONSORTIUM_TLS_CERT\)"):
        HubSettings.from_args(None, tmp_path, tls_key=private_pki.key)
    with pytest.raises(ValueError, match=r"--tls-cert \(or CONSORTIUM_TLS_CERT\): no such file"):
        HubSettings.from_args(None, tmp_path, tls_cert=tmp_path / "none.pem", tls_key=private_pki.key)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{cert}"], "--tls-cert needs --tls-key"),
        (["--tls-key", "{key}"], "--tls-key needs --tls-cert"),
        (["--tls-cert", "{cert}", "--tls-key", "{other_key}"], "do not load as a PEM certificate chain and its"),
    ],
)
def test_the_hub_command_refuses_a_bad_tls_pair_before_starting(environ, private_pki, tmp_path: Path,
                                                                 flags: list[str], message: str) -> None:
    files = {"cert": private_pki.cert, "key": private_pki.key, "other_key": private_pki.other_host_key}
    args = ["hub", "--data-dir", str(tmp_path), *(flag.format(**files) for flag in flags)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "hub.db").exists()


def test_a_command_with_a_ca_file_that_is_no_ca_names_the_option(environ, private_pki) -> None:
    result = CliRunner().invoke(app, ["user", "list", "--hub", "https://127.0.0.1:9", "--token", "csm_x",
                                      "--ca-file", str(private_pki.key)])
    assert result.exit_code == 2
    assert "--ca-file (or CONSORTIUM_CA_FILE): CA file" in " ".join(result.output.split())


def test_replica_settings_come_from_flags_then_environment(environ, tmp_path: Path) -> None:
    pg = "postgresql+psycopg://u@db/consortium"
    single = HubSettings.from_args(pg, tmp_path)
    assert (single.replica, single.lease_s, single.blobs) == (False, 10.0, tmp_path.resolve() / "blobs")
    flagged = HubSettings.from_args(pg, tmp_path, replica=True, lease_s=3.0, blob_dir=tmp_path / "shared")
    assert (flagged.replica, flagged.lease_s, flagged.blobs) == (True, 3.0, (tmp_path / "shared").resolve())
    environ.setenv("CONSORTIUM_REPLICAS", "1")
    environ.setenv("CONSORTIUM_LEASE_S", "4.5")
    environ.setenv("CONSORTIUM_BLOB_DIR", str(tmp_path / "nfs"))
    from_env = HubSettings.from_args(pg, tmp_path)
    assert (from_env.replica, from_env.lease_s, from_env.blobs) == (True, 4.5, (tmp_path / "nfs").resolve())


def test_the_hub_command_refuses_replicas_on_sqlite(environ, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["hub", "--data-dir", str(tmp_path), "--replica"])
    assert result.exit_code == 2, result.output
    assert "--replica (or CONSORTIUM_REPLICAS=1) needs a PostgreSQL --db" in " ".join(result.output.split())
    assert not (tmp_path / "hub.db").exists()


def test_the_startup_heap_leaves_the_cyclic_collectors_sight() -> None:
    import gc

    from consortium.config import freeze_startup_heap

    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000
        assert gc.collect() >= 0  # a full collection still runs, over what was made since
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
