"""A multi-model endpoint (SAGEMAKER_MULTI_MODEL=true): SageMaker's calls on the serving port,
as the platform makes them, on the real server; each model has its own code/inference.py."""

from __future__ import annotations

import json
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch

from tests.integration.conftest import ServerProcess, wait_ready
from tests.ports import free_port
from tests.processes import model_processes

TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"


class Times(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def model_dir(root: Path, name: str, inference: str, factor: float | None = None) -> str:
    """/…/models/NAME/model as SageMaker lays it out: the archive's content, code/ included."""
    directory = root / "models" / name / "model"
    (directory / "code").mkdir(parents=True)
    (directory / "code" / "inference.py").write_text(textwrap.dedent(inference))
    if factor is not None:
        torch.jit.script(Times(factor)).save(str(directory / "model.pt"))
    return str(directory)


# Each model answers with its own output_fn, which names it: answers cannot be mixed up.
NAMED_OUTPUT = """
    import json

    def output_fn(prediction, accept):
        return json.dumps({{"model": "{name}", "y": prediction.tolist()}})
"""


@pytest.fixture
def models(tmp_path: Path) -> dict[str, str]:
    return {
        name: model_dir(tmp_path, name, NAMED_OUTPUT.format(name=name), factor)
        for name, factor in (("double", 2.0), ("triple", 3.0), ("half", 0.5))
    }


def mme(start_server, **env: str) -> ServerProcess:
    server = start_server(SAGEMAKER_MULTI_MODEL="true", **env)
    server.wait_ready()
    return server


def load(server: ServerProcess, name: str, url: str) -> requests.Response:
    body = {"model_name": name, "url": url}
    return requests.post(f"{server.url}/models", json=body, timeout=120)


def invoke(server: ServerProcess, name: str, values: list[float]) -> requests.Response:
    return requests.post(f"{server.url}/models/{name}/invoke", json=values, timeout=30)


def assert_error(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and body["request_id"]
    for word in words:
        assert word in body["message"], body


def test_models_load_serve_concurrently_unload_and_reload(start_server, models) -> None:
    server = mme(start_server)
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200  # no model yet
    for name, url in models.items():
        response = load(server, name, url)
        assert response.status_code == 200, response.text
    listed = requests.get(f"{server.url}/models", timeout=5).json()
    assert listed == {
        "models": [{"modelName": name, "modelUrl": models[name]} for name in sorted(models)]
    }
    described = requests.get(f"{server.url}/models/triple", timeout=5).json()
    assert described == {"modelName": "triple", "modelUrl": models["triple"]}

    # Every model answers, by path and by SageMaker's header on /invocations, also all at once.
    factors = {"double": 2.0, "triple": 3.0, "half": 0.5}
    header = requests.post(
        f"{server.url}/invocations", json=[4.0], headers={TARGET_MODEL: "half"}, timeout=30
    )
    assert header.json() == {"model": "half", "y": [2.0]}

    def call(i: int) -> tuple[str, int, dict]:
        name = sorted(factors)[i % 3]
        return name, i, invoke(server, name, [float(i)]).json()

    with ThreadPoolExecutor(12) as pool:
        for name, i, answer in pool.map(call, range(90)):
            assert answer == {"model": name, "y": [i * factors[name]]}

    # Unloading ends the model's processes (its memory is freed) and leaves its files.
    assert model_processes(models["double"])
    deleted = requests.delete(f"{server.url}/models/double", timeout=30)
    assert deleted.status_code == 200, deleted.text
    deadline = time.monotonic() + 10
    while model_processes(models["double"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not model_processes(models["double"])
    assert (Path(models["double"]) / "model.pt").is_file()
    assert_error(invoke(server, "double", [1.0]), 404, "double", "not loaded")
    assert_error(requests.get(f"{server.url}/models/double", timeout=5), 404, "not loaded")
    assert_error(requests.delete(f"{server.url}/models/double", timeout=5), 404, "not loaded")
    assert invoke(server, "triple", [1.0]).json() == {"model": "triple", "y": [3.0]}

    assert load(server, "double", models["double"]).status_code == 200
    assert invoke(server, "double", [1.0]).json() == {"model": "double", "y": [2.0]}


def test_the_platforms_other_answers(start_server, models) -> None:
    server = mme(start_server)
    assert load(server, "double", models["double"]).status_code == 200
    assert load(server, "triple", models["triple"]).status_code == 200
    assert_error(load(server, "double", models["double"]), 409, "double", "already loaded")

    # Pages: SageMaker passes nextPageToken back as next_page_token until none comes.
    first = requests.get(f"{server.url}/models", params={"limit": 1}, timeout=5).json()
    assert first["models"] == [{"modelName": "double", "modelUrl": models["double"]}]
    token = first["nextPageToken"]
    second = requests.get(
        f"{server.url}/models", params={"limit": 1, "next_page_token": token}, timeout=5
    ).json()
    assert second == {"models": [{"modelName": "triple", "modelUrl": models["triple"]}]}
    bad_token = requests.get(f"{server.url}/models?next_page_token=zz", timeout=5)
    assert_error(bad_token, 400, "next_page_token")

    assert_error(invoke(server, "nothing", [1.0]), 404, "nothing", "not loaded")
    no_target = requests.post(f"{server.url}/invocations", json=[1.0], timeout=5)
    assert_error(no_target, 400, TARGET_MODEL)
    assert_error(load(server, "elsewhere", "http://127.0.0.1:1/model.tar.gz"), 400, "url")
    assert_error(load(server, "a/b", models["half"]), 400, "model_name")
    not_json = requests.post(f"{server.url}/models", data=b"{", timeout=5)
    assert_error(not_json, 400, "model_name")
    put = requests.put(f"{server.url}/models/double", timeout=5)
    assert_error(put, 405, "GET, DELETE")
    assert put.headers["Allow"] == "GET, DELETE"


def test_a_model_that_fails_to_load_says_why_and_the_others_serve_on(
    start_server, models, tmp_path: Path
) -> None:
    broken = model_dir(
        tmp_path,
        "broken",
        """
        def model_fn(model_dir):
            raise ValueError("the weights are missing")
        """,
    )
    server = mme(start_server)
    assert load(server, "double", models["double"]).status_code == 200
    for _ in range(2):  # not loaded, so trying again says the same (not 409)
        response = load(server, "broken", broken)
        assert_error(response, 500, "broken", "ValueError: the weights are missing")
        assert "inference.py:3, in model_fn" in response.json()["message"]
    listed = requests.get(f"{server.url}/models", timeout=5).json()["models"]
    assert [model["modelName"] for model in listed] == ["double"]
    assert not model_processes(broken)
    assert invoke(server, "double", [2.0]).json() == {"model": "double", "y": [4.0]}
    assert server.process.poll() is None


def test_a_load_that_does_not_fit_in_memory_is_refused_with_507(
    start_server, models, tmp_path: Path
) -> None:
    # A worker killed while loading (what the kernel's OOM killer does) is a 507 too.
    killed = model_dir(
        tmp_path,
        "killed",
        """
        import os, signal

        def model_fn(model_dir):
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    server = mme(start_server)
    response = load(server, "killed", killed)
    assert_error(response, 507, "killed", "SIGKILL", "while loading")
    assert load(server, "double", models["double"]).status_code == 200

    # The memory check itself: a reserve larger than the machine refuses every load up front.
    tight = mme(start_server, SERVING_MEMORY_RESERVE_MB=str(1 << 30))
    refused = load(tight, "half", models["half"])
    assert_error(refused, 507, "not enough memory", "half", "SERVING_MEMORY_RESERVE_MB")
    assert not model_processes(models["half"])
    assert requests.get(f"{tight.url}/models", timeout=5).json() == {"models": []}
    assert json.loads(invoke(server, "double", [1.0]).text) == {"model": "double", "y": [2.0]}


def test_the_multi_model_image_serves_models_mounted_where_sagemaker_puts_them(
    client, multi_model_image, models, tmp_path: Path
) -> None:
    labels = client.images.get(multi_model_image).labels
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    container = client.containers.run(
        multi_model_image,
        ["serve"],
        detach=True,
        network_mode="host",
        environment={"SAGEMAKER_BIND_TO_PORT": str(port)},
        volumes={str(tmp_path / "models"): {"bind": "/opt/ml/models", "mode": "ro"}},
    )
    try:
        wait_ready(url, lambda: exited(container), lambda: container.logs().decode())
        for name in ("double", "half"):
            body = {"model_name": name, "url": f"/opt/ml/models/{name}/model"}
            loaded = requests.post(f"{url}/models", json=body, timeout=120)
            assert loaded.status_code == 200, loaded.text
        answer = requests.post(
            f"{url}/invocations", json=[3.0], headers={TARGET_MODEL: "half"}, timeout=30
        )
        assert answer.json() == {"model": "half", "y": [1.5]}
        assert requests.delete(f"{url}/models/half", timeout=30).status_code == 200
        double = requests.post(f"{url}/models/double/invoke", json=[3.0], timeout=30)
        assert double.json() == {"model": "double", "y": [6.0]}
    finally:
        container.remove(force=True)


def test_the_multi_model_image_is_the_images_layers_and_a_label(
    client, image, multi_model_image
) -> None:
    """Built after the image, the variant reuses every layer from Docker's cache: the torch
    stack is not installed, nor stored, a second time (minutes, and 6 GB of the disk)."""
    layers = client.images.get(image).attrs["RootFS"]["Layers"]
    assert client.images.get(multi_model_image).attrs["RootFS"]["Layers"] == layers


def exited(container) -> bool:
    container.reload()
    return container.status == "exited"
