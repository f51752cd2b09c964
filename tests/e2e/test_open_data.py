"""Open data end to end: a real hub, the orgs' keys and the ``consortium dataset`` CLI. North publishes its
digits from its registered table; south (granted download) downloads it with the CLI after accepting the
licence, east (no grant) and anonymous callers get 404; east's public dataset is downloaded without login.
An interrupted download resumes with a range request; a corrupted file is never served and a wrong file on
arrival is not kept; a truncated upload, a known version and an unknown licence publish nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
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
SHEET = {key: f"{key} of the digits share (test)" for key in Datasheet.model_fields}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in child_env().items() if k not in ("CONSORTIUM_TOKEN", "CONSORTIUM_HUB")}
    return subprocess.run([sys.executable, "-m", "consortium", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blob_files(hub_dir: Path) -> set[Path]:
    return {p for p in (hub_dir / "blobs").rglob("*") if p.is_file()}


def test_publish_download_resume_and_refusals(cluster, tmp_path: Path) -> None:
    url, dirs = cluster.hub.url, cluster.consortium.org_dirs
    sheet = tmp_path / "datasheet.json"
    sheet.write_text(json.dumps(SHEET))
    published = cli("dataset", "publish", f"{NORTH}/digits", "--hub", url, "--org-dir", str(dirs[NORTH]),
                    "--datasheet", str(sheet), "--version", "1.0")
    assert published.returncode == 0, published.stderr + published.stdout
    north, south, east = (HubClient(url, identity=cluster.consortium.org_client(o).identity) for o in ORGS)
    north.set_source_rights(f"{NORTH}/digits", download=[SOUTH])
    record = north.get_json(f"/api/datasets/{NORTH}/digits/versions/1.0")
    assert record["license"] == "CC-BY-4.0" and record["obligations"] and record["predecessor"] is None
    file_path = f"/api/datasets/{NORTH}/digits/versions/1.0/file"

    refused = south.http.get(file_path)
    assert refused.status_code == 403 and "accept" in refused.json()["detail"]
    assert east.http.get(file_path).status_code == 404
    assert httpx.get(url + file_path).status_code == 404

    out = tmp_path / "south.csv"
    got = cli("dataset", "download", f"{NORTH}/digits@1.0", "--hub", url, "--org-dir", str(dirs[SOUTH]),
              "--out", str(out), "--accept-licence")
    assert got.returncode == 0, got.stderr + got.stdout
    assert sha256(out) == record["sha256"]
    card = LocalRegistry(dirs[NORTH]).get("digits").card
    assert load_table(out, "label").sha256 == card.sha256  # the canonical CSV holds the card's table
    events = [e["event_type"] for e in south.get_json("/api/ledger", params={"limit": 5000})]
    assert "dataset.published" in events and events.count("licence.accepted") == 1
    history = north.get_json(f"/api/credits/{NORTH}")["history"]
    assert any(m["reason"] == "open_data" for m in history)

    # resume: half the file is there already; the rest comes with a range request
    ranged = south.http.get(file_path, headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == out.read_bytes()[100:200]
    assert ranged.headers["content-range"] == f"bytes 100-199/{record['size']}"
    resumed = tmp_path / "resumed.csv"
    resumed.with_name("resumed.csv.part").write_bytes(out.read_bytes()[: record["size"] // 2])
    open_data.download(south, f"{NORTH}/digits", "1.0", resumed)
    assert resumed.read_bytes() == out.read_bytes()
    # a partial file that is wrong is found on arrival and not kept
    wrong = tmp_path / "wrong.csv"
    bad = bytearray(out.read_bytes())
    bad[-2] ^= 1
    wrong.with_name("wrong.csv.part").write_bytes(bytes(bad))
    with pytest.raises(open_data.DownloadError, match="not kept"):
        open_data.download(south, f"{NORTH}/digits", "1.0", wrong)
    assert not wrong.exists() and not wrong.with_name("wrong.csv.part").exists()
    assert north.get_json(f"/api/datasets/{NORTH}/digits/versions/1.0")["downloads"] == 1  # a resume is no new one

    # refusals: a known version, an unknown licence, a truncated upload; nothing is published or left behind
    before = blob_files(cluster.hub.data_dir)
    body = {"version": "1.0", "sha256": record["sha256"], "table_sha256": card.sha256, "rows": card.rows,
            "license": "CC-BY-4.0", "datasheet": SHEET,
            "anonymity": {"about_people": False}}
    assert north.http.post(f"/api/datasets/{NORTH}/digits/versions", json=body).status_code == 409
    unknown = north.http.post(f"/api/datasets/{NORTH}/digits/versions",
                              json=body | {"version": "2.0", "license": "No-Such-Licence"})
    assert unknown.status_code == 422 and "No-Such-Licence" in unknown.json()["detail"]
    content = out.read_bytes() + b"1,2,3\n"
    digest = hashlib.sha256(content).hexdigest()
    put = north.http.put(f"/api/datasets/{NORTH}/digits/uploads/{digest}", params={"offset": 0},
                         content=content[: len(content) // 2])
    assert put.status_code == 200 and put.json()["received"] == len(content) // 2
    wrong_offset = north.http.put(f"/api/datasets/{NORTH}/digits/uploads/{digest}", params={"offset": 5},
                                  content=b"x")
    assert wrong_offset.status_code == 409 and wrong_offset.json()["received"] == len(content) // 2
    truncated = north.http.post(f"/api/datasets/{NORTH}/digits/versions", json=body | {
        "version": "2.0", "sha256": digest})
    assert truncated.status_code == 422 and "truncated" in truncated.json()["detail"]
    assert blob_files(cluster.hub.data_dir) == before
    assert [v["version"] for v in north.get_json(f"/api/datasets/{NORTH}/digits/versions")] == ["1.0"]
    assert east.http.put(f"/api/datasets/{NORTH}/digits/uploads/{digest}", params={"offset": 0},
                         content=b"x").status_code in (403, 404)

    # a corrupted file on the hub is never served; the CLI reports it
    blob = cluster.hub.data_dir / "blobs" / record["sha256"][:2] / record["sha256"]
    data = bytearray(blob.read_bytes())
    data[10] ^= 1
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    corrupt = south.http.get(file_path)
    assert corrupt.status_code == 500 and "fails its SHA-256" in corrupt.json()["detail"]
    again = cli("dataset", "download", f"{NORTH}/digits@1.0", "--hub", url, "--org-dir", str(dirs[SOUTH]),
                "--out", str(tmp_path / "again.csv"), "--accept-licence")
    assert again.returncode != 0 and "SHA-256" in again.stderr and not (tmp_path / "again.csv").exists()

    # withdrawn: downloads stop with the reason, the version stays listed
    north.post_json(f"/api/datasets/{NORTH}/digits/versions/1.0/withdraw", {"reason": "labels were wrong"})
    gone = south.http.get(file_path)
    assert gone.status_code == 410 and "labels were wrong" in gone.json()["detail"]
    assert north.get_json(f"/api/datasets/{NORTH}/digits/versions")[0]["withdrawn_reason"] == "labels were wrong"


def test_public_open_data_downloads_without_login(cluster, tmp_path: Path) -> None:
    url, dirs = cluster.hub.url, cluster.consortium.org_dirs
    with cluster.consortium.org_client(EAST) as east:
        east.set_source_rights(f"{EAST}/digits", visibility="public", download="everyone")
        open_data.publish(east, dirs[EAST], f"{EAST}/digits", "2026.12", "CC-BY-4.0",
                          Datasheet.model_validate(SHEET), tmp_path / "work")
        record = east.get_json(f"/api/datasets/{EAST}/digits/versions/latest")
    refused = cli("dataset", "download", f"{EAST}/digits", "--hub", url, "--out", str(tmp_path / "a.csv"))
    assert refused.returncode != 0 and "--accept-licence" in refused.stderr
    got = cli("dataset", "download", f"{EAST}/digits", "--hub", url, "--out", str(tmp_path / "a.csv"),
              "--accept-licence")
    assert got.returncode == 0, got.stderr + got.stdout
    assert sha256(tmp_path / "a.csv") == record["sha256"]
    listed = cli("dataset", "versions", f"{EAST}/digits", "--hub", url)
    assert listed.returncode == 0 and "2026.12" in listed.stdout
    croissant = httpx.get(url + f"/api/datasets/{EAST}/digits/croissant").json()
    assert croissant["version"] == "2026.12" and croissant["distribution"][0]["sha256"] == record["sha256"]
    assert croissant["distribution"][0]["contentUrl"] == record["download_url"]
    assert httpx.get(url + f"/api/datasets/{EAST}/digits/versions/latest").json()["downloads"] == 1


def categorical(*columns: str) -> list[str]:
    return [arg for column in columns for arg in ("--categorical", column)]


def test_a_table_on_people_is_published_only_once_anonymised(cluster, tmp_path: Path) -> None:
    url, north_dir = cluster.hub.url, str(cluster.consortium.org_dirs[NORTH])
    rng = np.random.default_rng(7)
    n = 300
    raw = tmp_path / "patients.csv"
    pd.DataFrame({"name": [f"patient {i}" for i in range(n)], "age": rng.integers(18, 90, n),
                  "postcode": rng.choice([f"AB{i}" for i in range(1, 9)], n), "sex": rng.choice(["F", "M"], n),
                  "diagnosis": rng.choice(["flu", "asthma", "none", "migraine"], n)}).to_csv(raw, index=False)
    sheet = tmp_path / "datasheet.json"
    sheet.write_text(json.dumps(SHEET))
    gate = ("--quasi", "age,postcode,sex", "--sensitive", "diagnosis", "--identifiers", "name", "--k", "5")
    # a table kept for publication, not training: its columns of words are declared categorical
    added = cli("dataset", "add", str(raw), "--hub", url, "--org-dir", north_dir, "--license", "CC0-1.0",
                *categorical("name", "postcode", "sex", "diagnosis"))
    assert added.returncode == 0, added.stderr + added.stdout
    refused = cli("dataset", "publish", f"{NORTH}/patients", "--hub", url, "--org-dir", north_dir,
                  "--datasheet", str(sheet), *gate)
    assert refused.returncode != 0 and "direct identifiers ['name']" in refused.stderr
    below_k = cli("dataset", "publish", f"{NORTH}/patients", "--hub", url, "--org-dir", north_dir,
                  "--datasheet", str(sheet), *gate[:4], "--k", "5")
    assert below_k.returncode != 0 and "-anonymous" in below_k.stderr and "k >= 5" in below_k.stderr
    with cluster.consortium.org_client(NORTH) as north:
        assert north.get_json(f"/api/datasets/{NORTH}/patients/versions") == []
    anon = tmp_path / "patients-anon.csv"
    made = cli("dataset", "anonymise", str(raw), "--out", str(anon), *gate)
    assert made.returncode == 0, made.stderr + made.stdout
    report = json.loads(made.stdout)
    assert report["k"] >= 5 and report["l_diversity"] >= 2 and set(report["ncp"]) == {"age", "postcode", "sex"}
    classes = pd.read_csv(anon, dtype=str).groupby(["age", "postcode", "sex"])
    assert classes.size().min() >= 5 and classes["diagnosis"].nunique().min() >= 2
    added = cli("dataset", "add", str(anon), "--hub", url, "--org-dir", north_dir, "--license", "CC0-1.0",
                "--name", "patients-anon", *categorical("age", "postcode", "sex", "diagnosis"))
    assert added.returncode == 0, added.stderr + added.stdout
    published = cli("dataset", "publish", f"{NORTH}/patients-anon", "--hub", url, "--org-dir", north_dir,
                    "--datasheet", str(sheet), *gate)
    assert published.returncode == 0, published.stderr + published.stdout


def test_a_new_file_is_checked_registered_and_published_in_one_go(cluster, tmp_path: Path) -> None:
    url, north_dir = cluster.hub.url, cluster.consortium.org_dirs[NORTH]
    sheet = tmp_path / "datasheet.json"
    sheet.write_text(json.dumps(SHEET))
    rng = np.random.default_rng(11)
    table = tmp_path / "readings.csv"
    pd.DataFrame({"site": rng.choice(["a", "b"], 50), "value": rng.normal(size=50),
                  "label": rng.integers(0, 2, 50)}).to_csv(table, index=False)
    common = ("--hub", url, "--org-dir", str(north_dir), "--datasheet", str(sheet), "--file", str(table),
              "--license", "CC0-1.0", "--target", "label")

    def nothing_left(name: str) -> None:
        with cluster.consortium.org_client(NORTH) as north:
            assert name not in {d["name"] for d in north.datasets()}
        assert name not in {e.name for e in LocalRegistry(north_dir).all()}
        assert not list((north_dir / "open-data").glob(f"{name}*"))

    # refused before anything is sent: a check of 'dataset add' (a string feature not declared categorical),
    # a bad version name, the anonymity gate
    refused = cli("dataset", "publish", f"{NORTH}/readings", *common)
    assert refused.returncode != 0 and "--categorical site" in refused.stderr
    nothing_left("readings")
    bad_version = cli("dataset", "publish", f"{NORTH}/readings", *common, "--categorical", "site",
                      "--version", "no spaces")
    assert bad_version.returncode != 0 and "--version" in bad_version.stderr
    gated = cli("dataset", "publish", f"{NORTH}/readings", *common, "--categorical", "site", "--quasi", "site",
                "--sensitive", "label", "--k", "40")
    assert gated.returncode != 0 and "k >= 40" in " ".join(gated.stderr.split())
    nothing_left("readings")

    published = cli("dataset", "publish", f"{NORTH}/readings", *common, "--categorical", "site",
                    "--version", "2026.1", "--visibility", "public")
    assert published.returncode == 0, published.stderr + published.stdout
    card = LocalRegistry(north_dir).get("readings").card
    with cluster.consortium.org_client(NORTH) as north:
        north.set_source_rights(f"{NORTH}/readings", download="everyone")
        record = north.get_json(f"/api/datasets/{NORTH}/readings/versions/2026.1")
    assert record["table_sha256"] == card.sha256 and record["license"] == "CC0-1.0"
    out = tmp_path / "readings-copy.csv"
    got = cli("dataset", "download", f"{NORTH}/readings", "--hub", url, "--out", str(out))
    assert got.returncode == 0, got.stderr + got.stdout
    assert load_table(out, "label", declared=card.schema_).sha256 == card.sha256
    again = cli("dataset", "publish", f"{NORTH}/readings", *common, "--categorical", "site", "--version", "2")
    assert again.returncode != 0 and "registered already" in again.stderr
