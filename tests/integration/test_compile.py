"""SERVING_COMPILE through the real server: torch.compile on the CPU (inductor builds C++ with
g++), compiled by the warm-up before the first request; without a compiler, one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.integration.test_server import post


@pytest.fixture
def module_model(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A directory holding a whole pickled nn.Module (torch's own classes only)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.save(model, model_dir / "model.pt")
    return model_dir, model.eval()


def test_the_warm_up_compiles_the_model_and_it_answers_as_before(
    tmp_path, start_server, module_model
):
    model_dir, model = module_model
    cache = tmp_path / "inductor-cache"
    server = start_server(
        SERVING_MODEL_DIR=str(model_dir),
        SERVING_TRUST_PICKLED_MODEL="true",
        SERVING_COMPILE="true",
        SERVING_WARMUP_SHAPE="1,4",
        TORCHINDUCTOR_CACHE_DIR=str(cache),
    )
    server.wait_ready(timeout=300)
    # Compiled at load, by the warm-up: inductor's C++ is there before any request.
    assert list(cache.rglob("*.so")), "nothing was compiled before the first request"
    rows = [[1.0, -2.0, 3.0, 0.5], [0.0, 1.0, 0.0, -1.0]]
    with torch.no_grad():
        expected = model(torch.tensor(rows)).tolist()
    for batch in ([rows[0]], rows):
        response = post(server, str(batch).encode(), "application/json")
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json(), expected[: len(batch)], atol=1e-5)
    assert "SERVING_COMPILE applies to" not in server.log()


def test_without_a_cpp_compiler_the_server_stops_with_one_line(start_server, module_model):
    model_dir, _ = module_model
    server = start_server(
        SERVING_MODEL_DIR=str(model_dir),
        SERVING_TRUST_PICKLED_MODEL="true",
        SERVING_COMPILE="true",
        CXX="/nonexistent/g++",  # inductor's compiler: none that runs
    )
    assert server.process.wait(90) == 1
    assert (
        "the model failed to load: ModelLoadError: SERVING_COMPILE=true, but torch.compile "
        "needs a C++ compiler and none was found: install one (apt-get install g++; CXX may "
        "name another) or set SERVING_COMPILE=false"
    ) in server.log()
