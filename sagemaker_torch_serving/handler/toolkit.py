"""The official inference toolkit (``sagemaker_inference``) as handler code written for AWS's
stock containers uses it: made safe, and its handler classes served.

- The toolkit's ``decoder.decode(body, "application/x-npy")`` runs ``np.load(allow_pickle=True)``:
  a client's .npy holding an object array is unpickled, and unpickling runs whatever code the
  client put in it. ``guard_npy_decoder``, called before user code is imported, swaps that
  decoder for one that never unpickles and answers such a body with a 400. The swap happens when
  the decoder's module is imported (an import hook), not by importing it here: it imports scipy,
  which every worker would pay for, also for handler code that never uses the toolkit.
- A handler class in the toolkit's own style (a ``DefaultInferenceHandler`` subclass, named by
  SERVING_HANDLER_CLASS) supplies the functions that ``inference.py`` does not define
  (``handler_functions``); contract.py loads and checks it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import io
import math
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

# Cheap: the toolkit's package and errors module import nothing but textwrap.
from sagemaker_inference.errors import (  # type: ignore[import-untyped]
    GenericInferenceToolkitError,
)

from sagemaker_torch_serving.errors import first_line

DECODER = "sagemaker_inference.decoder"
NPY = "application/x-npy"
_NPY_MAGIC = b"\x93NUMPY"

# The contract's function names, and the toolkit handler's methods that supply them (the
# Transformer of the toolkit calls default_pre_model_fn and default_model_warmup_fn where a
# handler has them).
METHODS = {
    "pre_model_fn": "default_pre_model_fn",
    "model_fn": "default_model_fn",
    "model_warmup_fn": "default_model_warmup_fn",
    "input_fn": "default_input_fn",
    "predict_fn": "default_predict_fn",
    "output_fn": "default_output_fn",
}
# DefaultInferenceHandler's own model_fn and predict_fn only raise NotImplementedError. Where a
# subclass keeps them, the runtime's defaults apply: the default model_fn, the batched forward pass.
UNIMPLEMENTED = ("default_model_fn", "default_predict_fn")


class RejectedNpy(GenericInferenceToolkitError, ValueError):  # type: ignore[misc]
    """A 400 for an application/x-npy body that the guarded decoder refuses; a ValueError too,
    as np.load's own errors are, for code that catches those around ``decoder.decode``."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def npy_to_numpy(npy_array: bytes) -> Any:
    """The toolkit's ``decoder._npy_to_numpy``, except that it never unpickles, and that a
    malformed header, or one that claims more data than the body holds (numpy would allocate
    it before reading), is a 400."""
    import numpy as np  # imported already wherever the toolkit's decoder is

    if bytes(npy_array[: len(_NPY_MAGIC)]) == _NPY_MAGIC:
        _check_npy_header(npy_array)
    try:
        return np.load(io.BytesIO(npy_array), allow_pickle=False)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - ValueError, OSError, tokenize's TokenError...
        # numpy takes anything without its magic string for a pickle, and says so: not useful.
        if bytes(npy_array[: len(_NPY_MAGIC)]) != _NPY_MAGIC:
            raise RejectedNpy("the application/x-npy body is not a .npy array") from None
        if "allow_pickle" in str(error):
            raise RejectedNpy(
                "the application/x-npy body holds Python objects, which this server never "
                "unpickles: send an array of numbers"
            ) from None
        raise RejectedNpy(
            f"the application/x-npy body is not a valid .npy array: {first_line(error)}"
        ) from None


def _check_npy_header(npy_array: bytes) -> None:
    # codecs imports torch: imported here, where user code runs (and has imported it).
    from sagemaker_torch_serving.handler.codecs import read_npy_header

    stream = io.BytesIO(npy_array)
    try:
        shape, dtype = read_npy_header(stream)
    except ValueError as error:
        raise RejectedNpy(
            f"the application/x-npy body is not a valid .npy array: {first_line(error)}"
        ) from None
    claimed = math.prod(shape) * dtype.itemsize
    if not dtype.hasobject and claimed > len(npy_array) - stream.tell():
        raise RejectedNpy(
            "the application/x-npy body is not a valid .npy array: its header claims "
            f"{claimed} bytes of data (shape {shape}, dtype {dtype}), the body holds less"
        )


def guard_npy_decoder() -> None:
    """Make the toolkit's npy decoder safe: now if it is imported, else as soon as it is."""
    decoder = sys.modules.get(DECODER)
    if decoder is not None:
        _guard(decoder)
    elif not any(isinstance(finder, _GuardOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _GuardOnImport())


def _guard(decoder: ModuleType) -> None:
    # Both: decode() looks the function up in the map; user code may call the function itself.
    decoder._npy_to_numpy = npy_to_numpy  # type: ignore[attr-defined]
    decoder._decoder_map[NPY] = npy_to_numpy


class _GuardOnImport(importlib.abc.MetaPathFinder):
    """Finds the toolkit's decoder module as the other finders would, and guards it once run."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != DECODER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _GuardingLoader(spec.loader)
                return spec
        return None


class _GuardingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _guard(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...
        return getattr(self.loader, name)


def handler_base() -> type:
    """The toolkit's ``DefaultInferenceHandler`` (importing it imports the guarded decoder)."""
    from sagemaker_inference.default_inference_handler import (  # type: ignore[import-untyped]
        DefaultInferenceHandler,
    )

    return DefaultInferenceHandler  # type: ignore[no-any-return]


def handler_functions(handler: Any) -> dict[str, tuple[str, Callable[..., Any]]]:
    """The contract's functions that a toolkit handler object supplies, by the contract's names:
    (the method's name, the bound method)."""
    base = handler_base()
    functions: dict[str, tuple[str, Callable[..., Any]]] = {}
    for name, method in METHODS.items():
        function = getattr(handler, method, None)
        if not callable(function):
            continue
        inherited = getattr(type(handler), method, None) is getattr(base, method, False)
        if method in UNIMPLEMENTED and inherited:
            continue
        functions[name] = (method, function)
    return functions
