"""Projects: proposals to train on members' datasets, and their hub-side test sets. Whether a project may run
is decided by its ``run_project`` proposal (:mod:`consortium.hub.services.proposals`)."""

from __future__ import annotations

import math

from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from consortium import crypto, strict_json
from consortium.fl.core import FLError
from consortium.fl.preprocessing import feature_names_of, layout
from consortium.governance.decisions import ProposalStatus, VoteChoice
from consortium.governance.policy import ProposalKind
from consortium.hub.blobs import BlobStore
from consortium.contributions import ValueMetric
from consortium.fl.valuation import MAX_EXACT_PLAYERS
from consortium.hub.db.models import Dataset, Org, Project, ProjectDataset, Proposal, Run, Vote
from consortium.hub.services import datasets as dataset_service
from consortium.hub.services import environments as environment_service
from consortium.hub.services import credits, ledger, licensing, privacy_budgets, proposals
from consortium.hub.services.access import can_process_source, reader, visible_project
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden
from consortium.hub.services.identity import Principal, require_role
from consortium.hub.services.proposal_records import close_as_withdrawn
from consortium.plan import RunPlan
from consortium.protocol import ProjectCreate, ProjectOut, Role
from consortium.statuses import RunStatus
from consortium.test_sets import TestSet, TestSetError, check_test_set, unbundle

def spec_hash(spec: ProjectCreate) -> str:
    """SHA-256 of the canonical JSON of a project spec: what an org approves when it signs."""
    return crypto.sha256_hex(crypto.canonical_json(spec.model_dump(mode="json")))


def num_features(schema: dict) -> int:
    """Width of the flattened feature vector described by a dataset schema."""
    return sum(math.prod(col.get("shape") or [1]) for col in schema["features"])


def feature_names(schema: dict) -> list[str]:
    """Names of the training matrix's columns a dataset schema describes (``tables.feature_names``)."""
    return feature_names_of([(c["name"], math.prod(c.get("shape") or [1])) for c in schema["features"]])


def feature_signature(schema: dict) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(c["name"], c["dtype"], tuple(c.get("shape") or ())) for c in schema["features"]]


def plan_of(spec: ProjectCreate) -> RunPlan:
    """The spec's :class:`RunPlan` (before its data is known); BadRequest naming the field at fault."""
    try:
        return RunPlan.of(spec)
    except FLError as exc:
        raise BadRequest(str(exc)) from exc


def check_sources_fit(spec: ProjectCreate, plan: RunPlan) -> None:
    """BadRequest when the algorithm and the kind of data the spec names do not fit: an algorithm that trains
    in environments needs environments only, any other needs datasets only."""
    name = spec.algorithm.name
    if plan.algorithm.trains_in_environments:
        if spec.datasets:
            raise BadRequest(
                f"datasets: the {name!r} algorithm trains in environments, not on datasets; name the "
                "organisations' environments (org/name) under 'environments' instead"
            )
    elif spec.environments:
        raise BadRequest(
            f"environments: the {name!r} algorithm trains on rows of data, not in environments; name "
            "datasets (org/name) under 'datasets' instead"
        )


def check_valuation(spec: ProjectCreate, plan: RunPlan, sources: int) -> None:
    """A valuation the hub can carry out: exact Shapley only for few sources, a value metric it knows."""
    if spec.valuation is None:
        return
    if spec.valuation.method == "exact-shapley" and sources > MAX_EXACT_PLAYERS:
        raise BadRequest(f"valuation.method: exact Shapley enumerates 2**n coalitions; {sources} data sources "
                         f"are over {MAX_EXACT_PLAYERS} (use gtg-shapley)")
    try:
        ValueMetric.of(plan.algorithm.name, spec.valuation.metric, spec.valuation.higher_is_better)
    except FLError as exc:
        raise BadRequest(str(exc)) from exc


def validate_spec(spec: ProjectCreate, plan: RunPlan, datasets: list[Dataset]) -> None:
    """Check the resolved ``plan`` against the project's data sources (``datasets``: its datasets, or its
    environments): the strategy's cohort, one schema or environment, min_nodes, the model's size;
    BadRequest with the reason."""
    try:
        plan.strategy.check_cohort(spec.min_nodes)
    except FLError as exc:
        raise BadRequest(
            f"strategy: {exc}; a round may aggregate as few as min_nodes={spec.min_nodes} updates"
        ) from exc
    names = ", ".join(f"{d.org.name}/{d.name}" for d in datasets)
    env_ids = {d.environment["env_id"] for d in datasets if d.environment is not None}
    if len(env_ids) > 1:
        raise BadRequest(
            f"environments: {names} are different environments ({', '.join(sorted(env_ids))}); a project "
            "trains in variants of one environment id"
        )
    signatures = {feature_signature(d.schema).__repr__(): d for d in datasets}
    if len(signatures) > 1:
        raise BadRequest(f"datasets: the feature schemas of {names} differ; a project needs one schema")
    if spec.min_nodes > len(datasets):
        what = "environments" if spec.environments else "datasets"
        raise BadRequest(f"min_nodes: {spec.min_nodes} exceeds the {len(datasets)} {what} in the project")
    check_valuation(spec, plan, len(datasets))
    strings = [c["name"] for c in (datasets[0].schema or {}).get("features", []) if c.get("dtype") == "string"]
    unencoded = [name for name in strings if name not in (spec.preprocessing.categorical if spec.preprocessing
                                                          else ())]
    if unencoded:
        raise BadRequest(f"preprocessing.categorical: the datasets' column(s) {', '.join(unencoded)} hold strings "
                         "(categories); list them there to one-hot encode them")
    if spec.preprocessing is not None:
        try:
            layout(spec.preprocessing, feature_names(datasets[0].schema))
        except FLError as exc:
            raise BadRequest(str(exc)) from exc
    # One-hot columns widen the features by their categories, known only once the nodes' statistics are in.
    if not plan.algorithm.needs_client_init and not (spec.preprocessing and spec.preprocessing.categorical):
        try:
            plan.knowing(num_features(datasets[0].schema), len(datasets)).init_params()
        except FLError as exc:
            raise BadRequest(f"algorithm.hyperparameters: {exc}") from exc


def check_may_process(session: Session, actor: Principal, sources: list[Dataset]) -> None:
    """Forbidden naming the first source the proposer's org may not process (the admin: one not granted to
    every member); the rights are checked here, at proposal time only."""
    who = reader(session, actor)
    for source in sources:
        if not can_process_source(who, source):
            field = "environments" if source.kind == environment_service.KIND else "datasets"
            holder = who.org or ("the admin" if who.is_admin else "a user without an organisation")
            raise Forbidden(f"{field}: {source.org.name}/{source.name}: {holder} may not process it (its "
                            "owner has not granted the 'process' right)")


def create(session: Session, actor: Principal, spec: ProjectCreate, test_set: bytes | None = None,
           blobs: BlobStore | None = None) -> Project:
    """Propose a project (with its hub test set, when given): every check, the test set's included, comes
    before anything is written, so a refused proposal leaves nothing behind."""
    require_role(actor, Role.researcher, Role.steward, Role.admin)
    taken = session.scalar(select(Project).where(Project.name == spec.name))
    if taken is not None:
        raise Conflict(f"project {spec.name!r} already exists (project {taken.id}, {taken.status}, "
                       f"proposed by {taken.proposer}); choose another name", project_id=taken.id)
    plan = plan_of(spec)
    check_sources_fit(spec, plan)
    datasets = [dataset_service.by_ref(session, actor, ref) for ref in spec.datasets]
    datasets += [environment_service.by_ref(session, actor, ref) for ref in spec.environments]
    check_may_process(session, actor, datasets)
    validate_spec(spec, plan, datasets)
    privacy_budgets.check_proposal(session, spec, plan, datasets)
    licensing.check_sources_mix("environments" if spec.environments else "datasets", datasets)
    checked = None if test_set is None else checked_test_set(spec, datasets, test_set)
    digest = spec_hash(spec)
    project = Project(
        name=spec.name, spec=spec.model_dump(mode="json"), spec_hash=digest, proposer=actor.label,
        test_set_sha256=None if checked is None else crypto.sha256_hex(checked.payload),
    )
    if checked is not None and blobs is not None:
        blobs.put(checked.payload)
    session.add(project)
    session.flush()
    for dataset in datasets:
        session.add(ProjectDataset(project_id=project.id, dataset_id=dataset.id))
    if actor.org_id is not None:
        credits.charge_project(session, session.get(Org, actor.org_id), project)
    ledger.record(
        session, "project.proposed", actor.label,
        {"project": spec.name, "project_id": project.id, "spec_hash": digest, "datasets": spec.datasets}
        | ({"environments": spec.environments} if spec.environments else {})
        | ({"test_set_sha256": project.test_set_sha256} if project.test_set_sha256 else {}),
        scope=ledger.project_scope(project.id),
    )
    proposals.propose_run(session, project, actor.label)
    session.commit()
    return project


def checked_test_set(spec: ProjectCreate, sources: list[Dataset], payload: bytes) -> TestSet:
    """The test set in ``payload`` checked against the project's data (BadRequest saying what is wrong)."""
    if spec.environments:
        raise BadRequest(
            "a project trained in environments has no test set: the nodes evaluate it in their environments"
        )
    try:
        return check_test_set(payload, num_features(sources[0].schema))
    except TestSetError as exc:
        raise BadRequest(str(exc)) from exc


def unbundled(payload: bytes) -> tuple[ProjectCreate, bytes]:
    """The spec and test set of a proposal uploaded with its test set; BadRequest naming what is wrong."""
    try:
        spec_json, test_set = unbundle(payload)
        return ProjectCreate.model_validate(strict_json.loads(spec_json)), test_set
    except TestSetError as exc:
        raise BadRequest(str(exc)) from exc
    except strict_json.StrictJSONError as exc:
        raise BadRequest(f"spec: not strict JSON: {exc.msg}{exc.where()}") from exc
    except ValidationError as exc:
        raise BadRequest("; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                   for e in exc.errors(include_url=False))) from exc


def get(session: Session, actor: Principal, project_id: int) -> Project:
    """The project if the caller takes part in it; NotFound otherwise."""
    return visible_project(session, actor, project_id)


def project_datasets(session: Session, project: Project) -> list[Dataset]:
    """The project's data sources with their orgs, in one query (a vote or a run on a thousand sources read
    each source's org apart before)."""
    rows = session.scalars(
        select(ProjectDataset).where(ProjectDataset.project_id == project.id).order_by(ProjectDataset.dataset_id)
        .options(joinedload(ProjectDataset.dataset).joinedload(Dataset.org))
    )
    return [row.dataset for row in rows]


def current_proposal(session: Session, project: Project) -> Proposal:
    """The ``run_project`` proposal of the project's current version."""
    row = proposals.project_proposal(session, project)
    if row is None:
        raise RuntimeError(f"project {project.id} has no run_project proposal")
    return row


def check_may_run(session: Session, project: Project) -> None:
    """Conflict unless the members decided that this version of the project may run."""
    row = current_proposal(session, project)
    proposals.settle(session, row)
    if row.status != ProposalStatus.passed.value:
        why = row.reason or proposals.outcome(session, row).reason
        raise Conflict(f"project {project.name!r} cannot run yet: proposal {row.id} is {row.status} ({why})",
                       proposal_id=row.id)
    if project.status != "approved":
        raise Conflict(f"project {project.name!r} cannot run: {project.status}")


def set_test_set(
    session: Session, blobs: BlobStore, actor: Principal, project_id: int, payload: bytes
) -> str:
    """Attach a held-out test set (safetensors with ``x`` float32 [n, features] and ``y`` [n]), stored in its
    canonical form (:func:`consortium.test_sets.check_test_set`: the same tensors hash the same).

    The test set is part of what the members vote on: a new one makes a new version of the project, back to
    ``proposed`` with a new ``run_project`` proposal (the open one of the previous version is withdrawn, and
    votes on it count for nothing). Refused while a run of the project is in progress.
    """
    project = get(session, actor, project_id)
    if actor.label != project.proposer and actor.role != Role.admin:
        raise Forbidden("only the project's proposer can attach its test set")
    if project.status == "withdrawn":
        raise Conflict(f"project {project.name!r} was withdrawn; propose a new project instead")
    payload = checked_test_set(ProjectCreate.model_validate(project.spec), project_datasets(session, project),
                               payload).payload
    ledger.lock(session)  # a run that starts meanwhile is seen, and sees the new version
    session.refresh(project)
    running = session.scalar(select(Run.id).where(Run.project_id == project.id, Run.status == RunStatus.running))
    if running is not None:
        raise Conflict(f"project {project.name!r} has run {running} in progress; its test set can change "
                       "once the run has ended")
    digest = crypto.sha256_hex(payload)
    if digest == project.test_set_sha256:
        return digest
    blobs.put(payload)
    previous, project.test_set_sha256, project.status = project.test_set_sha256, digest, "proposed"
    ledger.record(session, "project.test_set", actor.label,
                  {"project_id": project.id, "sha256": digest, "previous_sha256": previous,
                   "status": "proposed"}, scope=ledger.project_scope(project.id))
    proposals.propose_run(session, project, actor.label)
    session.commit()
    return digest


def to_out(session: Session, project: Project) -> ProjectOut:
    """The project as the API shows it; its owners and yes votes read as names only (a project of a thousand
    sources is read without loading its sources)."""
    (summary,) = summaries(session, [project])
    return ProjectOut(
        id=project.id,
        name=project.name,
        spec=ProjectCreate.model_validate(project.spec),
        spec_hash=project.spec_hash,
        status=project.status,
        proposer=project.proposer,
        required_orgs=summary.required_orgs,
        approved_orgs=summary.approved_orgs,
        proposal_id=current_proposal(session, project).id,
        has_test_set=project.test_set_sha256 is not None,
        created_at=project.created_at,
        test_set_sha256=project.test_set_sha256,
    )


@dataclass(frozen=True)
class ProjectSummary:
    """A project's line in a list: what :func:`to_out` says of its owners and votes, without the spec."""

    id: int
    name: str
    status: str
    proposer: str
    required_orgs: list[str]
    approved_orgs: list[str]


def summaries(session: Session, projects: list[Project]) -> list[ProjectSummary]:
    """:class:`ProjectSummary` of each project, in order, in three queries however many there are."""
    ids = [p.id for p in projects]
    owners: dict[int, set[str]] = {i: set() for i in ids}
    for project_id, org in session.execute(
        select(ProjectDataset.project_id, Org.name).join(Dataset, Dataset.id == ProjectDataset.dataset_id)
        .join(Org, Org.id == Dataset.org_id).where(ProjectDataset.project_id.in_(ids))
    ):
        owners[project_id].add(org)
    current = dict(session.execute(
        select(Proposal.project_id, func.max(Proposal.id))
        .where(Proposal.project_id.in_(ids), Proposal.kind == ProposalKind.run_project.value)
        .group_by(Proposal.project_id)
    ).all())
    yes: dict[int, set[str]] = {}
    for proposal_id, org in session.execute(
        select(Vote.proposal_id, Org.name).join(Org, Org.id == Vote.org_id)
        .where(Vote.proposal_id.in_(list(current.values())), Vote.choice == VoteChoice.yes)
    ):
        yes.setdefault(proposal_id, set()).add(org)
    return [ProjectSummary(p.id, p.name, p.status, p.proposer, sorted(owners[p.id]),
                           sorted(yes.get(current.get(p.id, -1), ()))) for p in projects]


def withdraw(session: Session, actor: Principal, project_id: int, reason: str = "") -> Project:
    """The proposer withdraws a project that never ran: status ``withdrawn``, its open ``run_project``
    proposal withdrawn, a ``project.withdrawn`` ledger entry. Its name stays taken (the ledger names it)."""
    ledger.lock(session)
    project = get(session, actor, project_id)
    if actor.label != project.proposer:
        raise Forbidden(f"only the proposer ({project.proposer}) can withdraw project {project.id}")
    if project.status == "withdrawn":
        raise Conflict(f"project {project.name!r} is already withdrawn")
    ran = session.scalar(select(Run.id).where(Run.project_id == project.id).limit(1))
    if ran is not None:
        raise Conflict(f"project {project.name!r} ({project.status}) has run {ran}: a project that ran stays on "
                       "record")
    row = current_proposal(session, project)
    proposals.settle(session, row)
    if row.status == ProposalStatus.open.value:
        close_as_withdrawn(session, row, actor.label, reason or "the project was withdrawn by its proposer")
    project.status = "withdrawn"
    ledger.record(session, "project.withdrawn", actor.label,
                  {"project_id": project.id, "project": project.name, "reason": reason},
                  scope=ledger.project_scope(project.id))
    session.commit()
    return project
