"""An evidence bundle as one zip file: written byte for byte the same for the same contents, read with care,
since a bundle may come from anyone."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

# No real bundle comes near these; a hostile one (a zip bomb) stops here.
MAX_FILES = 10_000
MAX_BYTES = 4 * 1024**3
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: no timestamp, so the same files give the same bytes


class BundleArchiveError(ValueError):
    pass


def archive(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            bundle.writestr(info, files[name], compresslevel=6)
    return buffer.getvalue()


def write(path: Path, files: Mapping[str, bytes]) -> None:
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(archive(files))
    temporary.replace(path)


def read(path: Path) -> dict[str, bytes]:
    """Every file of the bundle at ``path``, by name."""
    try:
        bundle = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleArchiveError(f"{path} is not a readable zip file: {exc}") from None
    with bundle:
        infos = bundle.infolist()
        if len(infos) > MAX_FILES or sum(i.file_size for i in infos) > MAX_BYTES:
            raise BundleArchiveError(f"{path} holds more than an evidence bundle can ({MAX_FILES} files, 4 GiB)")
        files: dict[str, bytes] = {}
        for info in infos:
            name = info.filename
            if info.is_dir():
                continue
            if name.startswith("/") or ".." in name.split("/") or "\\" in name:
                raise BundleArchiveError(f"{path} holds a file named {name!r}, outside the bundle")
            if name in files:
                raise BundleArchiveError(f"{path} holds {name!r} twice")
            try:
                files[name] = bundle.read(info)
            except (zipfile.BadZipFile, OSError) as exc:  # a CRC error: the zip itself was altered
                raise BundleArchiveError(f"{name} in {path} cannot be read: {exc}") from None
        return files
