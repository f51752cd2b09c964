"""Dataset and environment cards, projects and test sets (votes to run a project: the governance router)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from consortium.croissant import card_to_croissant
from consortium.governance.wire import WithdrawIn
from consortium.hub.deps import db, hub_state, optional_principal, principal
from consortium.hub.gate import optional, upload
from consortium.hub.state import HubState
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services import environments as environment_service
from consortium.hub.services import open_data
from consortium.hub.services import projects as project_service
from consortium.hub.services.errors import NotFound
from consortium.hub.services.source_rights import change_rights
from consortium.hub.services.access import visible_projects
from consortium.hub.services.identity import Principal
from consortium.environments_wire import EnvironmentCardIn, EnvironmentCardOut
from consortium.hub.wire import Id, Name, StrictJSONRoute
from consortium.protocol import (
    DatasetCardIn,
    DatasetCardOut,
    ProjectCreate,
    ProjectOut,
    SourceRightsIn,
)

router = APIRouter(prefix="/api", tags=["data and projects"], route_class=StrictJSONRoute)


@router.post("/datasets", response_model=DatasetCardOut, status_code=201, response_model_by_alias=True)
def register_dataset(
    card: DatasetCardIn, session: Session = Depends(db), caller: Principal = Depends(principal),
):
    return dataset_service.to_out(dataset_service.register(session, caller, card))


@router.get("/datasets", response_model=list[DatasetCardOut], response_model_by_alias=True)
@optional
def list_datasets(session: Session = Depends(db), caller: Principal | None = Depends(optional_principal)):
    """The dataset cards the caller may see (anonymous callers: the public ones)."""
    return [dataset_service.to_out(d) for d in dataset_service.listing(session, caller)]


@router.get("/datasets/{org}/{name}", response_model=DatasetCardOut, response_model_by_alias=True)
@optional
def get_dataset(
    org: Name, name: Name, session: Session = Depends(db),
    caller: Principal | None = Depends(optional_principal),
):
    return dataset_service.to_out(dataset_service.by_ref(session, caller, f"{org}/{name}"))


@router.patch("/datasets/{org}/{name}", response_model=DatasetCardOut, response_model_by_alias=True)
def change_dataset_rights(
    org: Name, name: Name, body: SourceRightsIn, session: Session = Depends(db),
    caller: Principal = Depends(principal),
):
    """The owner (its key or a steward) changes the dataset's visibility and its process / download grants."""
    dataset = change_rights(session, caller, f"{org}/{name}", dataset_service.TABLE, "dataset", body)
    return dataset_service.to_out(dataset)


@router.get("/datasets/{org}/{name}/croissant")
@optional
def get_dataset_croissant(
    org: Name, name: Name, request: Request, session: Session = Depends(db),
    caller: Principal | None = Depends(optional_principal),
) -> dict:
    """The card as Croissant JSON-LD; once a version is published as open data, its distribution is the
    latest version's file on the hub (download URL and the SHA-256 of its bytes)."""
    ref = f"{org}/{name}"
    card = dataset_service.to_out(dataset_service.by_ref(session, caller, ref))
    page = str(request.url).removesuffix("/croissant")
    try:
        latest = open_data.version_of(session, caller, ref, None)
    except NotFound:
        return card_to_croissant(card, org=org, url=page)
    return card_to_croissant(card, org=org, url=page, version=latest.version,
                             date_published=latest.published_at,
                             published_file=(f"{page}/versions/{latest.version}/file", latest.sha256))


@router.post("/environments", response_model=EnvironmentCardOut, status_code=201)
def register_environment(
    card: EnvironmentCardIn, session: Session = Depends(db), caller: Principal = Depends(principal)
):
    return environment_service.to_out(environment_service.register(session, caller, card))


@router.get("/environments", response_model=list[EnvironmentCardOut])
@optional
def list_environments(session: Session = Depends(db), caller: Principal | None = Depends(optional_principal)):
    """The environment cards the caller may see (anonymous callers: the public ones)."""
    return [environment_service.to_out(e) for e in environment_service.listing(session, caller)]


@router.get("/environments/{org}/{name}", response_model=EnvironmentCardOut)
@optional
def get_environment(
    org: Name, name: Name, session: Session = Depends(db),
    caller: Principal | None = Depends(optional_principal),
):
    return environment_service.to_out(environment_service.by_ref(session, caller, f"{org}/{name}"))


@router.patch("/environments/{org}/{name}", response_model=EnvironmentCardOut)
def change_environment_rights(
    org: Name, name: Name, body: SourceRightsIn, session: Session = Depends(db),
    caller: Principal = Depends(principal),
):
    """The owner (its key or a steward) changes the environment's visibility and its grants."""
    source = change_rights(session, caller, f"{org}/{name}", environment_service.KIND, "environment", body)
    return environment_service.to_out(source)


@router.post("/projects", response_model=ProjectOut, status_code=201)
def create_project(
    spec: ProjectCreate, session: Session = Depends(db), caller: Principal = Depends(principal),
):
    return project_service.to_out(session, project_service.create(session, caller, spec))


@router.post("/projects/with-test-set", response_model=ProjectOut, status_code=201)
@upload
async def create_project_with_test_set(
    request: Request, state: HubState = Depends(hub_state), caller: Principal = Depends(principal),
):
    """Propose a project with its hub test set in one request (a :func:`consortium.test_sets.bundle`): a
    refused test set leaves no project behind."""
    from starlette.concurrency import run_in_threadpool

    payload = await request.body()

    def store() -> ProjectOut:
        spec, test_set = project_service.unbundled(payload)
        with state.sessions() as session:
            return project_service.to_out(
                session, project_service.create(session, caller, spec, test_set, state.blobs))

    return await run_in_threadpool(store)


@router.post("/projects/{project_id}/withdraw", response_model=ProjectOut)
def withdraw_project(project_id: Id, body: WithdrawIn, session: Session = Depends(db),
                     caller: Principal = Depends(principal)):
    """The proposer withdraws a project that has not run (its open proposal with it)."""
    return project_service.to_out(session, project_service.withdraw(session, caller, project_id, body.reason))


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(session: Session = Depends(db), caller: Principal = Depends(principal)):
    return [project_service.to_out(session, p) for p in visible_projects(session, caller)]


@router.get("/projects/{project_id}", response_model=ProjectOut)
def get_project(project_id: Id, session: Session = Depends(db), caller: Principal = Depends(principal)):
    return project_service.to_out(session, project_service.get(session, caller, project_id))


@router.put("/projects/{project_id}/test-set")
@upload
async def put_test_set(
    project_id: Id,
    request: Request,
    state: HubState = Depends(hub_state),
    caller: Principal = Depends(principal),
) -> dict:
    from starlette.concurrency import run_in_threadpool

    payload = await request.body()

    def store() -> str:
        with state.sessions() as session:
            return project_service.set_test_set(session, state.blobs, caller, project_id, payload)

    return {"sha256": await run_in_threadpool(store)}
