"""Downloading a released model: weights, card and the card's files, each checked against the card."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from consortium.model_files import download_model

WEIGHTS = b"weights"
PNG = b"\x89PNG samples"


class FakeHub:
    """Answers like the hub's model endpoints; ``files`` maps names to the bytes it serves."""

    def __init__(self, card_files: list[dict], files: dict[str, bytes]) -> None:
        self.card = {"weights": {"sha256": hashlib.sha256(WEIGHTS).hexdigest()}, "files": card_files}
        self.files = files

    def model(self, model_id: int) -> dict:
        return {"params_sha256": hashlib.sha256(WEIGHTS).hexdigest(), "card": self.card}

    def model_weights(self, model_id: int) -> bytes:
        return WEIGHTS

    def model_card_markdown(self, model_id: int) -> str:
        return "# card\n"

    def model_file(self, model_id: int, name: str) -> bytes:
        return self.files[name]


def entry(name: str = "samples.png", data: bytes = PNG) -> dict:
    return {"name": name, "media_type": "image/png", "sha256": hashlib.sha256(data).hexdigest()}


def test_files_listed_in_the_card_are_saved_next_to_it(tmp_path: Path) -> None:
    paths = download_model(FakeHub([entry()], {"samples.png": PNG}), 1, tmp_path)
    assert paths["samples.png"] == tmp_path / "samples.png"
    assert (tmp_path / "samples.png").read_bytes() == PNG
    assert (tmp_path / "MODEL_CARD.md").read_text() == "# card\n"


def test_a_file_that_does_not_match_the_card_is_refused(tmp_path: Path) -> None:
    hub = FakeHub([entry()], {"samples.png": b"something else"})
    with pytest.raises(ValueError, match="downloaded samples.png hashes to .*, the card says"):
        download_model(hub, 1, tmp_path)
    assert not (tmp_path / "samples.png").exists()


@pytest.mark.parametrize("name", ["../evil.png", "/etc/passwd", ".hidden", "a/b.png"])
def test_a_file_name_that_is_not_plain_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a plain file name"):
        download_model(FakeHub([entry(name)], {name: PNG}), 1, tmp_path / "model")
    assert not (tmp_path / "evil.png").exists()
