"""The default predict_fn: eval mode as the official toolkit's, and whose fault a failure is."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sagemaker_torch_serving.errors import BadRequest, OutOfMemory
from sagemaker_torch_serving.handler.context import ServingContext
from sagemaker_torch_serving.handler.contract import Contract, load_contract
from sagemaker_torch_serving.handler.model_loading import load_model
from sagemaker_torch_serving.handler.pipeline import Answer, Pipeline, Request
from sagemaker_torch_serving.handler.predict import Predictor
from sagemaker_torch_serving.settings import Settings


def pipeline_for(tmp_path: Path, model: Any, contract: Contract | None = None) -> Pipeline:
    """A pipeline around ``model`` as a user's model_fn returned it."""
    settings = Settings.from_env({"SERVING_MODEL_DIR": str(tmp_path)})
    return Pipeline(settings, contract or Contract(), model, {"gpu_id": None})


def post(pipeline: Pipeline, *bodies: bytes, content_type: str = "application/json") -> list[Any]:
    requests = [
        Request(f"id-{index}", body, content_type, None, ServingContext({}, f"id-{index}", {}))
        for index, body in enumerate(bodies)
    ]
    return pipeline.run(requests)


def message(answer: Answer) -> str:
    body = json.loads(answer.body)
    assert body["code"] == answer.status
    return str(body["message"])


def npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def dropout_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.Dropout(p=0.5), nn.Linear(64, 1))
    assert model.training  # as a model_fn that builds a module and forgets .eval() returns it
    return model


# -- eval mode -------------------------------------------------------------------------------


def test_the_default_predict_fn_runs_a_training_mode_module_in_eval_mode(tmp_path: Path) -> None:
    model = dropout_model()
    pipeline = pipeline_for(tmp_path, model)
    body = b"[[1, 2, 3, 4]]"
    first = post(pipeline, body, body)  # one forward pass of two identical rows
    second = post(pipeline, body)
    answers = [json.loads(answer.body) for answer in [*first, *second]]
    assert [answer.status for answer in [*first, *second]] == [200, 200, 200]
    # No dropout: the same answer every time (to float rounding: batches of 1 and 2 differ).
    np.testing.assert_allclose(answers[1], answers[0], rtol=1e-5)
    np.testing.assert_allclose(answers[2], answers[0], rtol=1e-5)
    with torch.no_grad():
        expected = model.eval()(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    np.testing.assert_allclose(answers[0], expected.numpy(), rtol=1e-6)
    assert not model.training


def test_a_users_predict_fn_keeps_the_mode_its_model_fn_chose(tmp_path: Path) -> None:
    # Monte Carlo dropout: the user's predict_fn wants dropout at inference; the runtime must
    # not switch it off behind its back (the official toolkit leaves a user's predict_fn alone).
    module = tmp_path / "inference.py"
    module.write_text("def predict_fn(data, model):\n    return model(data)\n")
    model = dropout_model()
    pipeline = pipeline_for(tmp_path, model, load_contract(module, required=True))
    assert model.training
    assert post(pipeline, b"[[1, 2, 3, 4]]")[0].status == 200


def test_an_exported_module_which_refuses_eval_still_serves(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.Dropout(p=0.5), nn.Linear(3, 2)).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.randn(2, 4),), dynamic_shapes={"input": {0: batch}})
    torch.export.save(program, str(tmp_path / "model.pt2"))
    model = load_model(tmp_path, torch.device("cpu"), trust_pickled=False)
    assert model.training  # what torch.export's modules report; their .eval() raises
    pipeline = pipeline_for(tmp_path, model)
    answer = post(pipeline, b"[[1, 2, 3, 4]]")[0]
    assert answer.status == 200
    with torch.no_grad():
        expected = net(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    np.testing.assert_allclose(json.loads(answer.body), expected.numpy(), rtol=1e-5)


# -- an input that does not fit the model is the client's fault (400) -------------------------


def _onnx_linear(tmp_path: Path) -> Any:
    folder = tmp_path / "onnx"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            nn.Linear(4, 3),
            (torch.randn(1, 4),),
            str(folder / "model.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    return load_model(folder, torch.device("cpu"), trust_pickled=False)


def _exported_linear(tmp_path: Path) -> Any:
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        nn.Linear(4, 3), (torch.randn(2, 4),), dynamic_shapes={"input": {0: batch}}
    )
    folder = tmp_path / "pt2"
    folder.mkdir()
    torch.export.save(program, str(folder / "model.pt2"))
    return load_model(folder, torch.device("cpu"), trust_pickled=False)


MISMATCHES: dict[str, tuple[Callable[[Path], Any], Any, str]] = {
    # name: (the model, an input that does not fit it, what torch says, as the client gets it)
    "Linear, wrong width": (
        lambda _: nn.Linear(4, 3),
        torch.zeros(2, 5),
        "mat1 and mat2 shapes cannot be multiplied (2x5 and 4x3)",
    ),
    "TorchScript Linear, wrong width": (
        lambda _: torch.jit.script(nn.Sequential(nn.Linear(4, 3), nn.ReLU())),
        torch.zeros(2, 5),
        "mat1 and mat2 shapes cannot be multiplied (2x5 and 4x3)",
    ),
    "Linear, integer input": (
        lambda _: nn.Linear(4, 3),
        torch.zeros(2, 4, dtype=torch.int64),
        "mat1 and mat2 must have the same dtype, but got Long and Float",
    ),
    "Conv2d, wrong channels": (
        lambda _: nn.Conv2d(3, 8, 3),
        torch.zeros(1, 4, 8, 8),
        "expected input[1, 4, 8, 8] to have 3 channels, but got 4 channels instead",
    ),
    "TorchScript Conv2d, wrong rank": (
        lambda _: torch.jit.script(nn.Conv2d(3, 8, 3)),
        torch.zeros(8, 8),
        "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [8, 8]",
    ),
    "Conv2d, integer input": (
        lambda _: nn.Conv2d(3, 8, 3),
        torch.zeros(1, 3, 8, 8, dtype=torch.int64),
        "Input type (long int) and bias type (float) should be the same",
    ),
    "TorchScript, 1-D input": (
        lambda _: torch.jit.script(nn.Sequential(nn.Flatten(1), nn.Linear(4, 3))),
        torch.zeros(4),
        "Dimension out of range",
    ),
    "torch.export, wrong width": (
        _exported_linear,
        torch.zeros(2, 5),
        "Guard failed: input.size()[1] == 4",
    ),
    "ONNX, wrong width": (
        _onnx_linear,
        torch.zeros(2, 5),
        "Got invalid dimensions for input: x",
    ),
    "ONNX, wrong dtype": (
        _onnx_linear,
        torch.zeros(2, 4, dtype=torch.float64),
        "Unexpected input data type. Actual: (tensor(double)) , expected: (tensor(float))",
    ),
}


@pytest.mark.parametrize("case", MISMATCHES)
def test_an_input_that_does_not_fit_the_model_is_a_400_with_torchs_reason(
    tmp_path: Path, case: str
) -> None:
    make_model, data, reason = MISMATCHES[case]
    predictor = Predictor(make_model(tmp_path))
    with pytest.raises(BadRequest) as caught:
        predictor.predict(data)
    text = str(caught.value)
    assert text.startswith("the input does not fit the model: ")
    assert reason in text
    assert "TorchScript interpreter" not in text
    assert "\n" not in text


def test_a_mismatch_is_a_400_through_the_pipeline_with_the_real_reason(tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, torch.jit.script(nn.Sequential(nn.Linear(4, 3))))
    wide, fits = post(pipeline, b"[[1, 2, 3, 4, 5]]", b"[[1, 2, 3, 4]]")
    assert wide.status == 400
    assert message(wide) == (
        "the input does not fit the model: mat1 and mat2 shapes cannot be multiplied (1x5 and 4x3)"
    )
    assert fits.status == 200
    integers = npy(np.zeros((1, 4), dtype=np.int64))
    answer = post(pipeline, integers, content_type="application/x-npy")[0]
    assert answer.status == 400
    assert message(answer) == (
        "the input does not fit the model: mat1 and mat2 must have the same dtype, "
        "but got Long and Float"
    )


# -- anything else the model raises is its own fault (500, saying what it was) ----------------


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 100):
            raise RuntimeError("boom: the model's own check failed")
        return x * 2


class NoCompiler(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "InvalidCxxCompiler: No working C++ compiler found in cpp.cxx\n\nSet X=1"
        )


class CudaFailure(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "CUDA error: an illegal memory access was encountered\n"
            "CUDA kernel errors might be asynchronously reported at some other API call"
        )


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (torch.jit.script(Boom()), "RuntimeError: boom: the model's own check failed"),
        (Boom(), "RuntimeError: boom: the model's own check failed"),
        (
            NoCompiler(),
            "RuntimeError: InvalidCxxCompiler: No working C++ compiler found in cpp.cxx",
        ),
        (CudaFailure(), "RuntimeError: CUDA error: an illegal memory access was encountered"),
    ],
    ids=["TorchScript raise", "eager raise", "no compiler", "CUDA error"],
)
def test_a_failure_of_the_model_itself_is_a_500_that_says_what_it_was(
    tmp_path: Path, model: nn.Module, expected: str
) -> None:
    answer = post(pipeline_for(tmp_path, model), b"[[1000]]")[0]
    assert answer.status == 500
    text = message(answer)
    assert text.startswith("the model's forward pass (the default predict_fn) failed: ")
    assert expected in text
    assert "Traceback" not in text
    assert "File " not in text


def test_a_model_failing_on_one_request_answers_the_others(tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, torch.jit.script(Boom()))
    failed, fine = post(pipeline, b"[[1000]]", b"[[1]]")  # one pass fails, then each alone
    assert (failed.status, fine.status) == (500, 200)
    assert json.loads(fine.body) == [[2.0]]


def test_out_of_memory_in_the_model_stays_507(tmp_path: Path) -> None:
    class Greedy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(OutOfMemory):
        Predictor(Greedy()).predict(torch.zeros(1, 2))
    assert post(pipeline_for(tmp_path, Greedy()), b"[[1]]")[0].status == 507


def test_a_mismatch_reason_is_cut_to_a_sane_length() -> None:
    class Picky(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("size mismatch: " + "got 5 " * 10_000)

    with pytest.raises(BadRequest) as caught:
        Predictor(Picky()).predict(torch.zeros(1, 2))
    assert str(caught.value).startswith("the input does not fit the model: size mismatch: got 5")
    assert len(str(caught.value)) < 1100
