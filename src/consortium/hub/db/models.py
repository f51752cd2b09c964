"""The hub's tables (SQLAlchemy 2 typed ORM). Schema changes go through Alembic migrations only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from consortium.statuses import RoundStatus, RunStatus, TaskStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Org(Base):
    __tablename__ = "orgs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="admitted")
    public_key: Mapped[str | None] = mapped_column(String(100))
    key_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OrgKey(Base):
    """A key an org holds or held: signatures made before a rotation verify with the key of their time."""

    __tablename__ = "org_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    public_key: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]
    rotation_signature: Mapped[str | None] = mapped_column(String(200))
    """The retiring key's signature over the rotation to this key (None for an org's first key)."""


class EnrolmentToken(Base):
    __tablename__ = "enrolment_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Node(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    name: Mapped[str] = mapped_column(String(63))
    key_id: Mapped[str] = mapped_column(String(32))
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime | None]


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("orgs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    active: Mapped[bool] = mapped_column(default=True, server_default=true())
    org: Mapped[Org | None] = relationship()


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    user: Mapped[User] = relationship()


class SeenNonce(Base):
    __tablename__ = "seen_nonces"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Dataset(Base):
    """A data source an org publishes: a table of rows (``kind`` "table") or an RL environment.

    An environment's ``schema`` is its observation (one float32 feature of the observation's shape),
    ``rows`` is 0, ``sha256`` its physics commitment and ``environment`` holds the gymnasium id and, unless
    private, the physics and their salt. Projects, tasks and approvals refer to both kinds alike.
    """

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(20), default="table", server_default="table")
    description: Mapped[str] = mapped_column(Text, default="")
    schema: Mapped[dict[str, Any]]
    rows: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    license: Mapped[str] = mapped_column(String(200))
    visibility: Mapped[str] = mapped_column(String(20))
    process_grant: Mapped[Any] = mapped_column(JSON, nullable=True)
    """A ``Grant.dump()`` value; None: every member may process it."""
    download_grant: Mapped[Any] = mapped_column(JSON, nullable=True)
    """A ``Grant.dump()`` value; None: nobody but the owner may download it."""
    file_format: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    privacy_epsilon: Mapped[float | None] = mapped_column(Float)
    """The owner's total privacy budget (epsilon, at ``privacy_delta``); None: no budget."""
    privacy_delta: Mapped[float | None] = mapped_column(Float)
    org: Mapped[Org] = relationship()


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="proposed")
    proposer: Mapped[str] = mapped_column(String(63))
    test_set_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProjectDataset(Base):
    __tablename__ = "project_datasets"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    dataset: Mapped[Dataset] = relationship()


class PolicyVersion(Base):
    """One version of the consortium policy (:class:`consortium.governance.policy.ConsortiumPolicy`); the
    newest is in force. Version 1 is the default the hub starts with; every later one comes from a passed
    ``change_policy`` proposal."""

    __tablename__ = "policy_versions"
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    body: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    proposal_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Proposal(Base):
    """A decision put to the members: its kind, its subject, the content hash votes sign, who may vote
    (``electorate``, fixed when it opens), who holds a veto, and, once decided, the outcome the hub signed."""

    __tablename__ = "proposals"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    subject: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    proposer: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="open", index=True)
    policy_version: Mapped[int]
    electorate: Mapped[list[Any]]
    veto_holders: Mapped[list[Any]]
    must_approve: Mapped[list[Any]]
    advisory: Mapped[list[Any]]
    """Orgs that may vote without their votes being counted (members outside a data-owner electorate)."""
    """Orgs whose yes the proposal needs (a ``run_project``'s data owners under the default policy)."""
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closes_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    withdrawn_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The signed outcome statement (:func:`consortium.governance.statements.outcome_statement`)."""
    outcome_signature: Mapped[str | None] = mapped_column(String(200))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), index=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("orgs.id"))
    model_id: Mapped[int | None] = mapped_column(Integer)


class Vote(Base):
    """An org's signed vote on a proposal; a later vote of the same org replaces it while the proposal is
    open (one row per org and proposal)."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("proposal_id", "org_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    choice: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(Text, default="")
    signature: Mapped[str] = mapped_column(String(200))
    cast_at: Mapped[datetime] = mapped_column(default=utcnow)
    org: Mapped[Org] = relationship()


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.running)
    current_round: Mapped[int] = mapped_column(Integer, default=-1)
    """Last round whose checkpoint is written: -1 none, 0 initial params, r after round r."""
    params_sha256: Mapped[str | None] = mapped_column(String(64))
    server_state_sha256: Mapped[str | None] = mapped_column(String(64))
    """The server optimiser's state (momentum, moments) checkpointed with ``params_sha256``; None without one."""
    preprocessing: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The transform fitted from the nodes' statistics (``FittedPreprocessing``); None without one."""
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    project: Mapped[Project] = relationship()


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "number", "attempt"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    number: Mapped[int]
    attempt: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(20), default=RoundStatus.open)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=TaskStatus.pending, index=True)
    params_sha256: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    deadline: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    update_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    org: Mapped[Org] = relationship()
    dataset: Mapped[Dataset] = relationship()


class PrivacyCharge(Base):
    """One round a node charged to its dataset's privacy budget, as the node reported it (one per task)."""

    __tablename__ = "privacy_charges"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), unique=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    round: Mapped[int]
    noise_multiplier: Mapped[float] = mapped_column(Float)
    sampling_rate: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    steps: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Sampled Gaussian steps in the round (DP-SGD's local steps; 1 for DP-FedAvg)."""


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    params_sha256: Mapped[str] = mapped_column(String(64))
    license: Mapped[str] = mapped_column(String(400))
    card: Mapped[dict[str, Any]]
    card_markdown: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int | None] = mapped_column(Integer)
    """The n-th model of its project's line (one per finished run)."""
    status: Mapped[str] = mapped_column(String(20), default="trained", server_default="trained")
    """``trained`` until a ``release_model`` proposal passes, then ``released`` (card and rights frozen)."""
    release_proposal_id: Mapped[int | None] = mapped_column(Integer)
    released_at: Mapped[datetime | None]
    visibility: Mapped[str | None] = mapped_column(String(20))
    process_grant: Mapped[Any] = mapped_column(JSON, nullable=True)
    download_grant: Mapped[Any] = mapped_column(JSON, nullable=True)
    project: Mapped[Project] = relationship()


class LedgerHead(Base):
    """One row: the newest ledger seq and hash. Updating it first serialises appends on every backend."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class LedgerEntry(Base):
    """One ledger entry (see :mod:`consortium.ledger.chain`): sealed when ``salt`` is set, plain (written
    before payloads became redactable) when it is NULL.

    ``project_id`` / ``dataset_id`` scope the entry: its payload is shown only to those who may see that
    project or data source, decided when the ledger is read; an entry with neither is shown to every member.
    """

    __tablename__ = "ledger_entries"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_type: Mapped[str] = mapped_column(String(60))
    actor: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[str] = mapped_column(String(40))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    salt: Mapped[str | None] = mapped_column(String(32))
    payload_commitment: Mapped[str | None] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(Integer)
    dataset_id: Mapped[int | None] = mapped_column(Integer)
    signature: Mapped[str | None] = mapped_column(String(100))
    signer_key_id: Mapped[str | None] = mapped_column(String(32))
    actor_key_id: Mapped[str | None] = mapped_column(String(32))
    actor_signature: Mapped[str | None] = mapped_column(String(100))


class LedgerTree(Base):
    """The hash of every perfect subtree of the ledger's Merkle tree above the leaves (``level`` >= 1; a leaf
    is its entry's hash), written when its last leaf is added (see :mod:`consortium.ledger.merkle`)."""

    __tablename__ = "ledger_tree"
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerTreeHead(Base):
    """One row: how many entries the stored tree covers. Updating it first serialises tree builders."""

    __tablename__ = "ledger_tree_head"
    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerCheckpoint(Base):
    """A signed checkpoint: hub ``origin`` says its ledger's first ``size`` entries have Merkle ``root``."""

    __tablename__ = "ledger_checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    origin: Mapped[str] = mapped_column(String(64))
    root: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(100))


class LedgerCosignature(Base):
    """An org's signature over a checkpoint it checked as consistent with the last one it kept."""

    __tablename__ = "ledger_cosignatures"
    __table_args__ = (UniqueConstraint("checkpoint_size", "org_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger, ForeignKey("ledger_checkpoints.size"))
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


__all__ = [
    "Base",
    "Org",
    "EnrolmentToken",
    "Node",
    "User",
    "ApiToken",
    "SeenNonce",
    "Dataset",
    "Project",
    "ProjectDataset",
    "PolicyVersion",
    "Proposal",
    "Vote",
    "Run",
    "Round",
    "Task",
    "Model",
    "LedgerHead",
    "LedgerEntry",
    "LedgerTree",
    "LedgerTreeHead",
    "LedgerCheckpoint",
    "LedgerCosignature",
]


class CreditMovement(Base):
    """An index of one ``credits.earned`` / ``credits.spent`` ledger entry (the ledger is the record; a
    balance is the sum of an org's rows, which equals the sum of its entries)."""

    __tablename__ = "credit_movements"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    """Signed: earned positive, spent negative."""
    reason: Mapped[str] = mapped_column(String(20))
    reference: Mapped[str] = mapped_column(String(100))
    """What moved it (``model:7``, ``run:3``, ``project:12``): one earn or spend per org, reason and reference."""
    ledger_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("org_id", "reason", "reference"),)
