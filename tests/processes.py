"""Find a multi-model endpoint's model's processes (for its tests and bench.contracts)."""

from __future__ import annotations

import psutil


def model_processes(url: str) -> list[psutil.Process]:
    """A model's processes: MMS's program, the backend and its workers, all working in the
    model's directory (MMS starts its program there)."""
    found = []
    for process in psutil.process_iter(["cwd"]):
        if process.info["cwd"] == url:
            found.append(process)
    return found
