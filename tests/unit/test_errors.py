"""Exceptions to statuses and client messages: useful, short, clean, never a traceback."""

from __future__ import annotations

import json

import pytest
import torch
from sagemaker_inference import errors as toolkit_errors

from sagemaker_torch_serving.errors import (
    BadRequest,
    describe,
    error_body,
    first_line,
    process_ended,
    status_for,
)


class Boom(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            raise ValueError("boom")
        return x


def torchscript_error() -> Exception:
    try:
        torch.jit.script(Boom())(torch.ones(1))
    except Exception as error:  # noqa: BLE001 - the error is what is tested
        return error
    raise AssertionError("the scripted model did not raise")


def test_a_torchscript_error_is_described_by_its_last_error_line_not_its_header() -> None:
    error = torchscript_error()
    assert str(error).startswith("The following operation failed in the TorchScript interpreter.")
    assert describe(error) == "ValueError: boom"
    status, message = status_for(error, "predict", "predict_fn")
    assert (status, message) == (500, "predict_fn failed: ValueError: boom")


def test_a_message_holding_a_traceback_gives_the_client_its_error_line_only() -> None:
    error = RuntimeError(
        "worker crashed:\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/ml/code/secret_model.py", line 12, in forward\n'
        "    return self.layer(x)\n"
        "KeyError: 'layer'\n"
    )
    assert describe(error) == "KeyError: 'layer'"
    assert "secret_model" not in status_for(error, "output", "output_fn")[1]


def test_a_multiline_message_keeps_its_first_paragraph_on_one_line() -> None:
    error = RuntimeError("CUDA error: device-side assert triggered\nCompile with X\n\nmore help")
    assert describe(error) == (
        "RuntimeError: CUDA error: device-side assert triggered Compile with X"
    )


def test_a_long_message_is_cut_to_a_sane_length() -> None:
    message = status_for(RuntimeError("x" * 50_000), "predict", "predict_fn")[1]
    assert len(message) < 1100
    assert message.startswith("predict_fn failed: RuntimeError: xxx")
    assert message.endswith("...")


def test_terminal_colour_codes_never_reach_a_client() -> None:
    red, reset = "\x1b[31m", "\x1b[0m"
    coloured = f"{red}shape{reset} is \x1b[1;33mwrong{reset}"
    assert status_for(BadRequest(coloured), "input") == (400, "shape is wrong")
    assert (
        status_for(ValueError(coloured), "input")[1]
        == "could not decode the request: shape is wrong"
    )
    assert status_for(RuntimeError(coloured), "predict", "predict_fn")[1] == (
        "predict_fn failed: RuntimeError: shape is wrong"
    )
    assert first_line(RuntimeError(coloured + "\nsecond")) == "shape is wrong"
    body = json.loads(error_body(500, f"{red}failed{reset}\x07", "id"))
    assert body == {"code": 500, "message": "failed", "request_id": "id"}


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, 400), (429, 429), (503, 503), (599, 599), (399, 500), (600, 500), ("429", 500)],
)
def test_an_integer_status_code_from_400_to_599_is_answered_as_is(
    status: object, expected: int
) -> None:
    class Custom(Exception):
        status_code = status

    assert status_for(Custom("slow down"), "predict", "predict_fn")[0] == expected


def test_without_a_source_a_500_names_the_default_that_failed() -> None:
    assert status_for(TypeError("bad"), "output") == (
        500,
        "the default output_fn failed: TypeError: bad",
    )


def test_out_of_memory_is_507_also_as_torchscript_rethrows_it() -> None:
    rethrown = RuntimeError(
        "The following operation failed in the TorchScript interpreter.\n"
        "Traceback of TorchScript (most recent call last):\n"
        '  File "model.py", line 3, in forward\n'
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB\n"
    )
    assert status_for(rethrown, "predict")[0] == 507
    assert status_for(MemoryError(), "transform", "transform_fn")[0] == 507


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (toolkit_errors.GenericInferenceToolkitError(403), (403, "Invalid Request")),
        (
            toolkit_errors.GenericInferenceToolkitError(403, "this key may not", "Forbidden"),
            (403, "Forbidden: this key may not"),
        ),
        (toolkit_errors.GenericInferenceToolkitError(429, "slow down"), (429, "slow down")),
        (
            toolkit_errors.BaseInferenceToolkitError(400, "bad image\nmore", "Bad Request"),
            (400, "Bad Request: bad image\nmore"),
        ),
        (toolkit_errors.GenericInferenceToolkitError(503, "", ""), (503, "Invalid Request")),
    ],
)
def test_the_toolkits_errors_keep_their_status_with_a_readable_message(
    error: Exception, expected: tuple[int, str]
) -> None:
    assert "(" in str(error)  # the toolkit's own str() is a tuple's repr
    for stage in ("input", "predict", "output", "transform"):
        assert status_for(error, stage, "predict_fn") == expected


def test_the_toolkits_unsupported_format_error_is_415_or_from_output_fn_406() -> None:
    error = toolkit_errors.UnsupportedFormatError("application/x-parquet")
    expected = "Content type application/x-parquet is not supported by this framework."
    assert status_for(error, "input", "input_fn") == (415, expected)
    assert status_for(error, "transform", "transform_fn") == (415, expected)
    assert status_for(error, "output", "output_fn") == (406, expected)

    class Subclass(toolkit_errors.UnsupportedFormatError):
        pass

    assert status_for(Subclass("text/html"), "output")[0] == 406


def test_an_error_with_a_status_and_no_message_gets_the_statuss_phrase() -> None:
    class Custom(Exception):
        status_code = 409

    assert status_for(Custom(), "predict", "predict_fn") == (409, "Conflict")
    body = json.loads(error_body(409, "Conflict", "id"))
    assert body["message"] == "Conflict"


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (-9, "was killed by SIGKILL (out of memory?)"),
        (-11, "was killed by SIGSEGV (a crash in native code)"),
        (-15, "was killed by SIGTERM"),
        (1, "exited with code 1"),
    ],
)
def test_how_a_process_ended_in_words(code: int, words: str) -> None:
    assert process_ended(code) == words
