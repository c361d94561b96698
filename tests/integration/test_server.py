"""The real server (MMS, its Java frontend and Python workers) as a process on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from tests.conftest import REPO
from tests.integration.conftest import ServerProcess

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def write_code(tmp_path: Path, source: str) -> Path:
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "inference.py").write_text(textwrap.dedent(source))
    return code_dir


def post(server: ServerProcess, body: bytes, content_type: str, **headers: str):
    headers = {"Content-Type": content_type, **headers}
    return requests.post(f"{server.url}/invocations", data=body, headers=headers, timeout=30)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_json_error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status
    assert body["message"]
    assert body["request_id"]
    assert "Traceback" not in response.text
    return body


SLOW_TO_LOAD = """
    import time
    import torch

    def model_fn(model_dir):
        time.sleep(4)
        return torch.jit.load(f"{model_dir}/model.pt")
"""


def test_ping_is_503_until_the_model_is_loaded(tmp_path, start_server, scale_model):
    code = write_code(tmp_path, SLOW_TO_LOAD)
    server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_CODE_DIR=str(code))
    seen = []
    while (status := server.ping()) != 200:
        seen.append(status)
        assert server.process.poll() is None, server.log()
        time.sleep(0.1)
    assert 503 in seen, seen  # after the port opened, until a worker had the model
    assert seen[seen.index(503) :] == [503] * (len(seen) - seen.index(503))
    response = post(server, b"[[1, 2]]", "application/json")
    assert response.json() == [[2.0, 4.0, 1.0]]


def test_every_content_type_and_accept(start_server, scale_model):
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT="text/csv",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="1",
    )
    server.wait_ready()
    json_accept = {"Accept": "application/json"}

    response = post(server, b"[[1, 2, 3]]", "application/json; charset=utf-8", **json_accept)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == [[2.0, 4.0, 6.0, 1.0]]

    body = '{"instances": [[1, 2]]}'.encode("utf-16")
    response = post(server, body, "application/json; charset=utf-16", **json_accept)
    assert response.json() == [[2.0, 4.0, 1.0]]

    response = post(server, b"[1, 2]\n[3, 4]\n", "application/jsonlines")
    assert response.headers["Content-Type"] == "text/csv"  # the configured default accept
    assert response.text == "2,4,2\n6,8,2\n"

    response = post(server, b"1,2\n3,4\n", "text/csv", Accept="application/jsonlines")
    assert response.headers["Content-Type"] == "application/jsonlines"
    assert [json.loads(line) for line in response.text.splitlines()] == [[2, 4, 2], [6, 8, 2]]

    array = np.arange(6, dtype=np.float64).reshape(3, 2)
    response = post(server, npy(array), "application/x-npy", Accept="application/x-npy")
    assert response.headers["Content-Type"] == "application/x-npy"
    answer = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert answer.dtype == np.float64
    np.testing.assert_array_equal(answer[:, :2], array * 2)

    buffer = io.BytesIO()
    np.savez(buffer, x=array.astype(np.float32))
    response = post(server, buffer.getvalue(), "application/x-npz", Accept="application/x-npz")
    with np.load(io.BytesIO(response.content), allow_pickle=False) as answer:
        np.testing.assert_array_equal(answer["arr_0"][:, :2], array * 2)

    image = np.full((4, 5, 3), 255, dtype=np.uint8)
    for content_type in ("image/png", "application/x-image"):
        response = post(server, png(image), content_type, Accept="application/x-npy")
        answer = np.load(io.BytesIO(response.content), allow_pickle=False)
        assert answer.shape == (1, 4, 4, 5)  # [1, 3 channels * 2 + rows column, H, W]
        np.testing.assert_allclose(answer[0, :3], 2.0)

    response = post(server, b"[[1]]", "application/json", Accept="*/*")
    assert response.headers["Content-Type"] == "text/csv"
    response = post(server, b"[[1]]", "application/json", Accept="text/html, application/x-npy")
    assert response.headers["Content-Type"] == "application/x-npy"
    accept = "application/x-npy;q=0.2, application/json"
    response = post(server, b"[[1]]", "application/json", Accept=accept)
    assert response.headers["Content-Type"] == "application/json"

    # Errors: the status a client can act on, a JSON body, no traceback.
    assert_json_error(post(server, b"hello", "text/plain"), 415)
    assert_json_error(post(server, b"[[1]]", "application/json", Accept="image/png"), 406)
    assert_json_error(post(server, b"[[1, 2", "application/json"), 400)
    assert_json_error(post(server, b"[[1, 2], [3]]", "application/json"), 400)
    assert_json_error(post(server, b"1,a\n", "text/csv"), 400)
    bad_pickle = io.BytesIO()
    np.save(bad_pickle, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_json_error(post(server, bad_pickle.getvalue(), "application/x-npy"), 400)
    body = assert_json_error(post(server, b"[1, 2]", "application/json"), 400)
    assert "does not fit the model" in body["message"]  # a 1-D input, the model wants rows
    big = b"[" + b"1," * (600 * 1024) + b"1]"
    assert_json_error(post(server, big, "application/json"), 413)
    # The worker survived all of it.
    assert post(server, b"[[5]]", "application/json", **json_accept).json() == [[10.0, 1.0]]


FAULTY = """
import time
import torch

def predict_fn(data, model):
    value = float(data.sum())
    if value < 0:
        return 1 / 0
    if value == 999:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")
    if value == 1000:
        raise MemoryError()
    if value == 7:
        time.sleep(3)
    return model(data)

def output_fn(prediction, accept, context):
    context.set_custom_attributes("seen=" + (context.custom_attributes or "none"))
    return prediction.tolist(), accept
"""


def test_user_code_errors_are_500_or_507_and_the_worker_survives(
    tmp_path, start_server, scale_model
):
    code = write_code(tmp_path, FAULTY)
    server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_CODE_DIR=str(code))
    server.wait_ready()
    workers_before = server.workers()
    assert workers_before

    body = assert_json_error(post(server, b"[[-1]]", "application/json"), 500)
    assert body["message"] == "predict_fn failed: ZeroDivisionError: division by zero"
    assert_json_error(post(server, b"[[999]]", "application/json"), 507)
    assert_json_error(post(server, b"[[1000]]", "application/json"), 507)
    assert server.wait_for_log("ZeroDivisionError")  # the traceback went to the log

    response = post(server, b"[[3]]", "application/json", **{CUSTOM_ATTRIBUTES: "trace=abc"})
    assert response.status_code == 200
    assert response.json() == [[6.0, 1.0]]
    assert response.headers[CUSTOM_ATTRIBUTES] == "seen=trace=abc"
    assert response.headers["X-Request-Id"]
    assert server.ping() == 200
    assert server.workers() == workers_before


def test_batching_answers_each_client_in_its_own_type(start_server, scale_model):
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SAGEMAKER_MODEL_SERVER_BATCH_SIZE="8",
        SERVING_MAX_BATCH_DELAY_MS="200",
    )
    server.wait_ready()

    def call(index: int) -> tuple[int, requests.Response]:
        row = [float(index), index + 0.5]
        if index == 5:  # ragged: fails to decode
            return index, post(server, b"[[1, 2], [3]]", "application/json")
        if index == 6:  # decodes, but a 1-D input does not fit the model
            return index, post(server, b"[1, 2]", "application/json")
        if index % 3 == 0:
            return index, post(server, npy(np.array([row])), "application/x-npy")
        if index % 3 == 1:
            csv = f"{row[0]},{row[1]}\n".encode()
            return index, post(server, csv, "text/csv", Accept="text/csv")
        return index, post(server, json.dumps([row]).encode(), "application/json")

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(call, range(24)))

    batch_rows = []
    for index, response in results:
        if index in (5, 6):
            assert_json_error(response, 400)
            continue
        assert response.status_code == 200, response.text
        if index % 3 == 1:
            assert response.headers["Content-Type"] == "text/csv"
            answer = [float(cell) for cell in response.text.strip().split(",")]
        else:
            assert response.headers["Content-Type"] == "application/json"
            answer = response.json()[0]
        assert answer[:2] == [index * 2.0, index * 2.0 + 1.0]
        batch_rows.append(answer[2])
    assert max(batch_rows) > 1, "no two requests shared a forward pass"


def test_sigterm_finishes_requests_in_flight_and_leaves_nothing(
    tmp_path, start_server, scale_model
):
    code = write_code(tmp_path, FAULTY)
    server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_CODE_DIR=str(code))
    server.wait_ready()
    children = server.descendants()
    # MMS's JVM, the model's backend (and its adopter that MMS started), the workers
    assert len(children) >= 4
    run_dirs = [
        arg.split("=", 1)[1]
        for child in children
        for arg in child.cmdline()
        if arg.startswith("-Djava.io.tmpdir=")
    ]
    in_flight: dict[str, requests.Response] = {}
    slow = threading.Thread(
        target=lambda: in_flight.update(answer=post(server, b"[[7]]", "application/json"))
    )
    slow.start()
    with requests.Session() as session:  # a connection open before the SIGTERM
        assert session.get(f"{server.url}/ping", timeout=5).status_code == 200
        time.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        draining = session.get(f"{server.url}/ping", timeout=5)
    assert draining.status_code == 503  # the load balancer stops sending
    assert draining.json()["status"] == "Draining"
    assert draining.headers["Connection"] == "close"
    assert server.ping() is None  # a new connection is refused
    slow.join(30)
    assert in_flight["answer"].status_code == 200
    assert in_flight["answer"].json() == [[14.0, 1.0]]
    assert server.process.wait(30) == 0
    time.sleep(0.2)
    assert not [child for child in children if child.is_running() and child.status() != "zombie"]
    assert server.ping() is None  # the port is closed
    assert run_dirs and not Path(run_dirs[0]).exists()


def test_a_model_that_cannot_load_stops_the_server_with_the_reason(
    tmp_path, start_server, scale_model
):
    code = write_code(
        tmp_path,
        """
        def model_fn(model_dir):
            raise FileNotFoundError("weights.bin is missing from the model archive")
        """,
    )
    server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_CODE_DIR=str(code))
    started = time.monotonic()
    assert server.process.wait(60) == 1
    assert time.monotonic() - started < 30
    assert (
        "the model failed to load: FileNotFoundError: weights.bin is missing from the model archive"
        in server.log()
    )
    assert not psutil.pid_exists(server.process.pid)


def test_a_model_may_take_longer_to_load_than_a_batch_may_take(tmp_path, start_server, scale_model):
    code = write_code(tmp_path, SLOW_TO_LOAD)
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SERVING_CODE_DIR=str(code),
        SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS="2",
        SAGEMAKER_STARTUP_TIMEOUT="60",
    )
    assert server.wait_ready() > 4
    assert post(server, b"[[1]]", "application/json").json() == [[2.0, 1.0]]


def test_a_batch_over_the_timeout_is_a_504_and_its_worker_is_replaced(
    tmp_path, start_server, scale_model
):
    code = write_code(
        tmp_path,
        """
        import time

        def predict_fn(data, model):
            if data[0, 0] == 13:
                time.sleep(60)  # a forward pass that hangs
            return model(data)
        """,
    )
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SERVING_CODE_DIR=str(code),
        SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS="2",
    )
    server.wait_ready()
    started = time.monotonic()
    body = assert_json_error(post(server, b"[[13]]", "application/json"), 504)
    assert 2 <= time.monotonic() - started < 10
    assert "did not answer within 2 s" in body["message"]
    # The one worker was replaced: the next request waits for the new one, then succeeds.
    assert post(server, b"[[1]]", "application/json").json() == [[2.0, 1.0]]
    assert server.wait_for_log("answered 504, ending worker")


def test_a_backend_that_cannot_start_stops_the_server_with_the_reason(
    tmp_path, start_server, scale_model
):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "torch.py").write_text('raise ImportError("this torch is broken")\n')
    server = start_server(SERVING_MODEL_DIR=str(scale_model), PYTHONPATH=str(broken))
    started = time.monotonic()
    assert server.process.wait(60) == 1
    assert time.monotonic() - started < 30
    assert "ImportError: this torch is broken" in server.log()
    assert re.search(
        r"the model's backend \(pid \d+\) exited with code 1; its log above says why", server.log()
    )


def test_bad_settings_and_a_missing_model_exit_at_once(tmp_path, start_server):
    server = start_server(SAGEMAKER_MODEL_SERVER_WORKERS="lots")
    assert server.process.wait(30) == 2
    assert "SAGEMAKER_MODEL_SERVER_WORKERS must be a positive integer, got 'lots'" in server.log()
    server = start_server(SERVING_MODEL_DIR=str(tmp_path / "nowhere"))
    assert server.process.wait(30) == 1
    assert f"model directory {tmp_path / 'nowhere'} does not exist" in server.log()


def test_digits_over_http_match_the_accuracy_of_training(start_server, digits):
    heldout = np.load(digits / "heldout.npz")
    trained = json.loads((digits / "metrics.json").read_text())["heldout_accuracy"]
    server = start_server(
        SERVING_MODEL_DIR=str(digits / "model"),
        SERVING_CODE_DIR=str(REPO / "code"),
        SAGEMAKER_MODEL_SERVER_WORKERS="2",
        SERVING_WARMUP_SHAPE="1,1,8,8",
    )
    bodies = [png(image) for image in heldout["images"]]
    while True:  # start to first successful invocation
        try:
            if post(server, bodies[0], "image/png").status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert server.process.poll() is None, server.log()
        time.sleep(0.02)
    first_answer = time.monotonic() - server.started

    def classify(body: bytes) -> int:
        response = post(server, body, "image/png")
        assert response.status_code == 200, response.text
        return response.json()["predicted_class"]

    with ThreadPoolExecutor(4) as pool:
        predicted = list(pool.map(classify, bodies))
    accuracy = float(np.mean(np.array(predicted) == heldout["labels"]))

    image = base64.b64encode(bodies[0]).decode()
    response = requests.post(f"{server.url}/invocations", json={"image": image}, timeout=10)
    assert response.json()["predicted_class"] == predicted[0]

    connection = http.client.HTTPConnection("127.0.0.1", server.port)  # keep-alive, no extras
    latencies = []
    for body in bodies * 2:
        began = time.perf_counter()
        connection.request("POST", "/invocations", body, {"Content-Type": "image/png"})
        assert connection.getresponse().read()
        latencies.append(time.perf_counter() - began)
    connection.close()
    print(
        f"\ndigits: {len(bodies)} held-out PNGs over HTTP, accuracy {accuracy:.4f} "
        f"(training measured {trained:.4f}); start to first answer {first_answer:.2f} s; "
        f"p50 latency of one PNG, one client: {statistics.median(latencies) * 1000:.2f} ms"
    )
    assert accuracy == pytest.approx(trained, abs=1e-6)  # metrics.json keeps 6 digits
    assert accuracy > 0.95


def make_wheel(directory: Path, name: str, source: str) -> Path:
    """A minimal pure-Python wheel holding one module, made without any build tool."""
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    dist_info = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": source,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    records = [f"{path},," for path in files] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = "\n".join(records) + "\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_code_requirements_are_installed_at_start(tmp_path, start_server, scale_model):
    name = f"serving_marker_{uuid.uuid4().hex[:8]}"
    wheel = make_wheel(tmp_path, name, "FACTOR = 3\n")
    code = write_code(
        tmp_path,
        f"""
        import {name}

        def predict_fn(data, model):
            return data * {name}.FACTOR
        """,
    )
    (code / "requirements.txt").write_text(f"{wheel}\n")
    try:
        server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_CODE_DIR=str(code))
        server.wait_ready()
        assert post(server, b"[[2]]", "application/json").json() == [[6.0]]
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", name], check=False)

    (code / "requirements.txt").write_text(f"{tmp_path / 'no-such-package'}\n")
    server = start_server(SERVING_MODEL_DIR=str(scale_model), SERVING_CODE_DIR=str(code))
    assert server.process.wait(60) == 1
    assert f"pip could not install {code / 'requirements.txt'}" in server.log()


def test_batched_answers_with_headers_split_across_reads_all_arrive(start_server, scale_model):
    """MMS's own decoder dropped the worker's connection when an answer with a header was split
    across socket reads, which batches of small answers are once Netty's read size has shrunk
    to fit them (java/ModelResponseDecoder.java replaces it)."""
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SAGEMAKER_MODEL_SERVER_BATCH_SIZE="8",
        SERVING_MAX_BATCH_DELAY_MS="20",
    )
    server.wait_ready()

    def call(index: int) -> requests.Response:
        body = json.dumps([[index, 0.5]]).encode()
        return post(server, body, "application/json", **{CUSTOM_ATTRIBUTES: f"n={index}"})

    for index in range(50):  # one at a time: small reads teach Netty small buffers
        assert call(index).status_code == 200
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(call, range(400)))
    assert [response.status_code for response in responses] == [200] * 400
    for index, response in enumerate(responses):
        assert response.json()[0][:2] == [index * 2, 1.0]
        assert response.headers["X-Request-Id"]
    assert "Invalid message size" not in server.log()


THREADS = """
    import json
    import time

    import torch

    def model_fn(model_dir):
        return torch.nn.Identity()

    def input_fn(body, content_type):
        return body

    def predict_fn(data, model):
        time.sleep(0.05)  # enough work to be worth every CPU (backend/cores.py)
        return torch.get_num_threads()

    def output_fn(prediction, accept):
        return json.dumps(prediction)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: one thread always")
def test_a_lone_request_runs_on_every_cpu_and_requests_under_load_share_them(
    tmp_path, start_server, scale_model
):
    cpus = len(os.sched_getaffinity(0))
    server = start_server(
        SERVING_MODEL_DIR=str(scale_model),
        SERVING_CODE_DIR=str(write_code(tmp_path, THREADS)),
        SAGEMAKER_MODEL_SERVER_WORKERS=str(cpus),
    )
    server.wait_ready()

    def threads(_: int = 0) -> int:
        response = post(server, b"{}", "application/json")
        assert response.status_code == 200, response.text
        return int(response.json())

    assert [threads() for _ in range(3)] == [cpus] * 3
    with ThreadPoolExecutor(2 * cpus) as pool:
        under_load = list(pool.map(threads, range(16 * cpus)))
    # Every worker busy: one CPU each (a batch that began as the load began may have had more).
    assert under_load.count(1) >= len(under_load) * 3 // 4, under_load
    assert threads() == cpus


def test_the_frontends_network_threads_follow_the_setting(start_server, scale_model):
    """SERVING_FRONTEND_THREADS sizes Netty's event loops for clients and for the workers: a
    pool of a thread per request hand-off costs CPU a light model's workers need (docs)."""

    def event_loops(**env: str) -> int:
        server = start_server(
            SERVING_MODEL_DIR=str(scale_model), SAGEMAKER_MODEL_SERVER_WORKERS="2", **env
        )
        server.wait_ready()
        # Netty starts a loop's thread with its first channel: enough connections for all.
        sessions = [requests.Session() for _ in range(8)]
        for session in sessions:
            assert session.post(f"{server.url}/invocations", json=[[2]]).status_code == 200
        (java,) = [
            child
            for child in psutil.Process(server.process.pid).children(recursive=True)
            if child.name() == "java"
        ]
        names = [
            Path(f"/proc/{java.pid}/task/{task.id}/comm").read_text().strip()
            for task in java.threads()
        ]
        for session in sessions:
            session.close()
        return names.count("epollEventLoopG")

    # Clients' loops grow by 3 (8 connections), the workers' by 1 (2 workers).
    loops = event_loops(SERVING_FRONTEND_THREADS="4"), event_loops(SERVING_FRONTEND_THREADS="1")
    assert loops[0] - loops[1] == 4, loops
