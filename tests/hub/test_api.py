"""The hub's REST API over real HTTP against a real hub process, on SQLite and PostgreSQL.

Mostly bad input: each case must get a clear 4xx and leave nothing stored. The test itself plays the node
(signed requests with the org key), so it can send exactly the malformed thing it wants to.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas
import pytest
import torch
from typer.testing import CliRunner

from consortium import crypto
from consortium.cli import app as cli
from consortium.client import HubClient, HubError
from consortium.launch import HubProcess, start_hub
from consortium.ledger_audit import verify_from_hub
from consortium.node import actions
from consortium.codec import encode_tensors, encode_update
from consortium.protocol import TaskResult, UpdateMeta
from consortium.task_terms import terms_json, terms_sha256
from consortium.scenario import ORGS, DigitsConsortium, approve_as, digits_spec, provision_digits, vote_as

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DigitsConsortium]:
    workdir = tmp_path_factory.mktemp("api")
    hub = start_hub(workdir / "hub", db_url=module_db_url, max_upload_mb=1)
    try:
        yield provision_digits(hub, workdir, ORGS)
    finally:
        hub.stop()


def ledger_size(hub: HubProcess) -> int:
    with hub.client() as admin:
        return len(admin.ledger(limit=10_000))


def expect_error(status: int, fragment: str, fn, *args, **kwargs) -> HubError:
    with pytest.raises(HubError) as info:
        fn(*args, **kwargs)
    assert info.value.status_code == status, info.value.detail
    assert fragment.lower() in info.value.detail.lower(), info.value.detail
    return info.value


def raw_signed(env: DigitsConsortium, org: str, method: str, path: str, body: bytes = b"",
               now: float | None = None, headers: dict | None = None) -> httpx.Response:
    identity = crypto.load_org_identity(env.org_dirs[org])
    signed = crypto.sign_request(identity, method, path, body, now=now if now is not None else time.time())
    signed.update(headers or {})
    return httpx.request(method, env.hub.url + path, content=body, headers=signed, trust_env=False)


def signed_headers(env: DigitsConsortium, path: str, org: str = ORGS[0]) -> dict[str, str]:
    """Valid signature headers of ``org`` for ``GET path``, signed now."""
    identity = crypto.load_org_identity(env.org_dirs[org])
    return crypto.sign_request(identity, "GET", path, b"", now=time.time())


def get_me(env: DigitsConsortium, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(env.hub.url + "/api/me", headers=headers, trust_env=False)


# ---------------------------------------------------------------------------------------------- identity


def test_openapi_is_served(env: DigitsConsortium) -> None:
    spec = httpx.get(env.hub.url + "/openapi.json", trust_env=False).json()
    assert "/api/node/tasks/next" in spec["paths"]


def test_unauthenticated_request_is_401(env: DigitsConsortium) -> None:
    response = httpx.get(env.hub.url + "/api/node/tasks/next?wait=0", trust_env=False)
    assert response.status_code == 401
    assert "authentication required" in response.json()["detail"]


def test_bad_token_is_401(env: DigitsConsortium) -> None:
    with HubClient(env.hub.url, token="csm_not-a-real-token") as client:
        expect_error(401, "token is not valid", client.datasets)


def test_badly_signed_request_is_401(env: DigitsConsortium) -> None:
    headers = signed_headers(env, "/api/me")
    headers["X-Consortium-Signature"] = headers["X-Consortium-Signature"][:-4] + "AAA="
    response = get_me(env, headers)
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]


def test_signature_over_another_path_is_401(env: DigitsConsortium) -> None:
    response = get_me(env, signed_headers(env, "/api/datasets"))
    assert response.status_code == 401


def test_stale_timestamp_is_401(env: DigitsConsortium) -> None:
    response = raw_signed(env, ORGS[0], "GET", "/api/me", now=time.time() - 400)
    assert response.status_code == 401
    assert "timestamp" in response.json()["detail"]


def test_replayed_request_is_401(env: DigitsConsortium) -> None:
    headers = signed_headers(env, "/api/me")
    first = get_me(env, headers)
    again = get_me(env, headers)
    assert first.status_code == 200, first.text
    assert first.json()["name"] == ORGS[0]
    assert again.status_code == 401
    assert "nonce" in again.json()["detail"]


def test_unknown_key_is_401(env: DigitsConsortium, tmp_path: Path) -> None:
    stranger = crypto.generate_org_key(tmp_path / "stranger", "stranger")
    response = get_me(env, crypto.sign_request(stranger, "GET", "/api/me", b"", now=time.time()))
    assert response.status_code == 401
    assert "unknown" in response.json()["detail"]


def test_enrolment_token_is_single_use(env: DigitsConsortium, tmp_path: Path) -> None:
    from consortium.protocol import EnrolRequest

    with env.hub.client() as admin:
        admin.create_org("west-co")
        token = admin.enrolment_token("west-co")
    identity = crypto.generate_org_key(tmp_path / "west-co", "west-co")
    request = EnrolRequest(org="west-co", token=token, public_key=identity.public_key_b64)
    with HubClient(env.hub.url) as anonymous:
        anonymous.enrol(request)
        expect_error(401, "already used", anonymous.enrol, request.model_copy(update={"node_name": "second"}))


# ---------------------------------------------------------------------------------------------- projects


def test_project_with_unknown_dataset_is_rejected(env: DigitsConsortium) -> None:
    before = ledger_size(env.hub)
    spec = digits_spec("unknown-data", ["north-clinic", "nowhere"], rounds=2)
    with env.hub.client() as admin:
        expect_error(404, "no dataset 'nowhere/digits'", admin.create_project, spec)
        assert all(p["name"] != "unknown-data" for p in admin.get_json("/api/projects"))
    assert ledger_size(env.hub) == before


def test_project_with_unknown_algorithm_is_rejected(env: DigitsConsortium) -> None:
    spec = digits_spec("unknown-algo", ORGS, rounds=2, algorithm={"name": "telepathy"})
    with env.hub.client() as admin:
        expect_error(422, "unknown algorithm 'telepathy'", admin.create_project, spec)


def test_project_with_bad_hyperparameters_is_rejected(env: DigitsConsortium) -> None:
    spec = digits_spec("bad-hp", ORGS, rounds=2,
                       algorithm={"name": "classifier", "hyperparameters": {"layers": [64, 10], "lr": -1}})
    with env.hub.client() as admin:
        expect_error(422, "lr", admin.create_project, spec)


def test_a_second_vote_replaces_the_first_and_a_decided_proposal_takes_none(env: DigitsConsortium) -> None:
    with env.hub.client() as admin:
        project = admin.create_project(digits_spec("vote-twice", ORGS[:2], rounds=2))
    pid = project["proposal_id"]
    vote_as(env.org_dirs[ORGS[0]], env.hub.url, pid, "abstain")
    vote_as(env.org_dirs[ORGS[0]], env.hub.url, pid, "yes")
    with env.hub.client() as admin:
        shown = admin.proposal(pid)
    assert [(v["org"], v["choice"]) for v in shown["votes"]] == [(ORGS[0], "yes")] and shown["status"] == "open"
    vote_as(env.org_dirs[ORGS[1]], env.hub.url, pid, "yes")
    before = ledger_size(env.hub)
    err = expect_error(409, "is passed: it takes no more votes", vote_as, env.org_dirs[ORGS[0]], env.hub.url,
                       pid, "no")
    assert err.fields.get("status") == "passed"
    assert ledger_size(env.hub) == before


def test_a_vote_on_a_project_the_org_cannot_read_is_refused(env: DigitsConsortium) -> None:
    with env.hub.client() as admin:
        project = admin.create_project(digits_spec("not-yours", ORGS[:2], rounds=2))
    expect_error(404, f"no project {project['id']}", approve_as, env.org_dirs[ORGS[2]], env.hub.url, project)


def test_a_member_without_data_in_the_project_votes_advisory(env: DigitsConsortium) -> None:
    with env.org_client(ORGS[2]) as proposer:
        project = proposer.create_project(digits_spec("proposed-not-owned", ORGS[:2], rounds=2))
    vote_as(env.org_dirs[ORGS[2]], env.hub.url, project["proposal_id"], "no")
    with env.org_client(ORGS[2]) as proposer:
        shown = proposer.proposal(project["proposal_id"])
    assert shown["advisory"] == [ORGS[2]] and shown["electorate"] == sorted(ORGS[:2])
    assert shown["votes"][0]["counted"] is False and shown["status"] == "open"
    for org in ORGS[:2]:
        approve_as(env.org_dirs[org], env.hub.url, project)
    with env.org_client(ORGS[2]) as proposer:
        assert proposer.proposal(project["proposal_id"])["status"] == "passed"


def test_run_before_the_owners_voted_is_409(env: DigitsConsortium) -> None:
    with env.hub.client() as admin:
        project = admin.create_project(digits_spec("too-early", ORGS, rounds=2))
        approve_as(env.org_dirs[ORGS[0]], env.hub.url, project)
        err = expect_error(409, "waiting for approval", admin.start_run, project["id"])
        assert ORGS[1] in err.detail and ORGS[2] in err.detail
        assert admin.get_json(f"/api/projects/{project['id']}")["status"] == "proposed"


# ---------------------------------------------------------------------------------------------- updates


def _claim_fit_task(env: DigitsConsortium, org: str, name: str) -> dict:
    """A running one-org project whose round-1 fit task the test claims as the node would."""
    spec = digits_spec(name, [org], rounds=1, min_nodes=1, round_timeout=600)
    with env.hub.client() as admin:
        project = admin.create_project(spec)
        approve_as(env.org_dirs[org], env.hub.url, project)
        admin.start_run(project["id"])
    with env.org_client(org) as node:
        delivery = node.next_task(wait=30)
        assert delivery is not None
        task, delivered = delivery
        assert task.kind.value == "fit"
        params = node.task_params(task.id)
    from consortium.codec import decode_tensors, encode_tensors

    assert delivered is not None and encode_tensors(delivered) == params
    return {"task": task, "params": decode_tensors(params), "org": org}


@pytest.fixture(scope="module")
def open_task(env: DigitsConsortium) -> dict:
    """A task that stays open until a good update answers it."""
    return _claim_fit_task(env, ORGS[0], "good-update")


_bad_runs = itertools.count()


@pytest.fixture
def fresh_task(env: DigitsConsortium) -> Iterator[dict]:
    """A task of its own for each bad upload (a rejected answer closes its task); afterwards the task is
    closed as rejected: a good update is too late (410)."""
    task = _claim_fit_task(env, ORGS[1], f"bad-update-{next(_bad_runs)}")
    yield task
    good = encode_update({k: v + 0.01 for k, v in task["params"].items()}, _meta())
    expect_error(410, "was rejected", _post_update, env, task, good)


def _post_update(env: DigitsConsortium, open_task: dict, payload: bytes) -> None:
    with env.org_client(open_task["org"]) as node:
        node.post_update(open_task["task"].id, payload)


def _meta() -> UpdateMeta:
    return UpdateMeta(num_examples=10, metrics={}, compute_s=0.01)


def test_long_poll_leaves_out_params_the_node_already_has(env: DigitsConsortium, open_task: dict) -> None:
    with env.org_client(open_task["org"]) as node:
        delivery = node.next_task(wait=0, have=open_task["task"].params_sha256)
    assert delivery is not None
    task, params = delivery
    assert task.id == open_task["task"].id and params is None


def test_a_node_that_holds_a_tasks_terms_is_sent_the_task_brief(env: DigitsConsortium, open_task: dict) -> None:
    """The spec and signed approval travel once per run: named by their SHA-256 in ``terms``, they stay out of
    the next delivery, and the client completes the brief message to the task it was sent the first time."""
    task = open_task["task"]
    held = {"wait": 0, "have": task.params_sha256}
    with env.org_client(open_task["org"]) as node:
        full = node.request("GET", "/api/node/tasks/next", params=held).json()
        brief = node.request("GET", "/api/node/tasks/next",
                             params=held | {"terms": f"{'0' * 64},{terms_sha256(terms_json(task))}"}).json()
        assert "spec" in full and "terms_sha256" not in full
        assert brief == {**{k: full[k] for k in brief if k != "terms_sha256"},
                         "terms_sha256": terms_sha256(terms_json(task))} and "spec" not in brief
        first, _ = node.next_task(wait=0, have=task.params_sha256)
        again, _ = node.next_task(wait=0, have=task.params_sha256)
        expect_error(422, "terms", node.request, "GET", "/api/node/tasks/next",
                     params={"wait": 0, "terms": "f" * 400})
    assert first.model_dump() == again.model_dump() == task.model_dump()


def test_update_with_wrong_tensor_names_is_rejected(env: DigitsConsortium, fresh_task: dict) -> None:
    tensors = dict(fresh_task["params"])
    tensors["extra"] = torch.zeros(3)
    expect_error(422, "unexpected ['extra']", _post_update, env, fresh_task, encode_update(tensors, _meta()))


def test_update_with_wrong_shape_is_rejected(env: DigitsConsortium, fresh_task: dict) -> None:
    tensors = dict(fresh_task["params"])
    name = sorted(tensors)[0]
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, *tensors[name].shape[1:])
    expect_error(422, "shape", _post_update, env, fresh_task, encode_update(tensors, _meta()))


def test_update_with_wrong_dtype_is_rejected(env: DigitsConsortium, fresh_task: dict) -> None:
    tensors = {k: v.double() for k, v in fresh_task["params"].items()}
    expect_error(422, "dtype", _post_update, env, fresh_task, encode_update(tensors, _meta()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_update_with_non_finite_values_is_rejected(env: DigitsConsortium, fresh_task: dict, bad: float) -> None:
    tensors = {k: v.clone() for k, v in fresh_task["params"].items()}
    next(iter(tensors.values())).view(-1)[0] = bad
    expect_error(422, "non-finite", _post_update, env, fresh_task, encode_update(tensors, _meta()))


def test_update_that_is_not_safetensors_is_rejected(env: DigitsConsortium, fresh_task: dict) -> None:
    import pickle

    expect_error(422, "safetensors", _post_update, env, fresh_task, pickle.dumps({"a": 1}))


def test_update_without_metadata_is_rejected(env: DigitsConsortium, fresh_task: dict) -> None:
    expect_error(422, "metadata", _post_update, env, fresh_task, encode_tensors(fresh_task["params"]))


def test_upload_over_the_size_limit_is_413_before_parsing(env: DigitsConsortium, open_task: dict) -> None:
    payload = b"\0" * (1024 * 1024 + 1)
    expect_error(413, "exceeds the hub's limit", _post_update, env, open_task, payload)


def test_a_good_update_is_accepted_once_and_brings_the_next_task(env: DigitsConsortium, open_task: dict) -> None:
    """An upload refused before parsing (413) leaves the task open; the good one is accepted, once."""
    task = open_task["task"]
    tensors = {k: v + 0.01 for k, v in open_task["params"].items()}
    with env.org_client(open_task["org"]) as node:
        delivery = node.post_update(task.id, encode_update(tensors, _meta()), wait=30,
                                    have=task.params_sha256)
    assert delivery is not None
    evaluate, params = delivery
    assert (evaluate.kind.value, evaluate.run_id, evaluate.round) == ("evaluate", task.run_id, 1)
    assert params is not None and evaluate.params_sha256 != task.params_sha256
    assert hashlib.sha256(encode_tensors(params)).hexdigest() == evaluate.params_sha256
    expect_error(409, "already has a result", _post_update, env, open_task, encode_update(tensors, _meta()))


def test_a_refused_upload_still_uses_up_its_nonce(env: DigitsConsortium, open_task: dict) -> None:
    """The nonce rides in the upload's own transaction; a rejected upload must record it all the same."""
    path = f"/api/node/tasks/{open_task['task'].id}/update"
    body = encode_update({k: v.clone() for k, v in open_task["params"].items()}, _meta())
    identity = crypto.load_org_identity(env.org_dirs[open_task["org"]])
    headers = crypto.sign_request(identity, "POST", path, body, now=time.time())
    first = httpx.post(env.hub.url + path, content=body, headers=headers, trust_env=False)
    again = httpx.post(env.hub.url + path, content=body, headers=headers, trust_env=False)
    assert first.status_code == 409, first.text
    assert again.status_code == 401 and "nonce" in again.json()["detail"]


def test_the_run_finishes_on_the_evaluation_the_upload_answer_brought(
    env: DigitsConsortium, open_task: dict
) -> None:
    run_id = open_task["task"].run_id
    with env.org_client(open_task["org"]) as node:
        delivery = node.next_task(wait=0)
        assert delivery is not None and delivery[0].kind.value == "evaluate"
        node.post_result(delivery[0].id, TaskResult(num_examples=5, metrics={"accuracy": 0.5}, compute_s=0))
    with env.hub.client() as admin:
        deadline = time.monotonic() + 60
        while admin.run(run_id)["status"] == "running" and time.monotonic() < deadline:
            admin.progress(run_id, after_round=1, wait=2)
        progress = admin.progress(run_id)
    assert progress.run.status == "completed", progress.run.error
    assert progress.rounds[-1].federated_eval == {"accuracy": 0.5}


def test_another_orgs_task_is_invisible(env: DigitsConsortium, open_task: dict) -> None:
    with env.org_client(ORGS[1]) as other:
        expect_error(404, "no task", other.task_params, open_task["task"].id)


# ---------------------------------------------------------------------------------------------- licences, models

JSON = {"Content-Type": "application/json"}


def card(name: str, licence: str) -> dict:
    return {"name": name, "schema": {"features": [{"name": f"p{i}", "dtype": "float64"} for i in range(64)],
                                     "target": {"name": "label", "dtype": "int64"}},
            "rows": 10, "sha256": hashlib.sha256(name.encode()).hexdigest(), "license": licence,
            "visibility": "members", "file_format": "csv"}


@pytest.mark.parametrize(("licence", "fragment"), [
    ("Foo-1.0", "license: unknown licence id 'Foo-1.0'"),
    ("MIT AND GPL-3.0", "license: unknown licence id 'GPL-3.0'"),
    ("MIT OR", "license"),
    ("my own licence", "license"),
])
def test_a_dataset_with_an_unknown_licence_is_refused(env: DigitsConsortium, licence: str, fragment: str) -> None:
    before = ledger_size(env.hub)
    with env.org_client(ORGS[0]) as north:
        listed = north.datasets()
        expect_error(422, fragment, north.request, "POST", "/api/datasets", json=card("odd-licence", licence))
        assert north.datasets() == listed
    assert ledger_size(env.hub) == before


def test_a_dataset_licence_is_stored_in_its_spdx_spelling(env: DigitsConsortium) -> None:
    with env.org_client(ORGS[2]) as east:
        stored = east.post_json("/api/datasets", card("spelled", "mit OR cc-by-4.0"))
    assert stored["license"] == "CC-BY-4.0 OR MIT"


def test_a_project_mixing_incompatible_licences_is_refused(env: DigitsConsortium) -> None:
    with env.org_client(ORGS[0]) as north, env.org_client(ORGS[1]) as south:
        north.post_json("/api/datasets", card("shared-alike", "CC-BY-SA-4.0"))
        south.post_json("/api/datasets", card("no-derivatives", "CC-BY-ND-4.0"))
    before = ledger_size(env.hub)
    spec = digits_spec("mixed-licences", ORGS[:2], rounds=1).model_copy(
        update={"datasets": [f"{ORGS[0]}/shared-alike", f"{ORGS[1]}/no-derivatives"]})
    with env.hub.client() as admin:
        projects = admin.get_json("/api/projects")
        error = expect_error(422, "datasets: the licences of these data sources cannot be mixed",
                             admin.create_project, spec)
        assert admin.get_json("/api/projects") == projects
    assert f"[no_derivatives] {ORGS[1]}/no-derivatives" in error.detail and "§2(a)(1)(B)" in error.detail
    assert {c["kind"] for c in error.fields["conflicts"]} == {"no_derivatives"}
    assert ledger_size(env.hub) == before


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"kind": "release_model", "licence": "MIT"}, 422, "model_id: a release_model proposal names the model"),
    ({"kind": "release_model", "model_id": 2**31 - 1, "licence": "MIT"}, 404, f"no model {2**31 - 1}"),
    ({"kind": "release_model", "model_id": 0, "licence": "MIT"}, 422, "model_id"),
    ({"kind": "release_model", "model_id": 1, "licence": "MIT; rm -rf /"}, 422, "licence"),
    ({"kind": "release_model", "model_id": 1, "licence": "MIT", "visibility": "world"}, 422, "visibility"),
    ({"kind": "release_model", "model_id": 1, "licence": "MIT", "download": "sometimes"}, 422, "download"),
])
def test_a_malformed_release_proposal_is_refused_and_changes_nothing(
    env: DigitsConsortium, body: dict, status: int, fragment: str,
) -> None:
    before = ledger_size(env.hub)
    with env.hub.client() as admin:
        proposals = admin.proposals(kind="release_model")
        expect_error(status, fragment, admin.request, "POST", "/api/proposals", json=body)
        assert admin.proposals(kind="release_model") == proposals
    assert ledger_size(env.hub) == before


@pytest.mark.parametrize(("query", "fragment"), [
    ("status=archived", "status"), ("limit=0", "limit"), ("limit=501", "limit"), ("offset=-1", "offset"),
    ("project=Not%20A%20Name", "project"), ("licence=", "licence"), ("org=" + "x" * 64, "org"),
])
def test_the_model_registry_refuses_bad_filters(env: DigitsConsortium, query: str, fragment: str) -> None:
    with env.hub.client() as admin:
        expect_error(422, fragment, admin.request, "GET", f"/api/models?{query}")


def test_the_model_registry_lists_nothing_to_a_stranger_and_404s_a_hidden_project(env: DigitsConsortium) -> None:
    with env.hub.client() as admin:
        assert admin.list_models(status="released") == []
        expect_error(404, f"no project {2**31 - 1}", admin.project_models, 2**31 - 1)


def test_ledger_verifies(env: DigitsConsortium) -> None:
    with env.hub.client() as admin:
        report = verify_from_hub(admin)
    assert report.ok, report.reason
    assert report.checked > 10


def test_owners_change_rights_and_proposals_need_the_process_right(env: DigitsConsortium) -> None:
    """A copy of north's digits whose rights north changes with the CLI; proposals are checked against the
    rights of their time, anonymous callers read it once it is public."""
    north, south, east = ORGS
    workdir = env.org_dirs[north].parent.parent
    pandas.read_csv(workdir / "data" / f"{north}.csv").iloc[:60].to_csv(workdir / "probe.csv", index=False)
    loaded, card = actions.prepare_dataset(workdir / "probe.csv", "probe", "CC-BY-4.0", target="label")
    with env.org_client(north) as client:
        actions.register_dataset(client, env.org_dirs[north], loaded, card)
    rights = ["dataset", "rights", f"{north}/probe", "--hub", env.hub.url, "--org-dir",
              str(env.org_dirs[north])]
    changed = CliRunner().invoke(cli, [*rights, "--process", south, "--download", "nobody"])
    assert changed.exit_code == 0, changed.output
    assert f"{north}/probe: visibility members, process ['{south}'], download nobody" in changed.output
    spec = {org: digits_spec(f"probe-{org}", [north, org], rounds=1,
                             datasets=[f"{north}/probe", f"{org}/digits"])
            for org in (south, east)}
    with env.org_client(east) as client:
        expect_error(403, f"datasets: {north}/probe: {east} may not process it", client.create_project,
                     spec[east])
    with env.org_client(south) as client:
        project = client.create_project(spec[south])
    for org in (north, south):
        approve_as(env.org_dirs[org], env.hub.url, project)
    with httpx.Client(base_url=env.hub.url, trust_env=False) as anonymous:
        listed = {f"{d['org']}/{d['name']}" for d in anonymous.get("/api/datasets").json()}
        assert f"{north}/probe" not in listed
        hidden = anonymous.get(f"/api/datasets/{north}/probe")
        assert (hidden.status_code, hidden.json()) == (404, {"detail": f"no dataset '{north}/probe'"})
        unknown = CliRunner().invoke(cli, [*rights, "--download", f"{south},nowhere"])
        assert unknown.exit_code == 2 and "download: no organisation named 'nowhere'" in unknown.output
        public = CliRunner().invoke(cli, [*rights, "--visibility", "public", "--process", "nobody"])
        assert public.exit_code == 0, public.output
        shown = anonymous.get(f"/api/datasets/{north}/probe").json()
        assert (shown["visibility"], shown["process"], shown["download"]) == ("public", "nobody", "nobody")
        assert anonymous.get(f"/api/datasets/{north}/probe/croissant").status_code == 200
        refused = anonymous.patch(f"/api/datasets/{north}/probe", json={"visibility": "private"})
        assert refused.status_code == 401
    with env.org_client(south) as client:
        expect_error(403, f"{south} may not process it", client.create_project,
                     digits_spec("probe-again", [north, south], rounds=1,
                                 datasets=[f"{north}/probe", f"{south}/digits"]))
        expect_error(404, f"no dataset '{north}/probe'", client.set_source_rights, f"{north}/probe",
                     visibility="private")
        assert client.project(project["id"])["status"] == "approved", "an approved project keeps its rights"
    with env.hub.client() as admin:
        changes = [e["payload"] for e in admin.ledger(limit=10_000)
                   if e["event_type"] == "source.rights_changed"]
    assert [c["new"] for c in changes] == [
        {"visibility": "members", "process": [south], "download": "nobody"},
        {"visibility": "public", "process": "nobody", "download": "nobody"}]
