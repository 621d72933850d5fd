"""A running Grafana, through its HTTP API with grafana-client: datasource, folder and dashboards.

Every failure becomes a GrafanaError that says what to check: the address,
the token or password, or the permissions of the account behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaServerError, GrafanaUnauthorizedError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 10.0


class GrafanaError(RuntimeError):
    pass


class Grafana:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GrafanaError(f"the Grafana url must look like http://host:3000, not {url!r}")
        if parts.username or parts.password:
            raise GrafanaError("give Grafana's credentials with --token or --user and --password, not in the url")
        if token and (user or password):
            raise GrafanaError("give Grafana a token or a user and password, not both")
        if bool(user) != bool(password):
            raise GrafanaError("a Grafana user needs a password, and a password a user")
        self.url = url.rstrip("/")
        credential: str | tuple[str, str] | None = token or ((user, password) if user and password else None)
        # grafana-client appends "api" to the path as it is: a sub-path needs its trailing slash.
        self._api = GrafanaApi.from_url(self.url + "/", credential=credential, timeout=timeout_s)

    def version(self) -> str:
        """Grafana's version, from /api/health: proves the address (the credentials are proved by the next call)."""
        info = self._call("read Grafana's health", self._api.health.check)
        return str((info or {}).get("version", "unknown")) if isinstance(info, dict) else "unknown"

    def upsert_datasource(self, model: dict[str, Any]) -> str:
        """Create or update the datasource with ``model['uid']``; returns "created" or "updated"."""
        uid = model["uid"]
        if self._exists(f"datasource {uid}", lambda: self._api.datasource.get_datasource_by_uid(uid)):
            self._call(f"update datasource {uid}", lambda: self._api.datasource.update_datasource_by_uid(uid, model))
            return "updated"
        self._call(f"create datasource {uid}", lambda: self._api.datasource.create_datasource(model))
        return "created"

    def ensure_folder(self, uid: str, title: str) -> str:
        """Returns "created" or "exists"."""
        if self._exists(f"folder {uid}", lambda: self._api.folder.get_folder(uid)):
            return "exists"
        self._call(f"create folder {uid}", lambda: self._api.folder.create_folder(title, uid=uid))
        return "created"

    def upsert_dashboard(self, model: dict[str, Any], folder_uid: str) -> str:
        """Create or overwrite the dashboard with ``model['uid']``; returns its address in Grafana."""
        body = {
            "dashboard": {**model, "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": "pilot grafana push",
        }
        answer = self._call(
            f"save dashboard {model['uid']}", lambda: self._api.dashboard.update_dashboard(dashboard=body)
        )
        path = answer.get("url", "") if isinstance(answer, dict) else ""
        return f"{self.url}{path}" if path.startswith("/") else self.url

    def _exists(self, what: str, get: Callable[[], object]) -> bool:
        try:
            self._call(f"read {what}", get)
        except _Missing:
            return False
        return True

    def _call(self, what: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except GrafanaUnauthorizedError:
            raise GrafanaError(
                f"Grafana at {self.url} refused our credentials (401) to {what}: check --token, or --user and"
                " --password"
            ) from None
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                raise _Missing(what) from None
            if exc.status_code == 403:
                raise GrafanaError(
                    f"Grafana at {self.url} does not allow us to {what} (403): the token's service account or the"
                    " user needs the Admin role (datasources) or Editor (folders and dashboards)"
                ) from None
            raise GrafanaError(f"Grafana at {self.url} refused to {what}: {_message(exc)}") from None
        except GrafanaServerError as exc:
            raise GrafanaError(f"Grafana at {self.url} failed to {what}: {_message(exc)}") from None
        except (GrafanaException, OSError) as exc:  # requests' errors: refused, unknown host, TLS, timeout
            raise GrafanaError(f"cannot reach Grafana at {self.url} to {what}: {exc}") from None


class _Missing(GrafanaError):
    """404: the thing asked for does not exist."""


def _message(exc: GrafanaException) -> str:
    response = exc.response
    if isinstance(response, dict) and response.get("message"):
        return f"{exc.status_code} {response['message']}"
    return str(exc.message or exc.status_code)
