"""The ledger: entries and head, signed checkpoints with their cosignatures, Merkle proofs, and cosigning."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.orm import Session

from consortium.hub.deps import db, principal
from consortium.hub.services import checkpoints, ledger
from consortium.hub.services.access import ledger_reader
from consortium.hub.services.errors import NotFound
from consortium.hub.services.identity import Principal
from consortium.hub.wire import AfterSeq, StrictJSONRoute
from consortium.ledger_wire import (
    CheckpointOut,
    ConsistencyProofOut,
    CosignatureOut,
    CosignIn,
    InclusionProofOut,
    LedgerEntryOut,
    LedgerHeadOut,
)
from consortium.protocol import INT64_MAX

router = APIRouter(prefix="/api/ledger", tags=["ledger"], route_class=StrictJSONRoute)

Size = Annotated[int, Query(ge=1, le=INT64_MAX, description="a ledger size (number of entries)")]
OptionalSize = Annotated[int | None, Query(ge=1, le=INT64_MAX,
                                           description="a ledger size; default: the latest checkpoint's")]
PathSize = Annotated[int, Path(ge=1, le=INT64_MAX, description="the checkpoint's size")]


@router.get("", response_model=list[LedgerEntryOut])
def get_ledger(
    after: AfterSeq = 0,
    limit: int = Query(1000, ge=1, le=10_000),
    session: Session = Depends(db),
    caller: Principal = Depends(principal),
):
    """Every entry, so that any member can verify the whole chain; the payload (salt and actor signature) of
    an entry about a project or data source the caller may not see is left out (redacted), its commitment and
    the hub's signature still verify."""
    entries = list(ledger.iter_entries(session, after=after, limit=limit))
    readable = ledger_reader(session, caller, entries)
    return [LedgerEntryOut(**asdict(ledger.to_chained(e, reveal=readable(e)))) for e in entries]


@router.get("/head", response_model=LedgerHeadOut)
def get_ledger_head(session: Session = Depends(db), caller: Principal = Depends(principal)):
    """The newest seq and hash: read it before the entries, and a chain that falls short of it was cut."""
    head = ledger.head(session)
    return LedgerHeadOut(seq=head.seq, hash=head.hash)


def _out(session: Session, rows) -> list[CheckpointOut]:
    return [
        CheckpointOut(origin=c.origin, size=c.size, root=c.root, created_at=c.created_at, key_id=c.key_id,
                      signature=c.signature, cosignatures=[
                          CosignatureOut(org=org, key_id=kid, signature=sig, created_at=at)
                          for org, kid, sig, at in cosigned])
        for c, cosigned in checkpoints.with_cosignatures(session, rows)
    ]


@router.get("/checkpoint", response_model=CheckpointOut)
def get_checkpoint(session: Session = Depends(db), caller: Principal = Depends(principal)):
    """The latest checkpoint the hub signed, with the cosignatures of the orgs that checked it."""
    last = checkpoints.latest(session)
    if last is None:
        raise NotFound("the hub has signed no checkpoint yet")
    return _out(session, [last])[0]


@router.get("/checkpoints", response_model=list[CheckpointOut])
def get_checkpoints(
    after: AfterSeq = 0,
    limit: int = Query(1000, ge=1, le=1000),
    session: Session = Depends(db),
    caller: Principal = Depends(principal),
):
    """Checkpoints larger than ``after``, smallest first, with their cosignatures."""
    return _out(session, checkpoints.after(session, after, limit))


@router.get("/proof/inclusion", response_model=InclusionProofOut)
def get_inclusion_proof(
    seq: Size, size: OptionalSize = None, session: Session = Depends(db),
    caller: Principal = Depends(principal),
):
    """Entry ``seq`` is leaf ``seq - 1`` of the Merkle tree of the first ``size`` entries."""
    size, digest, proof = checkpoints.inclusion_proof(session, seq, size)
    return InclusionProofOut(seq=seq, size=size, entry_hash=digest, proof=proof)


@router.get("/proof/consistency", response_model=ConsistencyProofOut)
def get_consistency_proof(
    first: Size, second: OptionalSize = None, session: Session = Depends(db),
    caller: Principal = Depends(principal),
):
    """The tree of the first ``first`` entries is a prefix of the tree of the first ``second``."""
    second, proof = checkpoints.consistency_proof(session, first, second)
    return ConsistencyProofOut(first=first, second=second, proof=proof)


@router.post("/checkpoints/{size}/cosign", response_model=CosignatureOut)
def post_cosignature(
    size: PathSize, body: CosignIn, session: Session = Depends(db), caller: Principal = Depends(principal)
):
    """An org (signed request) cosigns a checkpoint it checked: ``signature`` over the checkpoint's note."""
    row = checkpoints.cosign(session, caller, size, body.signature, datetime.now(UTC))
    return CosignatureOut(org=caller.name, key_id=row.key_id, signature=row.signature,
                          created_at=row.created_at)
