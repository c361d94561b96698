"""The user's document's handler code served by the real server (native, no Docker).

Verbatim (../shared/seed/, as the document has it), each fault a user meets is one line: the
server's last line when the model cannot load (the exception, and the file and line of
inference.py), or a JSON error naming the function that failed. Fixed
(examples/image_classifier/, packaged as its README says), both variants answer the
document's request, ``{"image": "<base64 of an image file>"}``, in the document's shape.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.conftest import REPO
from tests.integration.conftest import ServerProcess

SEED = REPO.parent / "shared" / "seed"
SEPARATE = SEED / "inference_separate_functions.py"
TRANSFORM = SEED / "inference_transform_fn.py"
EXAMPLE = REPO / "examples" / "image_classifier"

pytestmark = pytest.mark.skipif(
    not (SEPARATE.is_file() and TRANSFORM.is_file()),
    reason=f"the document's seed code is not in {SEED} (a checkout without ../shared/seed/)",
)

RGBA_MISMATCH = (
    "RuntimeError: The size of tensor a (4) must match the size of tensor b (3) at "
    "non-singleton dimension 0"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt as the example writes it: torch.save(model) of classifier.ImageClassifier."""
    out = tmp_path_factory.mktemp("image-classifier") / "model"
    script = EXAMPLE / "make_model.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True)
    return out


def image_request(mode: str) -> bytes:
    """The document's request: a PNG of ``mode`` (RGB, or RGBA as many PNGs are), base64."""
    color = {"RGB": (200, 80, 20), "RGBA": (200, 80, 20, 128), "L": 120}[mode]
    buffer = io.BytesIO()
    Image.new(mode, (40, 30), color).save(buffer, format="PNG")
    return json.dumps({"image": base64.b64encode(buffer.getvalue()).decode()}).encode()


def post(server: ServerProcess, body: bytes, content_type: str = "application/json", **headers):
    headers = {"Content-Type": content_type, **headers}
    return requests.post(f"{server.url}/invocations", data=body, headers=headers, timeout=60)


def verbatim_code(tmp_path: Path, seed: Path) -> Path:
    """A code directory with the seed as inference.py, beside the model's class module."""
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(seed, code / "inference.py")
    shutil.copy(EXAMPLE / "code" / "classifier.py", code)
    return code


def load_failure(server: ServerProcess) -> str:
    """The server's one error line, after it exited 1 within seconds of starting."""
    assert server.process.wait(60) == 1, server.log()[-3000:]
    assert time.monotonic() - server.started < 30
    (line,) = [line for line in server.log().splitlines() if "[ERROR] serving: " in line]
    return line.split("[ERROR] serving: ", 1)[1]


def error_message(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert "Traceback" not in response.text
    body = response.json()
    assert body["code"] == status
    return body["message"]


def test_verbatim_separate_functions_fail_at_start_with_the_line_of_inference_py(
    tmp_path, start_server, model_dir
):
    code = verbatim_code(tmp_path, SEPARATE)
    server = start_server(SERVING_MODEL_DIR=str(model_dir), SERVING_CODE_DIR=str(code))
    assert load_failure(server) == (
        "the model failed to load: NameError: name 'os' is not defined "
        f"(at {code}/inference.py:47, in model_fn)"
    )

    # The user adds the import (at the end, which keeps the document's line numbers).
    with (code / "inference.py").open("a") as module:
        module.write("\nimport os\n")
    server = start_server(SERVING_MODEL_DIR=str(model_dir), SERVING_CODE_DIR=str(code))
    assert load_failure(server) == (
        "the model failed to load: UnpicklingError: torch.load refused a whole pickled model "
        "(classifier.ImageClassifier), as torch does by default (weights_only=True): save a "
        "state_dict or TorchScript instead, or, if you trust the file, load it with "
        "torch.load(..., weights_only=False) or set SERVING_TRUST_PICKLED_MODEL=true "
        f"(at {code}/inference.py:55, in model_fn)"
    )


def test_verbatim_separate_functions_fail_per_request_naming_the_function(
    tmp_path, start_server, model_dir
):
    code = verbatim_code(tmp_path, SEPARATE)
    with (code / "inference.py").open("a") as module:
        module.write("\nimport os\n")
    # The setting lets the user's own torch.load(model_path) unpickle the model.
    server = start_server(
        SERVING_MODEL_DIR=str(model_dir),
        SERVING_CODE_DIR=str(code),
        SERVING_TRUST_PICKLED_MODEL="true",
    )
    server.wait_ready()
    rgb, rgba = image_request("RGB"), image_request("RGBA")
    assert error_message(post(server, rgb), 500) == (
        "output_fn failed: NameError: name 'datetime' is not defined"
    )
    assert error_message(post(server, rgba), 500) == f"input_fn failed: {RGBA_MISMATCH}"
    assert error_message(post(server, rgb, Accept="text/csv"), 500) == (
        "output_fn failed: NameError: name 'accept' is not defined"
    )
    assert error_message(post(server, b"\x89PNG", "image/png"), 400) == (
        "could not decode the request: Unsupported content type: image/png"
    )


def test_verbatim_transform_fn_needs_trust_then_fails_per_request(
    tmp_path, start_server, model_dir
):
    code = verbatim_code(tmp_path, TRANSFORM)  # no model_fn: the default one loads best.pt
    server = start_server(SERVING_MODEL_DIR=str(model_dir), SERVING_CODE_DIR=str(code))
    assert load_failure(server) == (
        "the model failed to load: ModelLoadError: best.pt is a pickled model "
        "(classifier.ImageClassifier), and loading it runs code from the file: set "
        "SERVING_TRUST_PICKLED_MODEL=true if you trust it, or ship TorchScript, a "
        "torch.export .pt2 or ONNX instead"
    )

    server = start_server(
        SERVING_MODEL_DIR=str(model_dir),
        SERVING_CODE_DIR=str(code),
        SERVING_TRUST_PICKLED_MODEL="true",
    )
    server.wait_ready()
    rgb, rgba = image_request("RGB"), image_request("RGBA")
    answer = post(server, rgb)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"predicted_class", "confidence", "all_probabilities"}
    assert error_message(post(server, rgba), 500) == f"transform_fn failed: {RGBA_MISMATCH}"
    assert error_message(post(server, rgb, Accept="text/csv"), 500) == (
        "transform_fn returned None for accept='text/csv'; it must return the answer's body "
        "(bytes or str), or (body, content_type)"
    )
    assert error_message(post(server, b"\x89PNG", "image/png"), 500) == (
        "transform_fn failed: ValueError: Unsupported content type: image/png"
    )


@pytest.mark.parametrize("program", ["inference.py", "inference_transform_fn.py"])
def test_the_fixed_example_answers_the_documents_request(
    tmp_path, start_server, model_dir, program
):
    archive = tmp_path / "model.tar.gz"
    package = [sys.executable, str(REPO / "scripts" / "package_model.py")]
    code = EXAMPLE / "code"
    subprocess.run(
        [*package, "--model-dir", str(model_dir), "--code-dir", str(code), "--out", str(archive)],
        check=True,
    )
    # No SERVING_TRUST_PICKLED_MODEL: the fixed model_fn trusts best.pt itself.
    server = start_server(SERVING_MODEL_ARCHIVE=str(archive), SAGEMAKER_PROGRAM=program)
    server.wait_ready()
    for mode in ("RGB", "RGBA", "L"):
        answer = post(server, image_request(mode))
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"].startswith("application/json")
        body = answer.json()
        if program == "inference.py":
            assert set(body) == {"statusCode", "predictions", "confidence_scores", "timestamp"}
            assert body["statusCode"] == 200
            (predicted,) = body["predictions"]
            (probabilities,) = body["confidence_scores"]
        else:
            assert set(body) == {"predicted_class", "confidence", "all_probabilities"}
            predicted, probabilities = body["predicted_class"], body["all_probabilities"]
            assert body["confidence"] == pytest.approx(max(probabilities))
        assert len(probabilities) == 10
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert probabilities[predicted] == max(probabilities)
    assert error_message(post(server, image_request("RGB"), Accept="text/csv"), 500) == (
        f"{'output_fn' if program == 'inference.py' else 'transform_fn'} failed: "
        "ValueError: Unsupported accept type: text/csv"
    )
