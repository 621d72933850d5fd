"""Credentials never reach a log line: the API server's logging, with every record redacted on its way out.

The API takes keys only in headers, which are not logged; but a client may put one
anywhere (``?api_key=pt_…``, ``https://user:key@host/…``, a key pasted into a
path), and uvicorn's access line holds the request's path and query string as
sent. Every record of the process goes through ``redact`` before it is written.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import uvicorn.config

REDACTED = "[redacted]"

# Query parameters that carry credentials, compared case-insensitively with - and _ ignored.
_SECRET_PARAMETERS = (
    "key|apikey|xapikey|token|accesstoken|idtoken|refreshtoken|authtoken|auth|authorization|bearer|jwt"
    "|password|passwd|pass|pwd|secret|clientsecret|credential|credentials|session|sessionid|sid|sig|signature"
    "|cookie|code"
)
_PARAMETER = re.compile(r"(?P<name>(?<=[?&;])[^=&;#\s\"]+)=(?P<value>[^&;#\s\"]*)")
_SECRET_NAME = re.compile(rf"(?:{_SECRET_PARAMETERS})", re.IGNORECASE)
_API_KEY = re.compile(r"\b(pt_[0-9a-f]{12}_)[A-Za-z0-9_-]+")  # the key id stays: it names the key, it opens nothing
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s\"]*@")
_AUTHORIZATION = re.compile(r"\b(Bearer|Basic|Digest|Token)(\s+)[A-Za-z0-9._~+/=%:-]+", re.IGNORECASE)
_HEADER = re.compile(
    r"(?P<name>\b(?:x-api-key|api-key|authorization|proxy-authorization|cookie|set-cookie)[\"']?\s*:\s*[\"']?)"
    r"[^\"'\r\n]+",
    re.IGNORECASE,
)


def _parameter(match: re.Match[str]) -> str:
    name = match["name"]
    if _SECRET_NAME.fullmatch(name.replace("-", "").replace("_", "").replace("%5F", "").replace("%2D", "")):
        return f"{name}={REDACTED}"
    return match[0]


def redact(text: str) -> str:
    """``text`` with every credential it may hold replaced by [redacted]."""
    text = _API_KEY.sub(rf"\1{REDACTED}", text)
    text = _USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)
    text = _HEADER.sub(rf"\g<name>{REDACTED}", text)
    text = _AUTHORIZATION.sub(rf"\1\2{REDACTED}", text)
    if "=" in text:
        text = _PARAMETER.sub(_parameter, text)
    return text


class RedactCredentials(logging.Filter):
    """Redacts a record's message and arguments in place (a handler's filter, so propagated records pass it too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, every handler redacting, and the app's loggers routed through it."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_credentials"] = {"()": RedactCredentials}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_credentials")
    # The app's own loggers (api.problems logs failed requests) reach stderr through the same filter.
    config["root"] = {"handlers": ["default"], "level": "INFO"}
    # httpx logs every request at INFO: each InfluxDB query a page or a comparison makes would be a line.
    for chatty in ("httpx", "httpcore"):
        config["loggers"][chatty] = {"level": "WARNING"}
    return config
