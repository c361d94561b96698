"""Unit tests for the example digits model: training script, artifacts and handlers (no server)."""

import base64
import importlib.util
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO_ROOT / "model" / "train.py"
INFERENCE_PATH = REPO_ROOT / "code" / "inference.py"


def _load_inference() -> ModuleType:
    # The folder is named ``code``, which shadows the stdlib module: load the file by path.
    spec = importlib.util.spec_from_file_location("example_inference", INFERENCE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inference = _load_inference()


def _png(image: np.ndarray | Image.Image) -> bytes:
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits-build")
    subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--out", str(out)],
        check=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    return out


@pytest.fixture(scope="module")
def heldout(build: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(build / "heldout.npz") as data:
        return data["images"], data["labels"]


def test_metrics(build: Path, heldout: tuple[np.ndarray, np.ndarray]) -> None:
    metrics = json.loads((build / "metrics.json").read_text())
    images, labels = heldout
    assert metrics["heldout_accuracy"] >= 0.95
    assert metrics["heldout_count"] == len(labels) == len(images) > 0
    assert metrics["epochs"] > 0
    assert metrics["train_seconds"] > 0


def test_heldout_format(heldout: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = heldout
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8)
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    assert set(np.unique(labels)) == set(range(10))


def test_torchscript_and_onnx_agree(build: Path, heldout: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = heldout
    batch = inference.preprocess(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(build / "model" / "model.pt"))
    with torch.inference_mode():
        torch_logits = scripted(batch).numpy()
    session = ort.InferenceSession(
        str(build / "model-onnx" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    (onnx_logits,) = session.run(["logits"], {"input": batch.numpy()})
    assert torch_logits.shape == onnx_logits.shape == (len(images), 10)
    assert np.array_equal(torch_logits.argmax(axis=1), onnx_logits.argmax(axis=1))
    assert np.abs(torch_logits - onnx_logits).max() < 1e-4
    assert (torch_logits.argmax(axis=1) == labels).mean() >= 0.95


def test_preprocess_shape_and_dtype(heldout: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = heldout
    batch = inference.preprocess(images[:3])
    assert batch.dtype == torch.float32
    assert tuple(batch.shape) == (3, 1, 8, 8)
    expected = (images[0].astype(np.float32) / 255 - inference.MEAN) / inference.STD
    np.testing.assert_allclose(batch[0, 0].numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("content_type", ["image/png", "application/x-image"])
def test_input_fn_png(heldout: tuple[np.ndarray, np.ndarray], content_type: str) -> None:
    image = heldout[0][0]
    tensor = inference.input_fn(_png(image), content_type)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (1, 1, 8, 8)
    assert torch.equal(tensor, inference.preprocess(image[None]))


def test_input_fn_json_base64(heldout: tuple[np.ndarray, np.ndarray]) -> None:
    image = heldout[0][1]
    body = json.dumps({"image": base64.b64encode(_png(image)).decode("ascii")}).encode()
    tensor = inference.input_fn(body, "application/json")
    assert torch.equal(tensor, inference.preprocess(image[None]))


def test_input_fn_jpeg_rgb_and_resize() -> None:
    img = Image.new("RGB", (64, 32), (255, 255, 255))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG")
    tensor = inference.input_fn(buffer.getvalue(), "image/jpeg")
    assert tuple(tensor.shape) == (1, 1, 8, 8)
    white = (1.0 - inference.MEAN) / inference.STD
    np.testing.assert_allclose(tensor.numpy(), white, atol=0.05)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"\x00garbage, not an image\xff", "image/png", "not a decodable image"),
        (b"", "application/x-image", "empty"),
        (b'{"picture": "abc"}', "application/json", '"image"'),
        (b"[1, 2, 3]", "application/json", '"image"'),
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"image": "%%% not base64 %%%"}', "application/json", "base64"),
        (b'{"image": "aGVsbG8gd29ybGQ="}', "application/json", "not a decodable image"),
        (b"1,2,3", "text/csv", "application/json"),
    ],
)
def test_input_fn_rejects_bad_input(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inference.input_fn(body, content_type)


def test_input_fn_rejects_oversized_image() -> None:
    big = _png(Image.new("1", (5000, 5000)))  # 1-bit, compresses to a few KiB
    assert len(big) < 100_000
    with pytest.raises(ValueError, match="too large"):
        inference.input_fn(big, "image/png")


def test_output_fn_json() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.0, 5.0, 0.3, 0.2, -3.0, 1.0, 0.5]])
    for prediction in (logits, logits.numpy()):
        body, content_type = inference.output_fn(prediction, "application/json")
        assert content_type == "application/json"
        result = json.loads(body)
        assert result["predicted_class"] == 4
        probabilities = result["probabilities"]
        assert len(probabilities) == 10
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert int(np.argmax(probabilities)) == 4
    body, _ = inference.output_fn(logits, "*/*")
    assert json.loads(body)["predicted_class"] == 4


def test_output_fn_rejects_csv() -> None:
    with pytest.raises(ValueError, match="application/json"):
        inference.output_fn(torch.zeros(1, 10), "text/csv")


def test_end_to_end_handlers(build: Path, heldout: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = heldout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(build / "model" / "model.pt"))
    correct = 0
    for image, label in zip(images[:50], labels[:50], strict=True):
        with torch.inference_mode():
            logits = scripted(inference.input_fn(_png(image), "image/png"))
        body, _ = inference.output_fn(logits, "application/json")
        correct += int(json.loads(body)["predicted_class"] == label)
    assert correct >= 45
