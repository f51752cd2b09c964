"""HTTP client for the hub: used by the CLI (user tokens) and by nodes (org-signed requests)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx

from consortium.crypto import OrgIdentity, OrgKeyFile, SignedAuth
from consortium.environments_wire import EnvironmentCardIn
from consortium.governance.wire import ProposalCreate, VoteIn
from consortium.privacy_wire import PrivacyCharge
from consortium.protocol import (
    SAFETENSORS_MEDIA_TYPE,
    DatasetCardIn,
    EnrolRequest,
    ProjectCreate,
    RunProgress,
    TaskOut,
    TaskRefusal,
    TaskResult,
)
from consortium.task_terms import TermsCache, decode_delivery
from consortium.tls import tls_context, tls_refusal


class HubError(RuntimeError):
    """The hub answered with an error status; ``detail`` is its message."""

    def __init__(self, status_code: int, detail: str, method: str = "", path: str = "",
                 fields: dict[str, Any] | None = None) -> None:
        super().__init__(f"hub answered {status_code} to {method} {path}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.fields = fields or {}
        """The error body's other members (e.g. ``run_id`` and ``run_status`` of a 410 for an ended run)."""


def _fields(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return {k: v for k, v in body.items() if k != "detail"} if isinstance(body, dict) else {}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}" for item in detail
        )
    return str(detail)


class HubClient:
    """Thin typed wrapper over the hub's REST API (keep-alive connection, clear errors). ``ca_file``: the CA
    bundle an ``https://`` hub's certificate must chain to (None: the system's trust store)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        identity: OrgIdentity | OrgKeyFile | None = None,
        timeout: float = 30.0,
        ca_file: str | Path | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._identity = identity
        self._terms = TermsCache()
        auth = SignedAuth(lambda: self.identity) if identity is not None else None
        # TCP_NODELAY: headers and body go out as separate small writes; with Nagle's algorithm the body would
        # wait for the server's delayed ACK (40 ms on Linux) on every upload.
        transport = httpx.HTTPTransport(verify=tls_context(ca_file),
                                        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, auth=auth, timeout=timeout, trust_env=False,
            transport=transport,
        )

    @property
    def identity(self) -> OrgIdentity | None:
        """The org identity requests are signed with (from a key file: its current key, after a rotation the
        new one)."""
        if isinstance(self._identity, OrgKeyFile):
            return self._identity.identity()
        return self._identity

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        extra = {"timeout": timeout} if timeout is not None else {}
        try:
            response = self.http.request(method, path, **kwargs, **extra)
        except httpx.ConnectError as exc:
            raise tls_refusal(str(self.http.base_url).rstrip("/"), exc) or exc
        if response.status_code >= 400:
            raise HubError(response.status_code, _detail(response), method, path, _fields(response))
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body).json()

    # ---------------------------------------------------------------- members
    def health(self) -> dict:
        return self.get_json("/api/health")

    def create_org(self, name: str, display_name: str = "") -> dict:
        return self.post_json("/api/orgs", {"name": name, "display_name": display_name})

    def orgs(self) -> list[dict]:
        return self.get_json("/api/orgs")

    def wait_online(self, orgs: list[str], timeout: float = 60.0, within_s: float = 60.0) -> None:
        """Block until each named org's node has called the hub in the last ``within_s`` seconds."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            seen = {o["name"]: o["last_seen_s_ago"] for o in self.orgs()}
            offline = [o for o in orgs if seen.get(o) is None or seen[o] > within_s]
            if not offline:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes not online after {timeout}s: {', '.join(offline)}")
            time.sleep(0.1)

    def enrolment_token(self, org: str) -> str:
        return self.post_json(f"/api/orgs/{org}/enrolment-tokens", {})["token"]

    def enrol(self, request: EnrolRequest) -> dict:
        return self.post_json("/api/enrol", request.model_dump())

    def create_user(self, name: str, role: str, org: str | None = None) -> dict:
        return self.post_json("/api/users", {"name": name, "role": role, "org": org})

    def rotate_key(self, org: str, public_key: str, signature: str) -> dict:
        """Hand the org over to a new key (an org-signed client, signing with the current key)."""
        return self.post_json(f"/api/orgs/{org}/keys", {"public_key": public_key, "signature": signature})

    def org_keys(self, org: str) -> list[dict]:
        return self.get_json(f"/api/orgs/{org}/keys")

    def users(self) -> list[dict]:
        return self.get_json("/api/users")

    def update_user(self, name: str, *, role: str | None = None, active: bool | None = None) -> dict:
        body = {k: v for k, v in {"role": role, "active": active}.items() if v is not None}
        return self.request("PATCH", f"/api/users/{name}", json=body).json()

    def tokens(self, name: str) -> list[dict]:
        return self.get_json(f"/api/users/{name}/tokens")

    def issue_token(self, name: str) -> dict:
        return self.post_json(f"/api/users/{name}/tokens", {})

    def revoke_tokens(self, name: str, token_id: int | None = None) -> list[dict]:
        """Revoke one of the user's tokens, or (``token_id`` None) all of them; the tokens revoked now."""
        path = f"/api/users/{name}/tokens" + (f"/{token_id}" if token_id is not None else "")
        return self.request("DELETE", path).json()

    # ---------------------------------------------------------------- data and projects
    def register_dataset(self, card: DatasetCardIn) -> dict:
        return self.post_json("/api/datasets", card.model_dump(mode="json", by_alias=True))

    def datasets(self) -> list[dict]:
        return self.get_json("/api/datasets")

    def search_catalogue(self, q: str = "", **filters: Any) -> dict:
        """One page of the catalogue (``GET /api/catalogue``): datasets the caller may see matching ``q`` and
        the filters (``license``, ``task``, ``owner``, ``open``, ``visibility``, ``min_rows``, ``max_rows``,
        ``min_bytes``, ``max_bytes``, ``sort``, ``limit``, ``offset``; None leaves one out):
        ``{"items", "next_offset"}``."""
        params = {name: value for name, value in {"q": q, **filters}.items() if value not in (None, "")}
        return self.get_json("/api/catalogue", params=params)

    def register_environment(self, card: EnvironmentCardIn) -> dict:
        return self.post_json("/api/environments", card.model_dump(mode="json"))

    def environments(self) -> list[dict]:
        return self.get_json("/api/environments")

    def set_source_rights(self, ref: str, *, kind: str = "datasets", visibility: str | None = None,
                          process: str | list[str] | None = None,
                          download: str | list[str] | None = None) -> dict:
        """Change the visibility and process / download grants of the caller's own data source 'org/name'
        (``kind``: ``datasets`` or ``environments``); a grant is ``members``, ``nobody``, ``everyone``
        (download only) or a list of org names. Returns the card."""
        fields = {"visibility": visibility, "process": process, "download": download}
        body = {name: value for name, value in fields.items() if value is not None}
        return self.request("PATCH", f"/api/{kind}/{ref}", json=body).json()

    def croissant(self, ref: str) -> dict:
        return self.get_json(f"/api/datasets/{ref}/croissant")

    def create_project(self, spec: ProjectCreate, test_set: bytes | None = None) -> dict:
        """Propose a project; with ``test_set`` in the same request (refused together, or created together).
        A ``test_set`` that is not safetensors raises ``TestSetError`` before anything is sent."""
        if test_set is None:
            return self.post_json("/api/projects", spec.model_dump(mode="json"))
        from consortium.test_sets import bundle

        body = bundle(spec.model_dump_json(), test_set)
        return self.request("POST", "/api/projects/with-test-set", content=body,
                            headers={"Content-Type": SAFETENSORS_MEDIA_TYPE}).json()

    def projects(self) -> list[dict]:
        return self.get_json("/api/projects")

    def withdraw_project(self, project_id: int, reason: str = "") -> dict:
        return self.post_json(f"/api/projects/{project_id}/withdraw", {"reason": reason})

    def project(self, project_id: int) -> dict:
        return self.get_json(f"/api/projects/{project_id}")

    # ---------------------------------------------------------------- governance
    def proposals(self, status: str | None = None, kind: str | None = None,
                  project_id: int | None = None) -> list[dict]:
        query = {k: v for k, v in {"status": status, "kind": kind, "project_id": project_id}.items()
                 if v is not None}
        return self.request("GET", "/api/proposals", params=query).json()

    def proposal(self, proposal_id: int) -> dict:
        return self.get_json(f"/api/proposals/{proposal_id}")

    def create_proposal(self, body: ProposalCreate) -> dict:
        return self.post_json("/api/proposals", body.model_dump(mode="json", exclude_none=True))

    def vote(self, proposal_id: int, body: VoteIn) -> dict:
        return self.post_json(f"/api/proposals/{proposal_id}/votes", body.model_dump())

    def withdraw(self, proposal_id: int, reason: str = "") -> dict:
        return self.post_json(f"/api/proposals/{proposal_id}/withdraw", {"reason": reason})

    def policy(self) -> dict:
        return self.get_json("/api/policy")

    def put_test_set(self, project_id: int, payload: bytes) -> dict:
        return self.request(
            "PUT", f"/api/projects/{project_id}/test-set", content=payload,
            headers={"Content-Type": SAFETENSORS_MEDIA_TYPE},
        ).json()

    # ---------------------------------------------------------------- runs and models
    def start_run(self, project_id: int) -> dict:
        return self.post_json(f"/api/projects/{project_id}/runs", {})

    def run(self, run_id: int) -> dict:
        return self.get_json(f"/api/runs/{run_id}")

    def progress(self, run_id: int, after_round: int = 0, wait: float = 0.0) -> RunProgress:
        data = self.get_json(
            f"/api/runs/{run_id}/progress", params={"after_round": after_round, "wait": wait},
            timeout=wait + 30.0,
        )
        return RunProgress.model_validate(data)

    def model(self, model_id: int) -> dict:
        return self.get_json(f"/api/models/{model_id}")

    def list_models(self, project: str | None = None, status: str | None = None, licence: str | None = None,
                    org: str | None = None, limit: int | None = None,
                    offset: int | None = None) -> list[dict]:
        """The registry: the models the caller may see, filtered by project name, status (trained or
        released), licence (part of it, or an SPDX expression) and participating org."""
        query = {k: v for k, v in {"project": project, "status": status, "licence": licence, "org": org,
                                   "limit": limit, "offset": offset}.items() if v is not None}
        return self.request("GET", "/api/models", params=query).json()

    def project_models(self, project_id: int) -> list[dict]:
        """The versions of a project's model line, oldest first."""
        return self.get_json(f"/api/projects/{project_id}/models")

    def propose_release(self, model_id: int, licence: str, visibility: str = "members", download: bool = True,
                        commercial: bool = False, process: bool | None = None, reason: str = "") -> dict:
        """Open a ``release_model`` proposal for the model (the proposal as the hub shows it)."""
        return self.create_proposal(ProposalCreate(
            kind="release_model", model_id=model_id, licence=licence, visibility=visibility,
            download=download, commercial=commercial, process=process, reason=reason))

    def model_weights(self, model_id: int) -> bytes:
        return self.request("GET", f"/api/models/{model_id}/weights").content

    def model_file(self, model_id: int, name: str) -> bytes:
        return self.request("GET", f"/api/models/{model_id}/files/{name}").content

    def model_card_markdown(self, model_id: int) -> str:
        return self.request("GET", f"/api/models/{model_id}/card.md").text

    def credit_balances(self) -> list[dict]:
        return self.get_json("/api/credits")

    def credit_account(self, org: str, limit: int = 100, before: int | None = None) -> dict:
        params = {"limit": limit} | ({"before": before} if before is not None else {})
        return self.get_json(f"/api/credits/{org}", params=params)

    # ------------------------------------------------------------- challenges
    def open_challenge(self, body: dict) -> dict:
        return self.post_json("/api/challenges", body)

    def challenges(self) -> list[dict]:
        return self.get_json("/api/challenges")

    def challenge(self, challenge_id: int) -> dict:
        return self.get_json(f"/api/challenges/{challenge_id}")

    def submit_challenge_weights(self, challenge_id: int, payload: bytes) -> dict:
        """Weights (safetensors) carrying the algorithm spec under ``__metadata__['submission']``."""
        return self.request("POST", f"/api/challenges/{challenge_id}/submissions", content=payload,
                            headers={"Content-Type": SAFETENSORS_MEDIA_TYPE}).json()

    def submit_challenge_model(self, challenge_id: int, model_id: int, note: str = "") -> dict:
        return self.post_json(f"/api/challenges/{challenge_id}/submissions/model", {"model_id": model_id, "note": note})

    def challenge_submissions(self, challenge_id: int) -> list[dict]:
        return self.get_json(f"/api/challenges/{challenge_id}/submissions")

    def challenge_leaderboard(self, challenge_id: int, board: str = "public") -> dict:
        return self.get_json(f"/api/challenges/{challenge_id}/leaderboard", params={"board": board})

    def challenge_pending(self) -> list[dict]:
        return self.get_json("/api/node/challenges/pending")

    def challenge_weights(self, submission_id: int) -> bytes:
        return self.request("GET", f"/api/node/challenges/submissions/{submission_id}/weights").content

    def post_challenge_score(self, submission_id: int, body: dict) -> dict:
        return self.post_json(f"/api/node/challenges/submissions/{submission_id}/score", body)

    def ledger(self, after: int = 0, limit: int = 1000) -> list[dict]:
        return self.get_json("/api/ledger", params={"after": after, "limit": limit})

    def ledger_head(self) -> dict:
        return self.get_json("/api/ledger/head")

    def checkpoint(self) -> dict:
        """The latest signed checkpoint with its cosignatures (``HubError`` 404 before the first)."""
        return self.get_json("/api/ledger/checkpoint")

    def checkpoints(self, after: int = 0, limit: int = 1000) -> list[dict]:
        return self.get_json("/api/ledger/checkpoints", params={"after": after, "limit": limit})

    def inclusion_proof(self, seq: int, size: int | None = None) -> dict:
        params = {"seq": seq} | ({"size": size} if size is not None else {})
        return self.get_json("/api/ledger/proof/inclusion", params=params)

    def consistency_proof(self, first: int, second: int | None = None) -> dict:
        params = {"first": first} | ({"second": second} if second is not None else {})
        return self.get_json("/api/ledger/proof/consistency", params=params)

    def cosign_checkpoint(self, size: int, signature: str) -> dict:
        """Cosign checkpoint ``size`` (an org-signed client): ``signature`` over its note."""
        return self.post_json(f"/api/ledger/checkpoints/{size}/cosign", {"signature": signature})

    # ---------------------------------------------------------------- node side
    def next_task(self, wait: float, have: str | None = None) -> tuple[TaskOut, dict | None] | None:
        """Long-poll for a task: (task, its params when the hub sent them along) or None after ``wait``.

        The task's terms come once per run: later tasks with the same terms come brief and are completed
        from this client's copy (:mod:`consortium.task_terms`)."""
        query: dict[str, Any] = {"wait": wait, **self._terms.query()}
        if have:
            query["have"] = have
        response = self.request("GET", "/api/node/tasks/next", params=query, timeout=wait + 30.0)
        if response.status_code == 204:
            return None
        return self._task_delivery(response)

    def _task_delivery(self, response: httpx.Response) -> tuple[TaskOut, dict | None]:
        return decode_delivery(response.headers.get("content-type", ""), response.content, self._terms)

    def task_params(self, task_id: int) -> bytes:
        return self.request("GET", f"/api/node/tasks/{task_id}/params").content

    def post_update(
        self, task_id: int, payload: bytes, wait: float = 0.0, have: str | None = None
    ) -> tuple[TaskOut, dict | None] | None:
        """Upload an update; with ``wait`` > 0 the hub answers with the next task (as :meth:`next_task`
        would) when one comes within ``wait`` seconds. None when none did, or the hub does not offer that."""
        query: dict[str, Any] = {}
        if wait > 0:
            query.update(wait=wait, **self._terms.query())
            if have:
                query["have"] = have
        response = self.request(
            "POST", f"/api/node/tasks/{task_id}/update", content=payload, params=query,
            headers={"Content-Type": SAFETENSORS_MEDIA_TYPE}, timeout=wait + 30.0,
        )
        if response.status_code != 200:
            return None
        return self._task_delivery(response)

    def post_result(self, task_id: int, result: TaskResult) -> None:
        self.request("POST", f"/api/node/tasks/{task_id}/result", json=result.model_dump())

    def secagg_read(self, task_id: int, stage: str, wait: float) -> bytes | None:
        """Long-poll what the hub published for this node's task at a SecAgg stage; None after ``wait``."""
        response = self.request("GET", f"/api/node/secagg/{task_id}/{stage}", params={"wait": wait},
                                timeout=wait + 30.0)
        return None if response.status_code == 204 else response.content

    def secagg_post(self, task_id: int, stage: str, body: bytes) -> None:
        """Send this node's message of a SecAgg stage: JSON, or a masked input's binary frame."""
        binary = stage == "masked_input"
        self.request("POST", f"/api/node/secagg/{task_id}/{stage}", content=body,
                     headers={"Content-Type": "application/octet-stream" if binary else "application/json"})

    def post_refusal(self, task_id: int, reason: str) -> None:
        self.request("POST", f"/api/node/tasks/{task_id}/refusal", json=TaskRefusal(reason=reason).model_dump())

    def post_privacy_charge(self, task_id: int, noise_multiplier: float, sampling_rate: float,
                            steps: int = 1) -> dict:
        """Report the round a node charged to its dataset's privacy budget (signed by the org key)."""
        body = PrivacyCharge(noise_multiplier=noise_multiplier, sampling_rate=sampling_rate, steps=steps)
        return self.request("POST", f"/api/node/tasks/{task_id}/privacy-charge", json=body.model_dump()).json()
