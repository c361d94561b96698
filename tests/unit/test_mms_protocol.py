"""MMS's frames, built here byte for byte as MMS's Java encoder writes them and as its decoder
(our java/ModelResponseDecoder.java) reads them."""

from __future__ import annotations

import io

import pytest

from sagemaker_torch_serving.backend import protocol
from sagemaker_torch_serving.backend.protocol import FrameReader
from sagemaker_torch_serving.handler.pipeline import Answer
from tests.mms_frames import decode_answer, end, load_frame, request_frame


class ChunkedStream(io.RawIOBase):
    """A stream that returns at most ``chunk`` bytes per read, as a socket may."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk = data, chunk

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), self.chunk, len(self.data))
        buffer[:size], self.data = self.data[:size], self.data[size:]
        return size


def reader(data: bytes, chunk: int = 1 << 20) -> FrameReader:
    return FrameReader(io.BufferedReader(ChunkedStream(data, chunk)))


def test_load_frame() -> None:
    frames = reader(load_frame(gpu_id=1) + load_frame())
    assert frames.command() == protocol.LOAD
    command = frames.load()
    assert command.model_name == "model"
    assert command.model_path == "/run/model"
    assert command.batch_size == 4
    assert command.gpu_id == 1
    assert command.io_name == "0242acfffe110002-00000001"
    assert frames.command() == protocol.LOAD
    assert frames.load().gpu_id is None  # -1: no GPU


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_a_batch_arrives_whole_however_the_socket_splits_it(chunk: int) -> None:
    body = bytes(range(256)) * 256  # 64 KiB, every byte value
    frame = (
        b"I"
        + request_frame(
            "id-1", {"Content-Type": "image/png", "Accept": "application/json"}, {"body": body}
        )
        + request_frame("id-2", {}, {"data": b"[[1]]"})
        + request_frame("id-3", {"X-Amzn-SageMaker-Custom-Attributes": "é=1"}, {})
        + end()
    )
    frames = reader(frame, chunk)
    assert frames.command() == protocol.PREDICT
    first, second, third = frames.batch()
    assert first.request_id == "id-1"
    assert first.headers == {"content-type": "image/png", "accept": "application/json"}
    assert first.body == body
    assert second.body == b"[[1]]"  # older clients' name for the body
    assert third.headers == {"x-amzn-sagemaker-custom-attributes": "é=1"}
    assert third.body == b""


def test_a_frame_cut_short_is_a_disconnect() -> None:
    frame = b"I" + request_frame("id-1", {}, {"body": b"0123456789"}) + end()
    frames = reader(frame[:-9])
    assert frames.command() == protocol.PREDICT
    with pytest.raises(protocol.Disconnected):
        frames.batch()
    with pytest.raises(protocol.Disconnected):
        reader(b"").command()


def test_an_unknown_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown command"):
        reader(b"X").command()


def test_batch_answer_frame() -> None:
    answers = [
        ("id-1", Answer(200, b"[[2.0]]", "application/json", {"X-Request-Id": "id-1"})),
        ("id-2", Answer(415, b'{"code": 415}', "application/json", {"A": "é", "B": ""})),
        ("id-3", Answer(200, b"", "text/csv", {})),
    ]
    code, message, decoded = decode_answer(protocol.batch_answer(answers))
    assert (code, message) == (200, "Prediction success")
    assert [answer["id"] for answer in decoded] == ["id-1", "id-2", "id-3"]
    assert [answer["status"] for answer in decoded] == [200, 415, 200]
    assert decoded[0]["body"] == b"[[2.0]]"
    assert decoded[1]["headers"] == {"A": "é", "B": ""}
    assert decoded[2]["content_type"] == "text/csv"
    assert all(answer["phrase"] == "" for answer in decoded)


def test_load_answer_frame() -> None:
    code, message, answers = decode_answer(protocol.load_answer(200, "loaded. [PID]:42"))
    assert (code, message, answers) == (200, "loaded. [PID]:42", [])
