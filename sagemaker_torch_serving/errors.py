"""Errors a client can act on, and the one place where an exception becomes an HTTP status.

Raise these from ``inference.py`` too: any exception with an integer ``status_code`` between
400 and 599 is answered with that status and its message. Everything else raised by user code
is a 500 whose traceback goes to the log, never to the client.
"""

from __future__ import annotations

import json
from typing import Literal

Stage = Literal["input", "predict", "output", "transform"]


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


def status_for(error: BaseException, stage: Stage) -> tuple[int, str]:
    """The HTTP status and client-facing message for an exception raised while serving.

    ``stage`` says where it was raised: a ``ValueError`` from decoding a request is the
    client's fault (400); the same from a prediction or an answer is a bug (500).
    """
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and 400 <= status <= 599:
        return status, str(error)
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return 507, "out of memory while serving this request; try a smaller request"
    if stage == "input" and isinstance(error, ValueError):
        return 400, f"could not decode the request: {first_line(error)}"
    return 500, "the model's handler code failed on this request; the server log has the details"


def error_body(status: int, message: str, request_id: str) -> bytes:
    """The JSON body of every error answer."""
    return json.dumps({"code": status, "message": message, "request_id": request_id}).encode()


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
