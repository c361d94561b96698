"""Train the example digits CNN and write the artifacts the serving runtime consumes.

Trains a small convolutional network on scikit-learn's bundled 8x8 handwritten digits
(``sklearn.datasets.load_digits``), deterministically and in a few seconds on 2 CPU cores.
Images are quantized to uint8 (white digit on black, exactly what a PNG holds) and run
through ``preprocess`` from ``code/inference.py``, the single source of truth shared with
the serving handlers.

Writes, under ``--out`` (default ``build``):

* ``model/model.pt``        TorchScript model: float32 ``[N, 1, 8, 8]`` in, logits ``[N, 10]`` out
* ``model-onnx/model.onnx`` the same model in ONNX (input ``input``, output ``logits``, batch axis
  ``batch``), checked against torch with onnxruntime
* ``heldout.npz``           held-out split: ``images`` uint8 ``[M, 8, 8]``, ``labels`` int64 ``[M]``
* ``metrics.json``          held-out accuracy measured through the serving preprocessing

Usage: ``python model/train.py --out build``
"""

import argparse
import importlib.util
import io
import json
import time
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
INFERENCE_PATH = REPO_ROOT / "code" / "inference.py"

SEED = 0
EPOCHS = 40
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
ONNX_OPSET = 17


def load_inference_module() -> ModuleType:
    """Load ``code/inference.py`` by path (the ``code`` folder shadows the stdlib module)."""
    spec = importlib.util.spec_from_file_location("example_inference", INFERENCE_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {INFERENCE_PATH}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers, one 2x2 max-pool, two linear layers; returns raw logits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def quantize(images: np.ndarray) -> np.ndarray:
    """Map load_digits values 0..16 to uint8 0..255, as a PNG of the digit would store them."""
    return np.round(images * 255.0 / 16.0).astype(np.uint8)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Minibatch Adam training with a deterministic shuffle and cosine learning-rate decay."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()


def png_bytes(image: np.ndarray) -> bytes:
    """Encode one uint8 ``[8, 8]`` image as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build"), help="output folder")
    args = parser.parse_args()
    out: Path = args.out

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    inference = load_inference_module()

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    train_images, test_images = quantize(x_train), quantize(x_test)
    test_labels = y_test.astype(np.int64)

    model = DigitsCNN()
    started = time.perf_counter()
    train(model, inference.preprocess(train_images), torch.from_numpy(y_train.astype(np.int64)))
    train_seconds = time.perf_counter() - started

    test_input = inference.preprocess(test_images)
    with torch.inference_mode():
        eager_logits = model(test_input)
    accuracy = float((eager_logits.argmax(dim=1).numpy() == test_labels).mean())

    # TorchScript (torch.jit is deprecated in recent torch but is what model_fn loads).
    (out / "model").mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
        scripted.save(str(out / "model" / "model.pt"))
        loaded = torch.jit.load(str(out / "model" / "model.pt"))
    with torch.inference_mode():
        script_logits = loaded(test_input)
    assert torch.allclose(script_logits, eager_logits, atol=1e-5), "TorchScript output differs"

    # ONNX via the legacy (TorchScript-based) exporter.
    onnx_path = out / "model-onnx" / "model.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (test_input[:1],),
            str(onnx_path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"input": test_input.numpy()})
    max_diff = float(np.abs(onnx_logits - eager_logits.numpy()).max())
    assert max_diff < 1e-4, f"ONNX output differs from torch by {max_diff}"

    # End to end through the handlers, as a client over HTTP would see it (PNG in, JSON out).
    correct = 0
    for image, label in zip(test_images, test_labels, strict=True):
        request = inference.input_fn(png_bytes(image), "image/png")
        with torch.inference_mode():
            body, _ = inference.output_fn(loaded(request), "application/json")
        correct += int(json.loads(body)["predicted_class"] == label)
    assert correct / len(test_labels) == accuracy, "handler path disagrees with batch accuracy"

    np.savez(out / "heldout.npz", images=test_images, labels=test_labels)
    metrics = {
        "heldout_accuracy": round(accuracy, 6),
        "heldout_count": len(test_labels),
        "train_seconds": round(train_seconds, 3),
        "epochs": EPOCHS,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"heldout_accuracy={accuracy:.4f} ({correct}/{len(test_labels)}) "
        f"train_seconds={train_seconds:.2f} epochs={EPOCHS} onnx_max_diff={max_diff:.2e} "
        f"out={out}"
    )


if __name__ == "__main__":
    main()
