"""The official toolkit as user code meets it here: its npy decoder never unpickles a client's
body, and a DefaultInferenceHandler subclass supplies the functions it defines."""

from __future__ import annotations

import importlib
import io
import pathlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sagemaker_torch_serving.errors import status_for
from sagemaker_torch_serving.handler import toolkit


class _Touch:
    """Unpickling this creates the file at ``path``: what a client's pickle could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


def pickled_npy(path: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Touch(path)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture
def fresh_toolkit() -> Iterator[None]:
    """The toolkit not imported yet and no guard installed, as in a new worker; restored after."""
    saved = {name: module for name, module in sys.modules.items() if _toolkit_module(name)}
    meta_path = list(sys.meta_path)
    for name in saved:
        del sys.modules[name]
    sys.meta_path[:] = [f for f in meta_path if not isinstance(f, toolkit._GuardOnImport)]
    yield
    for name in [name for name in sys.modules if _toolkit_module(name)]:
        del sys.modules[name]
    sys.modules.update(saved)
    sys.meta_path[:] = meta_path


def _toolkit_module(name: str) -> bool:
    return name == "sagemaker_inference" or name.startswith("sagemaker_inference.")


def test_the_payload_would_run_code_if_unpickled(tmp_path: Path) -> None:
    """The control for the tests below: unpickling this body does create the file."""
    target = tmp_path / "created"
    np.load(io.BytesIO(pickled_npy(target)), allow_pickle=True)
    assert target.exists()


@pytest.mark.usefixtures("fresh_toolkit")
def test_the_decoder_imported_after_the_guard_never_unpickles(tmp_path: Path) -> None:
    toolkit.guard_npy_decoder()
    assert "sagemaker_inference.decoder" not in sys.modules  # guarded lazily, not imported
    decoder = importlib.import_module("sagemaker_inference.decoder")
    target = tmp_path / "pwned"
    for decode in (
        lambda body: decoder.decode(body, "application/x-npy"),
        decoder._npy_to_numpy,  # called directly, as some handler code does
    ):
        with pytest.raises(ValueError) as caught:
            decode(pickled_npy(target))
        assert not target.exists()
        error = caught.value
        assert error.status_code == 400  # type: ignore[attr-defined]
        status, message = status_for(error, "input", "input_fn")
        assert status == 400
        assert "never unpickles" in message
    # Arrays of numbers decode as before.
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(decoder.decode(npy(array), "application/x-npy"), array)


@pytest.mark.usefixtures("fresh_toolkit")
def test_a_decoder_imported_before_the_guard_is_guarded_too(tmp_path: Path) -> None:
    from sagemaker_inference import decoder, default_inference_handler

    toolkit.guard_npy_decoder()
    target = tmp_path / "pwned"
    handler = default_inference_handler.DefaultInferenceHandler()
    with pytest.raises(ValueError):
        handler.default_input_fn(pickled_npy(target), "application/x-npy")
    assert not target.exists()
    assert decoder._decoder_map["application/x-npy"] is toolkit.npy_to_numpy
    toolkit.guard_npy_decoder()  # again: no second hook
    assert sum(isinstance(f, toolkit._GuardOnImport) for f in sys.meta_path) <= 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not an array", "the application/x-npy body is not a .npy array"),
        (b"\x93NUMPY\x01\x00", "the application/x-npy body is not a valid .npy array: "),
    ],
)
def test_a_body_that_is_no_npy_is_a_400_that_says_so(body: bytes, expected: str) -> None:
    with pytest.raises(toolkit.RejectedNpy) as caught:
        toolkit.npy_to_numpy(body)
    status, message = status_for(caught.value, "input", "input_fn")
    assert status == 400
    assert message.startswith(expected)
    assert "allow_pickle" not in message  # numpy's advice to load it unsafely is not passed on


def test_a_handler_class_supplies_the_methods_it_defines_and_the_toolkits_io() -> None:
    from sagemaker_inference.default_inference_handler import DefaultInferenceHandler

    class OnlyInput(DefaultInferenceHandler):  # type: ignore[misc]
        def default_input_fn(self, input_data: Any, content_type: str) -> Any:
            return input_data

    functions = toolkit.handler_functions(OnlyInput())
    # The base class's model_fn and predict_fn only raise NotImplementedError: left to ours.
    assert set(functions) == {"input_fn", "output_fn"}
    method, input_fn = functions["input_fn"]
    assert method == "default_input_fn"
    assert input_fn(b"\x93NUMPY", "application/x-npy") == b"\x93NUMPY"  # the class's own method

    class Everything(OnlyInput):
        def default_model_fn(self, model_dir: str, context: Any = None) -> Any:
            return model_dir

        def default_predict_fn(self, data: Any, model: Any, context: Any = None) -> Any:
            return data

        def default_model_warmup_fn(self, model_dir: str, model: Any) -> None:
            pass

    assert set(toolkit.handler_functions(Everything())) == {
        "model_fn",
        "model_warmup_fn",
        "input_fn",
        "predict_fn",
        "output_fn",
    }
