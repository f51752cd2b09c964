"""Wire schemas shared by hub, node and CLI (the tensor codec is :mod:`consortium.codec`).

Every JSON message is a pydantic model (unknown keys rejected, floats finite, integers within int64); every
tensor crosses the network as safetensors bytes. Nothing on the network path is ever unpickled.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from consortium.preprocessing_wire import FittedPreprocessing, PreprocessingSpec
from consortium.privacy_wire import PrivacyBudgetSpec, PrivacySpec, SecureAggregationSpec
from consortium.valuation_wire import ValuationSpec


NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SPDX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.+-]*( (WITH|AND|OR) [A-Za-z0-9][A-Za-z0-9.+-]*)*$"
SAFETENSORS_MEDIA_TYPE = "application/vnd.safetensors"
INT32_MAX = 2**31 - 1
"""Largest database id (the id columns are 32-bit integers on PostgreSQL)."""
INT64_MAX = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT64_MAX, description="a non-negative 64-bit integer")]


class Wire(BaseModel):
    """Base of every wire message: strict about unknown fields; every float is finite (NaN and infinity have
    no JSON form and no meaning here)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Role(StrEnum):
    admin = "admin"
    steward = "steward"
    researcher = "researcher"


class Visibility(StrEnum):
    private = "private"
    members = "members"
    public = "public"


# ---------------------------------------------------------------------------------------------- identity


class OrgCreate(Wire):
    name: str = Field(pattern=NAME_PATTERN)
    display_name: str = Field(default="", max_length=200)


class OrgOut(Wire):
    id: int
    name: str
    display_name: str
    status: str
    public_key: str | None
    key_id: str | None
    last_seen_s_ago: float | None = Field(default=None, description="since the org's node last called the hub")


class EnrolmentTokenOut(Wire):
    org: str
    token: str
    expires_at: datetime


class EnrolRequest(Wire):
    org: str = Field(pattern=NAME_PATTERN)
    token: str = Field(min_length=16, max_length=200)
    public_key: str = Field(max_length=100, description="Ed25519 public key, raw 32 bytes, base64")
    node_name: str = Field(default="node", pattern=NAME_PATTERN)


class EnrolResponse(Wire):
    org: str
    node_id: int
    key_id: str


class UserCreate(Wire):
    name: str = Field(pattern=NAME_PATTERN)
    role: Role
    org: str | None = Field(default=None, pattern=NAME_PATTERN)


class UserOut(Wire):
    id: int
    name: str
    role: Role
    org: str | None


class TokenOut(Wire):
    user: UserOut
    token: str


# ---------------------------------------------------------------------------------------------- datasets

GrantValue = (
    Literal["everyone", "members", "nobody"]
    | Annotated[list[Annotated[str, Field(pattern=NAME_PATTERN)]], Field(min_length=1, max_length=1000)]
)
"""Who, besides the owner, holds a right (``governance.permissions.Grant.dump``): ``everyone`` (download
only: anonymous callers too), every ``members`` org, ``nobody``, or the named orgs."""


class SourceRightsIn(Wire):
    """A data source's owner changes who may see it, process (train on) it and download it; a field left out
    stays as it is. Projects proposed before keep the rights they were proposed under."""

    visibility: Visibility | None = None
    process: GrantValue | None = None
    download: GrantValue | None = None



class ColumnSchema(Wire):
    name: str = Field(min_length=1, max_length=200)
    dtype: Literal["int64", "float64", "float32", "bool", "string"]
    shape: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(
        default=None, max_length=8, description="per-example shape for array features (npz)"
    )


class DatasetSchema(Wire):
    features: list[ColumnSchema] = Field(min_length=1, max_length=100_000)
    target: ColumnSchema | None = None
    categorical: list[str] | None = Field(default=None, max_length=100_000,
                                         description="feature columns of categories (one-hot encoded later)")

    @model_validator(mode="after")
    def _categorical_are_features(self) -> DatasetSchema:
        names = {c.name for c in self.features}
        unknown = [name for name in self.categorical or () if name not in names]
        if unknown:
            raise ValueError(f"categorical column(s) {', '.join(unknown)} are not feature columns")
        return self


class DatasetCardIn(Wire):
    """What a node tells the hub about a local dataset: metadata only, never rows."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=10_000)
    schema_: DatasetSchema = Field(alias="schema")
    rows: int = Field(ge=1, le=INT64_MAX)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str = Field(pattern=SPDX_PATTERN, max_length=200)
    visibility: Visibility = Visibility.members
    file_format: Literal["csv", "parquet", "npz"] = "csv"
    privacy_budget: PrivacyBudgetSpec | None = Field(default=None, exclude_if=lambda value: value is None,
                                                     description="owner's total (epsilon, delta); node-enforced")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatasetCardOut(DatasetCardIn):
    id: int
    org: str
    created_at: datetime
    process: GrantValue = "members"
    download: GrantValue = "nobody"
    privacy_spent: float | None = None  # epsilon of the charges its node reported, composed, at the budget's delta
    privacy_left: float | None = None


# ---------------------------------------------------------------------------------------------- projects


class AlgorithmSpec(Wire):
    name: str = Field(min_length=1, max_length=100)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class ServerOptimizerSpec(Wire):
    name: str = Field(description="sgd, adam, yogi or adagrad")
    options: dict[str, Any] = Field(default_factory=dict)


class StrategySpec(Wire):
    name: str | None = Field(default=None, description="defaults to the algorithm's default strategy")
    options: dict[str, Any] = Field(default_factory=dict)
    server_optimizer: ServerOptimizerSpec | None = Field(
        default=None,
        # Left out of the JSON when unset: the hash of a spec written before this field existed is unchanged.
        exclude_if=lambda value: value is None,
        description="how the global params move towards the aggregate; none means they are replaced by it",
    )
    secure_aggregation: SecureAggregationSpec | None = Field(default=None, exclude_if=lambda value: value is None,
                                                             description="SecAgg+; none: updates go in clear")


_SOURCE_REF = re.compile(r"[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*")
"""A dataset or environment reference, ``org/name``: compiled once (a 1,000-source spec checks 1,000 of them
every time a node parses a task)."""


class ProjectCreate(Wire):
    name: str = Field(pattern=NAME_PATTERN)
    task: str = Field(default="", max_length=2000, description="what the collaboration is for, in words")
    algorithm: AlgorithmSpec
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    datasets: list[str] = Field(default_factory=list, description="dataset references as 'org/name'")
    environments: list[str] = Field(
        default_factory=list,
        # Left out of the JSON when empty: the hash of a spec that names datasets is unchanged.
        exclude_if=lambda value: not value,
        description="RL environment references as 'org/name' (instead of datasets)",
    )
    rounds: int = Field(ge=1, le=100_000)
    min_nodes: int = Field(default=2, ge=1, le=100_000,
                           description="fewest updates a round aggregates; default 2 (1 with one data source)")
    round_timeout: float = Field(default=300.0, gt=0, le=86_400)
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0, lt=2**63)
    privacy: PrivacySpec | None = Field(
        default=None,
        # Left out of the JSON when unset: the hash of a spec without privacy settings is unchanged.
        exclude_if=lambda value: value is None,
        description="client-level differential privacy; none means updates are not privatised",
    )
    valuation: ValuationSpec | None = Field(default=None, exclude_if=lambda value: value is None,
                                            description="each org's measured contribution; none: not measured")
    preprocessing: PreprocessingSpec | None = Field(  # left out when unset: older specs hash the same
        default=None, exclude_if=lambda value: value is None, description="features scaled, one-hot encoded, "
        "imputed with statistics computed across the nodes before round 1")

    @field_validator("datasets", "environments")
    @classmethod
    def _refs(cls, refs: list[str], info: ValidationInfo) -> list[str]:
        what = "dataset" if info.field_name == "datasets" else "environment"
        for ref in refs:
            if not _SOURCE_REF.fullmatch(ref):
                raise ValueError(f"{what} reference {ref!r} must look like 'org/{what}'")
        if len(set(refs)) != len(refs):
            raise ValueError(f"a {what} is listed twice")
        return refs

    @model_validator(mode="after")
    def _sources(self) -> ProjectCreate:
        sources = len(self.datasets) + len(self.environments)
        if not sources:
            raise ValueError("a project names at least one dataset (or, for RL, one environment)")
        if self.preprocessing is not None and (self.environments or self.privacy is not None):
            if self.environments:
                raise ValueError("preprocessing applies to datasets, not to RL environments")
            raise ValueError("preprocessing statistics are exact aggregates, not differentially private: a "
                             "project with privacy cannot use preprocessing (scale the data on each node)")
        if "min_nodes" not in self.model_fields_set:
            self.min_nodes = min(self.min_nodes, sources)
        return self


SIMULATION_KEY = "simulation"
"""A spec file may carry simulator defaults under this key; a real project ignores them."""


def project_spec_from_json(text: str | bytes) -> ProjectCreate:
    """A project spec from a spec file's JSON, leaving out its simulator-only ``"simulation"`` object."""
    import json

    raw = json.loads(text)
    if isinstance(raw, dict):
        raw.pop(SIMULATION_KEY, None)
    return ProjectCreate.model_validate(raw)


class ProjectOut(Wire):
    id: int
    name: str
    spec: ProjectCreate
    spec_hash: str
    status: str
    proposer: str
    required_orgs: list[str]
    approved_orgs: list[str]
    has_test_set: bool
    created_at: datetime
    test_set_sha256: str | None = Field(
        default=None, description="SHA-256 of the hub-side test set (part of what a vote to run it covers)"
    )
    proposal_id: int | None = Field(default=None, description="the run_project proposal of this version")


# ---------------------------------------------------------------------------------------------- runs


class RunOut(Wire):
    id: int
    project_id: int
    status: str
    current_round: int
    rounds: int
    error: str | None
    model_id: int | None
    created_at: datetime
    finished_at: datetime | None


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A float that JSON (and the ledger's canonical JSON) can carry: NaN and infinities are refused."""
MetricName = Annotated[str, Field(min_length=1, max_length=100)]
MAX_METRICS = 64
"""The most metrics one answer may carry."""
MAX_WIRE_EXAMPLES = 2**53
"""An absolute ceiling on ``num_examples`` (exact as a float64 weight); the hub bounds it by the dataset."""


class RoundMetrics(Wire):
    """A closed round's metrics. Every value is finite: a metric the hub computed as NaN or infinite (a
    diverged model) is left out and named in ``diverged``."""

    round: int
    participants: list[str]
    dropped: list[str]
    train: dict[str, FiniteFloat]
    federated_eval: dict[str, FiniteFloat]
    test: dict[str, FiniteFloat]
    params_sha256: str
    opened_at: float = Field(description="unix time at which the round started (its params were written)")
    wall_s: float = Field(description="round start to metrics, before the checkpoint commit")
    federated_eval_pending: bool = Field(
        default=False, description="federated_eval arrives with the next round's updates (or the final evaluation)"
    )
    max_fit_compute_s: float
    max_eval_compute_s: float
    diverged: list[str] = Field(
        default_factory=list,
        # Left out of the JSON when empty: rounds stored before this field existed read back the same.
        exclude_if=lambda value: not value,
        description="metrics left out because they came out NaN or infinite, as 'test.loss', "
        "'train.train_loss' or 'federated_eval.accuracy'",
    )
    secure_aggregation: dict[str, Any] | None = Field(default=None, exclude_if=lambda value: value is None,
                                                      description="SecAgg: threshold, survivors per stage")
    baseline: dict[str, int | FiniteFloat] | None = Field(default=None, exclude_if=lambda value: value is None,
                                                          description="test set's majority class, its accuracy")


class RunProgress(Wire):
    run: RunOut
    rounds: list[RoundMetrics]
    warnings: list[str] = Field(default_factory=list, exclude_if=lambda v: not v,
                               description="e.g. no better than the majority class")
    refusals: list[str] = Field(default_factory=list, description="'round N: org/dataset refused: why', per task")
    contributions: dict[str, float] = Field(default_factory=dict, exclude_if=lambda v: not v,
                                            description="each org's measured contribution over the rounds valued")


class TaskKind(StrEnum):
    stats = "stats"
    init = "init"
    fit = "fit"
    evaluate = "evaluate"


class TaskFields(Wire):
    """A task's own fields; the tasks of one project version share the rest, their terms (:class:`TaskOut`)."""

    id: int
    kind: TaskKind
    run_id: int
    round: int
    dataset: str
    params_sha256: str | None
    seed: int
    evaluate_first: bool = Field(
        default=False,
        description="fit tasks: first evaluate the received params on the validation split and send the "
        "result with the update (federated evaluation of the previous round without an extra phase)",
    )


class TaskOut(TaskFields):
    """A unit of work for one node, delivered by the long poll, with its terms: the project version it runs
    (spec, test set), the hub's signed approval of it and the run's fitted transform."""

    project_id: int
    spec_hash: str
    spec: ProjectCreate
    test_set_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the project's hub-side test set (None: it has none); the node runs only the "
        "version of the project its org approved, test set included",
    )
    outcome: dict[str, Any] | None = Field(
        default=None, description="the hub's signed outcome statement of the project's passed run_project "
        "proposal: the node checks it with the hub key it pinned before it touches data")
    outcome_signature: str | None = Field(default=None, max_length=200,
                                          description="the hub's signature over the outcome statement")
    preprocessing: FittedPreprocessing | None = Field(default=None, exclude_if=lambda value: value is None,
                                                      description="the run's fitted transform, for the rows")


class TaskBrief(TaskFields):
    """A task sent without its terms to a node that holds them (it named them in the poll's ``terms``)."""

    terms_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the terms' JSON")


class TaskResult(Wire):
    """Result of an evaluate task (JSON); fit/init results travel as safetensors with :class:`UpdateMeta`.

    Numbers must be finite; the hub also bounds ``num_examples`` by the task's dataset (its rows)."""

    num_examples: int = Field(ge=0, le=MAX_WIRE_EXAMPLES)
    metrics: dict[MetricName, FiniteFloat] = Field(max_length=MAX_METRICS)
    compute_s: FiniteFloat = Field(ge=0)


class TaskRefusal(Wire):
    reason: str = Field(min_length=1, max_length=2000)


class UpdateMeta(Wire):
    """The JSON header (safetensors ``__metadata__``) of an uploaded update."""

    num_examples: int = Field(ge=0, le=MAX_WIRE_EXAMPLES)
    metrics: dict[MetricName, FiniteFloat] = Field(default_factory=dict, max_length=MAX_METRICS)
    compute_s: FiniteFloat = Field(ge=0, description="local compute of the whole task, evaluation included")
    evaluation: TaskResult | None = Field(default=None, description="present when the task asked evaluate_first")


# ---------------------------------------------------------------------------------------------- models, ledger


class ModelOut(Wire):
    id: int
    run_id: int
    project: str
    params_sha256: str
    license: str = Field(description="derived from the data until released, then the release's licence")
    card: dict[str, Any]
    created_at: datetime
    version: int | None = Field(default=None, description="the n-th model of its project's line")
    status: str = Field(default="trained", description="trained, or released (card, licence, rights frozen)")
    released_at: datetime | None = None
    release_proposal_id: int | None = None
    visibility: Visibility | None = Field(default=None, description="set by the release")
    obligations: dict[str, Any] = Field(default_factory=dict,
                                        description="what the data's licences oblige the model to do")
    challenges: list[dict[str, Any]] = Field(default_factory=list, description="challenges it was entered in")
