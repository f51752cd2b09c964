"""Croissant 1.0 (JSON-LD) export of dataset cards.

A card describes data that stays on its organisation's node, so the export describes the file without
offering it: the ``distribution`` names the local file (``contentUrl`` is just its file name) and carries
the card's SHA-256. That checksum is consortium's *canonical-content* hash (see
:mod:`consortium.table_hash`), which does not depend on the file format; the description says so, because
it is not a hash of the file's raw bytes.

Pure: builds a dict, performs no I/O and does not need the ``mlcroissant`` package (only the tests do).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from consortium.protocol import ColumnSchema, DatasetCardIn, DatasetCardOut

CROISSANT_VERSION = "http://mlcommons.org/croissant/1.0"

CROISSANT_CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
"""The JSON-LD ``@context`` of the Croissant 1.0 specification, with its later additions equivalentProperty
and samplingRate, which validators such as mlcroissant expect."""

DATA_TYPES: dict[str, str] = {
    "int64": "sc:Integer",
    "float64": "sc:Float",
    "float32": "sc:Float",
    "bool": "sc:Boolean",
    "string": "sc:Text",
}

ENCODING_FORMATS: dict[str, str] = {
    "csv": "text/csv",
    "parquet": "application/x-parquet",
    "npz": "https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html",
}

_SPDX_OPERATOR = re.compile(r"\s+(?:WITH|AND|OR)\s+")


def spdx_urls(expression: str) -> list[str]:
    """The SPDX page of each licence (and exception) named in an SPDX identifier or expression."""
    ids = [part.strip("() ") for part in _SPDX_OPERATOR.split(expression.strip())]
    return [f"https://spdx.org/licenses/{quote(i, safe='.+-')}.html" for i in ids if i]


def card_to_croissant(
    card: DatasetCardIn | DatasetCardOut | dict[str, Any],
    org: str,
    url: str | None = None,
    *,
    version: str | None = None,
    date_published: datetime | None = None,
    published_file: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A Croissant 1.0 JSON-LD description of a dataset card held by ``org``.

    ``card`` may be a card model or its JSON form (an ``In`` card, or an ``Out`` card from the hub, whose
    ``created_at`` is the default ``datePublished``). ``url`` is the dataset's page, when there is one;
    ``version`` (e.g. "1.0.0") is recommended by Croissant but cards have none, so it is only set when given.
    Each column becomes a ``cr:Field`` of one record set, extracted by name from the local file, or, with
    ``published_file`` (the hub's download URL of a published open data version and the SHA-256 of its
    bytes), from that canonical CSV file.
    """
    if isinstance(card, dict):
        model = DatasetCardOut if "created_at" in card else DatasetCardIn
        card = model.model_validate(card)
    published = date_published or getattr(card, "created_at", None)
    file_id = f"{card.name}-{version}.csv" if published_file else f"{card.name}.{card.file_format}"
    record_set_id = card.name
    schema = card.schema_
    licences = spdx_urls(card.license)
    fields = [_field(record_set_id, file_id, column, role="feature") for column in schema.features]
    if schema.target is not None:
        fields.append(_field(record_set_id, file_id, schema.target, role="target"))
    doc: dict[str, Any] = {
        "@context": dict(CROISSANT_CONTEXT),
        "@type": "sc:Dataset",
        "name": card.name,
        "description": card.description or f"Dataset '{card.name}' of {org}; its rows stay on {org}'s node.",
        "conformsTo": CROISSANT_VERSION,
        "license": licences[0] if len(licences) == 1 else licences,
        "creator": {"@type": "sc:Organization", "name": org},
        "citeAs": f"{org}. {card.name} ({card.rows} rows, sha256 {card.sha256}). Consortium dataset card.",
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": file_id,
                "name": file_id,
                "description": (
                    f"The {card.file_format} file on {org}'s node; it is never uploaded. Its sha256 is "
                    "consortium's canonical-content hash of the table (independent of the file format), "
                    "not a hash of the file's bytes."
                ),
                "contentUrl": file_id,
                "encodingFormat": ENCODING_FORMATS[card.file_format],
                "sha256": card.sha256,
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": record_set_id,
                "name": record_set_id,
                "description": f"{card.rows} rows, one record per example.",
                "field": fields,
            }
        ],
    }
    if published_file is not None:
        doc["distribution"] = [{
            "@type": "cr:FileObject", "@id": file_id, "name": file_id,
            "description": f"The canonical CSV of version {version}, published as open data on the hub.",
            "contentUrl": published_file[0], "encodingFormat": "text/csv", "sha256": published_file[1]}]
    if url is not None:
        doc["url"] = url
    if version is not None:
        doc["version"] = version
    if published is not None:
        doc["datePublished"] = published.isoformat()
    return doc


def _field(record_set_id: str, file_id: str, column: ColumnSchema, role: str) -> dict[str, Any]:
    description = f"{role} column, {column.dtype}"
    if column.shape:
        description += f", per-example array of shape {column.shape} (row-major)"
    return {
        "@type": "cr:Field",
        "@id": f"{record_set_id}/{quote(column.name, safe='')}",
        "name": column.name,
        "description": description,
        "dataType": DATA_TYPES[column.dtype],
        "source": {"fileObject": {"@id": file_id}, "extract": {"column": column.name}},
    }
