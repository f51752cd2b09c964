"""Open data exchange on the wire: a published dataset version, its datasheet, withdrawals and uploads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
CSV_MEDIA_TYPE = "text/csv"

Answer = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Version = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]


class Datasheet(BaseModel):
    """Gebru et al.'s *Datasheets for Datasets* questions, one answer each (every one required)."""

    model_config = ConfigDict(extra="forbid")
    motivation: Answer = Field(description="why the dataset was created, by whom, funded by whom")
    composition: Answer = Field(description="what the rows are, how many, what is missing; sensitive parts")
    collection: Answer = Field(description="how, when and from whom the data was collected; consent")
    preprocessing: Answer = Field(description="cleaning, labelling and anonymisation applied")
    uses: Answer = Field(description="what it has been and should (not) be used for")
    distribution: Answer = Field(description="how it is shared, under which licence and terms")
    maintenance: Answer = Field(description="who maintains it, how errors are reported, how versions follow")


Column = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Columns = Annotated[list[Column], Field(default_factory=list, max_length=10_000)]


class AnonymityReport(BaseModel):
    """What the owner's node declared about the table and measured on it before publishing (the hub refuses
    a report below the consortium policy's open data rules, and records it in the ledger)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    about_people: bool = Field(description="the rows describe people (false: the owner says they do not)")
    identifiers: Columns = Field(description="direct identifiers, dropped before publishing")
    quasi: Columns = Field(description="quasi-identifiers the classes are formed over")
    sensitive: Columns = Field(description="sensitive columns l and t are measured on")
    k: int | None = Field(default=None, ge=0, le=2**62, description="smallest equivalence class")
    l_diversity: int | None = Field(default=None, ge=0, le=2**62, description="fewest distinct sensitive values")
    t_closeness: float | None = Field(default=None, ge=0.0, le=1.0, description="largest EMD to the table's")
    at_fault: Columns = Field(description="columns the node found at fault")

    @model_validator(mode="after")
    def _measured(self) -> AnonymityReport:
        if self.quasi and (self.k is None or self.l_diversity is None):
            raise ValueError("a report with quasi-identifiers carries the measured k and l_diversity")
        return self


class SyntheticRelease(BaseModel):
    """Differentially private synthetic data: the Gaussian measurements its generator took of the real table
    (each of L2 sensitivity 1 under adding or removing a row), charged to the dataset's privacy budget."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    epsilon: float = Field(gt=0.0, le=100.0, description="the owner's epsilon at delta")
    delta: float = Field(gt=0.0, lt=1.0)
    noise_multiplier: float = Field(gt=0.0, le=1e6, description="noise standard deviation per unit sensitivity")
    measurements: int = Field(ge=1, le=100_000, description="Gaussian measurements (noisy marginals)")
    generator: str = Field(min_length=1, max_length=200)
    marginals: list[list[Column]] = Field(default_factory=list, max_length=100_000)


class OpenVersionIn(BaseModel):
    """Publish the staged upload ``sha256`` as ``version`` of a dataset (its owner's key or steward)."""

    model_config = ConfigDict(extra="forbid")
    version: Version
    sha256: Sha256 = Field(description="SHA-256 of the file's bytes (canonical CSV), as uploaded")
    table_sha256: Sha256 = Field(description="the canonical row hash of the file's table (the card's)")
    rows: int = Field(ge=0, le=2**62)
    license: str = Field(min_length=1, max_length=1000, description="SPDX licence expression")
    datasheet: Datasheet
    anonymity: AnonymityReport | None = Field(default=None, description=(
        "the node's anonymisation report (about_people false for a table that is not about people); "
        "required for real rows, a publish without it is refused"))
    synthetic: SyntheticRelease | None = Field(default=None, description=(
        "DP synthetic data generated from the dataset (its table hash and rows are the synthetic table's)"))


class OpenVersionOut(BaseModel):
    id: int
    dataset: str
    version: str
    sha256: str
    table_sha256: str
    size: int
    rows: int
    license: str
    obligations: list[str] = Field(description="what a downloader accepts (attribution, share-alike, ...)")
    datasheet: Datasheet
    predecessor: str | None = Field(description="the version this one follows")
    published_at: datetime
    published_seq: int
    withdrawn_reason: str | None
    withdrawn_at: datetime | None
    downloads: int
    download_url: str
    anonymity: AnonymityReport | None = None
    synthetic: SyntheticRelease | None = Field(default=None, description="set when the rows are DP synthetic")


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class UploadStatus(BaseModel):
    """How many bytes of a staged upload the hub holds (a resumed upload sends from there)."""

    sha256: str
    received: int


class LicenceAcceptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    license: str = Field(min_length=1, max_length=1000)


class LicenceAcceptOut(BaseModel):
    org: str
    license: str
    obligations: list[str]
    ledger_seq: int
