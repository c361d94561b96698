"""What the contender launchers share: their command line, the environment that the toolkits
read when they are imported, one server of a kind at a time, and a clean stop.

Both toolkits start their Java frontend through a short-lived CLI (`multi-model-server --start`,
`torchserve --start`), so the frontend is not the launcher's child; on SIGTERM they signal the
frontend alone, and MMS's Python workers outlive it. The process group ties them together: the
launcher leads its own (os.setsid, unless it already leads one, as with start_new_session=True)
and, when the toolkit returns or SIGTERM/Ctrl-C ends it, stops the processes of its group that
run from its virtual environment (the frontend's command line names the venv; the workers run
its Python), SIGKILL after 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def run(description: str, name: str, namespace: str, serve: Callable[[], None]) -> None:
    """Parse --model-root DIR --port PORT, set SageMaker's variables (SAGEMAKER_BASE_DIR=DIR,
    SAGEMAKER_BIND_TO_PORT=PORT), move to DIR/run-NAME (emptied; the model servers write their
    logs under ./logs), and call serve(), which starts the toolkit and returns when its frontend
    has ended."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-root", type=Path, required=True, help="DIR/model is the model")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    root = args.model_root.resolve()
    if not (root / "model").is_dir():
        parser.error(f"{root}/model is not a folder")
    if not 0 < args.port < 32767:  # MMS 1.1.11: "Invalid port number" from 32767 up
        parser.error("the port must be below 32767")
    if os.getpgrp() != os.getpid():
        os.setsid()
    # Until the toolkit installs its own handler (once its frontend runs), SIGTERM ends the
    # launcher through the `finally` below.
    signal.signal(signal.SIGTERM, _exit)
    try:
        _wait_until_alone(namespace)
        os.environ["SAGEMAKER_BASE_DIR"] = str(root)
        os.environ["SAGEMAKER_BIND_TO_PORT"] = str(args.port)
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
        workdir = root / f"run-{name}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        os.chdir(workdir)
        serve()
    finally:
        _stop_group()


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _wait_until_alone(namespace: str, timeout: float = 30) -> None:
    """The toolkits find their frontend by its Java class among all processes and will not go
    on while there are two (sagemaker-inference retries for 10 minutes, the PyTorch toolkit for
    10 s): wait for another one to finish stopping, or fail now, saying which."""
    deadline = time.monotonic() + timeout
    while True:
        others = [
            process.pid
            for process in psutil.process_iter(["cmdline", "status"])
            if namespace in (process.info["cmdline"] or [])
            and process.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not others:
            return
        if time.monotonic() > deadline:
            sys.exit(f"{namespace} already runs (pid {others}): the toolkit supports one")
        time.sleep(0.5)


def _stop_group(grace: float = 10) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    members = _members()
    for process in members:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(members, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    _reap()


def _members() -> list[psutil.Process]:
    """The launcher's group's processes that run from its venv, the launcher excepted."""
    me, group = os.getpid(), os.getpgrp()
    venvs = {sys.prefix, os.path.realpath(sys.prefix)}
    _reap()
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.pid == me or os.getpgid(process.pid) != group:
                continue
        except OSError:
            continue
        command = " ".join(process.info["cmdline"] or [])
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(v in command for v in venvs):
            found.append(process)
    return found


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
