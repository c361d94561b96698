"""Unit tests for the default model_fn: finding, loading and placing tiny models of every kind."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from sagemaker_torch_serving.handler.model_loading import (
    ModelLoadError,
    OnnxModel,
    find_model_file,
    load_model,
    model_device,
    select_device,
)

CPU = torch.device("cpu")


class TinyNet(nn.Module):
    """At module level so that pickle can find it again."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) + 1


class TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * 2 + b


def _net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


def _model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    return folder


def test_torchscript_loads_in_eval_mode(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    module = nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.9))
    module.train()
    torch.jit.script(module).save(str(folder / "model.pt"))
    loaded = load_model(folder, CPU, trust_pickled=False)
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert loaded.training is False
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), module.eval()(x))  # dropout off: deterministic


def test_torchscript_with_pth_suffix(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    net = _net()
    torch.jit.script(net).save(str(folder / "weights.pth"))
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.allclose(load_model(folder, CPU, trust_pickled=False)(x), net(x))


def test_exported_program_loads_with_a_dynamic_batch(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    net = _net()
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.randn(2, 4),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(folder / "model.pt2"))
    loaded = load_model(folder, CPU, trust_pickled=False)
    with torch.no_grad():
        for size in (1, 3):
            x = torch.randn(size, 4)
            out = loaded(x)
            assert out.shape == (size, 2)
            assert torch.allclose(out, net(x))


def _export_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> None:
    names = [f"input{index}" for index in range(len(args))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=names,
            output_names=["output"],
            dynamic_axes={name: {0: "batch"} for name in [*names, "output"]},
            dynamo=False,
        )


def test_onnx_model_returns_tensors_equal_to_torch(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    net = _net()
    _export_onnx(net, (torch.randn(1, 4),), folder / "model.onnx")
    loaded = load_model(folder, CPU, trust_pickled=False)
    assert isinstance(loaded, OnnxModel)
    with torch.no_grad():
        for size in (1, 5):
            x = torch.randn(size, 4)
            out = loaded(x)
            assert isinstance(out, torch.Tensor)
            assert out.shape == (size, 2)
            torch.testing.assert_close(out, net(x), atol=1e-5, rtol=1e-5)


def test_onnx_model_checks_the_input_count(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    _export_onnx(TwoInputs(), (torch.randn(1, 3), torch.randn(1, 3)), folder / "two.onnx")
    loaded = load_model(folder, CPU, trust_pickled=False)
    a, b = torch.ones(2, 3), torch.full((2, 3), 0.5)
    torch.testing.assert_close(loaded(a, b), a * 2 + b)
    with pytest.raises(ValueError, match="takes 2 inputs, got 1"):
        loaded(a)
    with pytest.raises(ValueError, match="got 3"):
        loaded(a, b, a)


def test_pickled_module_needs_trust(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    net = _net()
    torch.save(net, folder / "model.pt")
    with pytest.raises(ModelLoadError, match="SERVING_TRUST_PICKLED_MODEL"):
        load_model(folder, CPU, trust_pickled=False)
    loaded = load_model(folder, CPU, trust_pickled=True)
    assert isinstance(loaded, TinyNet)
    assert loaded.training is False
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x))


def test_pickled_module_in_train_mode_loads_in_eval_mode(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    torch.save(_net().train(), folder / "model.pth")
    assert load_model(folder, CPU, trust_pickled=True).training is False


@pytest.mark.parametrize("trust", [False, True])
def test_state_dict_asks_for_model_fn(tmp_path: Path, trust: bool) -> None:
    folder = _model_dir(tmp_path)
    torch.save(_net().state_dict(), folder / "model.pth")
    with pytest.raises(ModelLoadError, match="model_fn"):
        load_model(folder, CPU, trust_pickled=trust)


def test_no_model_file_is_an_error(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    (folder / "README.txt").write_text("no model here")
    (folder / ".hidden.pt").write_bytes(b"hidden files do not count")
    (folder / "code").mkdir()
    with pytest.raises(ModelLoadError, match="found none"):
        find_model_file(folder)


def test_two_model_files_are_listed(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    (folder / "a.pt").write_bytes(b"x")
    (folder / "b.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"a\.pt, b\.onnx") as caught:
        load_model(folder, CPU, trust_pickled=False)
    assert "model_fn" in str(caught.value)


def test_one_model_file_among_others_is_found(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    (folder / "model.pt2").write_bytes(b"x")
    (folder / "labels.json").write_text("[]")
    assert find_model_file(folder) == folder / "model.pt2"


def test_missing_model_dir_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match="does not exist") as caught:
        load_model(missing, CPU, trust_pickled=False)
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize("gpu_id", [None, 0, 3])
def test_select_device_cpu_setting_is_always_cpu(gpu_id: int | None) -> None:
    assert select_device("cpu", gpu_id) == CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_select_device_auto_without_cuda_is_cpu() -> None:
    assert select_device("auto", None) == CPU
    assert select_device("auto", 1) == CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_select_device_cuda_without_cuda_is_an_error() -> None:
    with pytest.raises(ModelLoadError, match="SERVING_DEVICE=cuda"):
        select_device("cuda", 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_select_device_with_cuda_wraps_the_gpu_id() -> None:
    count = torch.cuda.device_count()
    assert select_device("auto", None) == torch.device("cuda", 0)
    assert select_device("cuda", count) == torch.device("cuda", 0)


def test_model_device() -> None:
    assert model_device(nn.ReLU()) == CPU
    assert model_device(_net()) == CPU
    assert model_device(nn.BatchNorm1d(3, affine=False)) == CPU  # buffers only
    assert model_device(object()) == CPU


def test_half_precision_is_for_gpus_and_inputs_follow_the_model_dtype(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sagemaker_torch_serving.handler.predict import Predictor

    torch.jit.script(nn.Linear(4, 2)).save(str(tmp_path / "model.pt"))
    model = load_model(tmp_path, torch.device("cpu"), trust_pickled=False, half=True)
    assert next(model.parameters()).dtype == torch.float32  # float16 on a CPU would be slower
    assert "SERVING_HALF_PRECISION applies to torch models on a GPU" in caplog.text

    predictor = Predictor(model.half())  # what a GPU worker gets
    output = predictor.predict(torch.ones(3, 4, dtype=torch.float32))
    assert output.dtype == torch.float16
    assert output.shape == (3, 2)
    assert Predictor(model.float()).predict(torch.ones(1, 4, dtype=torch.float64)).dtype == (
        torch.float32
    )
