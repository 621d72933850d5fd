"""Console sessions: an API key, checked once at sign-in, exchanged for a random session token kept in memory.

The browser holds only the token (an HttpOnly cookie); the key itself is never stored. Every request checks the
key again by its id, so a revoked key ends its sessions at once. A session ends after ``IDLE_S`` without a
request, or ``LIFETIME_S`` after sign-in, whichever comes first, and with the server process (sessions are not
shared between processes: `pilot api` serves from one).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from pilot_core.access import Principal

IDLE_S = 30 * 60
LIFETIME_S = 8 * 3600
MAX_SESSIONS = 10_000  # the oldest go first: memory stays bounded whatever signs in


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    principal: Principal
    csrf: str  # the token every form of this session carries
    started_s: float
    seen_s: float

    def expired(self, now_s: float) -> bool:
        return now_s - self.seen_s > IDLE_S or now_s - self.started_s > LIFETIME_S


class SessionStore:
    """Sessions by token, thread-safe (pages are served from a thread pool)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, principal: Principal) -> Session:
        now_s = self._clock()
        session = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(32), now_s, now_s)
        with self._lock:
            self._sessions[session.token] = session
            while len(self._sessions) > MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session ``token`` names, its idle time restarted; None for an unknown or expired one."""
        if not token:
            return None
        now_s = self._clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if session.expired(now_s):
                del self._sessions[token]
                return None
            session = self._sessions[token] = replace(session, seen_s=now_s)
            return session

    def close(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)
