"""The predict command on the example digits model, as a user runs it first: its model.tar.gz
with code/inference.py, a PNG and a JSON body as one batch, and a body its input_fn refuses."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sagemaker_torch_serving.archive import pack
from tests.conftest import REPO

MS = r"\d+\.\d\d ms"


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_class(model_dir: Path, body: bytes) -> int:
    """The class the example's own functions give: its input_fn, the TorchScript model."""
    spec = importlib.util.spec_from_file_location("digits_inference", REPO / "code/inference.py")
    assert spec is not None and spec.loader is not None
    inference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inference)
    model = torch.jit.load(str(model_dir / "model.pt")).eval()
    with torch.inference_mode():
        return int(model(inference.input_fn(body, "image/png")).argmax())


@pytest.fixture(scope="module")
def archive(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits-archive") / "model.tar.gz"
    pack(out, digits / "model", REPO / "code")
    return out


def test_the_digits_archive_answers_a_png_and_a_json_in_one_batch_and_refuses_a_bad_body(
    digits: Path, archive: Path, tmp_path: Path
) -> None:
    with np.load(digits / "heldout.npz") as data:
        images = data["images"][:2]
    first, second = png(images[0]), png(images[1])
    (tmp_path / "digit.png").write_bytes(first)
    (tmp_path / "digit.json").write_text(json.dumps({"image": base64.b64encode(second).decode()}))
    (tmp_path / "bad.json").write_text('{"picture": "x"}')
    command = [sys.executable, "-m", "sagemaker_torch_serving", "predict", "--model", str(archive)]
    for name in ("digit.png", "digit.json", "bad.json"):
        command += ["--input", name]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, check=False, timeout=120
    )
    assert result.returncode == 1, result.stderr  # bad.json was answered 400
    lines = result.stdout.splitlines()
    assert lines[1].endswith("code/inference.py: user input_fn, output_fn; the rest are defaults")
    answers = [json.loads(lines[4]), json.loads(lines[6])]
    assert [answer["predicted_class"] for answer in answers] == [
        expected_class(digits / "model", first),
        expected_class(digits / "model", second),
    ]
    assert all(abs(sum(answer["probabilities"]) - 1) < 1e-4 for answer in answers)
    assert lines[7].startswith("[2] bad.json (application/json, 16 bytes): 400 application/json")
    assert lines[8] == (
        'could not decode the request: JSON body must be an object with an "image" field: '
        '{"image": "<base64>"}'
    )
    assert [re.sub(MS, "MS", line) for line in lines[9:]] == [
        "time: unpack MS",
        "time: model load MS",
        "time: input [0] MS, [1] MS, [2] MS",
        "time: predict MS (the default predict_fn, batch of 2)",  # bad.json was not decoded
        "time: output [0] MS, [1] MS",
    ]
