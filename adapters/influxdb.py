"""InfluxDB through its v1-compatible HTTP API: line protocol to /write and
InfluxQL over /query. InfluxDB 1.x serves it natively, 2.5+ through DBRP
mappings, and 3.x as its compatibility API, so this one client fits all three.
"""

from __future__ import annotations

import enum
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from adapters.tls import client_context, describe_tls_failure
from pilot_core.influxql import quote_identifier

PRECISIONS = ("s", "ms", "ns")


class InfluxSettings(BaseModel):
    # An error must not echo what was given: it may hold the password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = "http://127.0.0.1:8086"
    database: str = "pilot"
    username: str | None = None
    # For InfluxDB 2.x and 3.x, the API token goes here (with any username).
    password: SecretStr | None = None
    timeout_s: float = 10.0
    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate, for a server that asks for one
    key_file: Path | None = None
    verify_tls: bool = True

    @model_validator(mode="after")
    def _credentials_out_of_url(self) -> Self:
        """``https://user:pass@host`` becomes username and password, so the url is safe to log."""
        parts = urlsplit(self.url)
        tls_files = [name for name in ("ca_file", "cert_file", "key_file") if getattr(self, name)]
        if tls_files and parts.scheme != "https":
            raise ValueError(f"{' and '.join(tls_files)} set, but the url is not https://: TLS would not be used")
        if parts.query:  # ?u=…&p=… would put the password in every logged request line
            raise ValueError("the InfluxDB url takes no query; give credentials as username and password")
        if parts.username is None and parts.password is None:
            return self
        if self.username or self.password:
            raise ValueError("give the InfluxDB credentials in username and password, or in the url, not both")
        self.username = unquote(parts.username) if parts.username else None
        self.password = SecretStr(unquote(parts.password)) if parts.password else None
        host = parts.netloc.rpartition("@")[2]
        self.url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        return self

    def ssl_context(self) -> ssl.SSLContext:
        return client_context(
            "influx", self.ca_file, self.cert_file, self.key_file, verify=self.verify_tls or bool(self.ca_file)
        )


class WriteOutcome(enum.Enum):
    WRITTEN = "written"
    PARTIAL = "partial"  # 400/422: some lines may have been refused
    TOO_LARGE = "too_large"  # 413: split the body
    RETRY = "retry"  # 429, 5xx, or the server could not be reached


@dataclass(frozen=True)
class WriteResult:
    outcome: WriteOutcome
    status: int | None
    message: str = ""
    retry_after_s: float | None = None
    # 3.x lists the refused lines; 1.x and 2.x only say how many were dropped.
    refused_lines: list[int] = field(default_factory=list)


class InfluxError(RuntimeError):
    pass


class InfluxQueryError(InfluxError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # HTTP status, when the server answered


@dataclass(frozen=True)
class Series:
    name: str
    columns: list[str]
    values: list[list[Any]]
    tags: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.values]


_RETRYABLE = {408, 429, 500, 502, 503, 504}


class InfluxClient:
    def __init__(self, settings: InfluxSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        auth = None
        if settings.username or settings.password:
            password = settings.password.get_secret_value() if settings.password else ""
            auth = httpx.BasicAuth(settings.username or "pilot", password)
        # Only an https url needs a context; building one reads the trust store (httpx builds one even for
        # verify=True on a plain http url: about 0.2 s per client, which is per API request).
        verify: ssl.SSLContext | bool = settings.ssl_context() if settings.url.startswith("https:") else False
        self._http = httpx.Client(
            base_url=settings.url.rstrip("/"),
            auth=auth,
            timeout=settings.timeout_s,
            verify=verify,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> str:
        """The server's version, or raise InfluxError if it cannot be reached."""
        try:
            response = self._http.get("/ping")
        except httpx.HTTPError as exc:
            raise InfluxError(f"cannot reach InfluxDB at {self.settings.url}: {_failure(exc)}") from None
        if response.status_code not in (200, 204):
            raise InfluxError(f"InfluxDB at {self.settings.url} answered /ping with {response.status_code}")
        return response.headers.get("X-Influxdb-Version", "unknown")

    def ensure_database(self) -> bool:
        """Create the database where the server allows it.

        Returns False where the server manages databases itself: 2.x maps
        buckets through DBRP and 3.x creates a database on first write.
        """
        try:
            self.query(f"CREATE DATABASE {quote_identifier(self.settings.database)}", method="POST", database=None)
        except InfluxQueryError as exc:
            if exc.status == 401:  # wrong credentials: every write would fail too
                raise InfluxError(f"InfluxDB at {self.settings.url} refused our credentials: {exc}") from None
            return False
        return True

    def write(self, lines: Sequence[str] | bytes, precision: str = "ms") -> WriteResult:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        body = lines if isinstance(lines, bytes) else "\n".join(lines).encode("utf-8")
        try:
            response = self._http.post(
                "/write",
                params={"db": self.settings.database, "precision": precision},
                content=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            return WriteResult(WriteOutcome.RETRY, None, _failure(exc))
        status = response.status_code
        if status in (200, 204):
            return WriteResult(WriteOutcome.WRITTEN, status)
        text = response.text[:2000]
        if status in (400, 422):
            return WriteResult(WriteOutcome.PARTIAL, status, text, refused_lines=_refused_lines(text))
        if status == 413:
            return WriteResult(WriteOutcome.TOO_LARGE, status, text)
        if status in _RETRYABLE:
            return WriteResult(WriteOutcome.RETRY, status, text, retry_after_s=_retry_after(response))
        # 401/403/404 and the like will not mend themselves by retrying fast,
        # but retrying slowly keeps data safe until an operator fixes it.
        return WriteResult(WriteOutcome.RETRY, status, text, retry_after_s=_retry_after(response) or 5.0)

    def query(
        self, influxql: str, *, method: str = "GET", database: str | None = "", epoch: str = "ms"
    ) -> list[Series]:
        """Run InfluxQL and return the series of its (single) statement."""
        params = {"q": influxql, "epoch": epoch}
        db = self.settings.database if database == "" else database
        if db:
            params["db"] = db
        try:
            if method == "POST":
                response = self._http.post("/query", data=params)
            else:
                response = self._http.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise InfluxQueryError(f"cannot reach InfluxDB at {self.settings.url}: {_failure(exc)}") from None
        try:
            document = response.json()
        except ValueError:
            raise InfluxQueryError(
                f"InfluxDB answered {response.status_code} with no JSON: {response.text[:200]}", response.status_code
            ) from None
        status = response.status_code
        if "error" in document:
            raise InfluxQueryError(document["error"], status)
        if status >= 300:
            raise InfluxQueryError(document.get("message") or f"InfluxDB answered {status}", status)
        series: list[Series] = []
        for result in document.get("results", []):
            if "error" in result:
                raise InfluxQueryError(result["error"], status)
            for item in result.get("series", []):
                series.append(
                    Series(
                        item.get("name", ""), item.get("columns", []), item.get("values", []), item.get("tags") or {}
                    )
                )
        return series


def _failure(exc: httpx.HTTPError) -> str:
    """Why a request failed; a TLS failure says what to check."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return describe_tls_failure("influx", cause)
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for InfluxDB; fall back to our own backoff


def _refused_lines(text: str) -> list[int]:
    """Line numbers (1-based) that InfluxDB 3 lists as refused; empty for 1.x and 2.x."""
    try:
        document = json.loads(text)
    except ValueError:
        return []
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        return []
    return sorted(
        {item["line_number"] for item in data if isinstance(item, dict) and isinstance(item.get("line_number"), int)}
    )
