"""SCAFFOLD's client control variates ``c_i``, kept on the node between rounds (they never leave it)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from consortium.atomic import write_bytes_atomic
from consortium.fl.core import FLError
from consortium.protocol import NAME_PATTERN

CONTROLS_DIR = "controls"
_CONTROLS_FORMAT = "consortium.scaffold-client-control.v1"


@dataclass(frozen=True)
class ControlKey:
    """Whose control variate: one dataset's ``c_i`` in one run of one project (spec hash included, so that a
    reset hub that reuses project and run ids never hands a stale ``c_i`` to a different project)."""

    project_id: int
    spec_hash: str
    run_id: int
    dataset: str


class ControlStore:
    """The node's SCAFFOLD client control variates ``c_i``, one safetensors file per :class:`ControlKey` under
    ``<org_dir>/controls/``. They never leave the node: the hub only sees each round's ``delta_c``.

    A file holds the round it was written for and ``c_i`` both before and after that round, so a round that
    the hub replays after a restart starts from the same ``c_i`` as its first attempt. Writes are atomic.
    """

    def __init__(self, org_dir: str | os.PathLike[str]) -> None:
        self.root = Path(org_dir) / CONTROLS_DIR

    def path(self, key: ControlKey) -> Path:
        if not re.fullmatch(NAME_PATTERN, key.dataset) or not re.fullmatch(r"[0-9a-f]{16,}", key.spec_hash):
            raise FLError(f"bad control-variate key {key}: a dataset name and a hex spec hash are needed")
        project = f"project-{key.project_id}-{key.spec_hash[:16]}"
        return self.root / project / f"run-{key.run_id}" / f"{key.dataset}.safetensors"

    def load(self, key: ControlKey, round_number: int) -> dict[str, torch.Tensor] | None:
        """``c_i`` at the start of ``round_number``, or None when this node has none yet (it starts at 0)."""
        file = self.path(key)
        if not file.exists():
            return None
        try:
            with safe_open(str(file), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            written = int(meta["round"])
        except Exception as exc:
            raise FLError(f"{file}: not a readable control-variate file: {exc}") from exc
        if meta.get("format") != _CONTROLS_FORMAT:
            raise FLError(f"{file}: unknown control-variate format {meta.get('format')!r}")
        if round_number < written:
            raise FLError(
                f"{file} holds c_i after round {written}, later than the task's round {round_number}"
            )
        part = "before/" if round_number == written else "after/"
        return {name[len(part) :]: t for name, t in tensors.items() if name.startswith(part)}

    def save(
        self,
        key: ControlKey,
        round_number: int,
        before: dict[str, torch.Tensor],
        after: dict[str, torch.Tensor],
    ) -> Path:
        """Record ``c_i`` before and after ``round_number`` (atomically replacing the previous record)."""
        file = self.path(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"before/{n}": t for n, t in before.items()} | {f"after/{n}": t for n, t in after.items()}
        payload = save_tensors(
            {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()},
            metadata={"format": _CONTROLS_FORMAT, "round": str(round_number)},
        )
        write_bytes_atomic(file, payload)
        return file
