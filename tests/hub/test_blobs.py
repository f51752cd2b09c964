"""The blob store: content-addressed files, and staged blobs that are readable before they are written."""

from __future__ import annotations

import hashlib

import pytest

from consortium.hub.blobs import BlobStore


def test_a_staged_blob_is_readable_at_once_and_on_disk_only_once_persisted(tmp_path) -> None:
    store = BlobStore(tmp_path)
    digest = store.stage(b"params")
    assert digest == hashlib.sha256(b"params").hexdigest()
    assert store.get(digest) == b"params" and store.exists(digest)
    assert not store.path(digest).exists()
    store.persist([digest, "f" * 64])
    assert store.path(digest).read_bytes() == b"params"
    assert BlobStore(tmp_path).get(digest) == b"params"


def test_a_discarded_blob_is_gone_and_was_never_written(tmp_path) -> None:
    store = BlobStore(tmp_path)
    digest = store.stage(b"update")
    store.discard([digest])
    assert not store.exists(digest)
    with pytest.raises(KeyError, match="not in the store"):
        store.get(digest)
    store.persist([digest])
    assert not store.path(digest).exists()


def test_put_writes_atomically_under_the_digest_and_leaves_no_temporary_file(tmp_path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"checkpoint")
    assert store.put(b"checkpoint") == digest
    assert store.get(digest) == b"checkpoint"
    assert [p.name for p in store.path(digest).parent.iterdir()] == [digest]


def test_a_write_that_fails_names_the_store_and_leaves_no_file(tmp_path, monkeypatch) -> None:
    """A full disk (ENOSPC while the temporary file is written): the error says which store and blob, the
    blob stays staged and readable, and neither the blob nor a temporary file is left on disk."""
    import errno
    import os

    store = BlobStore(tmp_path)
    digest = store.stage(b"params")

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=f"blob store {tmp_path} could not write blob {digest[:16]}.*No space left") as info:
        store.persist([digest])
    assert info.value.errno == errno.ENOSPC
    assert store.get(digest) == b"params"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_dead_writers_temporary_file_is_swept_when_the_store_opens(tmp_path) -> None:
    """A hub killed between writing a blob's temporary file and renaming it leaves the file behind; the next
    store on that directory removes it, but not a live writer's (this process's) nor a fresh one it cannot
    place."""
    import os
    import socket
    import subprocess
    import sys

    from consortium.atomic import temporary_prefix

    store = BlobStore(tmp_path)
    target = tmp_path / "ab" / ("ab" + "0" * 62)
    target.parent.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    left = target.parent / f".{target.stem}-{host}-{dead_pid}-abc123.tmp"
    live = target.parent / f"{temporary_prefix(target)}def456.tmp"
    other_host = target.parent / f".{target.stem}-elsewhere-{os.getpid()}-ghi789.tmp"
    for path in (left, live, other_host):
        path.write_bytes(b"half")
    assert store.sweep() == [left] and not left.exists()
    assert live.exists() and other_host.exists()
    old = 1_000_000_000
    os.utime(other_host, (old, old))
    BlobStore(tmp_path)  # a hub starting on the store sweeps it
    assert not other_host.exists() and live.exists()
