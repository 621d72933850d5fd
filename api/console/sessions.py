"""Console sessions: an API key, checked once at sign-in, exchanged for a random session token kept in SQL.

The browser holds only the token (an HttpOnly cookie); the database holds only its SHA-256, never the key or the
token, so every API replica on the same database knows the session and a restart keeps it. Its CSRF token is
derived from the session token (so nothing more is stored). Every request reads the key as it stands, so a revoked
key ends its sessions at once. A session ends after ``IDLE_S`` without a request, or ``LIFETIME_S`` after sign-in,
whichever comes first; sign-out deletes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from adapters.sql import AccessRepository, Database
from pilot_core import api_keys
from pilot_core.access import Principal

IDLE_S = 30 * 60
LIFETIME_S = 8 * 3600
# A page view writes the session's last-seen time only when it is older than this: reading pages stays read-only
# most of the time, and the idle end comes at most this much early.
TOUCH_EVERY_S = 60
MAX_SESSIONS = 10_000  # the oldest go first: the table stays bounded whatever signs in


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    principal: Principal
    csrf: str  # the token every form of this session carries
    started_s: float
    seen_s: float


def csrf_of(token: str) -> str:
    """The session's CSRF token: a digest of the session token under its own label (not the stored digest)."""
    return hashlib.sha256(b"pilot console csrf\0" + token.encode("ascii")).hexdigest()


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class SessionStore:
    """Sessions by token, in the API's database (thread-safe: each call is its own transaction)."""

    def __init__(self, database: Database, clock: Callable[[], float] = time.time) -> None:
        self._access = AccessRepository(database)
        self._clock = clock  # wall-clock seconds: replicas compare each other's times

    def open(self, principal: Principal) -> Session:
        now_s = self._clock()
        token, digest = api_keys.new_secret_token()
        self._access.purge_console_sessions(_at(now_s), _at(now_s - IDLE_S), MAX_SESSIONS - 1)
        self._access.add_console_session(digest, principal.key_id, _at(now_s), _at(now_s + LIFETIME_S))
        return Session(token, principal, csrf_of(token), now_s, now_s)

    def get(self, token: str | None) -> Session | None:
        """The live session ``token`` names, its idle time restarted; None for an unknown or expired one, or one
        whose key was revoked (then it is deleted)."""
        if not token or not api_keys.is_secret_token(token):
            return None
        digest = api_keys.digest(token)
        stored = self._access.console_session(digest)
        if stored is None:
            return None
        now_s = self._clock()
        started_s, seen_s = stored.created_at.timestamp(), stored.last_seen_at.timestamp()
        if stored.principal is None or now_s - seen_s > IDLE_S or now_s >= stored.expires_at.timestamp():
            self._access.end_console_session(digest)
            return None
        if now_s - seen_s >= TOUCH_EVERY_S:
            self._access.touch_console_session(digest, _at(now_s))
            seen_s = now_s
        return Session(token, stored.principal, csrf_of(token), started_s, seen_s)

    def close(self, token: str | None) -> None:
        if token and api_keys.is_secret_token(token):
            self._access.end_console_session(api_keys.digest(token))
