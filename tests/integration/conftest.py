"""Fixtures that start the real server (MMS and its Java frontend) as a process on 127.0.0.1;
each is stopped at the end of its test, also when the test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import psutil
import pytest
import requests

from tests.conftest import REPO
from tests.ports import free_port

PLUGIN_JAR = REPO / "sagemaker_torch_serving" / "java" / "serving-plugin.jar"


class ServerProcess:
    """``python -m sagemaker_torch_serving`` with its own port, environment and log file."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            "SERVING_HOST": "127.0.0.1",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            **env,
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sagemaker_torch_serving"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """Whether the log says ``text`` within ``timeout`` s: a worker's lines reach it through
        MMS's reader of the worker's output, a moment after /ping may say 200."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def ping(self) -> int | None:
        try:
            return requests.get(f"{self.url}/ping", timeout=2).status_code
        except requests.ConnectionError:
            return None

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Seconds from start until /ping said 200; fails with the log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping() == 200:
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        pytest.fail(f"server not ready after {timeout} s:\n{self.log()[-4000:]}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def workers(self) -> set[int]:
        """The pids of the worker processes: those the model's backend forked."""
        parents = {}
        for process in self.descendants():
            try:
                parents[process.pid] = (process.ppid(), process.cmdline())
            except psutil.NoSuchProcess:  # e.g. MMS's short-lived metrics collector
                continue
        backends = {
            pid
            for pid, (_, command) in parents.items()
            if "sagemaker_torch_serving.backend" in command
        }
        return {pid for pid, (parent, _) in parents.items() if parent in backends}

    def terminate(self, timeout: float = 40.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        """At teardown: SIGTERM (the server cleans up after itself), then kill what is left."""
        try:
            self.terminate(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        for child in self.descendants():
            child.kill()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_ready(url: str, exited: Callable[[], bool], log: Callable[[], str]) -> None:
    """Wait until url's /ping says 200; fail with the log if the server exits or never does."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if exited():
            pytest.fail(f"the server exited:\n{log()[-4000:]}")
        time.sleep(0.1)
    pytest.fail(f"not ready after 120 s:\n{log()[-4000:]}")


@pytest.fixture(scope="session")
def plugin_jar() -> Path:
    if not PLUGIN_JAR.exists():
        subprocess.run([str(REPO / "scripts" / "build_plugin.sh"), sys.executable], check=True)
    return PLUGIN_JAR


@pytest.fixture
def start_server(tmp_path: Path, plugin_jar: Path) -> Iterator:
    """Start servers with extra environment; all are stopped at the end of the test."""
    servers: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server-{len(servers)}.log", env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# The image under test (the CPU variant on a debootstrapped Debian base: no registry can be
# reached here), shared by the container and the SDK local-mode tests. SERVING_TEST_IMAGE names
# a prebuilt image to use instead.
BASE_IMAGE = "local/bookworm:base"
TEST_IMAGE = "sagemaker-torch-serving:test"


@pytest.fixture(scope="session")
def client():
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a Docker engine: {error}")
        pytest.skip(f"no Docker engine: {error}")
    return engine


@pytest.fixture(scope="session")
def image(client) -> str:
    """The image under test, built from this checkout (cached layers make a rebuild quick)."""
    if os.environ.get("SERVING_TEST_IMAGE"):
        return os.environ["SERVING_TEST_IMAGE"]
    return build_test_image(TEST_IMAGE)


@pytest.fixture(scope="session")
def multi_model_image(client, image) -> str:
    """The multi-model endpoint variant: the image under test's layers, and its label."""
    return build_test_image(f"{TEST_IMAGE}-multi-model", "--multi-model")


def build_test_image(tag: str, *options: str) -> str:
    subprocess.run([str(REPO / "scripts" / "make_base_image.sh"), BASE_IMAGE], check=True)
    command = [sys.executable, str(REPO / "scripts" / "build.py"), "--tag", tag, *options]
    command += ["--device", "cpu", "--base-image", BASE_IMAGE]
    for folder in local_wheel_folders():
        command += ["--wheelhouse", folder]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return tag


def local_wheel_folders() -> list[str]:
    """The folders of wheels this machine's pip is configured with (find-links, and the files/
    beside a file:// simple index): offered to the build, they spare PyPI several GB of torch."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    values = os.environ.get("PIP_FIND_LINKS", "").split()
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(("find-links", "index-url")):
            values += value.strip("'\"").split()
    folders: list[str] = []
    for value in values:
        path = Path(value.removeprefix("file://"))
        if value.startswith("file://") and path.name == "simple":
            path = path.parent / "files"
        if path.is_dir() and any(path.glob("*.whl")) and str(path) not in folders:
            folders.append(str(path))
    return folders
