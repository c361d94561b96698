"""MMS's backend process for the model, ours: it listens where MMS says and forks a worker
(worker.py) for each connection MMS opens, one per worker.

It imports torch and the handler path once, before it forks, so N workers start about as fast
as one and share those pages; and the serving process starts it ahead of MMS, so that the
import overlaps the JVM's start: MMS's program (mms_home/) then hands its request over to it
(``prestart``), or, with no backend waiting, becomes the backend itself (``main``).
docs/architecture.md tells the whole story. Nothing imported before a fork starts a thread
pool or CUDA, which the fork would break; the user's module is imported after the fork.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import NoReturn

from sagemaker_torch_serving.errors import process_ended
from sagemaker_torch_serving.run_dir import RunPaths, has_loaded, write_load_failure
from sagemaker_torch_serving.settings import Env, Settings


def main(argv: list[str]) -> int:
    """MMS's program: hand over to the backend the serving process started, else be the
    backend."""
    handover = os.environ.get(Env.BACKEND_HANDOVER)
    if handover:
        code = _hand_over(Path(handover), argv)
        if code is not None:
            return code
    return _run(argv)


def prestart(handover: Path) -> NoReturn:
    """A backend started ahead of MMS: import, then take MMS's request from its program."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(handover))
    listener.listen(1)
    _import_for_workers()
    program, _ = listener.accept()
    listener.close()
    handover.unlink()  # one handover: MMS's later programs are backends themselves
    with program.makefile("rb") as stream:
        request = json.loads(stream.readline())
    os.environ.clear()
    os.environ.update(request["environment"])
    os.chdir(request["cwd"])
    sys.path[:] = request["path"]
    args = _arguments().parse_args(request["argv"])
    listening = _listen(args)
    program.sendall(f"{os.getpid()}\n".encode())
    # The connection stays open in this process only: MMS's program waits for it to close,
    # which says that the backend ended.
    _fork_workers(listening, args, program)


def _hand_over(handover: Path, argv: list[str]) -> int | None:
    """Give MMS's request to the waiting backend; None if there is none (or it died)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(handover))
        request = {
            "argv": argv,
            "environment": dict(os.environ),
            "cwd": os.getcwd(),
            "path": sys.path,
        }
        connection.sendall(json.dumps(request).encode() + b"\n")
        with connection.makefile("rb") as stream:
            pid = stream.readline().strip().decode()
            if not pid:
                return None
            _announce(int(pid))
            stream.read()  # until the backend ends
    except OSError:
        return None
    finally:
        connection.close()
    return 0


def _run(argv: list[str]) -> NoReturn:
    args = _arguments().parse_args(argv)
    _import_for_workers()
    listening = _listen(args)
    _announce(os.getpid())
    _fork_workers(listening, args)


def _arguments() -> argparse.ArgumentParser:
    """MMS's arguments for its program (its WorkerLifeCycle); the worker takes the model from
    the settings, or on a multi-model endpoint from MMS's load command, and needs no handler."""
    parser = argparse.ArgumentParser(description="MMS backend (MMS starts it)")
    parser.add_argument("--sock-type", choices=("unix", "tcp"), required=True)
    parser.add_argument("--sock-name")
    parser.add_argument("--port")
    parser.add_argument("--handler")
    parser.add_argument("--model-path")
    parser.add_argument("--model-name")
    parser.add_argument("--preload-model")
    parser.add_argument("--tmp-dir", required=True)
    return parser


def _import_for_workers() -> None:
    """What every worker needs, imported once before the forks: torch, numpy, the pipeline."""
    from sagemaker_torch_serving.backend import worker  # noqa: F401


def _listen(args: argparse.Namespace) -> socket.socket:
    if args.sock_type == "unix":
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        Path(args.sock_name).unlink(missing_ok=True)
        listening.bind(args.sock_name)
    else:
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listening.bind(("127.0.0.1", int(args.port)))
    listening.listen(128)
    return listening


def _announce(pid: int) -> None:
    """What MMS reads from its program's output: the backend's pid, then that it listens."""
    print(f"[PID] {pid}\nMMS worker started.", flush=True)


def _fork_workers(
    listening: socket.socket, args: argparse.Namespace, program: socket.socket | None = None
) -> NoReturn:
    """Fork a worker for each connection from MMS, until this process is stopped. The
    connection from MMS's ``program`` (after a handover) is the backend's, not the workers'."""
    from sagemaker_torch_serving.backend import worker

    tmp_dir = Path(args.tmp_dir)
    settings = Settings.from_env()
    paths = RunPaths(settings.run_dir) if settings.run_dir else None
    # A multi-model endpoint has a backend per model: a death while loading is that model's.
    model_name = args.model_name if settings.multi_model else None
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: _reap(paths, model_name))
    while True:
        connection, _ = listening.accept()
        if os.fork() == 0:
            listening.close()
            if program is not None:
                program.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # user code may wait for children
            os._exit(worker.serve(connection, tmp_dir))
        connection.close()


def _reap(paths: RunPaths | None, model_name: str | None) -> None:
    """Reap ended workers. One that died before it loaded the model (killed for memory,
    crashed in native code) could not say why, so this says it for it: the serving process
    stops on a load failure (MMS alone would retry it forever); a multi-model endpoint answers
    that model's load with it, 507 where the worker was killed (the kernel's OOM killer)."""
    from sagemaker_torch_serving.backend.worker import LOAD_FAILED

    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        if paths is None or code in (0, LOAD_FAILED) or has_loaded(paths.loaded, pid):
            continue
        reason = f"worker {pid} {process_ended(code)} while loading the model"
        status = 507 if code == -signal.SIGKILL else 500
        write_load_failure(paths, model_name, status, reason)
