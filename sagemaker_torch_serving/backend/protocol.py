"""MMS's frames between its frontend and a backend worker, read and written.

The frontend writes (MMS's ModelRequestEncoder):
- load:    b"L", str model name, str model path, int batch size, str handler,
           int GPU id (-1: none), str I/O name (names the worker's stdout/stderr FIFOs)
- predict: b"I", then per request: str request id, then (str name, str value) per header and
           int -1, then (str name, str content type, bytes value) per parameter and int -1;
           after the last request, int -1
The worker answers (read by java/ModelResponseDecoder.java):
  int code, str message, then per request: str request id, str content type, int status,
  str reason phrase, int header count and that many (str name, str value), bytes body;
  then int -1.
An int is 4 bytes, big-endian; a str or bytes is an int length and that many bytes (UTF-8).

Frames are read from a buffered stream, so a request costs a system call or two instead of one
per field (MMS's own worker reads every int with its own recv).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Mapping
from typing import BinaryIO, Protocol

from sagemaker_torch_serving.settings import ORIGINAL_CONTENT_TYPE_HEADER

LOAD = b"L"
PREDICT = b"I"
END = -1
_INT = struct.Struct("!i")


class Disconnected(Exception):
    """The frontend closed the connection (at the end of a frame or inside one)."""


@dataclasses.dataclass(frozen=True)
class LoadCommand:
    model_name: str
    model_path: str
    batch_size: int
    handler: str
    gpu_id: int | None
    io_name: str


@dataclasses.dataclass(frozen=True)
class WireRequest:
    """One request of a batch, as MMS's frontend forwards it."""

    request_id: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class Answer(Protocol):
    # Read-only members: pipeline.Answer (its headers a dict) would not fit settable ones.
    @property
    def status(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def content_type(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


class FrameReader:
    """Reads the frontend's frames from a buffered binary stream (``socket.makefile("rb")``)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._read = stream.read

    def command(self) -> bytes:
        """The next frame's command byte, LOAD or PREDICT (anything else is an error)."""
        command = self._exactly(1)
        if command not in (LOAD, PREDICT):
            raise ValueError(f"unknown command {command!r} from MMS's frontend")
        return command

    def load(self) -> LoadCommand:
        model_name = self._text()
        model_path = self._text()
        batch_size = self._int()
        handler = self._text()
        gpu_id = self._int()
        return LoadCommand(
            model_name=model_name,
            model_path=model_path,
            batch_size=batch_size,
            handler=handler,
            gpu_id=gpu_id if gpu_id >= 0 else None,
            io_name=self._text(),
        )

    def batch(self) -> list[WireRequest]:
        requests = []
        while (length := self._int()) != END:
            request_id = self._exactly(length).decode()
            headers = {}
            while (length := self._int()) != END:
                name = self._exactly(length).decode().lower()
                headers[name] = self._text()
            parameters = {}
            while (length := self._int()) != END:
                name = self._exactly(length).decode()
                self._bytes()  # the parameter's content type: the header's is the one used
                parameters[name] = self._bytes()
            # MMS forwards a raw body as the parameter "body" ("data" in older clients).
            body = parameters.get("body", parameters.get("data", b""))
            if ORIGINAL_CONTENT_TYPE_HEADER in headers:  # a form body, hidden from MMS
                headers["content-type"] = headers.pop(ORIGINAL_CONTENT_TYPE_HEADER)
            requests.append(WireRequest(request_id, headers, body))
        return requests

    def _int(self) -> int:
        value: int = _INT.unpack(self._exactly(4))[0]
        return value

    def _bytes(self) -> bytes:
        return self._exactly(self._int())

    def _text(self) -> str:
        return self._bytes().decode()

    def _exactly(self, size: int) -> bytes:
        data = self._read(size)
        if len(data) != size:
            raise Disconnected()
        return data


def load_answer(code: int, message: str) -> bytes:
    return b"".join([_INT.pack(code), *_field(message.encode()), _INT.pack(END)])


def batch_answer(answers: Iterable[tuple[str, Answer]]) -> bytes:
    """The answer to a predict frame: each request's id with its own answer, in order."""
    parts = [_INT.pack(200), *_field(b"Prediction success")]
    for request_id, answer in answers:
        parts += [
            *_field(request_id.encode()),
            *_field(answer.content_type.encode()),
            _INT.pack(answer.status),
            _INT.pack(0),  # reason phrase: the status code's own
            _INT.pack(len(answer.headers)),
        ]
        for name, value in answer.headers.items():
            parts += [*_field(name.encode()), *_field(value.encode())]
        parts += _field(answer.body)
    parts.append(_INT.pack(END))
    return b"".join(parts)


def _field(data: bytes) -> tuple[bytes, bytes]:
    """A length-prefixed field as its two parts (a body is copied once, by the final join)."""
    return _INT.pack(len(data)), data
