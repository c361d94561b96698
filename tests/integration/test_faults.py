"""Faults the server must survive or end on, with one line: a worker killed mid-request or while
loading, the backend or the JVM killed, SIGTERM under continuous load."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.integration.clients import Client, load, summary
from tests.integration.conftest import ServerProcess
from tests.integration.test_server import write_code

# predict_fn sleeps as many seconds as the first number of the input says.
SLEEPY = """
    import time
    import torch

    def predict_fn(data, model):
        time.sleep(float(data.flatten()[0]))
        with torch.no_grad():
            return model(data)
"""


def invoke(server: ServerProcess, body: bytes, timeout: float = 30) -> requests.Response:
    return requests.post(
        f"{server.url}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )


def process_with(server: ServerProcess, *words: str) -> psutil.Process:
    for process in server.descendants():
        try:
            command = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        if all(word in command for word in words):
            return process
    raise AssertionError(f"no process with {words} among {server.descendants()}")


@pytest.fixture
def sleepy(tmp_path: Path, start_server, scale_model) -> ServerProcess:
    code = write_code(tmp_path, SLEEPY)
    server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_CODE_DIR=str(code))
    server.wait_ready()
    return server


def test_a_worker_killed_mid_request_costs_that_request_only(sleepy):
    (worker,) = sleepy.workers()
    answer: dict[str, requests.Response] = {}
    thread = threading.Thread(target=lambda: answer.update(r=invoke(sleepy, b"[[2]]")))
    thread.start()
    time.sleep(0.7)
    os.kill(worker, signal.SIGKILL)
    thread.join(30)
    response = answer["r"]
    assert response.status_code == 500
    body = response.json()
    assert "worker serving this request died" in body["message"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # MMS starts a new worker
        if sleepy.ping() == 200 and invoke(sleepy, b"[[0]]").status_code == 200:
            break
        time.sleep(0.2)
    assert invoke(sleepy, b"[[0]]").json() == [[0.0, 1.0]]
    assert sleepy.process.poll() is None


def test_a_worker_killed_while_loading_ends_the_server_with_the_reason(
    tmp_path, start_server, scale_model
):
    code = write_code(
        tmp_path,
        """
        import os, signal

        def model_fn(model_dir):
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        """,
    )
    server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_CODE_DIR=str(code))
    started = time.monotonic()
    assert server.process.wait(60) == 1
    assert time.monotonic() - started < 20  # not SAGEMAKER_STARTUP_TIMEOUT's 600 s
    assert "was killed by SIGKILL (out of memory?) while loading the model" in server.log()


@pytest.mark.parametrize(
    ("words", "line"),
    [
        (("sagemaker_torch_serving.backend", "--handover"), "the model's backend (pid"),
        (("java", "com.amazonaws.ml.mms.ModelServer"), "MMS's frontend was killed by SIGKILL"),
    ],
)
def test_a_dead_backend_or_frontend_ends_the_server_promptly(sleepy, words, line):
    process = process_with(sleepy, *words)
    process.kill()
    started = time.monotonic()
    assert sleepy.process.wait(30) == 1
    assert time.monotonic() - started < 5
    assert sleepy.log().count(line) == 1  # one line says why
    assert "Traceback" not in sleepy.log()
    time.sleep(0.2)
    assert not [p for p in sleepy.descendants() if p.is_running() and p.status() != "zombie"]


def test_sigterm_under_continuous_load_answers_every_accepted_request_and_exits_0(sleepy):
    clients = [
        Client(sleepy.url, b"[[0.02]]", "application/json", lambda body: body == b"[[0.04,1.0]]")
        for _ in range(4)
    ]
    took: list[float] = []

    def stop() -> None:
        started = time.monotonic()
        sleepy.process.send_signal(signal.SIGTERM)
        assert sleepy.process.wait(30) == 0
        took.append(time.monotonic() - started)

    load(clients, stop)
    print(f"\nSIGTERM under load from 4 clients: exit 0 in {took[0]:.2f} s; {summary(clients)}")
    assert sum(client.answered for client in clients) > 20  # there was load
    assert took[0] < 10  # well inside SageMaker's 30 s
    assert [reset for client in clients for reset in client.resets] == []
    assert [wrong for client in clients for wrong in client.wrong] == []
    assert all(client.refused > 0 for client in clients)  # new connections were refused
    assert "drained: every accepted request was answered" in sleepy.log()


def rss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def test_a_bounded_soak_of_good_and_bad_requests_keeps_memory_flat_and_errors_4xx(sleepy):
    """30 s of 4 clients, half of the requests malformed: no 5xx, no reset, every answer as
    expected, and the memory of every process the same at the end as after the warm-up."""
    bodies = [
        (b"[[0]]", 200),
        (b"[[0", 400),
        (b"\x93NUMPY\x01\x00\xff\xff{", 400),
        (b"[" * 5000 + b"]" * 5000, 400),
    ]
    stop = threading.Event()
    counts: dict[int, int] = {}
    failures: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                body, status = bodies[i % len(bodies)]
                i += 1
                content_type = (
                    "application/x-npy" if body.startswith(b"\x93") else "application/json"
                )
                try:
                    response = session.post(
                        f"{sleepy.url}/invocations",
                        data=body,
                        headers={"Content-Type": content_type},
                        timeout=30,
                    )
                except requests.RequestException as error:
                    failures.append(str(error))
                    continue
                counts[response.status_code] = counts.get(response.status_code, 0) + 1
                if response.status_code != status:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(8)  # warm-up: the JVM's heap and the workers' allocators settle
        processes = [psutil.Process(sleepy.process.pid), *sleepy.descendants()]
        warm = rss_mb(processes)
        warm_requests = sum(counts.values())
        time.sleep(30)
        end = rss_mb(processes)
    finally:
        stop.set()
        for thread in threads:
            thread.join(40)
    requests_in_soak = sum(counts.values()) - warm_requests
    print(f"\nsoak: {requests_in_soak} requests in 30 s {counts}; RSS {warm:.0f} -> {end:.0f} MB")
    assert failures == []
    assert requests_in_soak > 3000
    assert end - warm < 0.05 * warm + 20  # flat: within 5% and 20 MB
