"""The default model_fn: find the one model file, load it by its kind, place it on a device.

Kinds, by file: TorchScript (``.pt``/``.pth`` holding a TorchScript archive), ``torch.export``
programs (``.pt2``), ONNX (``.onnx``, through onnxruntime), and a whole pickled ``nn.Module``
(``.pt``/``.pth``), which loads only when SERVING_TRUST_PICKLED_MODEL is on, because
unpickling runs whatever code the file names.

Also the one line that says why a model did not load, whoever loaded it (``describe_load_failure``):
the exception, what to do where the cause is a known one (torch.load's weights-only default meeting
a whole pickled model, a pickled model whose class cannot be imported), and the file and line of
the user's code that raised it.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import traceback
import zipfile
from pathlib import Path
from typing import Any

import torch

from sagemaker_torch_serving.errors import first_line
from sagemaker_torch_serving.settings import Env

MODEL_SUFFIXES = (".pt", ".pth", ".pt2", ".onnx")

logger = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model cannot be loaded; the message says what a person should change."""


class NotEnoughMemory(ModelLoadError, MemoryError):
    """The device has too little free memory for the model (a multi-model endpoint answers
    507, so that SageMaker unloads other models first)."""


def out_of_memory(error: BaseException) -> bool:
    """Whether loading failed for want of host or GPU memory."""
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError))


def check_device_memory(device: torch.device, model_dir: Path) -> None:
    """Refuse to load onto a GPU whose free memory is less than the model's files: loading
    would fail halfway, or leave too little to serve with."""
    if device.type != "cuda":
        return  # host memory: the frontend checks it before a load (java/MultiModels.java)
    free, _ = torch.cuda.mem_get_info(device)
    needed = files_size(model_dir)
    if needed > free:
        raise NotEnoughMemory(
            f"GPU {device.index} has {free >> 20} MiB free and the model's files take "
            f"{needed >> 20} MiB"
        )


def files_size(directory: Path) -> int:
    """Bytes of the regular files under ``directory`` (links not followed)."""
    total = 0
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def select_device(setting: str, gpu_id: int | None) -> torch.device:
    """The worker's device: the GPU that MMS assigned it (``gpu_id``) where CUDA is there."""
    if setting == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if setting == "cuda":
            raise ModelLoadError(f"{Env.DEVICE}=cuda, but no CUDA device is visible")
        return torch.device("cpu")
    index = gpu_id if gpu_id is not None and gpu_id >= 0 else 0
    return torch.device("cuda", index % torch.cuda.device_count())


def find_model_file(model_dir: Path) -> Path:
    """The single model file at the top of ``model_dir``."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"the model directory {model_dir} does not exist")
    found = sorted(
        path
        for path in model_dir.iterdir()
        if path.is_file() and path.suffix in MODEL_SUFFIXES and not path.name.startswith(".")
    )
    if len(found) != 1:
        names = ", ".join(path.name for path in found) or "none"
        raise ModelLoadError(
            f"the default model_fn needs exactly one {'/'.join(MODEL_SUFFIXES)} file in "
            f"{model_dir}, found {names}; keep one, or define model_fn in inference.py"
        )
    return found[0]


def load_model(
    model_dir: Path, device: torch.device, trust_pickled: bool, half: bool = False
) -> Any:
    """Load the model in ``model_dir`` onto ``device``, in eval mode; in float16 if ``half``
    and the device is a GPU (on a CPU float16 is slower, so it stays float32, with a log line)."""
    path = find_model_file(model_dir)
    if path.suffix == ".onnx":
        model: Any = OnnxModel(path, device)
    elif path.suffix == ".pt2":
        model = _load_exported(path, device)
    elif _is_torchscript(path):
        # torch.jit.load has no annotations (an untyped call in strict mode)
        model = torch.jit.load(str(path), map_location=device).eval()  # type: ignore[no-untyped-call]
    else:
        model = _load_pickled(path, device, trust_pickled).eval()
    if half:
        if device.type == "cuda" and isinstance(model, torch.nn.Module):
            model = model.half()
        else:
            logger.warning("%s applies to torch models on a GPU; ignored", Env.HALF_PRECISION)
    return model


def model_device(model: Any) -> torch.device:
    """Where the model's inputs must go: the device of its first parameter or buffer."""
    tensor = _first_tensor(model)
    return tensor.device if tensor is not None else torch.device("cpu")


def model_float_dtype(model: Any) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter (float16 after .half())."""
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
    return None


def _first_tensor(model: Any) -> torch.Tensor | None:
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor
        for buffer in model.buffers():
            return buffer
    return None


class OnnxModel:
    """An onnxruntime session that takes and returns tensors, as a torch model does."""

    def __init__(self, path: Path, device: torch.device) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ModelLoadError(f"{path.name} needs onnxruntime, which is not installed") from None
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ModelLoadError("a GPU is assigned, but onnxruntime has no CUDA provider")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self.input_names = [node.name for node in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the model takes {len(self.input_names)} inputs, got {len(inputs)}")
        feeds = {name: value.numpy() for name, value in zip(self.input_names, inputs, strict=True)}
        outputs = [torch.from_numpy(output) for output in self.session.run(None, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _load_exported(path: Path, device: torch.device) -> Any:
    program = torch.export.load(str(path))
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return program.module()  # exported in eval mode; exported modules refuse .eval()


def _load_pickled(path: Path, device: torch.device, trust_pickled: bool) -> torch.nn.Module:
    try:
        loaded = torch.load(str(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickled:
            raise ModelLoadError(
                f"{path.name} is a pickled model{_refused_class(error)}, and loading it runs "
                f"code from the file: set {Env.TRUST_PICKLED_MODEL}=true if you trust it, or "
                "ship TorchScript, a torch.export .pt2 or ONNX instead"
            ) from None
        loaded = torch.load(str(path), map_location=device, weights_only=False)
    if not isinstance(loaded, torch.nn.Module):
        raise ModelLoadError(
            f"{path.name} holds a {type(loaded).__name__} (weights only?), not a model: "
            "define model_fn in inference.py to build the model and load these weights"
        )
    return loaded


# torch.load's refusal under weights_only=True, torch's default since 2.6, and the class it met.
_WEIGHTS_ONLY = "Weights only load failed"
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_MISSING_MAIN_CLASS = re.compile(r"Can't get attribute '(\w+)' on <module '(?:[\w.]+\.)?__main__'")


def describe_load_failure(error: BaseException, code_dir: Path, trust_pickled: bool) -> str:
    """One line for a model that did not load: ``Type: message``, with what to do instead of
    torch's paragraph where the cause is a known one, and ``(at FILE:LINE, in FUNCTION)``, the
    deepest frame of the traceback in the user's code (``code_dir``), where there is one."""
    name = type(error).__name__
    text = f"{name}: {_advice(error, trust_pickled) or first_line(error)}"
    where = user_code_location(error, code_dir)
    return f"{text} (at {where})" if where else text


def user_code_location(error: BaseException, code_dir: Path) -> str | None:
    """``FILE:LINE, in FUNCTION`` of the deepest frame in ``code_dir`` of the traceback of
    ``error``, or of the error it was raised from (contract.py wraps an import's error)."""
    root = os.path.realpath(code_dir)
    for candidate in (error, error.__cause__):
        if candidate is None:
            continue
        frames = [
            frame
            for frame in traceback.extract_tb(candidate.__traceback__)
            if os.path.realpath(frame.filename).startswith(root + os.sep)
        ]
        if frames:
            frame = frames[-1]
            return f"{frame.filename}:{frame.lineno}, in {frame.name}"
    return None


def _advice(error: BaseException, trust_pickled: bool) -> str | None:
    """What to do about a failure to unpickle a model, in place of torch's or pickle's message."""
    message = str(error)
    if isinstance(error, pickle.UnpicklingError) and _WEIGHTS_ONLY in message:
        holding = _refused_class(error)
        if trust_pickled:
            # The variable lets torch.load unpickle only where weights_only is not given.
            return (
                f"torch.load refused a whole pickled model{holding}: this call passes "
                f"weights_only=True, which {Env.TRUST_PICKLED_MODEL}=true does not override; "
                "pass weights_only=False to trust the file, or save a state_dict or TorchScript"
            )
        return (
            f"torch.load refused a whole pickled model{holding}, as torch does by default "
            "(weights_only=True): save a state_dict or TorchScript instead, or, if you trust "
            "the file, load it with torch.load(..., weights_only=False) or set "
            f"{Env.TRUST_PICKLED_MODEL}=true"
        )
    if not _raised_while_unpickling(error):
        return None
    if isinstance(error, ModuleNotFoundError) and error.name:
        return (
            f"{first_line(error)}: the pickled model's class lives in module {error.name}, "
            "which must be importable where the model loads: put it in the code directory "
            "next to inference.py (which is on sys.path), or install it"
        )
    found = _MISSING_MAIN_CLASS.search(message)
    if isinstance(error, AttributeError) and found:
        return (
            f"the pickled model's class {found.group(1)} was defined in the script that saved "
            "it (__main__), where unpickling cannot find it: move the class into a module "
            "of the code directory, import it from there, and save the model again; or save "
            "a state_dict or TorchScript"
        )
    return None


def _refused_class(error: BaseException) -> str:
    """`` (module.Class)``, the class torch.load's weights-only refusal names, or ''."""
    found = _REFUSED_GLOBAL.search(str(error))
    return f" ({found.group(1)})" if found else ""


def _raised_while_unpickling(error: BaseException) -> bool:
    """Whether torch.load (torch/serialization.py) is on the traceback of ``error``."""
    marker = os.path.join("torch", "serialization.py")
    return any(
        frame.filename.endswith(marker) for frame in traceback.extract_tb(error.__traceback__)
    )
