"""Open data exchange on the wire: a published dataset version, its datasheet, withdrawals and uploads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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


class OpenVersionIn(BaseModel):
    """Publish the staged upload ``sha256`` as ``version`` of a dataset (its owner's key or steward)."""

    model_config = ConfigDict(extra="forbid")
    version: Version
    sha256: Sha256 = Field(description="SHA-256 of the file's bytes (canonical CSV), as uploaded")
    table_sha256: Sha256 = Field(description="the canonical row hash of the file's table (the card's)")
    rows: int = Field(ge=0, le=2**62)
    license: str = Field(min_length=1, max_length=1000, description="SPDX licence expression")
    datasheet: Datasheet


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
