"""The three workloads: model files, handler code and one request body each.

Each workload gets two code folders, with the same input_fn/output_fn:
- ``code-ours``: only what the workload needs; model_fn and predict_fn are the defaults of
  the runtime (and of sagemaker-pytorch-inference): TorchScript loading, a forward pass;
- ``code-portable``: model_fn and predict_fn written out too, since the stock pattern
  (sagemaker-inference) has no defaults for them. The stock contender runs it, and so does
  "ours (defaults)", so that both run the very same code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

MODEL_AND_PREDICT = """

def model_fn(model_dir):
    model = torch.jit.load(f"{model_dir}/model.pt", map_location="cpu")
    return model.eval()


def predict_fn(data, model):
    with torch.inference_mode():
        return model(data)
"""

TINY_CODE = """import json

import torch


def input_fn(body, content_type):
    return torch.tensor(json.loads(body), dtype=torch.float32)


def output_fn(prediction, accept):
    return json.dumps(prediction.tolist())
"""

IMAGE_CODE = """import io
import json

import numpy as np
import torch
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def input_fn(body, content_type):
    image = Image.open(io.BytesIO(body)).convert("RGB").resize((224, 224), Image.BILINEAR)
    array = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).unsqueeze(0)


def output_fn(prediction, accept):
    scores = torch.softmax(torch.as_tensor(prediction), dim=1)[0]
    top = torch.topk(scores, 5)
    return json.dumps({"classes": top.indices.tolist(), "scores": top.values.tolist()})
"""


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    root: Path  # root/model holds model.pt; root/code-ours, root/code-portable
    body: bytes
    content_type: str

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def code_dir(self, flavour: str) -> Path:
        return self.root / f"code-{flavour}"


def prepare(name: str, out: Path) -> Workload:
    """Write the workload's files under ``out/name`` (the model is reused when there)."""
    root = out / name
    if name == "tiny":
        return _prepare(root, name, _tiny_model, TINY_CODE, _tiny_body, "application/json")
    if name == "image":
        return _prepare(root, name, _resnet(18), IMAGE_CODE, _jpeg, "image/jpeg")
    if name == "image50":
        return _prepare(root, name, _resnet(50), IMAGE_CODE, _jpeg, "image/jpeg")
    if name == "digits":
        code = (REPO / "code" / "inference.py").read_text()
        return _prepare(root, name, _digits_model, code, _digit_png, "image/png")
    raise ValueError(f"unknown workload {name!r}")


def _prepare(
    root: Path,
    name: str,
    make_model: Callable[[Path, Path], None],
    code: str,
    make_body: Callable[[Path], bytes],
    content_type: str,
) -> Workload:
    model_dir = root / "model"
    if not (model_dir / "model.pt").exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        make_model(model_dir / "model.pt", root)
    for flavour, text in (("ours", code), ("portable", _portable(code))):
        folder = root / f"code-{flavour}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "inference.py").write_text(text)
    return Workload(name, root, make_body(root), content_type)


def _portable(code: str) -> str:
    header = "" if "import torch" in code else "import torch\n"
    return header + code + MODEL_AND_PREDICT


def _tiny_model(path: Path, _root: Path) -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    torch.jit.script(mlp.eval()).save(str(path))


def _tiny_body(_root: Path) -> bytes:
    return json.dumps([np.random.default_rng(0).random(64).round(6).tolist()]).encode()


def _resnet(depth: int) -> Callable[[Path, Path], None]:
    def make(path: Path, _root: Path) -> None:
        from bench.resnet import resnet18, resnet50

        torch.manual_seed(0)
        model = (resnet18 if depth == 18 else resnet50)().eval()
        with torch.inference_mode():
            traced = torch.jit.trace(model, torch.zeros(1, 3, 224, 224))
        traced.save(str(path))

    return make


def _jpeg(_root: Path) -> bytes:
    """One of the two photos scikit-learn ships (china.jpg, 640x427), as JPEG bytes."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _digits_model(path: Path, root: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "model" / "train.py"), "--out", str(root / "train")],
        check=True,
        capture_output=True,
    )
    (root / "train" / "model" / "model.pt").rename(path)


def _digit_png(root: Path) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.load(root / "train" / "heldout.npz")["images"][0]).save(buffer, "PNG")
    return buffer.getvalue()
