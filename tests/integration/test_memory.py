"""What a request may cost the worker in memory, over HTTP against the real server.

The example digits model with the default handlers: an image decodes to a float32
``[1, 3, H, W]`` tensor, which the model (one input channel) refuses in its first layer. A
request that fails so must free its tensor at once, not when the garbage collector next runs:
the worker's RSS stays flat over 100 of them. And a JPEG that declares more pixels than
SERVING_MAX_DECODED_MB allows is a 413 with a JSON body, before a pixel is decoded.
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.integration.conftest import ServerProcess

SIDE = 2048  # 2048 x 2048 x 3 channels x 4 bytes: 48 MiB as float32
DECODED_MB = SIDE * SIDE * 3 * 4 // (1024 * 1024)
REQUESTS = 100
WARM_UP = 10  # requests before the baseline: allocators and caches settle
MARGIN = 16 * 1024 * 1024  # a third of one decoded tensor


def solid_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 100, 50)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """An 8x8 grey JPEG (333 bytes) whose frame header (SOF0) declares width x height."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="JPEG")
    body = buffer.getvalue()
    sof = body.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    return body[: sof + 5] + struct.pack(">HH", height, width) + body[sof + 9 :]


def rss(pid: int) -> int:
    """The resident set of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def worker_rss(server: ServerProcess) -> dict[int, int]:
    return {pid: rss(pid) for pid in sorted(server.workers())}


@pytest.fixture
def digits_server(start_server, digits: Path) -> ServerProcess:
    server = start_server(
        SERVING_MODEL_DIR=str(digits / "model"),  # no code/: the default handlers
        SERVING_MAX_DECODED_MB=str(DECODED_MB),
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
    )
    server.wait_ready()
    return server


def test_failing_requests_of_a_large_allowed_size_leave_the_worker_rss_flat(digits_server):
    server = digits_server
    body = solid_png(SIDE)
    assert len(body) < 64 * 1024  # small on the wire, 48 MiB once decoded
    workers = server.workers()
    assert len(workers) == 1, workers
    session = requests.Session()
    url = f"{server.url}/invocations"
    headers = {"Content-Type": "image/png"}
    samples = []
    began = time.monotonic()
    for number in range(1, REQUESTS + 1):
        response = session.post(url, data=body, headers=headers, timeout=30)
        assert response.status_code == 400, response.text  # decoded, refused by the model
        assert "does not fit the model" in response.json()["message"]
        if number == WARM_UP:
            baseline = worker_rss(server)
        if number % 10 == 0:
            samples.append(sum(worker_rss(server).values()))
    final = worker_rss(server)
    elapsed = time.monotonic() - began
    mib = [round(sample / 2**20, 1) for sample in samples]
    print(
        f"\n{REQUESTS} failing requests decoding to {DECODED_MB} MiB each in {elapsed:.1f} s; "
        f"worker RSS every 10 requests (MiB): {mib}"
    )
    assert server.workers() == workers  # the same worker served them all
    for pid, before in baseline.items():
        assert final[pid] - before < MARGIN, (
            f"worker {pid} grew from {before / 2**20:.1f} MiB after {WARM_UP} requests to "
            f"{final[pid] / 2**20:.1f} MiB after {REQUESTS}: {mib}"
        )
    # Nor does it hold one tensor more than it did at the start of the measure.
    assert max(samples) - min(samples) < MARGIN, mib


def test_a_jpeg_declaring_8192x8192_is_a_413_with_a_json_body(digits_server):
    server = digits_server
    before = worker_rss(server)
    body = jpeg_claiming(8192, 8192)
    assert len(body) == 333
    for _ in range(8):  # the 8 requests grew the worker by 3.1 GB
        response = requests.post(
            f"{server.url}/invocations",
            data=body,
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
        )
        assert response.status_code == 413, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        answer = response.json()
        assert answer["code"] == 413
        assert answer["request_id"]
        assert "8192x8192" in answer["message"]
        assert "SERVING_MAX_DECODED_MB" in answer["message"]
        assert f"{DECODED_MB} MiB" in answer["message"]
    after = worker_rss(server)
    for pid, size in before.items():
        assert after[pid] - size < MARGIN, (size, after[pid])
