"""The hub's own Ed25519 key: it signs every ledger entry and every checkpoint (and anything else the hub must
vouch for, e.g. a proposal's outcome).

The private key lives in a file (``HubSettings.key_file``: ``CONSORTIUM_HUB_KEY_FILE``, else
``<data dir>/hub-key.pem``; PKCS8 PEM, mode 0600, made on first start), so hub replicas that share a database
share it. Its public half is announced in the ledger (``hub.key``,
:mod:`consortium.hub.services.hub_identity`). The key in use is installed per database engine when the hub
starts; services find it with :func:`of`.
"""

from __future__ import annotations

import base64
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from consortium import crypto


@dataclass(frozen=True)
class HubKey:
    """The hub's signer: :meth:`sign`, :attr:`public_key_b64`, :attr:`key_id` (``crypto.key_id``)."""

    private_key: Ed25519PrivateKey = field(repr=False)
    public_key_b64: str
    key_id: str

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> HubKey:
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)
        public = base64.b64encode(raw).decode("ascii")
        return cls(private_key, public, crypto.key_id(public))

    @classmethod
    def generate(cls) -> HubKey:
        """A fresh key, kept nowhere (tests; :func:`load_or_create` for a hub)."""
        return cls.from_private_key(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> str:
        """Ed25519 signature of ``message``, base64."""
        return base64.b64encode(self.private_key.sign(message)).decode("ascii")


def _load(path: Path) -> HubKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PKCS8 PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, expected an Ed25519 key")
    return HubKey.from_private_key(key)


def load_or_create(path: Path) -> HubKey:
    """The key in ``path``, made first (exclusively, mode 0600) when there is none; replicas starting together
    end up with the one that won."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _load(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        return HubKey.from_private_key(key)
    return _load(path)


_installed: weakref.WeakKeyDictionary[Engine, HubKey] = weakref.WeakKeyDictionary()


def install(engine: Engine, key: HubKey | None) -> None:
    """Make ``key`` the signer of everything written through ``engine`` (None: no signer)."""
    if key is None:
        _installed.pop(engine, None)
    else:
        _installed[engine] = key


def installed(engine: Engine) -> HubKey | None:
    return _installed.get(engine)


def of(session: Session) -> HubKey:
    """The key installed for the session's engine; ``RuntimeError`` when the hub has none (a ledger written
    without one would stop verifying)."""
    key = _installed.get(session.get_bind())
    if key is None:
        raise RuntimeError("no hub key is installed for this database: hub_key.install runs when the hub "
                           "starts")
    return key
