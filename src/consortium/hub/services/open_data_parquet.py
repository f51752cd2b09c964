"""The Parquet rendering of an open data version, made from its canonical CSV once, on its first request.

The CSV (checked against its SHA-256 first) is read by pyarrow's streaming CSV reader a block at a time,
each block cast to the card's column types and written as a row group, so memory stays bounded whatever the
file's size. The result is hashed and moved into the content-addressed blob store like any blob; its SHA-256
and size are recorded on the version, so later requests serve it with ``Range`` support and the same
re-hash-before-serving check as the CSV.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from consortium.hub.blobs import BlobStore
from consortium.hub.db.models import Dataset
from consortium.hub.db.open_data_models import OpenDataVersion
from consortium.hub.services.open_data import VERIFIED, file_sha256
from consortium.hub.services.open_data_downloads import blob_file

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
BLOCK_BYTES = 8 << 20
"""CSV bytes per block read (one Parquet row group each)."""
_ARROW_TYPES = {"int64": "int64", "float64": "float64", "float32": "float32", "bool": "bool_",
                "string": "string"}
_CONVERTING = threading.Lock()
"""One conversion at a time in this hub process (a second request for the same version waits, then serves
the first one's file)."""


def arrow_schema(schema: dict[str, Any]) -> Any:
    """The pyarrow schema of a card's columns in canonical order (features, then the target)."""
    import pyarrow as pa

    columns = [*schema.get("features", ()), *([schema["target"]] if schema.get("target") else [])]
    return pa.schema([(c["name"], getattr(pa, _ARROW_TYPES[c["dtype"]])()) for c in columns])


def convert(csv_path: Path, out: Path, schema: dict[str, Any], block_bytes: int = BLOCK_BYTES) -> None:
    """Write the canonical CSV ``csv_path`` as Parquet to ``out``, block by block (bounded memory)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    target = arrow_schema(schema)
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=block_bytes, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=target, true_values=["True"], false_values=["False"], strings_can_be_null=False,
            quoted_strings_can_be_null=False))
    with pq.ParquetWriter(out, target) as writer:
        for batch in reader:
            writer.write_batch(batch)


def parquet_blob(session: Session, blobs: BlobStore, row: OpenDataVersion) -> Path:
    """The version's Parquet file, made on its first request, after checking it still has its SHA-256."""
    with _CONVERTING:
        session.refresh(row)
        if row.parquet_sha256 is None:
            source = blob_file(blobs, row)
            staging = blobs.root / "uploads" / f"parquet-{row.id}-{uuid.uuid4().hex}.part"
            staging.parent.mkdir(parents=True, exist_ok=True)
            try:
                convert(source, staging, session.get(Dataset, row.dataset_id).schema)
                digest, size = file_sha256(staging), staging.stat().st_size
                target = blobs.path(digest)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    staging.unlink()
                else:
                    os.replace(staging, target)
                    VERIFIED.remember(target, digest)
            finally:
                staging.unlink(missing_ok=True)
            row.parquet_sha256, row.parquet_size = digest, size
            session.commit()
    path = blobs.path(row.parquet_sha256)
    VERIFIED.check(path, row.parquet_sha256)
    return path
