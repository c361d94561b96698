"""The server's private run directory: its paths, and the workers' busy marks in it.

The serving process makes the directory (under TMPDIR) and passes its path to every process
it starts (``Env.RUN_DIR``); MMS's config and sockets, the backend's handover socket, a
worker's load failure and the workers' busy marks all live in it, and nothing else of the run
is written anywhere else. MMS tells nobody how many requests are in flight, so each worker
marks its own state in a one-byte file (one pwrite per batch start and end), and the serving
process reads them all while it drains.
"""

from __future__ import annotations

import os
from pathlib import Path

# MMS finds models in its model store only: the run directory links the model under this name.
MODEL_NAME = "model"
# Unix socket paths are limited to 107 bytes (sun_path); the longest one is the run dir plus this.
LONGEST_SOCKET_NAME = "backend-handover.sock"
MAX_SOCKET_PATH = 107


class RunPaths:
    """The files of one server run, all inside its private directory."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir
        self.config = run_dir / "config.properties"
        self.log_config = run_dir / "log4j2.xml"
        self.management_socket = run_dir / "management.sock"
        self.activity = run_dir / "activity"  # workers' busy marks, see ActivityMark
        self.load_failure = run_dir / "model-load-failure"  # written by a worker that failed
        self.model_link = run_dir / MODEL_NAME
        self.backend_handover = run_dir / LONGEST_SOCKET_NAME  # see backend/process.py


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
