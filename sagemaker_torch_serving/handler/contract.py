"""The user's handler module: which of SageMaker's functions it defines, checked once at load.

The contract is the official toolkits': ``model_fn(model_dir)``,
``input_fn(request_body, request_content_type)``, ``predict_fn(input_data, model)``,
``output_fn(prediction, accept)``, or ``transform_fn(model, request_body, content_type, accept)``
instead of the last three, and the toolkit's optional ``pre_model_fn(model_dir)`` and
``model_warmup_fn(model_dir, model)``. Each is optional and each may take one more argument,
``context``. Whether it does is decided here from its signature, once, not per request.

A handler class in the toolkit's style (SERVING_HANDLER_CLASS, ``module:Class``, a
``DefaultInferenceHandler`` subclass) supplies, with its ``default_*_fn`` methods, the functions
the module does not define, as the toolkit's Transformer does (toolkit.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagemaker_torch_serving.handler import toolkit
from sagemaker_torch_serving.settings import Env

# The arguments each function takes before the optional context.
ARGUMENTS = {
    "pre_model_fn": ("model_dir",),
    "model_fn": ("model_dir",),
    "model_warmup_fn": ("model_dir", "model"),
    "input_fn": ("request_body", "request_content_type"),
    "predict_fn": ("input_data", "model"),
    "output_fn": ("prediction", "accept"),
    "transform_fn": ("model", "request_body", "content_type", "accept"),
}


class ContractError(Exception):
    """The handler module cannot be used as it is; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class UserFunction:
    """One function of the user's module, called with or without context as it asks."""

    name: str
    function: Callable[..., Any]
    takes_context: bool
    context_by_keyword: bool = False  # def input_fn(body, content_type, *, context)

    def __call__(self, *args: Any, context: Any) -> Any:
        if self.context_by_keyword:
            return self.function(*args, context=context)
        if self.takes_context:
            return self.function(*args, context)
        return self.function(*args)


@dataclasses.dataclass(frozen=True)
class Contract:
    """The functions the user defined; None where the runtime's default applies."""

    module_path: Path | None = None
    handler_class: str | None = None  # SERVING_HANDLER_CLASS
    pre_model_fn: UserFunction | None = None
    model_fn: UserFunction | None = None
    model_warmup_fn: UserFunction | None = None
    input_fn: UserFunction | None = None
    predict_fn: UserFunction | None = None
    output_fn: UserFunction | None = None
    transform_fn: UserFunction | None = None

    def describe(self) -> str:
        functions = [getattr(self, name) for name in ARGUMENTS]
        names = [function.name for function in functions if function is not None]
        where = ", ".join(str(part) for part in (self.module_path, self.handler_class) if part)
        where = where or "no handler module"
        return f"{where}: user {', '.join(names) or 'none'}; the rest are defaults"


_REPLACED_BY_TRANSFORM = {"input_fn", "predict_fn", "output_fn"}


def load_contract(
    path: Path, required: bool, handler_class: str | None = None, code_dir: Path | None = None
) -> Contract:
    """Import the handler module at ``path`` and check what it defines; then, if a
    ``handler_class`` (``module:Class``, the module found in ``code_dir``, by default the
    folder of ``path``) is named, let it supply the functions the module does not define.

    A missing module means every default, unless ``required`` (SAGEMAKER_PROGRAM was set).
    """
    toolkit.guard_npy_decoder()  # before any user code runs
    found: dict[str, UserFunction] = {}
    module_path = None
    if path.is_file():
        module = _import(path)
        module_path = path
        found = {
            name: _bind(name, getattr(module, name))
            for name in ARGUMENTS
            if callable(getattr(module, name, None))
        }
        if "transform_fn" in found and found.keys() & _REPLACED_BY_TRANSFORM:
            others = sorted(found.keys() & _REPLACED_BY_TRANSFORM)
            raise ContractError(
                f"{path.name} defines transform_fn and {', '.join(others)}: transform_fn "
                "replaces input_fn, predict_fn and output_fn, so define either it or them"
            )
    elif required:
        raise ContractError(f"{Env.PROGRAM} names {path}, which does not exist")
    if handler_class is not None:
        handler = _handler_object(handler_class, code_dir or path.parent)
        label = type(handler).__name__
        for name, (method, function) in toolkit.handler_functions(handler).items():
            # The module's own functions come first; its transform_fn replaces the class's
            # input, predict and output functions, as in the toolkit's Transformer.
            if name in found or ("transform_fn" in found and name in _REPLACED_BY_TRANSFORM):
                continue
            found[name] = _bind(name, function, f"{label}.{method}")
    return Contract(module_path=module_path, handler_class=handler_class, **found)


def _handler_object(value: str, code_dir: Path) -> Any:
    """An instance of the toolkit handler class that ``value`` (``module:Class``) names."""
    setting = f"{Env.HANDLER_CLASS}={value}"
    module_name, _, class_path = value.partition(":")
    if not module_name or not class_path:
        raise ContractError(f"{setting}: it must be module:Class, like handler:MyHandler")
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise ContractError(
                f"{setting}: there is no module {module_name} in {code_dir} (nor installed)"
            ) from None
        raise ContractError(f"{setting}: importing {module_name} failed: {error}") from error
    except Exception as error:
        raise ContractError(
            f"{setting}: importing {module_name} failed: {type(error).__name__}: {error}"
        ) from error
    target: Any = module
    for part in class_path.split("."):
        target = getattr(target, part, None)
        if target is None:
            where = getattr(module, "__file__", None) or module_name
            raise ContractError(f"{setting}: {where} has no {class_path}")
    try:
        base = toolkit.handler_base()
    except ImportError as error:
        raise ContractError(f"{setting} needs sagemaker-inference: {error}") from None
    if not (isinstance(target, type) and issubclass(target, base)):
        raise ContractError(
            f"{setting}: {class_path} is not a subclass of "
            "sagemaker_inference.default_inference_handler.DefaultInferenceHandler"
        )
    try:
        return target()
    except Exception as error:
        raise ContractError(
            f"{setting}: {class_path}() failed: {type(error).__name__}: {error}"
        ) from error


def _import(path: Path) -> Any:
    # The code directory goes on sys.path so that the module can import its neighbours.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ContractError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ContractError(f"importing {path} failed: {type(error).__name__}: {error}") from error
    return module


def _bind(name: str, function: Callable[..., Any], label: str | None = None) -> UserFunction:
    """``function`` as the contract's ``name``; ``label`` is how messages name it (a class's
    method), by default ``name``."""
    label = label or name
    expected = ARGUMENTS[name]
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return UserFunction(name, function, takes_context=True)
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    keyword_context = any(
        p.kind is inspect.Parameter.KEYWORD_ONLY and p.name == "context" for p in parameters
    )
    allowed = (len(expected),) if keyword_context else (len(expected), len(expected) + 1)
    if len(positional) not in allowed:
        wanted = ", ".join(expected)
        raise ContractError(
            f"{label} must take ({wanted}) or ({wanted}, context); "
            f"it takes {len(positional)} arguments"
        )
    return UserFunction(
        label,
        function,
        takes_context=keyword_context or len(positional) == len(expected) + 1,
        context_by_keyword=keyword_context,
    )
