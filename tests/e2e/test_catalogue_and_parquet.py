"""Catalogue search and Parquet downloads end to end: a real hub process, the orgs' keys, the SDK and the
``consortium dataset search`` / ``download --format parquet`` CLI. A private dataset is found by its owner
only, a public one by anonymous callers too; the Parquet rendering holds the CSV's rows (the card's table
hash), carries its own SHA-256 and resumes with a range request."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from consortium.client import HubClient
from consortium.launch import child_env
from consortium.node import open_data
from consortium.node.registry import LocalRegistry
from consortium.open_data_wire import Datasheet
from consortium.scenario import ORGS
from consortium.tables import load_table

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NORTH, SOUTH, EAST = ORGS
SHEET = Datasheet.model_validate({key: f"{key} of the calligraphy share" for key in Datasheet.model_fields})


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in child_env().items() if k not in ("CONSORTIUM_TOKEN", "CONSORTIUM_HUB")}
    return subprocess.run([sys.executable, "-m", "consortium", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def refs(page: dict) -> set[str]:
    return {item["dataset"] for item in page["items"]}


def test_search_respects_rights_in_the_api_sdk_and_cli(cluster, tmp_path: Path) -> None:
    url, dirs = cluster.hub.url, cluster.consortium.org_dirs
    north, south, east = (HubClient(url, identity=cluster.consortium.org_client(o).identity) for o in ORGS)
    north.set_source_rights(f"{NORTH}/digits", visibility="private")
    east.set_source_rights(f"{EAST}/digits", visibility="public", download="everyone")
    open_data.publish(east, dirs[EAST], f"{EAST}/digits", "1", "CC-BY-4.0", SHEET, tmp_path / "work")

    assert refs(north.search_catalogue()) == {f"{o}/digits" for o in ORGS}
    assert refs(south.search_catalogue()) == {f"{SOUTH}/digits", f"{EAST}/digits"}
    anonymous = httpx.get(url + "/api/catalogue", params={"q": "digits"})
    assert anonymous.status_code == 200 and refs(anonymous.json()) == {f"{EAST}/digits"}
    assert refs(south.search_catalogue(owner=NORTH)) == set()  # private: not even by its owner's name
    assert refs(north.search_catalogue(open=True)) == {f"{EAST}/digits"}
    assert refs(north.search_catalogue(open=False, task="classification")) == {f"{NORTH}/digits",
                                                                              f"{SOUTH}/digits"}
    assert refs(north.search_catalogue("calligr", license="CC-BY-4.0")) == {f"{EAST}/digits"}
    found = north.search_catalogue(open=True)["items"][0]
    assert found["latest_version"] == "1" and found["bytes"] > 0 and found["task"] == "classification"
    bad = httpx.get(url + "/api/catalogue", params={"license": "No-Such-Licence"})
    assert bad.status_code == 422 and "No-Such-Licence" in bad.json()["detail"]
    assert httpx.get(url + "/api/catalogue", params={"min_rows": 5, "max_rows": 1}).status_code == 422

    listed = cli("dataset", "search", "digits", "--hub", url, "--org-dir", str(dirs[SOUTH]), "--json")
    assert listed.returncode == 0, listed.stderr
    assert refs(json.loads(listed.stdout)) == {f"{SOUTH}/digits", f"{EAST}/digits"}
    public = cli("dataset", "search", "--hub", url, "--open", "--sort", "bytes")
    assert public.returncode == 0 and f"{EAST}/digits" in public.stdout and f"{SOUTH}/digits" not in public.stdout
    wrong = cli("dataset", "search", "--hub", url, "--task", "poetry")
    assert wrong.returncode != 0 and "task" in wrong.stderr


def test_parquet_download_holds_the_csv_rows_and_resumes(cluster, tmp_path: Path) -> None:
    url, dirs = cluster.hub.url, cluster.consortium.org_dirs
    with cluster.consortium.org_client(NORTH) as north:
        north.set_source_rights(f"{NORTH}/digits", download=[SOUTH])
        open_data.publish(north, dirs[NORTH], f"{NORTH}/digits", "1.0", "CC-BY-4.0", SHEET, tmp_path / "work")
    csv_out, parquet_out = tmp_path / "digits.csv", tmp_path / "digits.parquet"
    for out, fmt in ((csv_out, "csv"), (parquet_out, "parquet")):
        got = cli("dataset", "download", f"{NORTH}/digits@1.0", "--hub", url, "--org-dir", str(dirs[SOUTH]),
                  "--out", str(out), "--accept-licence", "--format", fmt)
        assert got.returncode == 0, got.stderr + got.stdout
    card = LocalRegistry(dirs[NORTH]).get("digits").card
    assert load_table(parquet_out, "label").sha256 == card.sha256 == load_table(csv_out, "label").sha256
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_out), pd.read_csv(csv_out), check_dtype=False)

    south = HubClient(url, identity=cluster.consortium.org_client(SOUTH).identity)
    file_path = f"/api/datasets/{NORTH}/digits/versions/1.0/file"
    whole = south.http.get(file_path, params={"format": "parquet"})
    digest = whole.headers["x-content-sha256"]
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == digest
    assert whole.content == parquet_out.read_bytes() and whole.headers["content-type"].endswith("parquet")
    ranged = south.http.get(file_path, params={"format": "parquet"}, headers={"Range": "bytes=10-99"})
    assert ranged.status_code == 206 and ranged.content == whole.content[10:100]
    assert ranged.headers["x-content-sha256"] == digest
    resumed = tmp_path / "resumed.parquet"
    resumed.with_name("resumed.parquet.part").write_bytes(whole.content[: len(whole.content) // 2])
    record = open_data.download(south, f"{NORTH}/digits", "1.0", resumed, file_format="parquet")
    assert resumed.read_bytes() == whole.content and record["sha256"] == digest
    wrong = tmp_path / "wrong.parquet"
    bad = bytearray(whole.content[: len(whole.content) // 2])
    bad[5] ^= 1
    wrong.with_name("wrong.parquet.part").write_bytes(bytes(bad))
    with pytest.raises(open_data.DownloadError, match="not kept"):
        open_data.download(south, f"{NORTH}/digits", "1.0", wrong, file_format="parquet")
    assert not wrong.exists() and not wrong.with_name("wrong.parquet.part").exists()
    east = HubClient(url, identity=cluster.consortium.org_client(EAST).identity)
    assert east.http.get(file_path, params={"format": "parquet"}).status_code == 404
    assert south.http.get(file_path, params={"format": "xml"}).status_code == 422
