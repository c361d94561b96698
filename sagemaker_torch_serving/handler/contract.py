"""The user's handler module: which of SageMaker's functions it defines, checked once at load.

The contract is the official toolkits': ``model_fn(model_dir)``,
``input_fn(request_body, request_content_type)``, ``predict_fn(input_data, model)``,
``output_fn(prediction, accept)``, or ``transform_fn(model, request_body, content_type, accept)``
instead of the last three. Each is optional and each may take one more argument, ``context``.
Whether it does is decided here from its signature, once, not per request.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagemaker_torch_serving.settings import Env

# The arguments each function takes before the optional context.
ARGUMENTS = {
    "model_fn": ("model_dir",),
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
    model_fn: UserFunction | None = None
    input_fn: UserFunction | None = None
    predict_fn: UserFunction | None = None
    output_fn: UserFunction | None = None
    transform_fn: UserFunction | None = None

    def describe(self) -> str:
        names = [name for name in ARGUMENTS if getattr(self, name) is not None]
        where = self.module_path or "no handler module"
        return f"{where}: user {', '.join(names) or 'none'}; the rest are defaults"


def load_contract(path: Path, required: bool) -> Contract:
    """Import the handler module at ``path`` and check what it defines.

    A missing module means every default, unless ``required`` (SAGEMAKER_PROGRAM was set).
    """
    if not path.is_file():
        if required:
            raise ContractError(f"{Env.PROGRAM} names {path}, which does not exist")
        return Contract()
    module = _import(path)
    found = {
        name: _bind(name, getattr(module, name))
        for name in ARGUMENTS
        if callable(getattr(module, name, None))
    }
    if "transform_fn" in found and found.keys() & {"input_fn", "predict_fn", "output_fn"}:
        others = sorted(found.keys() & {"input_fn", "predict_fn", "output_fn"})
        raise ContractError(
            f"{path.name} defines transform_fn and {', '.join(others)}: transform_fn replaces "
            "input_fn, predict_fn and output_fn, so define either it or them"
        )
    return Contract(module_path=path, **found)


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


def _bind(name: str, function: Callable[..., Any]) -> UserFunction:
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
            f"{name} must take ({wanted}) or ({wanted}, context); "
            f"it takes {len(positional)} arguments"
        )
    return UserFunction(
        name,
        function,
        takes_context=keyword_context or len(positional) == len(expected) + 1,
        context_by_keyword=keyword_context,
    )
