"""Errors a client can act on, and the one place where an exception becomes an HTTP status.

Raise these from ``inference.py`` too: any exception with an integer ``status_code`` between
400 and 599 is answered with that status and its message. That includes the official toolkit's
errors (``sagemaker_inference.errors``: ``GenericInferenceToolkitError(403, "...")``), whose
message is taken from ``message`` and ``phrase``, and its ``UnsupportedFormatError``, which has no
status: it is a 415, or a 406 from output_fn. Everything else raised by user code is a 500 that
names the failing function and the exception's type and message; its traceback goes to the log,
never to the client.
"""

from __future__ import annotations

import http
import json
import re
import signal
from typing import Literal

Stage = Literal["input", "predict", "output", "transform"]

# What a 500 names as the failing code when the runtime's default ran at that stage.
DEFAULT_SOURCES: dict[Stage, str] = {
    "input": "the default input_fn",
    "predict": "the model's forward pass (the default predict_fn)",
    "output": "the default output_fn",
    "transform": "transform_fn",
}

MESSAGE_LIMIT = 1000  # characters of an exception's message that a client gets

# Terminal escape sequences (colours, cursor moves, titles) and other control characters.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# A line that only announces what follows: the real error is the last "SomeError: ..." line.
_HEADERS = (
    "The following operation failed in the TorchScript interpreter.",
    "Traceback (most recent call last):",
)
_TRACEBACK = re.compile(r'^(?:Traceback\b.*\(most recent call last\)|File ".*", line \d+)')
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception)): (.*)$")


class InferenceError(Exception):
    """An error answered with ``status_code`` and ``str(self)`` as the message."""

    status_code = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


# The client's errors are ValueErrors too, so code that catches ValueError still catches them.
class BadRequest(InferenceError, ValueError):
    status_code = 400


class NotAcceptable(InferenceError, ValueError):
    status_code = 406


class PayloadTooLarge(InferenceError, ValueError):
    status_code = 413


class UnsupportedContentType(InferenceError, ValueError):
    status_code = 415


class OutOfMemory(InferenceError):
    status_code = 507


def status_for(error: BaseException, stage: Stage, source: str | None = None) -> tuple[int, str]:
    """The HTTP status and client-facing message for an exception raised while serving.

    ``stage`` says where it was raised: a ``ValueError`` from decoding a request is the
    client's fault (400); the same from a prediction or an answer is a bug (500). ``source``
    names the code that failed, for a 500's message: the user's function (``predict_fn``), or
    by default what ``DEFAULT_SOURCES`` says for the stage.
    """
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and 400 <= status <= 599:
        return status, status_message(error, status)
    if _is_toolkit_error(error, "UnsupportedFormatError"):
        # The toolkit raises it for a Content-Type its decoder lacks, and for an Accept its
        # encoder lacks (default_output_fn): the client's fault either way.
        return (406 if stage == "output" else 415), first_line(error)
    if is_out_of_memory(error):
        return 507, "out of memory while serving this request; try a smaller request"
    if stage == "input" and isinstance(error, ValueError):
        return 400, f"could not decode the request: {first_line(error)}"
    return 500, f"{source or DEFAULT_SOURCES[stage]} failed: {describe(error)}"


def status_message(error: BaseException, status: int) -> str:
    """The client's message for an error that carries its own status.

    The toolkit's errors keep theirs in ``message``, and the HTTP reason phrase in ``phrase``:
    their ``str()`` is the repr of a tuple (``(403, 'no access', 'Forbidden')``).
    """
    message = getattr(error, "message", None)
    if isinstance(message, str) and message.strip():
        text = message.strip()
        phrase = getattr(error, "phrase", None)
        if isinstance(phrase, str) and phrase.strip() and phrase.strip() not in text:
            text = f"{phrase.strip()}: {text}"
    else:
        text = str(error).strip()
    if not clean(text).strip():
        text = _reason_phrase(status)
    return shorten(clean(text))


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"error {status}"


def _is_toolkit_error(error: BaseException, name: str) -> bool:
    """Whether ``error`` is (a subclass of) ``sagemaker_inference.errors.<name>``, found by name:
    this module is imported by every process, the toolkit only where user code uses it."""
    return any(
        cls.__module__ == "sagemaker_inference.errors" and cls.__name__ == name
        for cls in type(error).__mro__
    )


def error_body(status: int, message: str, request_id: str) -> bytes:
    """The JSON body of every error answer."""
    body = {"code": status, "message": clean(message), "request_id": request_id}
    return json.dumps(body).encode()


def first_line(error: BaseException) -> str:
    text = clean(str(error)).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def describe(error: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """``Type: message`` for a client: the useful part of the message, never a traceback."""
    name, message = reason(error)
    return shorten(f"{name}: {message}" if message else name, limit)


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text``, cut to ``limit`` characters where longer."""
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def reason(error: BaseException) -> tuple[str, str]:
    """The exception's type name and the part of its message that says what went wrong.

    That is its first paragraph on one line. Where the message is a traceback, as TorchScript's
    errors are ("The following operation failed in the TorchScript interpreter." and the
    TorchScript stack), it is the last ``SomeError: message`` line, and the type is that one.
    """
    lines = [line.strip() for line in clean(str(error)).strip().splitlines()]
    name = type(error).__name__
    if not lines:
        return name, ""
    if lines[0] in _HEADERS or any(_TRACEBACK.match(line) for line in lines):
        for index in range(len(lines) - 1, -1, -1):
            found = _ERROR_LINE.match(lines[index])
            if found:
                rest = [found.group(2), *_paragraph(lines[index + 1 :])]
                return found.group(1), " ".join(part for part in rest if part)
        lines = [line for line in lines if line not in _HEADERS]
    return name, " ".join(_paragraph(lines))


def clean(text: str) -> str:
    """``text`` without terminal escape sequences (colours) and control characters."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def _paragraph(lines: list[str]) -> list[str]:
    """The lines up to the first blank one or the first line of a traceback."""
    kept: list[str] = []
    for line in lines:
        if not line or _TRACEBACK.match(line):
            break
        kept.append(line)
    return kept


def is_out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, CUDA's OutOfMemoryError, or either as TorchScript rethrows it."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    name, message = reason(error)  # CUDA's, as TorchScript rethrows it
    return name == "OutOfMemoryError" or message.startswith("CUDA out of memory.")


_SIGNAL_HINTS = {signal.SIGKILL: " (out of memory?)", signal.SIGSEGV: " (a crash in native code)"}


def process_ended(code: int) -> str:
    """How a process ended, in words, from its exit code (negative: the signal that killed it,
    as subprocess and os.waitstatus_to_exitcode give it)."""
    if code < 0:
        killer = signal.Signals(-code)
        return f"was killed by {killer.name}{_SIGNAL_HINTS.get(killer, '')}"
    return f"exited with code {code}"
