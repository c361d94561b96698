"""The server's private run directory: its paths, and the workers' marks in it.

The serving process makes the directory (under TMPDIR) and passes its path to every process
it starts (``Env.RUN_DIR``); MMS's config and sockets, the backend's handover socket, the
frontend's count of requests in flight (for the workers' threads), a worker's load failure (of
a multi-model endpoint's models: one JSON file each, which the frontend's
java/MultiModels.java reads) and the marks of the workers that loaded the model all live in
it, and nothing else of the run is written anywhere else. The backend reads the marks when a
worker dies: one that dies before its mark died while loading (backend/process.py).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

# MMS finds models in its model store only: the run directory links the model under this name.
MODEL_NAME = "model"
# Unix socket paths are limited to 107 bytes (sun_path); the longest one is the run dir plus this.
LONGEST_SOCKET_NAME = "backend-handover.sock"
MAX_SOCKET_PATH = 107
# The frontend's count of requests in flight: one int, in the machine's byte order (Java's int).
IN_FLIGHT_FORMAT = "=i"
IN_FLIGHT_BYTES = struct.calcsize(IN_FLIGHT_FORMAT)


class RunPaths:
    """The files of one server run, all inside its private directory."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir
        self.config = run_dir / "config.properties"
        self.log_config = run_dir / "log4j2.xml"
        self.management_socket = run_dir / "management.sock"
        self.loaded = run_dir / "loaded"  # marks of the workers that loaded the model
        self.load_failure = run_dir / "model-load-failure"  # written by a worker that failed
        self.model_load_failures = run_dir / "load-failures"  # multi-model: one per model
        self.model_link = run_dir / MODEL_NAME
        self.backend_handover = run_dir / LONGEST_SOCKET_NAME  # see backend/process.py
        self.in_flight = run_dir / "in-flight"  # the frontend's count, see backend/cores.py


def mark_loaded(directory: Path) -> None:
    """A worker's mark, made once it has loaded the model (its pid as a file name)."""
    (directory / str(os.getpid())).touch()


def has_loaded(directory: Path, pid: int) -> bool:
    return (directory / str(pid)).exists()


def write_load_failure(paths: RunPaths, model_name: str | None, status: int, reason: str) -> None:
    """Say why a worker could not load its model: the serving process's model (``model_name``
    None) ends the server with it; a multi-model endpoint's answers that model's load with it
    (``status`` 507 when memory ran out, which tells SageMaker to unload others first)."""
    if model_name is None:
        if not paths.load_failure.exists():  # the first reason is the one to say
            paths.load_failure.write_text(reason + "\n")
        return
    paths.model_load_failures.mkdir(exist_ok=True)
    failure = paths.model_load_failures / model_name
    temporary = failure.with_name(f".{model_name}.{os.getpid()}")
    temporary.write_text(json.dumps({"status": status, "message": reason}))
    temporary.replace(failure)  # whole or not at all, for the frontend that waits for it
