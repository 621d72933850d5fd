"""The broker's account files in one folder: ``accounts.yaml`` (the source of truth), and the
Mosquitto ``passwd`` and ``acl`` made from it.

Changes happen under a lock, and every file is replaced whole (written beside, then renamed), so
a broker reloading meanwhile reads the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pilot_core.broker_accounts import SALT_BYTES, AccountBook, AccountError, hash_password, parse_accounts

DEFAULT_BROKER_DIR = Path("deploy/mosquitto/auth")
ACCOUNTS_FILE = "accounts.yaml"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"


def new_password() -> str:
    """32 URL-safe characters (192 random bits): nothing to escape in a YAML file, an env variable or a shell."""
    return secrets.token_urlsafe(24)


def new_password_hash(password: str) -> str:
    return hash_password(password, os.urandom(SALT_BYTES))


def now_text() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class BrokerFiles:
    def __init__(self, folder: Path = DEFAULT_BROKER_DIR) -> None:
        self.folder = folder
        self.accounts_file = folder / ACCOUNTS_FILE
        self.password_file = folder / PASSWORD_FILE
        self.acl_file = folder / ACL_FILE

    def load(self) -> AccountBook:
        """The accounts; none if the folder has no accounts file yet."""
        with self._usable():
            if not self.accounts_file.is_file():
                return AccountBook()
            text = self.accounts_file.read_text(encoding="utf-8")
        return parse_accounts(text, str(self.accounts_file))

    @contextmanager
    def editing(self) -> Iterator[AccountBook]:
        """The accounts to change; on a clean exit all three files are written from them.

        A folder that cannot be made, read or written is an ``AccountError`` saying so (what the block itself
        raises passes unchanged)."""
        with self._usable():
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = (self.folder / ".lock").open("a")
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two provisioning runs at once would lose one's account
            book = self.load()
            yield book
            with self._usable():
                self.write(book)

    @contextmanager
    def _usable(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise AccountError(
                f"the broker's account folder {self.folder} cannot be used: {exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(self.folder) else "")
            ) from None

    def write(self, book: AccountBook) -> None:
        # The hashes are secrets of a kind: readable by their owner only, unless the operator chose otherwise.
        # The ACL too: Mosquitto 2.0 warns about an acl_file others can read (since 2.0.16), newer ones refuse it.
        _replace(self.accounts_file, book.document_text(), 0o600)
        _replace(self.password_file, book.password_file_text(), 0o600)
        _replace(self.acl_file, book.acl_text(), 0o600)


def write_private(path: Path, text: str) -> None:
    """Write a file that holds a secret (a bridge's configuration with its password): mode 0600, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, text, 0o600)


def _replace(path: Path, text: str, mode: int) -> None:
    """Write ``path`` whole; an existing file keeps its mode and group (e.g. chgrp mosquitto, chmod 640)."""
    try:
        existing = path.stat()
        mode, group = existing.st_mode & 0o777, existing.st_gid
    except FileNotFoundError:
        group = -1
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        if group != -1:
            with contextlib.suppress(PermissionError):  # not in that group: the file stays ours, with its mode
                os.chown(temporary, -1, group)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
