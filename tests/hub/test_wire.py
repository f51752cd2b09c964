"""The error answer every route documents (:class:`consortium.hub.wire.ErrorOut`) covers every
machine-readable field a service error sends beside ``detail``."""

from __future__ import annotations

import ast
from pathlib import Path

import consortium
from consortium.hub.services import errors
from consortium.hub.wire import ErrorOut

SERVICE_ERRORS = {name for name, value in vars(errors).items()
                  if isinstance(value, type) and issubclass(value, errors.ServiceError)}


def _fields_raised() -> dict[str, set[str]]:
    """Each keyword a ``raise SomeServiceError(message, key=...)`` in the package passes, with where."""
    found: dict[str, set[str]] = {}
    root = Path(consortium.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in SERVICE_ERRORS:
                    for keyword in node.exc.keywords:
                        found.setdefault(keyword.arg, set()).add(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_field_a_service_error_sends_is_documented() -> None:
    raised = _fields_raised()
    assert {"status", "run_id", "received"} <= set(raised)  # the scan sees the fields it is there for
    undocumented = {key: where for key, where in raised.items() if key not in ErrorOut.model_fields}
    assert not undocumented, f"document these in ErrorOut: {undocumented}"


def test_an_error_with_its_fields_reads_as_the_documented_answer() -> None:
    body = {"detail": "proposal 1 is passed: it takes no more votes", "status": "passed"}
    assert ErrorOut.model_validate(body).status == "passed"
    schema = ErrorOut.model_json_schema()
    assert schema["required"] == ["detail"] and schema["additionalProperties"] is False
