"""Wire schemas of credentials: org key rotation and history, users' roles and activity, API tokens (kept out
of :mod:`consortium.protocol`, which is the rest of the API's)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from consortium.protocol import Role, Wire


class KeyRotationIn(Wire):
    """An org's new public key and its current key's signature over the rotation statement
    (:func:`consortium.governance.statements.key_rotation_statement`)."""

    public_key: str = Field(min_length=1, max_length=100)
    signature: str = Field(min_length=1, max_length=200)


class OrgKeyOut(Wire):
    """A key an org holds (``retired_at`` null) or held; ``rotation_signature`` is the retiring key's
    signature that handed over to it (null for the org's first key)."""

    key_id: str
    public_key: str
    created_at: datetime
    retired_at: datetime | None
    rotation_signature: str | None


class UserInfo(Wire):
    id: int
    name: str
    role: Role
    org: str | None
    active: bool
    created_at: datetime


class UserPatch(Wire):
    """What an admin (or, for roles inside its org, a steward) changes about a user; omitted: unchanged."""

    role: Role | None = None
    active: bool | None = None


class TokenInfo(Wire):
    """An API token as its owner and the admin see it (never the secret)."""

    id: int
    user: str
    created_at: datetime
    revoked_at: datetime | None


class NewToken(Wire):
    """A freshly issued API token (the secret is shown once)."""

    id: int
    user: str
    token: str
