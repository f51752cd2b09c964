"""Web sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped in the hub's memory to the hash
of the API token the user logged in with (never the token itself) and a CSRF token for its forms.

A session is resolved to its user's principal on every request (:func:`resolve`), so a revoked token, a
deactivated user or a suspended org ends the session at once. Sessions live in one hub process: a restart
logs everybody out, which is the safe failure. An anonymous visitor of the login page gets a session without
a token, so that the login form is CSRF-protected too; logging in replaces it with a new id (no fixation).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from consortium.hub.services import identity
from consortium.hub.services.errors import Unauthorized
from consortium.hub.services.identity import Principal

COOKIE = "consortium_session"
SESSION_SCOPE_KEY = "consortium.web_session"
"""The request's :class:`WebSession` (None without a valid one), set by the gate on web routes."""
WEB_PRINCIPAL_SCOPE_KEY = "consortium.web_principal"
"""The principal of the request's logged-in session (absent: anonymous), set by the gate on web routes."""


@dataclass
class WebSession:
    """One browser's session: its id (the cookie), its CSRF token, the hash of the API token it logged in
    with (None: not logged in) and when it expires (monotonic seconds)."""

    sid: str
    csrf: str
    token_hash: str | None
    expires_at: float

    def csrf_ok(self, sent: str | None) -> bool:
        """Whether ``sent`` is this session's CSRF token (compared in constant time)."""
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


class WebSessions:
    """The hub's web sessions in memory, thread-safe, each expiring ``ttl_s`` after its last use (a session
    not logged in: ``anonymous_ttl_s``); at most ``max_entries``. When full, expired sessions go first, then
    the oldest not logged in, and a logged-in one only when nothing else is left: anyone can open anonymous
    sessions (the login page), so a flood of them cannot push members out."""

    def __init__(self, ttl_s: float = 8 * 3600.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic, anonymous_ttl_s: float = 1800.0) -> None:
        self.ttl_s = ttl_s
        self.anonymous_ttl_s = min(anonymous_ttl_s, ttl_s)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, WebSession] = {}

    def open(self, token_hash: str | None) -> WebSession:
        """A new session (logged in when ``token_hash`` is given)."""
        now = self._clock()
        session = WebSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), token_hash,
                             now + self._ttl(token_hash))
        with self._lock:
            if len(self._sessions) >= self.max_entries:
                self._prune(now)
            self._sessions[session.sid] = session
        return session

    def get(self, sid: str | None) -> WebSession | None:
        """The live session with this id (its expiry pushed back), or None."""
        if not sid:
            return None
        now = self._clock()
        with self._lock:
            found = self._sessions.get(sid)
            if found is None:
                return None
            if found.expires_at <= now:
                del self._sessions[sid]
                return None
            found.expires_at = now + self._ttl(found.token_hash)
            return found

    def close(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _ttl(self, token_hash: str | None) -> float:
        return self.ttl_s if token_hash is not None else self.anonymous_ttl_s

    def _prune(self, now: float) -> None:
        for sid in [s for s, found in self._sessions.items() if found.expires_at <= now]:
            del self._sessions[sid]
        if len(self._sessions) >= self.max_entries:
            anonymous = [found for found in self._sessions.values() if found.token_hash is None]
            oldest = min(anonymous or self._sessions.values(), key=lambda found: found.expires_at)
            del self._sessions[oldest.sid]


def cookie_value(scope: dict) -> str | None:
    """The session cookie of the request, or None."""
    for name, value in scope.get("headers", []):
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, found = part.strip().partition("=")
            if key == COOKIE:
                return found
    return None


def resolve(db: Session, sessions: WebSessions, found: WebSession) -> Principal | None:
    """The principal of a logged-in session, or None; a session whose token no longer authenticates is
    closed."""
    if found.token_hash is None:
        return None
    try:
        return identity.authenticate_token_hash(db, found.token_hash)
    except Unauthorized:
        sessions.close(found.sid)
        return None
