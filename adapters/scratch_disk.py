"""Small filesystems for the tests and benchmarks of what happens when a disk fills.

A tmpfs of a few MiB, mounted by the test and unmounted after. Mounting needs
root (CI and these machines run as root); anywhere else it fails loudly rather
than skip, since a disk-full test that does not run proves nothing.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def small_filesystem(size_mib: int) -> Iterator[Path]:
    """A fresh, empty filesystem of ``size_mib`` MiB, mounted for the block's duration."""
    mount_point = Path(tempfile.mkdtemp(prefix="pilot-small-fs-"))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        mount_point.rmdir()
        raise RuntimeError(
            f"cannot mount a {size_mib} MiB tmpfs for a disk-full test (needs root; uid {os.getuid()}): "
            f"{result.stderr.strip()}"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
        mount_point.rmdir()


def fill(directory: Path, leave_bytes: int = 0) -> Path:
    """Write a ballast file that takes all but ``leave_bytes`` of ``directory``'s filesystem; delete it to free."""
    ballast = directory / "ballast"
    chunk = b"\0" * 65536
    with open(ballast, "wb", buffering=0) as file:
        while True:
            stat = os.statvfs(directory)
            free = stat.f_bavail * stat.f_frsize
            if free <= leave_bytes:
                break
            try:
                file.write(chunk[: min(len(chunk), free - leave_bytes)])
            except OSError:  # full: the filesystem keeps some blocks back
                break
    return ballast
