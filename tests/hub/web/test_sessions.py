"""Web sessions in memory: random ids, expiry after idleness, a bounded map, the cookie parsed from headers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consortium.hub.web.sessions import COOKIE, WebSessions, cookie_value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_session_lives_while_used_and_expires_when_idle() -> None:
    clock = Clock()
    sessions = WebSessions(ttl_s=10.0, clock=clock)
    found = sessions.open("ab" * 32)
    for _ in range(5):
        clock.now += 9.0
        assert sessions.get(found.sid) is found
    clock.now += 10.0
    assert sessions.get(found.sid) is None and len(sessions) == 0


def test_ids_and_csrf_tokens_are_fresh_and_closing_forgets() -> None:
    sessions = WebSessions()
    opened = [sessions.open(None) for _ in range(50)]
    assert len({s.sid for s in opened} | {s.csrf for s in opened}) == 100
    sessions.close(opened[0].sid)
    assert sessions.get(opened[0].sid) is None and sessions.get(opened[1].sid) is opened[1]
    assert sessions.get(None) is None and sessions.get("") is None


def test_a_full_map_drops_the_expired_then_the_oldest() -> None:
    clock = Clock()
    sessions = WebSessions(ttl_s=10.0, max_entries=3, clock=clock)
    first = sessions.open("ab" * 32)
    clock.now = 1.0
    second, third = sessions.open("cd" * 32), sessions.open("ef" * 32)
    clock.now = 2.0
    fourth = sessions.open("01" * 32)
    assert len(sessions) == 3 and sessions.get(first.sid) is None
    assert all(sessions.get(s.sid) is s for s in (second, third, fourth))


def test_a_flood_of_anonymous_sessions_does_not_push_members_out() -> None:
    clock = Clock()
    sessions = WebSessions(ttl_s=100.0, max_entries=10, clock=clock, anonymous_ttl_s=5.0)
    member = sessions.open("ab" * 32)
    for _ in range(1000):
        clock.now += 0.01
        sessions.open(None)
    assert sessions.get(member.sid) is member and len(sessions) == 10
    anonymous = sessions.open(None)
    clock.now += 6.0
    assert sessions.get(anonymous.sid) is None and sessions.get(member.sid) is member


@given(st.text(max_size=60))
def test_csrf_check_accepts_only_the_sessions_token(sent: str) -> None:
    found = WebSessions().open(None)
    assert found.csrf_ok(found.csrf)
    assert not found.csrf_ok(None)
    assert found.csrf_ok(sent) == (sent == found.csrf)


def test_the_cookie_is_read_among_others() -> None:
    scope = {"headers": [(b"accept", b"*/*"), (b"cookie", f"a=1; {COOKIE}=xyz; b=2".encode())]}
    assert cookie_value(scope) == "xyz"
    assert cookie_value({"headers": [(b"cookie", b"a=1")]}) is None
    assert cookie_value({"headers": []}) is None
