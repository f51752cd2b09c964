"""The node's dataset registry: the card it publishes for a data file, and its local record of each one.

Rows never leave the node. What leaves is a :class:`~consortium.protocol.DatasetCardIn` built from a
:class:`~consortium.tables.LoadedDataset`; the registry remembers which file and target column each card
stands for, so the agent can train on the file and check it still hashes to the card.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from consortium.atomic import exclusive_lock, write_json_atomic
from consortium.fl.core import LocalData
from consortium.node.canonical_source import CanonicalSource, canonical_source
from consortium.protocol import ColumnSchema, DatasetCardIn, DatasetSchema, Visibility
from consortium.tables import DTYPES, DatasetError, LoadedDataset, load_table

REGISTRY_FILE = "datasets.json"


def build_card(
    loaded: LoadedDataset,
    name: str,
    license: str,
    description: str = "",
    visibility: Visibility | str = "members",
    privacy_budget: tuple[float, float] | None = None,
) -> DatasetCardIn:
    """The metadata-only card for a loaded dataset, validated; :class:`DatasetError` on a bad field.
    ``privacy_budget``: the owner's total ``(epsilon, delta)`` for DP runs on it (None: no budget)."""
    try:
        return DatasetCardIn.model_validate(
            {
                "name": name,
                "description": description,
                "schema": loaded.schema.model_dump(mode="json"),
                "rows": loaded.rows,
                "sha256": loaded.sha256,
                "license": license,
                "visibility": visibility,
                "file_format": loaded.format,
            }
            | ({} if privacy_budget is None else
               {"privacy_budget": {"epsilon": privacy_budget[0], "delta": privacy_budget[1]}})
        )
    except ValidationError as exc:
        raise DatasetError(_card_error(exc, name, license, visibility)) from exc


def _card_error(exc: ValidationError, name: str, license: str, visibility: Any) -> str:
    messages = []
    for err in exc.errors():
        where = str(err["loc"][0]) if err["loc"] else "card"
        if where == "license":
            messages.append(
                f"license {license!r} is not a valid SPDX license identifier or expression "
                "(e.g. 'CC-BY-4.0', 'MIT', 'Apache-2.0 OR MIT'; see https://spdx.org/licenses/)"
            )
        elif where == "name":
            messages.append(
                f"dataset name {name!r} is not valid: use 1-63 lowercase letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        elif where == "visibility":
            messages.append(
                f"visibility {visibility!r} is not one of: {', '.join(v.value for v in Visibility)}"
            )
        else:
            messages.append(f"{'.'.join(str(part) for part in err['loc']) or where}: {err['msg']}")
    return "; ".join(messages)


_SCHEMA_ENTRY = re.compile(r"^(?P<name>[^:\[\]]+):(?P<dtype>[A-Za-z0-9]+)(?:\[(?P<shape>[0-9,\s]*)\])?$")


def parse_schema_option(text: str, target: str | None = None) -> DatasetSchema:
    """Parse a CLI ``--schema`` value such as ``"a:float64,b:int64,label:int64"``.

    Each entry is ``name:dtype`` with dtype one of int64, float64, float32, bool, string, optionally with a
    per-example shape for array columns: ``image:float32[8,8]``. The column named ``target`` (if any) becomes
    the schema's target; the others are the features, in the given order.
    """
    entries = _split_entries(text)
    if not entries:
        raise DatasetError("--schema is empty; expected entries like 'a:float64,b:int64,label:int64'")
    columns: list[ColumnSchema] = []
    for entry in entries:
        match = _SCHEMA_ENTRY.match(entry)
        if match is None:
            raise DatasetError(
                f"--schema entry {entry!r} is not 'name:dtype' (or 'name:dtype[d1,d2]' for array columns)"
            )
        name, dtype = match["name"].strip(), match["dtype"]
        if not name:
            raise DatasetError(f"--schema entry {entry!r} has an empty column name")
        if dtype not in DTYPES:
            raise DatasetError(
                f"--schema entry {entry!r}: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}"
            )
        shape = None
        if match["shape"] is not None:
            dims = [d.strip() for d in match["shape"].split(",") if d.strip()]
            if not dims or any(int(d) < 1 for d in dims):
                raise DatasetError(f"--schema entry {entry!r}: a shape needs positive dimensions, like [8,8]")
            shape = [int(d) for d in dims]
        if any(c.name == name for c in columns):
            raise DatasetError(f"--schema lists column '{name}' twice")
        columns.append(ColumnSchema(name=name, dtype=dtype, shape=shape))
    features = [c for c in columns if c.name != target]
    target_col = next((c for c in columns if c.name == target), None)
    if target is not None and target_col is None:
        raise DatasetError(
            f"target column '{target}' is not in --schema; columns: {', '.join(c.name for c in columns)}"
        )
    if not features:
        raise DatasetError("--schema has no feature columns besides the target")
    return DatasetSchema(features=features, target=target_col)


def _split_entries(text: str) -> list[str]:
    """Split on commas outside brackets; drop empty entries from stray commas."""
    entries, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            entries.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    entries.append("".join(current).strip())
    return [e for e in entries if e]



@dataclass(frozen=True)
class RegisteredDataset:
    """One entry of the node's registry: where the file is, which column is the target, and its card."""

    name: str
    path: Path
    target: str | None
    card: DatasetCardIn
    canonical: CanonicalSource | None = None
    """Set when the file is its table's canonical CSV byte for byte: a publish sends it as it is."""


CategoryLabels = dict[str, dict[float, str]]
"""Per string feature column: each category code's text."""


class LocalRegistry:
    """The node's record of its registered datasets, kept in ``<org_dir>/datasets.json``.

    Writes are atomic (temp file + ``os.replace``) and serialised between processes with a lock file, so a
    node agent reading the registry never sees a half-written file. Data loaded by :meth:`load_local` is
    cached in memory per (name, sha256); the cache entry is reused only while the file's size, mtime and
    inode are unchanged, otherwise the file is re-read and re-verified.
    """

    def __init__(self, org_dir: str | os.PathLike[str]) -> None:
        self.org_dir = Path(org_dir)
        self.path = self.org_dir / REGISTRY_FILE
        self._cache: dict[tuple[str, str, bool], tuple[tuple[int, int, int], LocalData, CategoryLabels]] = {}
        self._lock = threading.Lock()
        self._read_cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def add(
        self, name: str, path: str | os.PathLike[str], target: str | None, card: DatasetCardIn
    ) -> RegisteredDataset:
        """Register (or re-register) a dataset file under ``name``; the path is stored absolute. A CSV file that
        already is its table's canonical CSV is recorded as such (one pass over it; see
        :mod:`consortium.node.canonical_source`)."""
        if card.name != name:
            raise DatasetError(f"card name '{card.name}' does not match the registered name '{name}'")
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise DatasetError(f"{file}: no such file")
        card_target = card.schema_.target.name if card.schema_.target is not None else None
        if target != card_target:
            raise DatasetError(f"target {target!r} does not match the card's target column {card_target!r}")
        canonical = canonical_source(file, card.schema_, card.rows, card.sha256)
        entry = RegisteredDataset(name=name, path=file, target=target, card=card, canonical=canonical)
        with exclusive_lock(self.path):
            data = copy.deepcopy(self._read())
            data["datasets"][name] = {
                "path": str(file),
                "target": target,
                "card": card.model_dump(mode="json", by_alias=True),
                "canonical": dataclasses.asdict(canonical) if canonical else None,
            }
            write_json_atomic(self.path, data)
        with self._lock:
            for key in [k for k in self._cache if k[0] == name]:
                del self._cache[key]
        return entry

    def get(self, name: str) -> RegisteredDataset:
        """The registered dataset called ``name``; :class:`DatasetError` when there is none."""
        raw = self._read()["datasets"].get(name)
        if raw is None:
            known = ", ".join(sorted(self._read()["datasets"])) or "none"
            raise DatasetError(f"no local dataset named '{name}' in {self.path}; registered: {known}")
        return self._entry(name, raw)

    def all(self) -> list[RegisteredDataset]:
        """Every registered dataset, sorted by name."""
        datasets = self._read()["datasets"]
        return [self._entry(name, datasets[name]) for name in sorted(datasets)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._read()["datasets"]

    def load_local(self, name: str, allow_missing: bool = False) -> LocalData:
        """The tensors of a registered dataset, after checking that the file still has the card's SHA-256
        (``allow_missing``: missing feature values as NaN, for a spec that imputes them)."""
        entry = self.get(name)
        try:
            stat = entry.path.stat()
        except FileNotFoundError as exc:
            raise DatasetError(f"dataset '{name}': its file {entry.path} no longer exists") from exc
        signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        key = (name, entry.card.sha256, allow_missing)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        loaded = load_table(entry.path, entry.target, declared=entry.card.schema_)
        if loaded.sha256 != entry.card.sha256:
            raise DatasetError(
                f"dataset '{name}': {entry.path} changed since it was registered "
                f"(sha256 now {loaded.sha256[:12]}..., card says {entry.card.sha256[:12]}...); "
                "register it again to publish a new card"
            )
        local = loaded.to_local_data(allow_missing=allow_missing)
        with self._lock:
            self._cache[key] = (signature, local, loaded.category_labels())
        return local

    def category_labels(self, name: str) -> CategoryLabels:
        """Each string feature column's category codes and their text (read with the rows: see
        :meth:`load_local`)."""
        self.load_local(name, allow_missing=True)
        entry = self.get(name)
        with self._lock:
            cached = self._cache.get((name, entry.card.sha256, True))
        if cached is not None:
            return cached[2]
        return load_table(entry.path, entry.target, declared=entry.card.schema_).category_labels()

    def _entry(self, name: str, raw: dict[str, Any]) -> RegisteredDataset:
        try:
            card = DatasetCardIn.model_validate(raw["card"])
            canonical = CanonicalSource(**raw["canonical"]) if raw.get("canonical") else None
            return RegisteredDataset(name=name, path=Path(raw["path"]), target=raw.get("target"), card=card,
                                     canonical=canonical)
        except (KeyError, TypeError, ValidationError) as exc:
            raise DatasetError(f"{self.path}: entry '{name}' is malformed: {exc}") from exc

    def _read(self) -> dict[str, Any]:
        """The registry file's content, parsed again only when its size, mtime or inode changed (a write by
        ``dataset add`` in another process replaces the file, so the running node sees it at once). Callers
        must not change it (:meth:`add` works on a copy)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {"version": 1, "datasets": {}}
        signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            cached = self._read_cache
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": 1, "datasets": {}}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{self.path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
            raise DatasetError(f"{self.path}: expected an object with a 'datasets' object")
        with self._lock:
            self._read_cache = (signature, data)
        return data
