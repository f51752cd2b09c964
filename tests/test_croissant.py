"""Croissant export of dataset cards, validated by mlcroissant."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import numpy as np
import pytest

from consortium.croissant import CROISSANT_VERSION, card_to_croissant
from consortium.node.registry import build_card
from consortium.protocol import ColumnSchema, DatasetCardIn, DatasetSchema
from consortium.tables import load_table

mlc = pytest.importorskip("mlcroissant")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:rdflib.*")


def _card(**overrides) -> DatasetCardIn:
    fields = {
        "name": "clinic-visits",
        "description": "Visits per clinic",
        "schema": DatasetSchema(
            features=[
                ColumnSchema(name="age", dtype="int64"),
                ColumnSchema(name="weight kg", dtype="float64"),
                ColumnSchema(name="smoker", dtype="bool"),
                ColumnSchema(name="ward", dtype="string"),
            ],
            target=ColumnSchema(name="outcome", dtype="int64"),
        ),
        "rows": 120,
        "sha256": "ab" * 32,
        "license": "CC-BY-4.0",
        "file_format": "csv",
    }
    fields.update(overrides)
    return DatasetCardIn.model_validate(fields)


def _validate(doc: dict) -> mlc.Dataset:
    """Construct an mlcroissant Dataset (raises ValidationError on any error) and return it."""
    dataset = mlc.Dataset(jsonld=doc)
    assert dataset.metadata.ctx.issues.errors == set()
    return dataset


def test_export_validates_with_no_errors_and_no_warnings(caplog, tmp_path):
    doc = card_to_croissant(
        _card(),
        "st-marys",
        url="https://hub.example.org/datasets/st-marys/clinic-visits",
        version="1.0.0",
        date_published=datetime(2024, 5, 1, tzinfo=UTC),
    )
    with caplog.at_level(logging.WARNING):
        dataset = _validate(doc)
    assert dataset.metadata.ctx.issues.warnings == set()
    assert not [r for r in caplog.records if "not standard" in r.getMessage()]
    path = tmp_path / "croissant.json"
    path.write_text(json.dumps(doc))
    from_file = mlc.Dataset(jsonld=path)
    assert from_file.metadata.name == "clinic-visits"


def test_fields_types_license_and_distribution():
    doc = card_to_croissant(_card(), "st-marys")
    assert doc["@type"] == "sc:Dataset"
    assert doc["conformsTo"] == CROISSANT_VERSION
    assert doc["license"] == "https://spdx.org/licenses/CC-BY-4.0.html"
    (file_object,) = doc["distribution"]
    assert file_object["@type"] == "cr:FileObject"
    assert file_object["sha256"] == "ab" * 32
    assert file_object["encodingFormat"] == "text/csv"
    (record_set,) = doc["recordSet"]
    types = {f["name"]: f["dataType"] for f in record_set["field"]}
    assert types == {
        "age": "sc:Integer",
        "weight kg": "sc:Float",
        "smoker": "sc:Boolean",
        "ward": "sc:Text",
        "outcome": "sc:Integer",
    }
    for field in record_set["field"]:
        assert field["source"] == {
            "fileObject": {"@id": file_object["@id"]},
            "extract": {"column": field["name"]},
        }

    metadata = _validate(doc).metadata
    assert metadata.license == ["https://spdx.org/licenses/CC-BY-4.0.html"]
    parsed = metadata.record_sets[0].fields
    assert [f.name for f in parsed] == ["age", "weight kg", "smoker", "ward", "outcome"]
    assert [str(f.data_types[0]) for f in parsed] == [
        "https://schema.org/Integer",
        "https://schema.org/Float",
        "https://schema.org/Boolean",
        "https://schema.org/Text",
        "https://schema.org/Integer",
    ]


def test_card_from_a_real_npz_file_and_a_hub_dict(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "digits.npz"
    np.savez(path, image=rng.random((10, 8, 8), dtype=np.float32), target=rng.integers(0, 10, 10))
    card = build_card(load_table(path, "target"), "digits", "Apache-2.0 OR MIT")
    hub_json = {
        **card.model_dump(mode="json", by_alias=True),
        "id": 7,
        "org": "acme",
        "created_at": "2024-05-01T12:00:00Z",
    }
    doc = card_to_croissant(hub_json, "acme")
    assert doc["license"] == [
        "https://spdx.org/licenses/Apache-2.0.html",
        "https://spdx.org/licenses/MIT.html",
    ]
    assert doc["datePublished"].startswith("2024-05-01T12:00:00")
    image = doc["recordSet"][0]["field"][0]
    assert image["dataType"] == "sc:Float" and "[8, 8]" in image["description"]
    metadata = _validate(doc).metadata
    assert metadata.ctx.issues.warnings <= {
        '[Metadata(digits)] Property "https://schema.org/version" is recommended, but does not exist.'
    }


def test_is_pure_and_does_not_mutate_its_input():
    card = _card()
    before = card.model_dump()
    first = card_to_croissant(card, "st-marys")
    first["@context"]["cr"] = "tampered"
    second = card_to_croissant(card, "st-marys")
    assert second["@context"]["cr"] == "http://mlcommons.org/croissant/"
    assert card.model_dump() == before
