"""Wire schemas of challenges: the host's signed opening statement, submissions, signed scores, boards."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from consortium.governance.challenges import OPENED_TYPE
from consortium.protocol import NAME_PATTERN, AlgorithmSpec, DatasetSchema, Wire

HEX64 = r"^[0-9a-f]{64}$"
INT32_MAX = 2**31 - 1


class ChallengeStatement(Wire):
    """What the host signs to open a challenge: the task, the metric, the schema a submission must fit, the
    rules, and the commitment to its hidden test set (split seed and each part's SHA-256; the rows stay on
    the host's node). It is the ``challenge.opened`` ledger entry's payload, exactly."""

    type: Literal["consortium-challenge/1"] = OPENED_TYPE
    hub_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    host: str = Field(pattern=NAME_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)
    task: str = Field(min_length=1, max_length=2000)
    algorithm_family: str = Field(default="classifier", min_length=1, max_length=100,
                                  description="the algorithm every submission's spec must name")
    metric: str = Field(min_length=1, max_length=100, description="a metric the algorithm's evaluate reports")
    higher_is_better: bool = True
    schema_: DatasetSchema = Field(alias="schema", description="the test set's columns (no rows)")
    num_features: int = Field(ge=1, le=10**8)
    deadline: AwareDatetime
    daily_limit: int = Field(ge=1, le=1000, description="submissions per org per UTC day")
    prize: int = Field(default=0, ge=0, le=10**12, description="credits, held from the host at opening")
    split_seed: int = Field(ge=0, le=2**63 - 1)
    public_fraction: float = Field(gt=0.0, lt=1.0)
    public_sha256: str = Field(pattern=HEX64)
    private_sha256: str = Field(pattern=HEX64)
    public_rows: int = Field(ge=1, le=2**62)
    private_rows: int = Field(ge=1, le=2**62)


class ChallengeCreate(Wire):
    statement: ChallengeStatement
    signature: str = Field(max_length=200, description="the host org's Ed25519 signature (base64)")


class ChallengeOut(Wire):
    id: int
    status: Literal["open", "closed", "final"]
    statement: ChallengeStatement
    opened_seq: int
    submissions: int


class SubmissionMeta(Wire):
    """The JSON under ``__metadata__['submission']`` of a weights submission (safetensors)."""

    algorithm: AlgorithmSpec
    note: str = Field(default="", max_length=500)


class ModelSubmission(Wire):
    """A released model entered as a (team) submission: the team is the orgs whose data trained it."""

    model_id: int = Field(ge=1, le=INT32_MAX)
    note: str = Field(default="", max_length=500)


class ScoreOut(Wire):
    score: float | None
    error: str = ""
    ledger_seq: int


class SubmissionOut(Wire):
    id: int
    challenge_id: int
    org: str
    team: list[str]
    model_id: int | None
    weights_sha256: str
    algorithm: AlgorithmSpec
    submitted_at: datetime
    public: ScoreOut | None
    private: ScoreOut | None = Field(default=None,
                                     description="hidden from all but the host until the deadline")


class PendingEvaluation(Wire):
    """A submission the host's node has to score on ``part`` (the private part only after the deadline)."""

    submission_id: int
    challenge_id: int
    challenge: str
    part: Literal["public", "private"]
    weights_sha256: str
    algorithm: AlgorithmSpec


class ScoreIn(Wire):
    """A host's signed score statement (:func:`consortium.governance.challenges.score_statement`)."""

    statement: dict[str, Any]
    signature: str = Field(max_length=200)


class PlacingOut(Wire):
    rank: int
    org: str
    team: list[str]
    submission_id: int
    score: float
    submitted_at: datetime


class LeaderboardOut(Wire):
    challenge_id: int
    board: Literal["public", "final"]
    metric: str
    higher_is_better: bool
    placings: list[PlacingOut]

