"""SCAFFOLD's control variates as the node keeps them between rounds."""

from __future__ import annotations

import pytest
import torch

from consortium.fl.core import FLError
from consortium.node.controls import ControlKey, ControlStore


def test_control_store_keeps_before_and_after_of_the_last_round(tmp_path) -> None:
    store = ControlStore(tmp_path)
    key = ControlKey(project_id=3, spec_hash="ab" * 32, run_id=7, dataset="digits")
    assert store.load(key, 1) is None, "a node without a record starts from c_i = 0"
    before, after = {"w": torch.zeros(2, 2)}, {"w": torch.full((2, 2), 0.5)}
    path = store.save(key, 4, before, after)
    assert path == tmp_path / "controls" / f"project-3-{'ab' * 8}" / "run-7" / "digits.safetensors"
    assert torch.equal(store.load(key, 5)["w"], after["w"]), "the next round starts from c_i after round 4"
    assert torch.equal(store.load(key, 9)["w"], after["w"])
    assert torch.equal(store.load(key, 4)["w"], before["w"]), "a replayed round 4 starts where it first did"
    with pytest.raises(FLError, match="after round 4, later than the task's round 3"):
        store.load(key, 3)
    other_run = ControlKey(project_id=3, spec_hash="ab" * 32, run_id=8, dataset="digits")
    assert store.load(other_run, 5) is None
    assert [p.name for p in path.parent.iterdir()] == ["digits.safetensors"], "no temp file is left behind"


def test_control_store_rejects_bad_keys_and_files(tmp_path) -> None:
    store = ControlStore(tmp_path)
    with pytest.raises(FLError, match="bad control-variate key"):
        store.path(ControlKey(1, "ab" * 32, 1, "../etc"))
    key = ControlKey(1, "ab" * 32, 1, "digits")
    store.path(key).parent.mkdir(parents=True)
    store.path(key).write_bytes(b"not safetensors")
    with pytest.raises(FLError, match="not a readable control-variate file"):
        store.load(key, 2)
