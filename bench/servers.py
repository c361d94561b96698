"""Start a contender on 127.0.0.1, time it to its first answer, measure its memory, stop it.

Each contender runs in its own process group (start_new_session), so that stopping it stops
every process it made, whatever its own SIGTERM handling does.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.workloads import REPO, Workload
from sagemaker_torch_serving.settings import Env

BENCH_VENVS = REPO / ".bench"


@dataclasses.dataclass(frozen=True)
class Contender:
    key: str
    label: str
    kind: str  # ours, stock or torchserve
    code: str  # which code folder of the workload: ours or portable
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    def available(self) -> bool:
        if self.kind == "ours":
            return True
        return (BENCH_VENVS / f"venv-{self.kind}" / "bin" / "python").exists()


@dataclasses.dataclass
class Server:
    contender: Contender
    port: int
    process: subprocess.Popen[bytes]
    started: float
    log: Path

    def first_answer(self, workload: Workload, timeout: float = 180) -> float:
        """Seconds from the process start to the first 200 answer to the workload's body."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.contender.label} exited; see {self.log}")
            try:
                if post(self.port, workload.body, workload.content_type) == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.contender.label} gave no answer in {timeout} s; see {self.log}")

    def memory_mb(self) -> dict[str, float]:
        """Memory of the contender's processes: its descendants and its process group (MMS's
        own launcher leaves the tree, not the group; ours starts MMS in a group of its own,
        but in its tree). ``worker_rss_mb`` is the mean resident memory of its workers, the
        processes that have torch loaded and fork nothing (a backend that forks them, and
        MMS's program that waits for ours, are not workers); ``total_pss_mb`` counts pages
        that processes share (forked workers share torch's) once, divided among them, and
        ``java_pss_mb`` is the share of it of the Java frontend."""
        root = psutil.Process(self.process.pid)
        processes = {process.pid: process for process in root.children(recursive=True)}
        processes[root.pid] = root
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == self.process.pid:
                    processes[process.pid] = process
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        workers, total_pss, java_pss = [], 0.0, 0.0
        for process in processes.values():
            try:
                memory = process.memory_full_info()
                is_worker = not process.children() and _has_torch(process.pid)
                is_java = process.name() == "java"
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                continue
            total_pss += memory.pss / 2**20
            java_pss += memory.pss / 2**20 if is_java else 0.0
            if is_worker:
                workers.append(memory.rss / 2**20)
        mean = sum(workers) / len(workers) if workers else 0.0
        return {
            "worker_rss_mb": round(mean, 1),
            "workers": len(workers),
            "total_pss_mb": round(total_pss, 1),
            "java_pss_mb": round(java_pss, 1),
        }

    def stop(self) -> None:
        for signum, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self.process.wait()


def start(contender: Contender, workload: Workload, port: int, logs: Path) -> Server:
    log = logs / f"{workload.name}-{contender.key}.log"
    env = {**os.environ, Env.BIND_TO_PORT: str(port), **contender.env}
    code_dir = workload.code_dir(contender.code)
    if contender.kind == "ours":
        command = [sys.executable, "-m", "sagemaker_torch_serving"]
        env.update(SERVING_MODEL_DIR=str(workload.model_dir), SERVING_CODE_DIR=str(code_dir))
        env.setdefault(Env.LOG_LEVEL, "WARNING")
    else:
        python = BENCH_VENVS / f"venv-{contender.kind}" / "bin" / "python"
        script = REPO / "bench" / "contenders" / f"{contender.kind}.py"
        layout = _sagemaker_layout(workload, code_dir)
        command = [str(python), str(script), "--model-root", str(layout), "--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(contender, port, process, time.monotonic(), log)


def _has_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def post(port: int, body: bytes, content_type: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/invocations", body, {"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _sagemaker_layout(workload: Workload, code_dir: Path) -> Path:
    """root/model/{model.pt, code/} as /opt/ml/model is laid out, from the workload's files."""
    root = workload.root / f"layout-{code_dir.name}"
    model = root / "model"
    model.mkdir(parents=True, exist_ok=True)
    for name, target in (("model.pt", workload.model_dir / "model.pt"), ("code", code_dir)):
        link = model / name
        if not link.is_symlink():
            link.symlink_to(target)
    return root
