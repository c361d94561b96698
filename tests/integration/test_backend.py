"""The model's backend and its workers as MMS's frontend drives them, without the frontend:
this test starts the program MMS runs, connects as MMS's worker threads do, and speaks MMS's
frames (mms_protocol)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sagemaker_torch_serving.server.mms_config import MMS_HOME
from tests.mms_frames import decode_answer, end, field, request_frame

PROGRAM = MMS_HOME / "mms" / "model_service_worker.py"


class Program:
    """MMS's program for the model, started as MMS's WorkerLifeCycle starts it."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.socket_path = run_dir / ".mms.sock.9000"
        self.run_dir = run_dir
        argv = ["--sock-type", "unix", "--sock-name", str(self.socket_path), "--handler", "x"]
        argv += ["--model-path", str(run_dir), "--model-name", "model", "--preload-model"]
        argv += ["false", "--tmp-dir", str(run_dir)]
        self.process = subprocess.Popen(
            [sys.executable, str(PROGRAM), *argv],
            env=env,
            cwd=run_dir,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def started(self) -> int:
        """The backend's pid, once the program says what MMS waits for."""
        assert self.process.stdout is not None
        pid_line = self.process.stdout.readline()
        assert pid_line.startswith("[PID] "), pid_line
        assert self.process.stdout.readline() == "MMS worker started.\n"
        return int(pid_line.split()[1])

    def connect_worker(self, number: int) -> tuple[socket.socket, int]:
        """A worker, loaded as MMS loads one; its pid."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(str(self.socket_path))
        io_name = f"worker-{number}"
        load = b"L" + field("model") + field(str(self.run_dir)) + (1).to_bytes(4, "big")
        load += field("x") + (-1).to_bytes(4, "big", signed=True) + field(io_name)
        connection.sendall(load)
        code, message, _ = decode_answer(receive_frame(connection))
        assert code == 200, message
        # As MMS does: open the worker's output FIFOs (read-write, which does not block).
        for stream in ("stdout", "stderr"):
            os.open(self.run_dir / f"{io_name}-{stream}", os.O_RDWR | os.O_NONBLOCK)
        return connection, int(message.rsplit("[PID]:", 1)[1])

    def stop(self) -> None:
        """Kill the program's process group: the program, and workers it forked."""
        kill_group(self.process)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


def receive_frame(connection: socket.socket) -> bytes:
    """One whole answer frame, however many reads it takes."""
    data = b""
    while True:
        chunk = connection.recv(1 << 16)
        assert chunk, "the worker closed the connection"
        data += chunk
        try:
            decode_answer(data)
        except struct.error:  # not all there yet
            continue
        return data


def predict(connection: socket.socket, body: bytes) -> dict:
    frame = b"I" + request_frame("r-1", {"Content-Type": "application/json"}, {"body": body})
    connection.sendall(frame + end())
    code, _, answers = decode_answer(receive_frame(connection))
    assert code == 200
    return answers[0]


@pytest.fixture
def environment(tmp_path: Path, scale_model: Path) -> dict[str, str]:
    (tmp_path / "loaded").mkdir()
    return {
        **os.environ,
        "SERVING_MODEL_DIR": str(scale_model),
        "SERVING_RUN_DIR": str(tmp_path),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
    }


def test_mms_program_is_the_backend_when_none_waits(tmp_path, environment):
    program = Program(tmp_path, {**environment, "SERVING_BACKEND_HANDOVER": str(tmp_path / "x")})
    try:
        assert program.started() == program.process.pid
        first, first_pid = program.connect_worker(1)
        second, second_pid = program.connect_worker(2)
        assert first_pid != second_pid
        for pid in (first_pid, second_pid):  # forked by the backend, one per connection
            assert psutil.Process(pid).ppid() == program.process.pid
        answer = predict(first, b"[[1, 2]]")
        assert (answer["id"], answer["status"]) == ("r-1", 200)
        assert json.loads(answer["body"]) == [[2.0, 4.0, 1.0]]
        assert answer["content_type"] == "application/json"
        assert predict(second, b"not json")["status"] == 400
        first.close()  # MMS closed a worker's connection: that worker ends
        psutil.Process(first_pid).wait(10)
        assert json.loads(predict(second, b"[[3]]")["body"]) == [[6.0, 1.0]]
    finally:
        program.stop()


def test_a_backend_started_ahead_takes_over_mms_program(tmp_path, environment):
    handover = tmp_path / "handover.sock"
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text(
        "import json, os\n"
        "def transform_fn(model, body, content_type, accept, context):\n"
        "    return json.dumps({'mark': os.environ.get('MARK'), 'cwd': os.getcwd(),\n"
        "                       'properties': context.system_properties})\n"
    )
    environment["SERVING_CODE_DIR"] = str(code)
    backend = subprocess.Popen(
        [sys.executable, "-m", "sagemaker_torch_serving.backend", "--handover", str(handover)],
        env=environment,
        cwd="/",
        start_new_session=True,
    )
    try:
        while not handover.exists():  # as server.py waits before it starts MMS
            assert backend.poll() is None
            time.sleep(0.01)
        # MMS's program has MMS's environment and working directory: the workers get them.
        env = {**environment, "SERVING_BACKEND_HANDOVER": str(handover), "MARK": "from-mms"}
        program = Program(tmp_path, env)
        assert program.started() == backend.pid
        connection, worker_pid = program.connect_worker(1)
        assert psutil.Process(worker_pid).ppid() == backend.pid
        answer = json.loads(predict(connection, b"[[5]]")["body"])
        assert answer["mark"] == "from-mms"
        assert answer["cwd"] == str(tmp_path)
        # What the official toolkit's context.system_properties holds, and the device.
        assert answer["properties"] == {
            "model_dir": environment["SERVING_MODEL_DIR"],
            "gpu_id": None,
            "batch_size": 1,
            "server_name": "MMS",
            "server_version": "1.1.11",
            "device": "cpu",
        }
        assert not handover.exists()  # one handover: a later program is a backend itself
        assert program.process.poll() is None  # the program stays while the backend runs
        backend.kill()
        assert program.process.wait(10) == 0  # and ends with it, so that MMS starts another
    finally:
        kill_group(backend)
