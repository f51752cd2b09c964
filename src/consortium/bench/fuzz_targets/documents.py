"""JSON documents from the network: strict JSON itself, every wire model, project specs and dataset cards.

- ``strict_json``: :func:`consortium.strict_json.loads` (refusal: ``StrictJSONError``); what it accepts
  must encode back as JSON without NaN and decode to the same value.
- ``wire``: ``ModelName`` on the first line, JSON after it, parsed as the hub parses a body
  (:class:`~consortium.hub.wire.StrictJSONRequest`, then the pydantic model); a refusal's 422 answer is
  rendered too (:func:`consortium.hub.wire.validation_error`). Refusals: ``StrictJSONError``,
  ``ValidationError``.
- ``spec``: a project spec through the hub's proposal checks (``ProjectCreate``, the run plan, the sources'
  fit, the spec against four-feature datasets: :mod:`consortium.hub.services.projects`). Refusals:
  ``StrictJSONError``, ``ValidationError``, ``BadRequest``.
- ``card``: a dataset card as the hub registers it (``DatasetCardIn``, its licence normalised) and exports it
  (Croissant JSON-LD). Refusals: ``StrictJSONError``, ``ValidationError``, ``BadRequest``.
"""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from consortium import strict_json
from consortium.bench.fuzz_targets import Target
from consortium.croissant import card_to_croissant
from consortium.hub.services import licensing
from consortium.hub.services import projects as project_service
from consortium.hub.services.errors import BadRequest
from consortium.hub.wire import _field_error
from consortium.protocol import DatasetCardIn, ProjectCreate

WIRE_MODULES = ("protocol", "challenge_wire", "credits_wire", "environments_wire", "ledger_wire", "members_wire",
                "open_data_wire", "preprocessing_wire", "privacy_wire", "valuation_wire", "hub.wire")
MAX_FAKE_SOURCES = 1000


def wire_models() -> dict[str, type[BaseModel]]:
    """Every pydantic model defined in the wire modules, by class name."""
    found: dict[str, type[BaseModel]] = {}
    for name in WIRE_MODULES:
        module = importlib.import_module(f"consortium.{name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__:
                found[value.__name__] = value
    return dict(sorted(found.items()))


MODELS = wire_models()


def _rendered_422(exc: ValidationError) -> None:
    """The hub's 422 answer of ``exc`` renders (JSON without NaN, whatever the input was)."""
    JSONResponse({"detail": [_field_error(e) for e in exc.errors()]}, status_code=422)


def check_strict_json(data: bytes) -> None:
    try:
        value = strict_json.loads(data)
    except strict_json.StrictJSONError:
        return
    text = json.dumps(value, allow_nan=False)
    assert strict_json.loads(text) == value, "a value that does not survive a round trip"


def check_wire(data: bytes) -> None:
    name, _, body = data.partition(b"\n")
    model = MODELS.get(name.decode("latin-1").strip())
    if model is None:
        return
    try:
        parsed = model.model_validate(strict_json.loads(body))
    except strict_json.StrictJSONError:
        return
    except ValidationError as exc:
        _rendered_422(exc)
        return
    json.dumps(parsed.model_dump(mode="json", by_alias=True), allow_nan=False)


def _fake_sources(spec: ProjectCreate) -> list[Any]:
    schema = {"features": [{"name": f"f{i}", "dtype": "float64"} for i in range(4)],
              "target": {"name": "y", "dtype": "int64"}}
    refs = (spec.datasets or spec.environments)[:MAX_FAKE_SOURCES]
    environment = {"env_id": "CartPole-v1"} if spec.environments else None
    return [SimpleNamespace(org=SimpleNamespace(name=ref.partition("/")[0]), name=ref.partition("/")[2],
                            schema=schema, environment=environment) for ref in refs]


def check_spec(data: bytes) -> None:
    try:
        spec = ProjectCreate.model_validate(strict_json.loads(data))
        plan = project_service.plan_of(spec)
        project_service.check_sources_fit(spec, plan)
        project_service.validate_spec(spec, plan, _fake_sources(spec))
    except (strict_json.StrictJSONError, BadRequest):
        return
    except ValidationError as exc:
        _rendered_422(exc)
        return
    assert ProjectCreate.model_validate_json(spec.model_dump_json()) == spec, "a spec that does not round-trip"


def check_card(data: bytes) -> None:
    try:
        card = DatasetCardIn.model_validate(strict_json.loads(data))
        licensing.normalised("license", card.license)
    except (strict_json.StrictJSONError, BadRequest):
        return
    except ValidationError as exc:
        _rendered_422(exc)
        return
    json.dumps(card_to_croissant(card, "north", "https://hub.example/datasets/north/x"), allow_nan=False)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


CLASSIFIER = {"name": "digits", "algorithm": {"name": "classifier", "hyperparameters": {
    "layers": [4, 8, 3], "activation": "relu", "optimizer": "sgd", "lr": 0.05, "local_epochs": 1,
    "batch_size": 8}}, "strategy": {"name": "fedavg"}, "datasets": ["north/a", "south/b", "east/c"],
    "rounds": 3}


def spec_seeds() -> dict[str, bytes]:
    dp = CLASSIFIER | {"privacy": {"mechanism": "dp_fedavg", "noise": "central", "clip": 0.5, "epsilon": 4.0,
                                   "delta": 1e-5, "sampling": "fixed_size"}}
    secagg = CLASSIFIER | {"strategy": {"name": "fedavg", "secure_aggregation": {"threshold": 2,
                                                                                 "clip_range": 1.0}}}
    krum = CLASSIFIER | {"strategy": {"name": "krum", "options": {"f": 0}}, "min_nodes": 3}
    prep = CLASSIFIER | {"preprocessing": {"scale": "standardise", "impute": "mean"}}
    valued = CLASSIFIER | {"valuation": {"method": "leave-one-out"}}
    adam = CLASSIFIER | {"strategy": {"name": "fedavg", "server_optimizer": {"name": "adam",
                                                                            "options": {"lr": 0.01}}}}
    kmeans = {"name": "km", "algorithm": {"name": "kmeans", "hyperparameters": {"k": 3}},
              "datasets": ["north/a", "south/b"], "rounds": 2}
    rl = {"name": "rl", "algorithm": {"name": "ppo"}, "environments": ["north/cart", "south/cart"], "rounds": 2}
    return {"classifier": _json(CLASSIFIER), "dp": _json(dp), "secagg": _json(secagg), "krum": _json(krum),
            "preprocessing": _json(prep), "valuation": _json(valued), "server-optimizer": _json(adam),
            "kmeans": _json(kmeans), "rl": _json(rl), "nan": b'{"name": "x", "rounds": NaN}'}


CARD = {"name": "digits", "description": "8x8 digits", "schema": {
    "features": [{"name": "f0", "dtype": "float64"}, {"name": "colour", "dtype": "string"}],
    "target": {"name": "label", "dtype": "int64"}, "categorical": ["colour"]},
    "rows": 100, "sha256": "ab" * 32, "license": "CC-BY-4.0", "visibility": "public", "file_format": "csv"}


def card_seeds() -> dict[str, bytes]:
    shaped = CARD | {"schema": {"features": [{"name": "pixels", "dtype": "float32", "shape": [8, 8]}]}}
    budget = CARD | {"privacy_budget": {"epsilon": 8.0, "delta": 1e-5}, "license": "MIT OR Apache-2.0"}
    return {"card": _json(CARD), "shaped": _json(shaped), "budget": _json(budget),
            "licence-with": _json(CARD | {"license": "GPL-2.0-only WITH Classpath-exception-2.0"}),
            "unknown-licence": _json(CARD | {"license": "NOT-A-LICENCE"})}


def wire_seeds() -> dict[str, bytes]:
    samples = {
        "ProjectCreate": CLASSIFIER, "DatasetCardIn": CARD,
        "TaskResult": {"num_examples": 5, "metrics": {"accuracy": 0.5}, "compute_s": 0.1},
        "UpdateMeta": {"num_examples": 5, "compute_s": 0.1, "evaluation": {
            "num_examples": 2, "metrics": {}, "compute_s": 0}},
        "EnrolRequest": {"org": "north", "token": "csm_x", "public_key": "A" * 44, "node_name": "n1"},
        "UserCreate": {"name": "ann", "role": "steward", "org": "north"},
        "OrgCreate": {"name": "north", "display_name": "North"},
        "TaskRefusal": {"reason": "no data"},
    }
    return {f"{name}": name.encode() + b"\n" + _json(body) for name, body in samples.items()}


def json_seeds() -> dict[str, bytes]:
    return {"object": b'{"a": [1, 2.5, -3e10, true, null, "x\\u00e9"], "b": {}}', "deep": b"[" * 70 + b"]" * 70,
            "duplicate": b'{"a": 1, "a": 2}', "nan": b"[NaN, -Infinity]", "big": b"[1e400]",
            "surrogate": b'["\\ud800"]', "nul": b'["\\u0000"]', "latin1": b'"\xe9"'}


TARGETS = {
    "strict_json": Target("strict_json", __doc__ or "", check_strict_json, json_seeds),
    "wire": Target("wire", __doc__ or "", check_wire, wire_seeds),
    "spec": Target("spec", __doc__ or "", check_spec, spec_seeds),
    "card": Target("card", __doc__ or "", check_card, card_seeds),
}
