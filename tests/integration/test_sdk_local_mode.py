"""The SageMaker Python SDK's local mode (sagemaker<3, in .venv-sdk: `make sdk-venv`) with the
real image and a real compose binary: the README's example, examples/sdk_local_mode/, run as a
user runs it, with host networking on loopback (tests/integration/sdk_on_loopback.py). Every
proxy variable points at a recorder on 127.0.0.1: a call meant for AWS would reach it, and the
test checks that none did."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from sagemaker_torch_serving.archive import pack
from tests.conftest import REPO, free_port
from tests.integration.test_container import png

SDK_PYTHON = REPO / ".venv-sdk" / "bin" / "python"
EXAMPLE = REPO / "examples" / "sdk_local_mode" / "deploy_local.py"
RUNNER = REPO / "tests" / "integration" / "sdk_on_loopback.py"
TELEMETRY_OFF = """SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)


class Recorder:
    """A proxy that answers nothing and records the first line of every request to it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    self.requests.append(connection.recv(4096).split(b"\r\n")[0].decode())
                except OSError:
                    self.requests.append("(nothing read)")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    proxy = Recorder()
    yield proxy
    proxy.close()


def sdk_environment(tmp_path: Path, proxy: Recorder, port: int) -> dict[str, str]:
    config = tmp_path / "sdk-config.yaml"
    config.write_text(TELEMETRY_OFF)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AWS_") and key.lower() not in ("http_proxy", "https_proxy")
    }
    proxy_url = f"http://127.0.0.1:{proxy.port}"
    env.update(
        HOME=str(home),  # no ~/.sagemaker or ~/.aws of this machine's user
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        SAGEMAKER_USER_CONFIG_OVERRIDE=str(config),
        SAGEMAKER_SUPPRESS_V2_WARNING="1",
        HTTP_PROXY=proxy_url,
        HTTPS_PROXY=proxy_url,
        NO_PROXY="127.0.0.1,localhost",
        LOCAL_MODE_PORT=str(port),
        LOCAL_MODE_DEPLOY_STARTED=str(tmp_path / "deploy-started"),
    )
    return env


def run_example(
    tmp_path: Path, proxy: Recorder, image: str, model_tar: Path, inputs: list[Path], *extra: str
) -> tuple[str, float]:
    """The deploy example, to its end; returns its output and the seconds from the start of
    deploy() to the first answer of /ping that our own poller saw (deploy() returns later)."""
    arguments = ["--model", str(model_tar), *extra]
    for path in inputs:
        arguments += ["--input", str(path)]
    return run_sdk(tmp_path, proxy, image, EXAMPLE, *arguments)


def run_sdk(
    tmp_path: Path, proxy: Recorder, image: str, script: Path, *arguments: str
) -> tuple[str, float]:
    """A script of the SDK's local mode, to its end, on loopback: its output, and the seconds
    from the start of its deploy() (if it deploys) to the first answer of /ping."""
    if not SDK_PYTHON.exists():
        unavailable("the SDK's environment is missing: make sdk-venv")
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is missing (apt-get install docker-compose)")
    port = free_port()
    command = [str(SDK_PYTHON), str(RUNNER), str(script), "--image", image]
    command += ["--port", str(port), *arguments]
    started = tmp_path / "deploy-started"
    process = subprocess.Popen(
        command,
        env=sdk_environment(tmp_path, proxy, port),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first_answer = float("nan")
    output = ""
    try:
        while process.poll() is None and first_answer != first_answer:  # NaN until answered
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/ping", timeout=1)
                if answer.status_code == 200 and started.exists():
                    first_answer = time.time() - float(started.read_text())
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        # A failed run may leave its container running; every run leaves it stopped but not
        # removed (the SDK's compose does not), and each holds a writable layer on the disk.
        leftovers = served_containers(image, stopped=True)
        if process.returncode != 0:
            leftovers += served_containers(image)
        for container in leftovers:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    assert process.returncode == 0, output[-4000:]
    return output, first_answer


def served_containers(image: str, *, stopped: bool = False) -> list[str]:
    """The image's containers that are up (docker ps), or with stopped, those that exited."""
    command = ["docker", "ps", "-q", "--filter", f"ancestor={image}"]
    if stopped:
        command += ["-a", "--filter", "status=exited"]
    listing = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
    )
    return listing.stdout.split()


def answers(output: str) -> dict[str, object]:
    found = {}
    for line in output.splitlines():
        name, _, value = line.partition(": ")
        if name.endswith((".json", ".npy", ".csv", ".png")) and value.startswith(("[", "{")):
            found[name] = json.loads(value)
    return found


def test_a_model_archive_with_default_handlers_answers_the_sdks_serializers(
    tmp_path, recorder, image, scale_model
):
    """Model(image_uri, model_data='file://...model.tar.gz'): JSON, NumPy and CSV with the SDK's
    serializers and deserializers; delete_endpoint() leaves nothing running."""
    archive = tmp_path / "model" / "model.tar.gz"  # the SDK unpacks it beside itself
    code = tmp_path / "code"  # a code/ of its own, so not the image's baked example code,
    code.mkdir()  # whose inference.py defines no handler: every one is a default
    (code / "inference.py").write_text("# the default handlers serve this model\n")
    pack(archive, scale_model, code)
    (tmp_path / "in.json").write_text("[[1.5]]")
    np.save(tmp_path / "in.npy", np.array([[2.0]], dtype=np.float32))
    (tmp_path / "in.csv").write_text("3\n")
    inputs = [tmp_path / name for name in ("in.json", "in.npy", "in.csv")]
    output, first_answer = run_example(tmp_path, recorder, image, archive, inputs)
    print(f"\nSDK local mode, Model: deploy() to the first answer {first_answer:.1f} s; {output}")
    assert answers(output) == {
        "in.json": [[3.0, 1.0]],
        "in.npy": [[4.0, 1.0]],
        "in.csv": [["6", "1"]],  # CSVDeserializer gives strings
    }
    assert recorder.requests == []  # nothing was sent to any address but loopback
    assert served_containers(image) == []


def test_a_pytorch_model_with_entry_point_and_source_dir_serves_images_and_json(
    tmp_path, recorder, image, digits
):
    """PyTorchModel(entry_point='inference.py', source_dir=code/): the SDK packs the code into
    the archive and sets SAGEMAKER_PROGRAM and SAGEMAKER_SUBMIT_DIRECTORY, as for SageMaker."""
    archive = tmp_path / "model" / "model.tar.gz"
    pack(archive, digits / "model")  # the weights only: the code comes from source_dir
    heldout = np.load(digits / "heldout.npz")
    (tmp_path / "digit.png").write_bytes(png(heldout["images"][0]))
    encoded = __import__("base64").b64encode(png(heldout["images"][1])).decode()
    (tmp_path / "digit.json").write_text(json.dumps({"image": encoded}))
    inputs = [tmp_path / "digit.png", tmp_path / "digit.json"]
    output, first_answer = run_example(
        tmp_path, recorder, image, archive, inputs, "--code", str(REPO / "code")
    )
    print(f"\nSDK local mode, PyTorchModel: deploy() to the first answer {first_answer:.1f} s")
    print(output)
    found = answers(output)
    assert found["digit.png"]["predicted_class"] == int(heldout["labels"][0])
    assert found["digit.json"]["predicted_class"] == int(heldout["labels"][1])
    assert recorder.requests == []
    assert served_containers(image) == []
