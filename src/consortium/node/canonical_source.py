"""Whether a registered CSV file already is its table's canonical CSV, byte for byte.

A table written by pandas' ``to_csv(index=False)`` (or by consortium itself) usually is: the same header,
shortest round-trip floats, ``\\n`` line ends. Such a file needs no export before a publish: the node sends it
as it is, under the SHA-256 recorded here, and the hub checks that hash on arrival. :func:`canonical_source`
decides it once, when the dataset is registered, reading the file in batches (constant memory) and comparing
each batch's canonical bytes with the file's next bytes; it stops at the first difference, so a file that
is not canonical costs one batch. The table's canonical hash is checked against the card in the same pass:
a file recorded here is the table its card describes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from consortium.node.canonical_csv import format_rows, header_line
from consortium.node.table_stream import read_batches
from consortium.protocol import DatasetSchema
from consortium.table_hash import StreamingTableHash, schema_columns
from consortium.tables import FORMATS, DatasetError


@dataclass(frozen=True)
class CanonicalSource:
    """A registered file that is its table's canonical CSV: its SHA-256, and the size and modification time
    it had when that was found (a file changed since is exported again)."""

    sha256: str
    size: int
    mtime_ns: int

    def unchanged(self, path: Path) -> bool:
        """Whether ``path`` still has the size and modification time it had when it was checked."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns)


def canonical_source(path: Path, schema: DatasetSchema, rows: int, table_sha256: str) -> CanonicalSource | None:
    """The file's :class:`CanonicalSource` when its bytes are exactly the canonical CSV of its table under
    ``schema`` and that table has the card's ``rows`` and ``table_sha256``; None otherwise (another format,
    other bytes, another table, or a file that no longer reads)."""
    columns = schema_columns(schema)
    if FORMATS.get(path.suffix.lower()) != "csv" or any(tuple(col.shape or ()) != () for col in columns):
        return None
    before = os.stat(path)
    digest = hashlib.sha256()
    table = StreamingTableHash(schema, Path(tempfile.gettempdir()))
    try:
        with path.open("rb") as raw:

            def matches(expected: bytes | memoryview) -> bool:
                found = raw.read(len(expected))
                digest.update(found)
                return found == bytes(expected)  # bytes to bytes is a memcmp; a memoryview compares item by item

            if not matches(header_line(columns)):
                return None
            for batch in read_batches(path, schema, rows):
                table.update(batch)
                if not matches(format_rows(columns, batch)):
                    return None
            if raw.read(1) or table.rows != rows or table.hexdigest() != table_sha256:
                return None
    except DatasetError:
        return None
    finally:
        table.close()
    found = CanonicalSource(digest.hexdigest(), before.st_size, before.st_mtime_ns)
    return found if found.unchanged(path) else None
