"""API keys: ``pt_<key id>_<secret>``, of which only the key id and the secret's SHA-256 are stored.

The secret is 256 random bits, so a plain SHA-256 is enough to make the stored
digest useless to whoever reads the database (a slow password hash protects
low-entropy secrets, which these are not), and it keeps each request's check
to microseconds. The key id names the key in lists and in the audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

PREFIX = "pt"
_KEY = re.compile(r"pt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class NewKey(NamedTuple):
    key_id: str
    secret_sha256: str
    token: str  # shown once to whoever created the key, never stored


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, digest(secret), f"{PREFIX}_{key_id}_{secret}")


def parse(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    match = _KEY.fullmatch(token.strip())
    return (match[1], match[2]) if match else None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


# The bearer secrets of sign-in links and console sessions: 256 random bits, URL-safe base64.
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_secret_token() -> tuple[str, str]:
    """A sign-in link's or a console session's token (256 random bits) and the digest that is stored of it."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def is_secret_token(token: str) -> bool:
    """Whether ``token`` has the shape ``new_secret_token`` gives: anything else is refused before a look-up."""
    return _SECRET_TOKEN.fullmatch(token) is not None
