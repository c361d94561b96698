"""The serving process: starts MMS, loads the model, stays honest about readiness, stops clean.

It checks what it can before starting anything (model, Java, the plugin), installs
``code/requirements.txt``, writes MMS's configuration into a private run directory, starts the
backend and then MMS's frontend in process groups of their own, sets batching, and waits until
a worker has loaded the model; a model that cannot load ends the server with the reason (a
multi-model endpoint starts with no model: the frontend loads them, java/MultiModels.java). On
SIGTERM or SIGINT /ping turns 503, requests in flight finish (up to SERVING_DRAIN_SECONDS), and
every process is stopped; as their subreaper this process outlives none of them.
MMS's own launcher (mms.model_server) is not used: it writes a pid file to the shared temp
directory and refuses to start a second server on the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sagemaker_torch_serving.errors import process_ended
from sagemaker_torch_serving.run_dir import MAX_SOCKET_PATH, RunPaths
from sagemaker_torch_serving.server import mms_config, model_source
from sagemaker_torch_serving.server.management import ManagementClient, ManagementError
from sagemaker_torch_serving.settings import Env, Settings, SettingsError

logger = logging.getLogger("sagemaker_torch_serving.server")

POLL_SECONDS = 0.05
STOP_GRACE_SECONDS = 5.0
IDLE_TO_DRAIN_SECONDS = 0.2
BACKEND_START_SECONDS = 10.0  # after that, MMS starts a backend of its own (backend.py)


class ServerError(Exception):
    """The server cannot start or go on; the message is the one line a person reads."""


def main() -> int:
    """Serve until SIGTERM or SIGINT; the exit code is 0 then, 1 on failure, 2 on bad settings."""
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"serving: invalid setting: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stdout,
        level=settings.log_level,
        format="%(asctime)s [%(levelname)s] serving: %(message)s",
    )
    return Server(settings).run()


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_requested = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None  # MMS's frontend
        self.backend: subprocess.Popen[bytes] | None = None
        self.management: ManagementClient

    def run(self) -> int:
        started = time.monotonic()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        _become_subreaper()
        paths = RunPaths(Path(tempfile.mkdtemp(prefix="sagemaker-serving-")))
        self.settings = dataclasses.replace(self.settings, run_dir=paths.root)
        try:
            _check_socket_paths(paths)
            multi_model = self.settings.multi_model
            if not multi_model:
                self._find_model(paths)
            self._check_prerequisites()
            if not multi_model:
                _install_requirements(self.settings.code_dir / "requirements.txt")
            mms_config.write_run_dir(self.settings, paths)
            if not multi_model:  # each model's backend is started by MMS as it loads
                self._start_backend(paths)
            self._start_mms(paths)
            self._load_model(paths)
            if self.stop_requested.is_set():
                return 0
            logger.info(
                "ready in %.2f s: http://%s:%d (%sworkers=%d, batch size=%d, max delay=%d ms)",
                time.monotonic() - started,
                self.settings.host,
                self.settings.port,
                "multi-model endpoint, per model: " if multi_model else "",
                self.settings.workers,
                self.settings.batch_size,
                self.settings.max_batch_delay_ms,
            )
            self._serve(paths)
            return 0
        except (ServerError, ManagementError, OSError) as error:
            # A call to a frontend that just died fails first: its death is the reason to say.
            logger.error("%s", self._dead_process() or error)
            return 1
        finally:
            self._stop_processes()
            _remove_tree(paths.root)

    def _on_signal(self, signum: int, _frame: object) -> None:
        logger.info("%s received: stopping", signal.Signals(signum).name)
        self.stop_requested.set()

    def _find_model(self, paths: RunPaths) -> None:
        try:
            archive = model_source.archive_to_unpack(self.settings)
            if archive is not None:
                destination = paths.root / "unpacked-model"
                self.settings = model_source.unpack_model(self.settings, archive, destination)
        except model_source.ModelSourceError as error:
            raise ServerError(str(error)) from error

    def _check_prerequisites(self) -> None:
        if not self.settings.multi_model and not self.settings.model_dir.is_dir():
            raise ServerError(
                f"model directory {self.settings.model_dir} does not exist: mount the model "
                f"there or set {Env.MODEL_DIR}"
            )
        java = mms_config.java_command(self.settings, RunPaths(Path()))[0]
        if shutil.which(java) is None:
            raise ServerError(f"Java, which MMS needs, was not found ({java}); install Java 17")
        if not mms_config.PLUGIN_JAR.is_file():
            raise ServerError(
                f"{mms_config.PLUGIN_JAR} is missing: build it with scripts/build_plugin.sh"
            )

    def _start_backend(self, paths: RunPaths) -> None:
        """Start the model's backend and wait until it takes handovers (it says so within
        ~0.1 s, then imports torch while MMS starts)."""
        command = [sys.executable, "-m", "sagemaker_torch_serving.backend", "--handover"]
        self.backend = subprocess.Popen(
            [*command, str(paths.backend_handover)],
            cwd=paths.root,
            env=mms_config.worker_environment(self.settings, paths),
            start_new_session=True,
        )
        deadline = time.monotonic() + BACKEND_START_SECONDS
        while not paths.backend_handover.exists() and time.monotonic() < deadline:
            self._check_backend_alive()
            time.sleep(POLL_SECONDS / 10)

    def _start_mms(self, paths: RunPaths) -> None:
        self.management = ManagementClient(paths.management_socket)
        command = mms_config.java_command(self.settings, paths)
        logger.debug("starting MMS: %s", " ".join(command))
        self.process = subprocess.Popen(
            command,
            cwd=paths.root,
            env=mms_config.worker_environment(self.settings, paths),
            start_new_session=True,
        )

    def _load_model(self, paths: RunPaths) -> None:
        """Set batching, then wait until a worker has loaded the model (or fails to, or a stop);
        on a multi-model endpoint, until MMS answers."""
        deadline = time.monotonic() + self.settings.startup_timeout_seconds
        batching_set = False
        while not self.stop_requested.is_set():
            self._check_alive_while_loading(paths, deadline)
            state = self.management.state()
            if state is not None and self.settings.multi_model:
                return
            if state is not None and not batching_set:
                self.management.put(mms_config.batching_query(self.settings))
                batching_set = True
            elif state is not None and state["loaded_workers"] > 0:
                return
            time.sleep(POLL_SECONDS)

    def _check_alive_while_loading(self, paths: RunPaths, deadline: float) -> None:
        if paths.load_failure.exists():
            reason = paths.load_failure.read_text().strip()
            raise ServerError(f"the model failed to load: {reason}")
        self._check_mms_alive()
        self._check_backend_alive()
        if time.monotonic() > deadline:
            raise ServerError(
                f"the model did not load within {Env.STARTUP_TIMEOUT}="
                f"{self.settings.startup_timeout_seconds} s"
            )

    def _dead_process(self) -> ServerError | None:
        """The frontend's or the backend's death, if one of them died (or dies within a
        second: a call to a frontend being killed fails before its exit is seen)."""
        if self.process is None:
            return None
        deadline = time.monotonic() + 1.0
        while True:
            for check in (self._check_mms_alive, self._check_backend_alive):
                try:
                    check()
                except ServerError as error:
                    return error
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_SECONDS)

    def _check_mms_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise ServerError(f"MMS's frontend {_exit_reason(code)}")

    def _check_backend_alive(self) -> None:
        """The backend forks every worker MMS asks for: without it no worker can start again,
        so its end is the server's (the platform then restarts the container). A multi-model
        endpoint has none of its own: MMS starts and stops one per model."""
        if self.backend is None:
            return
        code = self.backend.poll()
        if code is not None:
            raise ServerError(
                f"the model's backend (pid {self.backend.pid}) {_exit_reason(code)}; "
                "no worker can start without it, so the server stops"
            )

    def _serve(self, paths: RunPaths) -> None:
        while not self.stop_requested.wait(POLL_SECONDS * 4):
            self._check_mms_alive()
            self._check_backend_alive()
            if self.settings.multi_model:
                self._reap_orphans()
            else:
                self._check_workers_can_load(paths)
        self._drain()

    def _reap_orphans(self) -> None:
        """Reap the workers of unloaded models: MMS kills a model's backend, its workers end
        as this subreaper's children. The frontend's own end is left to _check_mms_alive."""
        ours = {process.pid for process in (self.process, self.backend) if process is not None}
        while True:
            try:
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if ended is None or ended.si_pid in ours:
                return
            os.waitpid(ended.si_pid, 0)

    def _check_workers_can_load(self, paths: RunPaths) -> None:
        """A worker MMS restarted could not load the model: fatal once none is left serving."""
        try:
            reason = paths.load_failure.read_text().strip()
        except FileNotFoundError:
            return
        paths.load_failure.unlink(missing_ok=True)
        state = self.management.state()
        if state is not None and state["loaded_workers"] == 0:
            raise ServerError(f"no worker can load the model any more: {reason}")
        logger.error("a restarted worker could not load the model: %s", reason)

    def _drain(self) -> None:
        """Turn /ping to 503, answer what the frontend accepted, and wait until it has no
        request in flight for a moment (java/FrontDoor.java: meanwhile answers close their
        connections and new connections get 503)."""
        self.management.put("/serving?draining=true")
        deadline = time.monotonic() + self.settings.drain_seconds
        idle_since: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            state = self.management.state()
            if state is None or state["in_flight"] > 0:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= IDLE_TO_DRAIN_SECONDS:
                logger.info("drained: every accepted request was answered")
                return
            time.sleep(POLL_SECONDS / 5)
        logger.warning("requests still in flight after %s; stopping anyway", Env.DRAIN_SECONDS)

    def _stop_processes(self) -> None:
        """Stop MMS, then whatever is left of its process group and the backend's (workers)."""
        for process in (self.process, self.backend):
            if process is not None:
                _stop_group(process)
        _reap_children()
        logger.info("stopped")


def _remove_tree(root: Path) -> None:
    """Remove the run directory, also folders whose mode forbids it to a user without root
    (what a user's code may have made there): each is opened to its owner first."""
    for folder, subfolders, _ in os.walk(root):
        for name in subfolders:
            path = os.path.join(folder, name)
            if not os.path.islink(path):  # the link to a mounted model is left alone
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o700)
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        logger.warning("could not remove all of %s", root)


def _exit_reason(code: int) -> str:
    reason = process_ended(code)
    return reason if code < 0 else f"{reason}; its log above says why"


def _check_socket_paths(paths: RunPaths) -> None:
    longest = len(str(paths.backend_handover).encode())
    if longest > MAX_SOCKET_PATH:
        raise ServerError(
            f"the run directory {paths.root} is too deep for Unix sockets ({longest} bytes of "
            f"path, at most {MAX_SOCKET_PATH}): set TMPDIR to a shorter folder, such as /tmp"
        )


def _install_requirements(path: Path) -> None:
    if not path.is_file():
        return
    logger.info("installing %s", path)
    command = [sys.executable, "-m", "pip", "install", "--no-input", "-r", str(path)]
    if subprocess.run(command, check=False).returncode != 0:
        raise ServerError(f"pip could not install {path}; its output above says why")


def _become_subreaper() -> None:
    """Adopt orphaned descendants (MMS's workers), so that they can be found, stopped, reaped."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _stop_group(leader: subprocess.Popen[bytes]) -> None:
    """Stop a process that leads its own group (start_new_session), then the rest of the group."""
    group = leader.pid
    if leader.poll() is None:
        leader.terminate()
        try:
            leader.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            leader.kill()
            leader.wait()
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if not _signal_group(group, signum):
            break
        deadline = time.monotonic() + STOP_GRACE_SECONDS / 2
        while time.monotonic() < deadline and _group_alive(group):
            _reap_children()
            time.sleep(POLL_SECONDS)


def _signal_group(group: int, signum: int) -> bool:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def _group_alive(group: int) -> bool:
    return _signal_group(group, 0)


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
