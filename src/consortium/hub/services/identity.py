"""Members, nodes, users and the two ways to prove who you are: API tokens and signed requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Insert, delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from consortium import crypto
from consortium.hub.db.models import ApiToken, EnrolmentToken, Node, Org, OrgKey, SeenNonce, User
from consortium.hub.services import ledger
from consortium.hub.services.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from consortium.protocol import EnrolRequest, Role, UserCreate

T = TypeVar("T")

NONCE_RETENTION = timedelta(seconds=900)
"""Nonces are remembered longer than the 300 s timestamp window, so a replay can never slip through."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user with a token, or an organisation (its node or steward) by signature."""

    kind: str
    name: str
    role: Role
    org_id: int | None
    org_name: str | None

    @property
    def label(self) -> str:
        return f"org:{self.name}" if self.kind == "org" else f"user:{self.name}"

    def acts_for(self, org_id: int) -> bool:
        """True when the caller may act on behalf of ``org_id`` (its key, or one of its stewards)."""
        if self.org_id != org_id:
            return False
        return self.kind == "org" or self.role == Role.steward


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(f"{principal.label} has role {principal.role.value}; this needs one of: {allowed}")


def ensure_admin(session: Session, token: str) -> None:
    """Create the consortium admin with ``token`` unless an admin already exists."""
    if session.scalar(select(User).where(User.role == Role.admin.value)) is not None:
        return
    user = User(name="admin", role=Role.admin.value)
    session.add(user)
    session.flush()
    session.add(ApiToken(user_id=user.id, token_hash=crypto.hash_token(token)))
    ledger.record(session, "user.created", "hub", {"user": "admin", "role": "admin"}, scope=ledger.MEMBERS)
    session.commit()


def org_by_name(session: Session, name: str) -> Org:
    org = session.scalar(select(Org).where(Org.name == name))
    if org is None:
        raise NotFound(f"no organisation named {name!r}")
    return org


def issue_enrolment_token(
    session: Session, actor: Principal, org_name: str, now: datetime, ttl: timedelta = timedelta(hours=24)
) -> tuple[str, datetime]:
    """A one-time token with which the org's node registers its public key."""
    require_role(actor, Role.admin)
    org = org_by_name(session, org_name)
    token = crypto.new_api_token()
    expires = now + ttl
    session.add(EnrolmentToken(org_id=org.id, token_hash=crypto.hash_token(token), expires_at=expires))
    ledger.record(session, "org.enrolment_token_issued", actor.label, {"org": org.name}, scope=ledger.MEMBERS)
    session.commit()
    return token, expires


def enrol(session: Session, body: EnrolRequest, now: datetime) -> Node:
    """Register a node with its org's public key, consuming the one-time enrolment token."""
    record = session.scalar(
        select(EnrolmentToken).where(EnrolmentToken.token_hash == crypto.hash_token(body.token))
    )
    org = session.scalar(select(Org).where(Org.name == body.org))
    if record is None or org is None or record.org_id != org.id:
        raise Unauthorized("enrolment token is not valid for this organisation")
    if record.used_at is not None:
        raise Unauthorized("enrolment token was already used")
    if record.expires_at < now:
        raise Unauthorized("enrolment token has expired")
    try:
        crypto.public_key_from_b64(body.public_key)
    except ValueError as exc:
        raise BadRequest(f"public_key: {exc}") from exc
    kid = crypto.key_id(body.public_key)
    if org.public_key is not None and org.public_key != body.public_key:
        raise Conflict(f"organisation {org.name!r} is already enrolled with a different key")
    other = session.scalar(select(Org).where(Org.key_id == kid, Org.id != org.id))
    held = session.scalar(select(OrgKey.org_id).where(OrgKey.key_id == kid))
    if other is not None or (held is not None and held != org.id):
        raise Conflict("this public key is already registered to another organisation")
    if session.scalar(select(Node).where(Node.org_id == org.id, Node.name == body.node_name)) is not None:
        raise Conflict(f"node {body.node_name!r} of {org.name!r} is already enrolled")
    if org.public_key is None:
        session.add(OrgKey(org_id=org.id, key_id=kid, public_key=body.public_key, created_at=now))
    org.public_key, org.key_id = body.public_key, kid
    record.used_at = now
    node = Node(org_id=org.id, name=body.node_name, key_id=kid)
    session.add(node)
    session.flush()
    ledger.record(
        session, "node.enrolled", f"org:{org.name}",
        {"org": org.name, "node": node.name, "key_id": kid, "public_key": body.public_key},
        scope=ledger.MEMBERS,
    )
    session.commit()
    return node


def create_user(session: Session, actor: Principal, body: UserCreate) -> tuple[User, str]:
    require_role(actor, Role.admin)
    if session.scalar(select(User).where(User.name == body.name)) is not None:
        raise Conflict(f"user {body.name!r} already exists")
    org_id = None
    if body.org is not None:
        org_id = org_by_name(session, body.org).id
    elif body.role == Role.steward:
        raise BadRequest("org: a steward must belong to an organisation")
    user = User(name=body.name, role=body.role.value, org_id=org_id)
    session.add(user)
    session.flush()
    token = crypto.new_api_token()
    session.add(ApiToken(user_id=user.id, token_hash=crypto.hash_token(token)))
    ledger.record(
        session, "user.created", actor.label, {"user": user.name, "role": user.role, "org": body.org},
        scope=ledger.MEMBERS,
    )
    session.commit()
    return user, token


def authenticate_token(session: Session, token: str) -> Principal:
    return authenticate_token_hash(session, crypto.hash_token(token))


def authenticate_token_hash(session: Session, token_hash: str) -> Principal:
    """Like :func:`authenticate_token`, given the token's hash (what a web session keeps instead of it)."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("API token is not valid")
    user = row.user
    if not user.active:
        raise Unauthorized(f"user {user.name!r} is deactivated")
    if user.org is not None and user.org.status != "admitted":
        raise Unauthorized(f"organisation {user.org.name!r} is {user.org.status}: its users cannot act for it")
    return Principal(
        kind="user",
        name=user.name,
        role=Role(user.role),
        org_id=user.org_id,
        org_name=user.org.name if user.org else None,
    )


class TokenCache:
    """API token -> its user's principal, remembered for ``ttl_s`` so that a user's requests skip a query.

    Only valid tokens are cached (by their hash). A revocation, deactivation or role change made through this
    hub process :meth:`forget` drops the user's tokens at once; on other hub processes it takes effect within
    ``ttl_s`` seconds. At most ``max_entries`` are kept: when full, the cache starts afresh.
    """

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def cached(self, token: str, clock: float) -> Principal | None:
        hit = self._entries.get(crypto.hash_token(token))
        if hit is not None and clock - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def remember(self, token: str, principal: Principal, clock: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[crypto.hash_token(token)] = (clock, principal)

    def forget(self, token_hashes: Iterable[str]) -> None:
        """Drop the tokens with these hashes (revoked, or their user changed)."""
        for digest in token_hashes:
            self._entries.pop(digest, None)


@dataclass(frozen=True)
class KnownKey:
    """An admitted org's current key, as the signature checks need it."""

    org_id: int
    org_name: str
    public_key: str


class KeyCache:
    """Key id -> admitted org's key, remembered for ``ttl_s`` so that signed requests skip a query.

    Only admitted keys are cached (a newly enrolled key is found at once); a suspension takes effect within
    ``ttl_s`` seconds, also on other hub replicas; a key rotated away through this hub process is
    dropped at once by :meth:`forget` (within ``ttl_s`` on others).

    A lookup that must go to the database re-confirms every stale entry in the same query (up to
    ``refresh_batch``), so that a thousand nodes whose calls are further apart than ``ttl_s`` (a long round)
    cost one query per ``ttl_s`` rather than one per request.
    """

    def __init__(self, ttl_s: float = 5.0, refresh_batch: int = 2000) -> None:
        self.ttl_s = ttl_s
        self.refresh_batch = refresh_batch
        self._entries: dict[str, tuple[float, KnownKey]] = {}
        self._refreshing = threading.Lock()

    def cached(self, kid: str, clock: float) -> KnownKey | None:
        """The key if it was confirmed less than ``ttl_s`` seconds ago (no query)."""
        hit = self._entries.get(kid)
        if hit is not None and clock - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def get(self, session: Session, kid: str, clock: float) -> KnownKey | None:
        hit = self.cached(kid, clock)
        if hit is not None:
            return hit
        with self._refreshing:
            hit = self.cached(kid, clock)  # another thread's refresh may have confirmed it meanwhile
            if hit is not None:
                return hit
            stale = [known for known, (at, _) in list(self._entries.items())
                     if known != kid and clock - at >= self.ttl_s][: self.refresh_batch - 1]
            return self._confirm(session, [kid, *stale], clock).get(kid)

    def _confirm(self, session: Session, kids: list[str], clock: float) -> dict[str, KnownKey]:
        """Re-read ``kids`` in one query: admitted keys are stamped ``clock``, the others dropped."""
        admitted = {row.key_id: KnownKey(row.id, row.name, row.public_key) for row in session.execute(
            select(Org.key_id, Org.id, Org.name, Org.public_key)
            .where(Org.key_id.in_(kids), Org.status == "admitted", Org.public_key.is_not(None))
        )}
        for kid in kids:
            key = admitted.get(kid)
            if key is None:
                self._entries.pop(kid, None)
            else:
                self._entries[kid] = (clock, key)
        return admitted

    def forget(self, kid: str) -> None:
        """Drop ``kid`` (a key that was just retired)."""
        self._entries.pop(kid, None)


_NONCE_INSERTS: dict[str, Insert] = {}


def _nonce_insert(dialect: str) -> Insert:
    """``INSERT .. ON CONFLICT DO NOTHING RETURNING nonce`` on the table (no ORM), built once per dialect."""
    statement = _NONCE_INSERTS.get(dialect)
    if statement is None:
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        table = SeenNonce.__table__
        statement = _NONCE_INSERTS[dialect] = insert(table).on_conflict_do_nothing().returning(table.c.nonce)
    return statement


def _record_nonce(session: Session, kid: str, nonce: str, now: datetime) -> bool:
    """Insert the nonce; False when it was already there (one statement, no savepoint)."""
    connection = session.connection()
    statement = _nonce_insert(connection.dialect.name)
    return connection.execute(statement, {"key_id": kid, "nonce": nonce, "seen_at": now}).first() is not None


class SignedCall:
    """An org-signed request whose signature verified; its nonce is recorded by :meth:`record_nonce`.

    Deferring the nonce lets it ride in the transaction of the request's own write (one commit instead of
    two). Whatever the request's outcome, the nonce must be recorded before the answer leaves:
    :func:`in_signed_transaction` sees to that.
    """

    def __init__(self, principal: Principal, key_id: str, nonce: str, seen_at: datetime) -> None:
        self.principal = principal
        self.key_id = key_id
        self.nonce = nonce
        self.seen_at = seen_at
        self.recorded = False

    def record_nonce(self, session: Session) -> None:
        """Insert the nonce into the session's transaction (once); 401 when it was used before."""
        if self.recorded:
            return
        if not _record_nonce(session, self.key_id, self.nonce, self.seen_at):
            raise Unauthorized("request signature rejected: nonce already used (replayed request)")
        self.recorded = True


def verify_signature(
    session: Session,
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    now: datetime,
    keys: KeyCache | None = None,
) -> SignedCall:
    """Check a signed request's key, time window and signature (not yet its nonce); 401 on failure."""
    keys = keys or KeyCache(ttl_s=0.0)
    clock = now.timestamp()
    try:
        return _verified(headers, method, path, body, now, lambda kid: keys.get(session, kid, clock))
    finally:
        session.rollback()


class _NotCached(Exception):
    pass


def verify_signature_cached(
    headers: Mapping[str, str], method: str, path: str, body: bytes, now: datetime, keys: KeyCache
) -> SignedCall | None:
    """:func:`verify_signature` without a database, for a request whose key is in ``keys``; None when it is
    not (then call :func:`verify_signature`). Cheap enough to run on the event loop."""

    def cached(kid: str) -> KnownKey:
        key = keys.cached(kid, now.timestamp())
        if key is None:
            raise _NotCached
        return key

    try:
        return _verified(headers, method, path, body, now, cached)
    except _NotCached:
        return None


def _verified(
    headers: Mapping[str, str], method: str, path: str, body: bytes, now: datetime,
    key_of: Callable[[str], KnownKey | None],
) -> SignedCall:
    found: dict[str, KnownKey] = {}
    nonces: list[str] = []

    def lookup(kid: str) -> str | None:
        key = key_of(kid)
        if key is None:
            return None
        found[kid] = key
        return key.public_key

    def defer_nonce(_kid: str, nonce: str) -> bool:
        nonces.append(nonce)
        return False

    try:
        kid = crypto.verify_request(
            headers, method, path, body, now=now.timestamp(), lookup_key=lookup, seen_nonce=defer_nonce
        )
    except crypto.SignatureError as exc:
        raise Unauthorized(f"request signature rejected: {exc.reason}") from exc
    key = found[kid]
    principal = Principal(kind="org", name=key.org_name, role=Role.steward, org_id=key.org_id,
                          org_name=key.org_name)
    return SignedCall(principal, kid, nonces[0], now)


def authenticate_signature(
    session: Session,
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    now: datetime,
    keys: KeyCache | None = None,
) -> Principal:
    """Check a signed request (key, time window, signature, nonce) and commit its nonce; 401 on failure."""
    call = verify_signature(session, headers, method, path, body, now, keys)
    try:
        call.record_nonce(session)
    except Unauthorized:
        session.rollback()
        raise
    session.commit()
    return call.principal


def in_signed_transaction(session: Session, call: SignedCall, work: Callable[[], T]) -> T:
    """Run ``work`` with the call's nonce recorded in the transaction of its writes.

    ``work`` calls ``call.record_nonce(session)`` just before its writes and commits them. When it fails, the
    nonce is recorded and committed on its own, so no request is answered while its nonce could still be used
    again; a request whose nonce some other request already used gets 401 rather than its own error.
    """
    try:
        result = work()
    except Exception:
        session.rollback()
        inserted = _record_nonce(session, call.key_id, call.nonce, call.seen_at)
        session.commit()
        if not inserted and not call.recorded:
            raise Unauthorized("request signature rejected: nonce already used (replayed request)") from None
        raise
    if not call.recorded:
        call.record_nonce(session)
        session.commit()
    return result


def prune_nonces(session: Session, now: datetime) -> int:
    """Forget nonces older than the retention window (their timestamps are already rejected)."""
    result = session.execute(delete(SeenNonce).where(SeenNonce.seen_at < now - NONCE_RETENTION))
    session.commit()
    return int(result.rowcount or 0)
