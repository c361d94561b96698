"""The user's handler bound to a loaded model: what a worker, or any in-process tool, serves.

Order matters and is the official toolkits': torch's threads are set first, then the user's
module (and SERVING_HANDLER_CLASS) is imported and checked (contract.py), the device is chosen,
``pre_model_fn`` runs, the model is loaded by the user's ``model_fn`` or the default one
(model_loading.py), ``model_warmup_fn`` runs, and zeros of SERVING_WARMUP_SHAPE go through it once.

With SERVING_COMPILE the default model_fn's ``nn.Module`` is wrapped in ``torch.compile``, which
compiles at its first call: the warm-up, where one is set, else the first request. Inductor,
torch.compile's backend, builds C++ (and, on a GPU, Triton's C launcher) at run time, so a
missing compiler is looked for before the model loads, and said in one line.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import torch

from sagemaker_torch_serving.errors import first_line
from sagemaker_torch_serving.handler.context import ServingContext
from sagemaker_torch_serving.handler.contract import load_contract
from sagemaker_torch_serving.handler.model_loading import (
    ModelLoadError,
    check_device_memory,
    load_model,
    select_device,
)
from sagemaker_torch_serving.handler.pipeline import Pipeline
from sagemaker_torch_serving.settings import Env, Settings

logger = logging.getLogger(__name__)

_NO_COMPILER = (
    f"{Env.COMPILE}=true, but torch.compile needs a C++ compiler{{what}} and none was found: "
    f"install one (apt-get install g++; CXX may name another) or set {Env.COMPILE}=false"
)


def build_pipeline(settings: Settings, system_properties: dict[str, Any]) -> Pipeline:
    """Load the model as ``settings`` say; ``system_properties`` is what ``context`` shows
    (``gpu_id``, ...), completed here with ``model_dir`` and ``device``."""
    # Loading (and warming up) in every worker at once: each its share of the CPUs.
    torch.set_num_threads(settings.threads_for(settings.workers))
    contract = load_contract(
        settings.program_path,
        required=settings.program is not None,
        handler_class=settings.handler_class,
        code_dir=settings.code_dir,
    )
    device = select_device(settings.device, system_properties.get("gpu_id"))
    check_device_memory(device, settings.model_dir)
    system_properties.update(model_dir=str(settings.model_dir), device=str(device))
    context = ServingContext(system_properties)
    model_dir = str(settings.model_dir)
    if contract.pre_model_fn is not None:
        contract.pre_model_fn(model_dir, context=context)
    compiled = False
    if contract.model_fn is not None:
        model = contract.model_fn(model_dir, context=context)
    else:
        model = load_model(
            settings.model_dir, device, settings.trust_pickled_model, settings.half_precision
        )
        if settings.compile_model:
            model, compiled = _compiled(model, device, settings)
    if contract.model_warmup_fn is not None:
        contract.model_warmup_fn(model_dir, model, context=context)
    pipeline = Pipeline(settings, contract, model, system_properties)
    try:
        pipeline.warm_up()
    except Exception as error:
        if compiled and _raised_by_compiler(error):
            raise ModelLoadError(_compile_failure(error)) from error
        raise
    return pipeline


def _compiled(model: Any, device: torch.device, settings: Settings) -> tuple[Any, bool]:
    """``model`` in torch.compile, and True, where it is an ``nn.Module`` that torch.compile
    can trace (TorchScript modules and ONNX sessions are not)."""
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        logger.warning(
            "%s applies to nn.Module models (pickled or .pt2), not to %s; ignored",
            Env.COMPILE,
            type(model).__name__,
        )
        return model, False
    missing = _missing_compiler(device)
    if missing is not None:
        raise ModelLoadError(_NO_COMPILER.format(what=missing))
    # One compile process per worker, unless asked otherwise: inductor's default pool starts a
    # process per CPU in every worker, and the workers already share the CPUs.
    if Env.INDUCTOR_COMPILE_THREADS not in os.environ:
        from torch._inductor import config as inductor_config

        inductor_config.compile_threads = 1
    if settings.warmup_shape is None:
        logger.warning(
            "%s is on without %s: the first request compiles the model, which takes seconds",
            Env.COMPILE,
            Env.WARMUP_SHAPE,
        )
    return torch.compile(model), True


def _missing_compiler(device: torch.device) -> str | None:
    """What inductor will fail to find on this machine ('' for its C++ compiler), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()  # CXX, else g++: runs "--version"
    except ImportError:
        pass  # a torch without this helper: compilation will say for itself
    except Exception:  # noqa: BLE001 - InvalidCxxCompiler, whatever it derives from
        return ""
    # Triton (inductor's GPU code) builds a small C launcher with CC, else cc, gcc or clang.
    if device.type == "cuda":
        candidates = [os.environ.get(Env.C_COMPILER) or "", "cc", "gcc", "clang"]
        if not any(name and shutil.which(name) for name in candidates):
            return " (and a C compiler for Triton on the GPU)"
    return None


def _raised_by_compiler(error: BaseException) -> bool:
    """Whether torch.compile's machinery (dynamo, inductor) raised ``error``, not the model."""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))


def _compile_failure(error: BaseException) -> str:
    """The one line for a warm-up that failed in torch.compile."""
    whole = f"{type(error).__name__}: {error}"  # dynamo may wrap inductor's error in its own
    if any(sign in whole for sign in ("InvalidCxxCompiler", "C compiler", "C++ compiler")):
        return _NO_COMPILER.format(what="")
    text = f"{type(error).__name__}: {first_line(error)}"
    return (
        f"{Env.COMPILE}=true, and torch.compile failed at the warm-up: {text}; set "
        f"{Env.COMPILE}=false to serve the model uncompiled"
    )
