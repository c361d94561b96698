"""Unit tests for the default model_fn: finding, loading and placing tiny models of every kind."""

from __future__ import annotations

import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sagemaker_torch_serving.handler.contract import load_contract
from sagemaker_torch_serving.handler.model_loading import (
    ModelLoadError,
    OnnxModel,
    describe_load_failure,
    find_model_file,
    load_model,
    model_device,
    select_device,
)
from sagemaker_torch_serving.settings import Env

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
    with pytest.raises(ModelLoadError) as caught:
        load_model(folder, CPU, trust_pickled=False)
    assert str(caught.value) == (
        f"model.pt is a pickled model ({__name__}.TinyNet), and loading it runs code from the "
        "file: set SERVING_TRUST_PICKLED_MODEL=true if you trust it, or ship TorchScript, "
        "a torch.export .pt2 or ONNX instead"
    )
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


# describe_load_failure: the one line the server ends with when the model does not load.

MODEL_FN = """\
import os
import torch

def model_fn(model_dir):
    return torch.load(os.path.join(model_dir, "best.pt"))
"""


@pytest.fixture
def code_dir(tmp_path: Path) -> Iterator[Path]:
    """A code directory, on sys.path while the test runs (as the runtime puts it); its modules
    are forgotten afterwards, so that each test imports its own."""
    folder = tmp_path / "code"
    folder.mkdir()
    modules = set(sys.modules)
    yield folder
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    while str(folder) in sys.path:
        sys.path.remove(str(folder))


def _failure(code_dir: Path, source: str, call: Callable[[Any], Any]) -> BaseException:
    """The exception that ``call`` raises on the module ``source`` loaded as inference.py."""
    (code_dir / "inference.py").write_text(textwrap.dedent(source))
    try:
        contract = load_contract(code_dir / "inference.py", required=True)
        call(contract)
    except Exception as error:  # noqa: BLE001 - the test inspects it
        return error
    raise AssertionError("nothing was raised")


def _model_fn(model_dir: Path) -> Callable[[Any], Any]:
    return lambda contract: contract.model_fn(str(model_dir), context=None)


def test_a_load_failure_names_the_line_of_the_users_code(tmp_path: Path, code_dir: Path) -> None:
    source = """\
        def model_fn(model_dir):
            model_path = os.path.join(model_dir, "best.pt")
            return model_path
        """
    error = _failure(code_dir, source, _model_fn(tmp_path))
    assert describe_load_failure(error, code_dir, trust_pickled=False) == (
        f"NameError: name 'os' is not defined (at {code_dir}/inference.py:2, in model_fn)"
    )


def test_a_load_failure_in_a_helper_names_the_helpers_line(tmp_path: Path, code_dir: Path) -> None:
    (code_dir / "weights.py").write_text("def read(path):\n    return open(path).read()\n")
    source = """\
        import weights

        def model_fn(model_dir):
            return weights.read(model_dir + "/missing.bin")
        """
    error = _failure(code_dir, source, _model_fn(tmp_path))
    line = describe_load_failure(error, code_dir, trust_pickled=False)
    assert line.startswith("FileNotFoundError: [Errno 2] No such file or directory: ")
    assert line.endswith(f"(at {code_dir}/weights.py:2, in read)")


def test_an_import_failure_names_the_line_it_raised_at(code_dir: Path) -> None:
    error = _failure(code_dir, "import json\nvalue = json.loads('{')\n", lambda _: None)
    line = describe_load_failure(error, code_dir, trust_pickled=False)
    assert line.startswith(f"ContractError: importing {code_dir}/inference.py failed: ")
    assert line.endswith(f"(at {code_dir}/inference.py:2, in <module>)")


def test_a_failure_outside_the_users_code_has_no_location(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model(tmp_path / "nowhere", CPU, trust_pickled=False)
    line = describe_load_failure(caught.value, tmp_path, trust_pickled=False)
    assert line == f"ModelLoadError: the model directory {tmp_path / 'nowhere'} does not exist"


def test_torch_loads_weights_only_refusal_says_what_to_do(tmp_path: Path, code_dir: Path) -> None:
    folder = _model_dir(tmp_path)
    torch.save(_net(), folder / "best.pt")
    error = _failure(code_dir, MODEL_FN, _model_fn(folder))
    where = f"(at {code_dir}/inference.py:5, in model_fn)"
    assert describe_load_failure(error, code_dir, trust_pickled=False) == (
        f"UnpicklingError: torch.load refused a whole pickled model ({__name__}.TinyNet), as "
        "torch does by default (weights_only=True): save a state_dict or TorchScript instead, "
        "or, if you trust the file, load it with torch.load(..., weights_only=False) or set "
        f"SERVING_TRUST_PICKLED_MODEL=true {where}"
    )
    # With the setting on, torch.load still refuses where the call asks for weights only.
    assert describe_load_failure(error, code_dir, trust_pickled=True) == (
        f"UnpicklingError: torch.load refused a whole pickled model ({__name__}.TinyNet): this "
        "call passes weights_only=True, which SERVING_TRUST_PICKLED_MODEL=true does not "
        f"override; pass weights_only=False to trust the file, or save a state_dict or "
        f"TorchScript {where}"
    )


def test_the_trust_setting_lets_the_users_torch_load_unpickle(
    tmp_path: Path, code_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the serving process sets in the workers' environment (mms_config) with
    SERVING_TRUST_PICKLED_MODEL=true, and what torch.load makes of it."""

    folder = _model_dir(tmp_path)
    torch.save(_net(), folder / "best.pt")
    (code_dir / "inference.py").write_text(MODEL_FN)
    contract = load_contract(code_dir / "inference.py", required=True)
    monkeypatch.setenv(Env.TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, "1")
    with pytest.warns(UserWarning, match="forcing weights_only=False"):
        assert isinstance(contract.model_fn(str(folder), context=None), TinyNet)


def test_a_pickled_models_missing_class_module_says_where_to_put_it(
    tmp_path: Path, code_dir: Path
) -> None:
    (code_dir / "netmodule.py").write_text("from torch import nn\n\nclass Net(nn.Linear): ...\n")
    sys.path.insert(0, str(code_dir))
    import netmodule  # type: ignore[import-not-found]

    folder = _model_dir(tmp_path)
    torch.save(netmodule.Net(2, 2), folder / "model.pt")
    # Where the model loads, netmodule is not importable (not shipped in code/).
    sys.path.remove(str(code_dir))
    del sys.modules["netmodule"]
    with pytest.raises(ModuleNotFoundError) as caught:
        load_model(folder, CPU, trust_pickled=True)
    assert describe_load_failure(caught.value, code_dir, trust_pickled=True) == (
        "ModuleNotFoundError: No module named 'netmodule': the pickled model's class lives in "
        "module netmodule, which must be importable where the model loads: put it in the code "
        "directory next to inference.py (which is on sys.path), or install it"
    )


def test_a_model_pickled_from_a_training_script_says_to_move_its_class(tmp_path: Path) -> None:
    import __main__

    class Script(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    # As `python train.py` pickles a class defined in train.py: as __main__.Script.
    Script.__module__, Script.__qualname__ = "__main__", "Script"
    folder = _model_dir(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(__main__, "Script", Script, raising=False)
        torch.save(Script(), folder / "model.pt")
    with pytest.raises(AttributeError) as caught:
        load_model(folder, CPU, trust_pickled=True)
    assert describe_load_failure(caught.value, tmp_path, trust_pickled=True) == (
        "AttributeError: the pickled model's class Script was defined in the script that "
        "saved it (__main__), where unpickling cannot find it: move the class into a module "
        "of the code directory, import it from there, and save the model again; or save a "
        "state_dict or TorchScript"
    )
