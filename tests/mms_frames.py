"""MMS's frames, built byte for byte as MMS's Java encoder writes them and read as its decoder
(our java/ModelResponseDecoder.java) reads them: shared by the protocol's unit tests and the
backend's component tests."""

from __future__ import annotations

import io
import struct


def field(data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return struct.pack("!i", len(data)) + data


def end() -> bytes:
    return struct.pack("!i", -1)


def load_frame(gpu_id: int = -1) -> bytes:
    return (
        b"L"
        + field("model")
        + field("/run/model")
        + struct.pack("!i", 4)
        + field("sagemaker_torch_serving.backend.worker")
        + struct.pack("!i", gpu_id)
        + field("0242acfffe110002-00000001")
    )


def request_frame(request_id: str, headers: dict[str, str], parameters: dict[str, bytes]) -> bytes:
    frame = field(request_id)
    for name, value in headers.items():
        frame += field(name) + field(value)
    frame += end()
    for name, value in parameters.items():
        frame += field(name) + field("application/octet-stream") + field(value)
    return frame + end()


def decode_answer(data: bytes) -> tuple[int, str, list[dict]]:
    """Read an answer frame as java/ModelResponseDecoder.java does."""
    stream = io.BytesIO(data)

    def integer() -> int:
        return struct.unpack("!i", stream.read(4))[0]

    def text() -> str:
        return stream.read(integer()).decode()

    code, message, answers = integer(), text(), []
    while (length := integer()) != -1:
        request_id = stream.read(length).decode()
        content_type, status, phrase = text(), integer(), text()
        headers = dict((text(), text()) for _ in range(integer()))
        body = stream.read(integer())
        answers.append(
            {
                "id": request_id,
                "content_type": content_type,
                "status": status,
                "phrase": phrase,
                "headers": headers,
                "body": body,
            }
        )
    assert stream.read() == b"", "bytes after the end of the frame"
    return code, message, answers
