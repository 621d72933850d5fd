"""What the API server's log filter removes from a line, and what it leaves."""

from __future__ import annotations

import logging
import logging.config
import sys

import pytest

from api.log_redaction import RedactCredentials, redact, uvicorn_log_config

KEY = "pt_3f9c2a71b0d4_" + "A" * 43


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"GET /v1/demonstrations?api_key={KEY}&format=csv", "GET /v1/demonstrations?api_key=[redacted]&format=csv"),
        ("GET /x?format=csv&Access-Token=abc;limit=3", "GET /x?format=csv&Access-Token=[redacted];limit=3"),
        ("GET /x?api%5Fkey=abc", "GET /x?api%5Fkey=[redacted]"),
        ("GET /x?q=1&PASSWORD=hunter2#frag", "GET /x?q=1&PASSWORD=[redacted]#frag"),
        (f"GET /v1/{KEY}/kpis", "GET /v1/pt_3f9c2a71b0d4_[redacted]/kpis"),
        ("http://admin:s3cret@influx:8086/query", "http://[redacted]@influx:8086/query"),
        ("Authorization: Bearer abc.def", "Authorization: [redacted]"),
        ("{'x-api-key': 'abc', 'accept': '*/*'}", "{'x-api-key': '[redacted]', 'accept': '*/*'}"),
        ("Cookie: session=abc; theme=dark", "Cookie: [redacted]"),
        ("sent with Basic YWRtaW46cw==", "sent with Basic [redacted]"),
        ("GET /v1/demonstrations?limit=5&format=csv HTTP/1.1", "GET /v1/demonstrations?limit=5&format=csv HTTP/1.1"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_the_filter_redacts_arguments_and_tracebacks() -> None:
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        record = logging.LogRecord("api", logging.ERROR, __file__, 1, "%s %s failed", ("GET", f"/x?token={KEY}"), None)
        record.exc_info = sys.exc_info()
    assert RedactCredentials().filter(record)
    text = logging.Formatter().format(record)
    assert KEY not in text and KEY[16:] not in text
    assert "GET /x?token=[redacted] failed" in text and "bad key pt_3f9c2a71b0d4_[redacted]" in text


def test_the_servers_log_leaves_out_each_request_the_api_makes_to_influxdb() -> None:
    """httpx logs every request at INFO: a served console page would print a line per InfluxDB query."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = uvicorn_log_config()
    named = [logging.getLogger(name) for name in ("httpx", "httpcore", *config["loggers"])]
    before = [(lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in named]
    config["disable_existing_loggers"] = False
    logging.config.dictConfig(config)
    try:
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
        assert logging.getLogger("api.problems").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for logger, its_handlers, its_level, propagate, disabled in before:
            logger.handlers[:] = its_handlers
            logger.setLevel(its_level)
            logger.propagate, logger.disabled = propagate, disabled
