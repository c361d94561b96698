"""The real image, built with scripts/build.py and run with Docker on 127.0.0.1 (--network host).

The image is the CPU variant on a Debian bookworm base made with debootstrap (no registry can
be reached here), with torch from the machine's wheel folders. SERVING_TEST_IMAGE names a prebuilt
image to use instead. Without a Docker engine the module is skipped, except in CI (CI=true).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from sagemaker_torch_serving.archive import pack
from tests.conftest import REPO, free_port
from tests.integration.clients import Client, load, summary
from tests.integration.conftest import wait_ready

docker = pytest.importorskip("docker")


class Container:
    def __init__(self, client, image: str, env: dict[str, str] | None = None, **options) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {"SAGEMAKER_BIND_TO_PORT": str(self.port), **(env or {})}
        self.container = client.containers.run(
            image,
            ["serve"],
            detach=True,
            network_mode="host",
            environment=environment,
            **options,
        )

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def wait_ready(self) -> None:
        wait_ready(self.url, self.exited, self.logs)

    def exited(self) -> bool:
        self.container.reload()
        return self.container.status == "exited"

    def invoke(self, body: bytes, content_type: str) -> requests.Response:
        headers = {"Content-Type": content_type}
        return requests.post(f"{self.url}/invocations", data=body, headers=headers, timeout=30)

    def remove(self) -> None:
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture
def run(client, image) -> Iterator:
    started: list[Container] = []

    def start(**options) -> Container:
        container = Container(client, image, **options)
        started.append(container)
        return container

    yield start
    for container in started:
        container.remove()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def accuracy(container: Container, heldout, count: int | None = None) -> float:
    images, labels = heldout["images"][:count], heldout["labels"][:count]
    predicted = []
    for digit in images:
        response = container.invoke(png(digit), "image/png")
        assert response.status_code == 200, response.text
        predicted.append(response.json()["predicted_class"])
    return float(np.mean(np.array(predicted) == labels))


def mount(source: Path, target: str) -> dict:
    return {str(source): {"bind": target, "mode": "ro"}}


def test_directory_model_as_root(run, digits):
    """/opt/ml/model as SageMaker mounts it; the image's baked code/inference.py serves it."""
    heldout = np.load(digits / "heldout.npz")
    trained = json.loads((digits / "metrics.json").read_text())["heldout_accuracy"]
    container = run(volumes=mount(digits / "model", "/opt/ml/model"))
    container.wait_ready()
    served = accuracy(container, heldout)
    print(f"\ncontainer: accuracy over HTTP {served:.4f}, training measured {trained:.4f}")
    assert served == pytest.approx(trained, abs=1e-6)

    image = __import__("base64").b64encode(png(heldout["images"][0])).decode()
    response = container.invoke(json.dumps({"image": image}).encode(), "application/json")
    assert response.json()["predicted_class"] == int(heldout["labels"][0])
    assert container.invoke(b"nonsense", "text/plain").status_code == 415

    # docker stop -t 30 (SageMaker's SIGTERM, then SIGKILL after 30 s) under continuous load
    label = int(heldout["labels"][1])
    clients = [
        Client(
            container.url,
            png(heldout["images"][1]),
            "image/png",
            lambda body: json.loads(body)["predicted_class"] == label,
        )
        for _ in range(4)
    ]
    took: list[float] = []

    def stop() -> None:
        began = time.monotonic()
        container.container.stop(timeout=30)
        took.append(time.monotonic() - began)

    load(clients, stop)
    print(f"docker stop -t 30 under load from 4 clients: {took[0]:.2f} s; {summary(clients)}")
    container.container.reload()
    assert container.container.attrs["State"]["ExitCode"] == 0, container.logs()
    assert took[0] < 10
    assert [reset for client in clients for reset in client.resets] == []
    assert [wrong for client in clients for wrong in client.wrong] == []
    assert sum(client.answered for client in clients) > 20
    assert "drained: every accepted request was answered" in container.logs()


def test_model_archive_with_its_own_code_as_uid_1000_on_a_read_only_root(run, digits, tmp_path):
    """model.tar.gz as the only file in /opt/ml/model, holding code/inference.py."""
    archive = tmp_path / "archive" / "model.tar.gz"
    pack(archive, digits / "model", REPO / "code")
    heldout = np.load(digits / "heldout.npz")
    container = run(
        volumes=mount(archive.parent, "/opt/ml/model"),
        user="1000:1000",
        read_only=True,
        tmpfs={"/tmp": "rw,size=512m"},
        env={"SERVING_DEFAULT_CODE_DIR": "/nonexistent"},  # the archive's code must be used
    )
    container.wait_ready()
    assert accuracy(container, heldout, 100) == accuracy_in_training(digits, heldout, 100)
    assert "unpacked /opt/ml/model/model.tar.gz" in container.logs()


def accuracy_in_training(digits: Path, heldout, count: int) -> float:
    """What the TorchScript model itself predicts for the first ``count`` held-out images."""
    import torch

    spec = __import__("importlib.util").util.spec_from_file_location(
        "inf", REPO / "code/inference.py"
    )
    inference = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(inference)
    model = torch.jit.load(str(digits / "model" / "model.pt"))
    with torch.inference_mode():
        logits = model(inference.preprocess(heldout["images"][:count]))
    return float((logits.argmax(1).numpy() == heldout["labels"][:count]).mean())


def test_archive_named_by_variable(run, digits, tmp_path):
    archive = tmp_path / "models" / "digits.tar.gz"
    pack(archive, digits / "model", REPO / "code")
    container = run(
        volumes=mount(archive.parent, "/models"),
        env={"SERVING_MODEL_ARCHIVE": "/models/digits.tar.gz"},
    )
    container.wait_ready()
    heldout = np.load(digits / "heldout.npz")
    response = container.invoke(png(heldout["images"][1]), "image/png")
    assert response.json()["predicted_class"] == int(heldout["labels"][1])


def test_a_broken_model_stops_the_container_with_the_reason(run, digits, tmp_path):
    model_dir = tmp_path / "broken"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes((digits / "model" / "model.pt").read_bytes())
    (model_dir / "other.pt").write_bytes((digits / "model" / "model.pt").read_bytes())
    container = run(volumes=mount(model_dir, "/opt/ml/model"))
    result = container.container.wait(timeout=120)
    assert result["StatusCode"] == 1
    assert "the model failed to load: ModelLoadError" in container.logs()
    assert "found model.pt, other.pt" in container.logs()


def test_other_commands_run_in_place_of_the_server(client, image):
    output = client.containers.run(
        image, ["python", "-c", "import torch; print(torch.__version__)"], remove=True
    )
    assert output.decode().strip().split("+")[0] == locked_version("torch")
    labels = client.images.get(image).labels
    assert labels.get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port") == "true"
    assert "com.amazonaws.sagemaker.capabilities.multi-models" not in labels


def run_local(*args: str, **popen) -> subprocess.Popen:
    """scripts/run_local.py, what `make run` runs."""
    command = [sys.executable, str(REPO / "scripts" / "run_local.py"), *args]
    return subprocess.Popen(command, text=True, **popen)


def serving_containers(client) -> list:
    return [c for c in client.containers.list(all=True) if c.name.startswith("sagemaker-serving-")]


class MakeRun:
    """`make run MODEL=<digits> NETWORK=host` on a free port, its output in a log file."""

    def __init__(self, image: str, digits: Path, tmp_path: Path, **popen) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp_path / "run.log"
        with self.log.open("w") as output:
            self.process = run_local(
                "--image", image, "--model", str(digits / "model"),
                "--port", str(port), "--network", "host",
                stdout=output, stderr=subprocess.STDOUT, **popen,
            )  # fmt: skip

    def wait_ready(self) -> None:
        wait_ready(self.url, lambda: self.process.poll() is not None, self.log.read_text)


@pytest.fixture
def make_run(client, image, digits, tmp_path) -> Iterator[Callable[..., MakeRun]]:
    """Starts `make run`; stops it and removes its container also when a test fails."""
    started: list[MakeRun] = []

    def start(**popen) -> MakeRun:
        started.append(MakeRun(image, digits, tmp_path, **popen))
        return started[-1]

    yield start
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
    for container in serving_containers(client):
        container.remove(force=True)


def test_make_run_serves_the_model_until_ctrl_c(client, make_run, digits, tmp_path):
    """`make run MODEL=... NETWORK=host` then `make invoke`, as a user runs them."""
    run = make_run()
    run.wait_ready()
    digit = tmp_path / "digit.png"
    heldout = np.load(digits / "heldout.npz")
    digit.write_bytes(png(heldout["images"][0]))
    invoke = [sys.executable, str(REPO / "scripts" / "invoke.py"), "--file", str(digit)]
    invoke += ["--url", run.url]
    answer = subprocess.run(invoke, capture_output=True, text=True, timeout=30)
    assert answer.returncode == 0, answer.stderr
    status, body = answer.stdout.split("\n", 1)
    assert status == "200 application/json"
    assert json.loads(body)["predicted_class"] == int(heldout["labels"][0])
    run.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert run.process.wait(60) == 0, run.log.read_text()
    assert "exited with code 0" in run.log.read_text()
    assert not serving_containers(client)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background shell starts its jobs


@pytest.mark.parametrize(
    ("stop", "inherited_sigint_ignored"),
    [("SIGTERM", False), ("SIGHUP", False), ("SIGINT", True)],
    ids=["sigterm", "sighup-closed-terminal", "ctrl-c-from-a-background-shell"],
)
def test_make_run_stops_its_container_on_every_stop_signal(
    client, make_run, stop, inherited_sigint_ignored
):
    run = make_run(preexec_fn=_ignore_sigint if inherited_sigint_ignored else None)
    run.wait_ready()
    run.process.send_signal(getattr(signal, stop))
    assert run.process.wait(60) == 0, run.log.read_text()
    assert f"{stop}: stopping" in run.log.read_text()
    assert not serving_containers(client)


RUN_FAILURES = {
    # case: (what differs from a good `make run`, what stderr says)
    "gpu": (
        {"--gpu": None},
        "--gpu needs the NVIDIA Container Toolkit, which this Docker host lacks",
    ),
    "missing-model": ({"--model": "/nonexistent"}, "model not found: /nonexistent"),
    "missing-image": (
        {"--image": "sagemaker-torch-serving:missing"},
        "image sagemaker-torch-serving:missing not found: build it with `make build`",
    ),
    "no-docker": ({"DOCKER_HOST": "unix:///nonexistent.sock"}, "cannot reach the Docker daemon"),
}


@pytest.mark.parametrize("case", RUN_FAILURES)
def test_make_run_fails_in_one_clear_line(client, image, digits, case):
    if case == "gpu" and "nvidia" in client.info().get("Runtimes", {}):
        pytest.skip("this Docker host has the NVIDIA runtime")
    changes, expected = RUN_FAILURES[case]
    options = {"--image": image, "--model": str(digits / "model"), "--network": "host"}
    options.update((key, value) for key, value in changes.items() if key.startswith("--"))
    args = [part for key, value in options.items() for part in (key, value) if part is not None]
    env = {**os.environ, **{key: value for key, value in changes.items() if key.isupper()}}
    process = run_local(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr.startswith(f"run_local: {expected}"), stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not serving_containers(client)  # a failed start leaves no container behind


def locked_version(package: str) -> str:
    lines = (REPO / "docker" / "torch.lock").read_text().splitlines()
    return next(line.split("==")[1] for line in lines if line.startswith(f"{package}=="))


# What users' handler code, written for AWS's stock containers, relies on in the image: the
# locked torchvision working with its torch, every sagemaker_inference module importable, and
# torch.compile's inductor finding its C++ compiler (it failed with InvalidCxxCompiler before).
USERS_STACK = """
import importlib, pkgutil, warnings
import torch, torchvision, sagemaker_inference
from torchvision import ops
print(torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
assert ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
warnings.simplefilter("ignore")
for info in pkgutil.walk_packages(sagemaker_inference.__path__, "sagemaker_inference."):
    importlib.import_module(info.name)
model = torch.compile(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()))
print(tuple(model(torch.ones(2, 4)).shape))
"""


def test_the_users_stack_works_in_the_image(client, image):
    output = client.containers.run(
        image, ["python", "-c", USERS_STACK], remove=True, network_mode="none"
    )
    versions, compiled = output.decode().split("\n")[:2]
    assert versions == f"{locked_version('torch')} {locked_version('torchvision')}"
    assert compiled == "(2, 3)"


@pytest.fixture(scope="module")
def classifier_archive(tmp_path_factory) -> Path:
    """The document's example as its README packages it: best.pt from torch.save(model) and
    examples/image_classifier/code/ in a model.tar.gz."""
    from tests.integration.test_seed_example import EXAMPLE

    folder = tmp_path_factory.mktemp("classifier")
    model_dir = folder / "model"
    make_model = [sys.executable, str(EXAMPLE / "make_model.py"), "--out", str(model_dir)]
    subprocess.run(make_model, check=True)
    archive = folder / "archive" / "model.tar.gz"
    pack(archive, model_dir, EXAMPLE / "code")
    return archive


@pytest.mark.parametrize("program", ["inference.py", "inference_transform_fn.py"])
def test_the_documents_torchvision_example_in_the_image(run, classifier_archive, program):
    from tests.integration.test_seed_example import image_request

    container = run(
        volumes=mount(classifier_archive.parent, "/opt/ml/model"),
        env={"SAGEMAKER_PROGRAM": program},
    )
    container.wait_ready()
    answer = container.invoke(image_request("RGBA"), "application/json")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    if program == "inference.py":
        assert set(body) == {"statusCode", "predictions", "confidence_scores", "timestamp"}
        (probabilities,) = body["confidence_scores"]
    else:
        assert set(body) == {"predicted_class", "confidence", "all_probabilities"}
        probabilities = body["all_probabilities"]
    assert len(probabilities) == 10
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
