"""Whether any worker is busy with a batch: what a graceful shutdown waits for.

MMS tells nobody how many requests are in flight, so each worker marks its own state in a
one-byte file in the run directory (one pwrite per batch start and end), and the supervising
process reads them all while it drains.
"""

from __future__ import annotations

import os
from pathlib import Path


class ActivityMark:
    """A worker's own mark: b"1" while it handles a batch, b"0" otherwise."""

    def __init__(self, directory: Path) -> None:
        path = directory / str(os.getpid())
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.pwrite(self._fd, b"0", 0)

    def busy(self) -> None:
        os.pwrite(self._fd, b"1", 0)

    def idle(self) -> None:
        os.pwrite(self._fd, b"0", 0)


def any_busy(directory: Path) -> bool:
    """True while some worker marks itself busy. A worker that died leaves no claim to wait on."""
    for path in directory.iterdir():
        try:
            if path.read_bytes() == b"1" and _alive(int(path.name)):
                return True
        except (OSError, ValueError):
            continue
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
