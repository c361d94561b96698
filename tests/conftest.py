"""Fixtures for every test: the example model trained as `make model` does, and a tiny TorchScript
model whose every handler is a default."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[1]
__all__ = ["REPO", "free_port", "load_script"]


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module, as `python scripts/<name>.py` runs it: with scripts/ on
    sys.path, for the scripts' shared _common."""
    path = REPO / "scripts" / f"{name}.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model, trained and exported as `make model` does (build/model, heldout.npz)."""
    out = tmp_path_factory.mktemp("digits")
    subprocess.run(
        [sys.executable, str(REPO / "model" / "train.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


class Scale(torch.nn.Module):
    """y = 2x, plus a column holding how many rows the forward pass saw (to observe batching)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.full_like(x[:, :1], float(x.shape[0]))
        return torch.cat([x * 2, rows], dim=1)


@pytest.fixture(scope="session")
def scale_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only a TorchScript model: every handler is a default."""
    model_dir = tmp_path_factory.mktemp("scale-model")
    torch.jit.script(Scale()).save(str(model_dir / "model.pt"))
    return model_dir
