"""The default predict_fn: one forward pass per batch, on the model's device, in inference mode.

Requests whose inputs share everything but the first dimension are concatenated and run as
one forward pass; the output is split back by rows. If that pass fails, each request is run
alone, so that one bad input is answered with its own error and the others still succeed.

As in the official toolkit's default predict_fn, the model runs in eval mode (no dropout; set
once, when the Predictor is made) and without gradients. What fails is classified by whose fault
it is: an input whose shape or dtype does not fit the model is the client's (400, with torch's
reason); anything else the model raises is left as it is, for a 500 that names it.

An input that fails leaves nothing behind: the exception kept for its answer is ``release``d,
so that its traceback holds neither the input nor the model's intermediates.
"""

from __future__ import annotations

import re
import traceback
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from sagemaker_torch_serving.errors import (
    BadRequest,
    OutOfMemory,
    is_out_of_memory,
    reason,
    shorten,
)
from sagemaker_torch_serving.handler.model_loading import model_device, model_float_dtype


class Predictor:
    """Runs tensors (or tuples of them, for models with several inputs) through a model."""

    def __init__(self, model: Any, eval_mode: bool = True) -> None:
        """``eval_mode``: put a torch module that is in training mode into eval mode, as the
        default predict_fn does (a user's predict_fn decides that for itself)."""
        if eval_mode and isinstance(model, torch.nn.Module) and model.training:
            try:
                model.eval()
            except NotImplementedError:
                pass  # torch.export modules refuse .eval(); they were exported in eval mode
        self.model = model
        self.device = model_device(model)
        # Floating inputs take the model's floating dtype (float16 after SERVING_HALF_PRECISION).
        self.float_dtype = model_float_dtype(model)

    def predict(self, data: Any) -> Any:
        """One input, as the default predict_fn: the output on the CPU."""
        inputs = data if isinstance(data, tuple) else (data,)
        try:
            with torch.inference_mode():
                output = self.model(*(self._to_device(value) for value in inputs))
            return _to_cpu(output)
        except Exception as error:
            if is_out_of_memory(error):
                if self.device.type == "cuda":
                    release(error)  # the model's frames hold CUDA tensors the cache cannot free
                    torch.cuda.empty_cache()
                raise OutOfMemory("the model ran out of memory on this input; send less") from None
            mismatch = input_mismatch(error)
            if mismatch is None:
                raise  # the model's own failure: a 500 that names it
            raise BadRequest(f"the input does not fit the model: {mismatch}") from error

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        """Each input's output (or the exception it raised), in order."""
        results: list[Any] = [None] * len(inputs)
        alone: list[int] = []
        for indices in _groups(inputs).values():
            if len(indices) == 1:
                alone.extend(indices)
                continue
            try:
                output = self.predict(torch.cat([inputs[i] for i in indices]))
                parts = _split_rows(output, [inputs[i].shape[0] for i in indices])
            except Exception:  # noqa: BLE001 - each request is retried alone below
                alone.extend(indices)
                continue
            for index, part in zip(indices, parts, strict=True):
                results[index] = part
        for index in alone:
            try:
                results[index] = self.predict(inputs[index])
            except Exception as error:  # noqa: BLE001 - answered per request
                # Kept in ``results``, it would hold this frame (and ``inputs``) in a cycle.
                results[index] = release(error)
        return results

    def _to_device(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            return value
        if self.float_dtype is not None and value.is_floating_point():
            value = value.to(self.float_dtype)
        if value.device == self.device:
            return value
        if self.device.type == "cuda":
            return value.pin_memory().to(self.device, non_blocking=True)
        return value.to(self.device)


# What torch, torch.export and onnxruntime say when an input's shape, rank, dtype or number does
# not fit the model. Narrow on purpose: whatever else a model raises is its own fault.
_MISMATCH = re.compile(
    "|".join(
        (
            r"size mismatch",
            r"shapes cannot be multiplied",  # Linear, matmul
            r"must have the same dtype",  # Linear: mat1 and mat2 must have the same dtype
            r"expected scalar type \w+ but found \w+",
            r"Input type \(.+\) and (?:bias|weight) type \(.+\) should be the same",  # Conv
            r"Expected tensor for argument #\d+ '\w+' to have (?:one of the following )?scalar",
            r"input dtype \(.+\) does not match weight dtype",  # RNN
            r"Given groups=",  # Conv: expected input[...] to have 3 channels
            r"expected input\S* to have \d+ channels",
            r"Given normalized_shape=",  # LayerNorm
            r"running_mean should contain \d+ elements",  # BatchNorm
            r"Expected \d+D .*input",  # Conv: Expected 3D (unbatched) or 4D (batched) input
            r"Expected input to be \d+D",  # RNN
            r"Expected \d+-dimensional input",
            r"\d+D or \d+D \(batch mode\) tensor expected",  # pooling
            r"must be equal to input_size",  # RNN
            r"Expected hidden\S* size",  # RNN
            r"was expecting embedding dimension",  # MultiheadAttention
            r"Kernel size can't be greater than actual input size",
            r"Output size is too small",
            r"must match the (?:existing )?size",  # broadcasting: ... must match the size of ...
            r"Sizes of tensors must match",  # cat
            r"Expected size for first two dimensions",  # bmm
            r"is invalid for input of size",  # view, reshape
            r"Dimension out of range",
            r"too many indices for tensor of dimension",
            r"index out of range in self",  # Embedding: a token id past the vocabulary
            r"forward\(\) (?:takes|missing|expected at most|Expected a value of type)",
            r"^Guard failed: ",  # torch.export: the input breaks a shape the program was made for
            r"^Expected input at .* to be equal to",
            r"^Trying to flatten user inputs with exported input tree spec",
            r"Got invalid dimensions for input",  # onnxruntime
            r"Invalid rank for input",
            r"Unexpected input data type",
            r"^the model takes \d+ inputs, got \d+",  # OnnxModel
        )
    )
)


AnyError = TypeVar("AnyError", bound=BaseException)


def release(error: AnyError) -> AnyError:
    """``error`` without its traceback, nor those of the exceptions it chains to (its cause,
    its context), what the log needs of them kept as a summary (``traceback_text``).

    A traceback holds the frames the error passed through with their local variables (a
    request's tensors, the model's intermediates), and through each frame's caller (``f_back``)
    the frames still running, which may hold the error itself: a list of results, a cycle that
    only the garbage collector would break, late. Clearing the frames' variables is not enough
    for that: the callers' frames keep theirs once they return. So the tracebacks go.
    """
    chain = _chain(error)
    has_frames = any(linked.__traceback__ is not None for linked in chain)
    if has_frames and getattr(error, _SUMMARY, None) is None:
        summary = traceback.TracebackException.from_exception(error, lookup_lines=False)
        try:
            setattr(error, _SUMMARY, summary)
        except AttributeError:  # a __setattr__ that refuses: no summary for the log
            pass
    for linked in chain:
        traceback.clear_frames(linked.__traceback__)  # also for whatever else holds a frame
        linked.__traceback__ = None
    return error


def traceback_text(error: BaseException) -> str:
    """The traceback of ``error`` as the log shows it, also after ``release``."""
    summary = getattr(error, _SUMMARY, None)
    if not isinstance(summary, traceback.TracebackException):
        summary = traceback.TracebackException.from_exception(error)
    return "".join(summary.format()).rstrip("\n")


_SUMMARY = "_serving_traceback"


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it chains to: causes, contexts, an ExceptionGroup's."""
    seen: dict[int, BaseException] = {}
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen[id(current)] = current
        pending.extend(
            linked for linked in (current.__cause__, current.__context__) if linked is not None
        )
        group = getattr(current, "exceptions", None)
        if isinstance(group, tuple):
            pending.extend(item for item in group if isinstance(item, BaseException))
    return list(seen.values())


def input_mismatch(error: BaseException) -> str | None:
    """Why the input does not fit the model, where ``error`` says so; None for anything else."""
    message = reason(error)[1]
    return shorten(message) if _MISMATCH.search(message) else None


def _groups(inputs: Sequence[Any]) -> dict[Any, list[int]]:
    """Indices of inputs that can share a forward pass, by (row shape, dtype)."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for index, value in enumerate(inputs):
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            groups[(tuple(value.shape[1:]), value.dtype)].append(index)
        else:
            groups[("alone", index)].append(index)
    return groups


def _split_rows(output: Any, sizes: list[int]) -> list[Any]:
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != sum(sizes):
            raise ValueError("the output does not have one row per input row")
        return list(torch.split(output, sizes))
    if isinstance(output, (tuple, list)):
        columns = [_split_rows(item, sizes) for item in output]
        return [type(output)(row) for row in zip(*columns, strict=True)]
    if isinstance(output, dict):
        columns_by_key = {key: _split_rows(item, sizes) for key, item in output.items()}
        return [{key: columns_by_key[key][i] for key in columns_by_key} for i in range(len(sizes))]
    raise ValueError(f"cannot split a {type(output).__name__} by rows")


def _to_cpu(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.cpu()
    if isinstance(output, (tuple, list)):
        return type(output)(_to_cpu(item) for item in output)
    if isinstance(output, dict):
        return {key: _to_cpu(item) for key, item in output.items()}
    return output
