"""Unit tests for the default decoding of requests and encoding of answers, limits included."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from PIL import Image

from sagemaker_torch_serving.errors import BadRequest, UnsupportedContentType
from sagemaker_torch_serving.handler import media
from sagemaker_torch_serving.handler.codecs import MAX_IMAGE_PIXELS, decode, encode

LIMIT = 6 * 1024 * 1024


def _decode(body: bytes, content_type: str, params: dict[str, str] | None = None) -> Any:
    return decode(body, content_type, params or {}, LIMIT)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npz(*arrays: np.ndarray, compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, *arrays)
    return buffer.getvalue()


def _image(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A 1-bit grey PNG whose header claims width x height, with pixel data for one row only."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    one_row = zlib.compress(b"\0" * (1 + (width + 7) // 8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", one_row)
        + _png_chunk(b"IEND", b"")
    )


class _CreatesMarker:
    """Unpickling this creates (opens for writing) the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


# Decoding


def test_json_list_becomes_a_float32_tensor() -> None:
    tensor = _decode(b"[[1, 2, 3], [4, 5, 6.5]]", media.JSON)
    assert isinstance(tensor, torch.Tensor)
    assert tensor.dtype == torch.float32
    assert tensor.shape == (2, 3)
    assert tensor.tolist() == [[1, 2, 3], [4, 5, 6.5]]


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_json_object_with_instances_or_inputs(key: str) -> None:
    tensor = _decode(orjson.dumps({key: [[1.0, 2.0]]}), media.JSON)
    assert tensor.shape == (1, 2)
    assert tensor.tolist() == [[1.0, 2.0]]


def test_json_object_without_a_known_key_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="instances"):
        _decode(b'{"data": [1, 2]}', media.JSON)


def test_json_in_utf16() -> None:
    body = '{"instances": [[1.5, -2.0]]}'.encode("utf-16")
    tensor = _decode(body, media.JSON, {"charset": "utf-16"})
    assert tensor.tolist() == [[1.5, -2.0]]


def test_unknown_charset_is_unsupported() -> None:
    with pytest.raises(UnsupportedContentType) as caught:
        _decode(b"[1]", media.JSON, {"charset": "no-such-charset"})
    assert caught.value.status_code == 415


def test_json_lines() -> None:
    tensor = _decode(b"[1, 2]\n\n[3, 4]\n", media.JSONLINES)
    assert tensor.dtype == torch.float32
    assert tensor.tolist() == [[1, 2], [3, 4]]


def test_csv() -> None:
    tensor = _decode(b"1,2,3\r\n4.5,-5,6e-1\n", media.CSV)
    assert tensor.dtype == torch.float32
    assert tensor.shape == (2, 3)
    assert torch.allclose(tensor, torch.tensor([[1, 2, 3], [4.5, -5, 0.6]]))


def test_npy_keeps_its_dtype() -> None:
    array = np.arange(12, dtype=np.int64).reshape(3, 4) * 10**12
    tensor = _decode(_npy(array), media.NPY)
    assert tensor.dtype == torch.int64
    assert np.array_equal(tensor.numpy(), array)


def test_npy_fortran_order_float16() -> None:
    array = np.asfortranarray(np.arange(6, dtype=np.float16).reshape(2, 3))
    tensor = _decode(_npy(array), media.NPY)
    assert tensor.dtype == torch.float16
    assert np.array_equal(tensor.numpy(), array)


def test_npy_big_endian_is_read() -> None:
    array = np.arange(4, dtype=">f4")
    tensor = _decode(_npy(array), media.NPY)
    assert tensor.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_npz_with_one_array_is_a_tensor() -> None:
    tensor = _decode(_npz(np.ones((2, 2), dtype=np.float32)), media.NPZ)
    assert isinstance(tensor, torch.Tensor)
    assert tensor.tolist() == [[1, 1], [1, 1]]


def test_npz_with_two_arrays_is_a_tuple_in_order() -> None:
    first = np.arange(3, dtype=np.int32)
    second = np.full((2, 2), 0.5, dtype=np.float64)
    decoded = _decode(_npz(first, second, compressed=True), media.NPZ)
    assert isinstance(decoded, tuple) and len(decoded) == 2
    assert decoded[0].dtype == torch.int32 and decoded[0].tolist() == [0, 1, 2]
    assert decoded[1].dtype == torch.float64 and decoded[1].tolist() == [[0.5, 0.5], [0.5, 0.5]]


@pytest.mark.parametrize("content_type", [media.PNG, media.IMAGE])
def test_png_becomes_float_nchw_in_unit_range(content_type: str) -> None:
    pixels = np.zeros((4, 5, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 128)
    tensor = _decode(_image(pixels, "PNG"), content_type)
    assert tensor.dtype == torch.float32
    assert tensor.shape == (1, 3, 4, 5)
    assert torch.allclose(tensor[0, :, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]))
    assert tensor[0, :, 1:, 1:].abs().max() == 0


def test_greyscale_png_becomes_three_channels() -> None:
    tensor = _decode(_image(np.full((3, 2), 51, dtype=np.uint8), "PNG"), media.PNG)
    assert tensor.shape == (1, 3, 3, 2)
    assert torch.allclose(tensor, torch.full((1, 3, 3, 2), 0.2))


def test_jpeg_becomes_float_nchw_in_unit_range() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
    tensor = _decode(_image(pixels, "JPEG"), media.JPEG)
    assert tensor.dtype == torch.float32
    assert tensor.shape == (1, 3, 16, 8)
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert tensor.max() > 0.5  # really scaled from 0-255, not all zeros


# Decoding errors


def test_unknown_charset_is_refused() -> None:
    with pytest.raises(ValueError, match="no-such-charset") as caught:
        _decode(b"[1]", media.JSON, {"charset": "no-such-charset"})
    assert caught.value.status_code in (400, 415)


def test_unsupported_content_type() -> None:
    with pytest.raises(UnsupportedContentType) as caught:
        _decode(b"abc", "text/plain")
    assert caught.value.status_code == 415
    assert "text/plain" in str(caught.value)
    assert media.JSON in str(caught.value)


@pytest.mark.parametrize("content_type", [media.JSON, media.CSV, media.NPY, media.PNG])
def test_empty_body_is_a_bad_request(content_type: str) -> None:
    with pytest.raises(BadRequest) as caught:
        _decode(b"", content_type)
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[1, 2", media.JSON),
        (b"[[1, 2], [3]]", media.JSON),
        (b'["a", "b"]', media.JSON),
        (b"[1, 2]\n{oops\n", media.JSONLINES),
        (b"1,2\n3,x\n", media.CSV),
        (b"a,b\n1,2\n", media.CSV),
        (b"1,2\n3\n", media.CSV),
        (b"\xff\xfe1,2\n", media.CSV),
        (b"not an image", media.PNG),
        (b"PK\x03\x04 not really a zip", media.NPZ),
    ],
)
def test_malformed_bodies_are_bad_requests(body: bytes, content_type: str) -> None:
    with pytest.raises(BadRequest):
        _decode(body, content_type)


def test_truncated_npy_is_a_bad_request() -> None:
    body = _npy(np.arange(100, dtype=np.float64))
    with pytest.raises(BadRequest):
        _decode(body[: len(body) - 40], media.NPY)


def test_truncated_png_is_a_bad_request() -> None:
    body = _image(np.zeros((32, 32, 3), dtype=np.uint8), "PNG")
    with pytest.raises(BadRequest):
        _decode(body[: len(body) // 2], media.PNG)


def test_object_npy_is_a_bad_request() -> None:
    body = _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadRequest):
        _decode(body, media.NPY)


def test_string_npy_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="dtype"):
        _decode(_npy(np.array(["a", "b"])), media.NPY)


@pytest.mark.parametrize("content_type", [media.NPY, media.NPZ])
def test_pickled_payload_is_never_unpickled(tmp_path: Path, content_type: str) -> None:
    marker = tmp_path / "unpickled"
    array = np.array([_CreatesMarker(marker)], dtype=object)
    if content_type == media.NPY:
        body = _npy(array, allow_pickle=True)
    else:
        body = _npz(array)
    # The payload is live: loading it the unsafe way does create the marker.
    control = tmp_path / "control"
    live = np.array([_CreatesMarker(control)], dtype=object)
    loaded = np.load(io.BytesIO(_npy(live, allow_pickle=True)), allow_pickle=True)
    loaded[0].close()
    assert control.exists()

    with pytest.raises(BadRequest):
        _decode(body, content_type)
    assert not marker.exists()


def test_npz_that_unpacks_past_the_limit_is_a_bad_request() -> None:
    body = _npz(np.zeros(1024 * 1024, dtype=np.uint8), compressed=True)
    max_bytes = 16 * 1024  # the archive may unpack to 16x this: 256 KiB, far under 1 MiB
    assert len(body) < max_bytes
    with pytest.raises(BadRequest, match="unpacks to"):
        decode(body, media.NPZ, {}, max_bytes)
    # The same archive is fine under a limit it fits.
    assert decode(body, media.NPZ, {}, 1024 * 1024).shape == (1024 * 1024,)


def test_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    side = 10_000
    assert side * side > MAX_IMAGE_PIXELS
    body = _png_claiming(side, side)
    assert len(body) < 1000
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(BadRequest) as caught:
        _decode(body, media.PNG)
    # Refused for its size: decoding would have failed on the missing rows instead.
    assert f"{side}x{side}" in str(caught.value)


def test_image_under_the_pixel_limit_decodes() -> None:
    # Control for the test above: the same construction, small, with all its rows.
    body = _image(np.zeros((3, 9), dtype=bool), "PNG")
    assert _decode(body, media.PNG).shape == (1, 3, 3, 9)


def test_npy_header_claiming_a_huge_shape_is_a_bad_request() -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**50,)}
    )
    with pytest.raises(BadRequest):
        _decode(header.getvalue() + b"\0" * 64, media.NPY)


def test_npz_body_sent_as_npy_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        _decode(_npz(np.zeros(3)), media.NPY)


# Encoding


def test_tensor_to_json() -> None:
    body = encode(torch.tensor([[1.0, 2.5], [3.0, 4.0]]), media.JSON)
    assert orjson.loads(body) == [[1.0, 2.5], [3.0, 4.0]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensor_to_json(dtype: torch.dtype) -> None:
    body = encode(torch.tensor([0.5, -2.0], dtype=dtype), media.JSON)
    assert orjson.loads(body) == [0.5, -2.0]


def test_non_contiguous_tensor_to_json() -> None:
    body = encode(torch.arange(6.0).reshape(2, 3).t(), media.JSON)
    assert orjson.loads(body) == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]


def test_tensor_requiring_grad_to_json() -> None:
    body = encode(torch.ones(2, requires_grad=True) * 2, media.JSON)
    assert orjson.loads(body) == [2.0, 2.0]


def test_numpy_scalar_and_dict_to_json() -> None:
    assert orjson.loads(encode(np.float32(1.5), media.JSON)) == 1.5
    assert orjson.loads(encode(np.int64(7), media.JSON)) == 7
    prediction = {"label": "cat", "scores": torch.tensor([0.25, 0.75]), "n": 2}
    assert orjson.loads(encode(prediction, media.JSON)) == {
        "label": "cat",
        "scores": [0.25, 0.75],
        "n": 2,
    }


def test_json_lines_is_one_line_per_row() -> None:
    body = encode(torch.tensor([[1, 2], [3, 4], [5, 6]]), media.JSONLINES)
    lines = body.decode().splitlines()
    assert [orjson.loads(line) for line in lines] == [[1, 2], [3, 4], [5, 6]]
    assert body.endswith(b"\n")


def test_json_lines_of_a_dict_is_one_line() -> None:
    body = encode({"a": 1}, media.JSONLINES)
    assert body == b'{"a":1}\n'


def test_json_lines_of_a_scalar_tensor() -> None:
    assert encode(torch.tensor(3.0), media.JSONLINES) == b"3.0\n"


def test_csv_rows_and_floats_round_trip() -> None:
    values = torch.tensor([[0.1, -2.5, 1e-7], [3.0, 1 / 3, 12345.678]])
    body = encode(values, media.CSV)
    lines = body.decode().splitlines()
    assert len(lines) == 2
    parsed = [[float(cell) for cell in line.split(",")] for line in lines]
    assert np.array_equal(np.array(parsed, dtype=np.float32), values.numpy())


def test_csv_flattens_each_row_and_writes_ints_as_ints() -> None:
    body = encode(torch.arange(8).reshape(2, 2, 2), media.CSV)
    assert body.decode().splitlines() == ["0,1,2,3", "4,5,6,7"]


def test_csv_of_a_vector_is_one_row() -> None:
    assert encode(np.array([1.5, 2.0]), media.CSV).decode().splitlines() == ["1.5,2"]


def test_npy_round_trips_with_its_dtype() -> None:
    prediction = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    array = np.load(io.BytesIO(encode(prediction, media.NPY)), allow_pickle=False)
    assert array.dtype == np.int32
    assert np.array_equal(array, prediction.numpy())


def test_npz_of_a_dict_round_trips() -> None:
    prediction = {"logits": torch.tensor([[0.5, 1.5]]), "labels": np.array([1, 0])}
    with np.load(io.BytesIO(encode(prediction, media.NPZ)), allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["labels", "logits"]
        assert np.array_equal(arrays["logits"], [[0.5, 1.5]])
        assert np.array_equal(arrays["labels"], [1, 0])


def test_npz_of_a_tuple_keeps_order() -> None:
    prediction = (torch.zeros(2), torch.ones(3))
    with np.load(io.BytesIO(encode(prediction, media.NPZ)), allow_pickle=False) as arrays:
        assert arrays.files == ["arr_0", "arr_1"]
        assert arrays["arr_1"].tolist() == [1.0, 1.0, 1.0]


def test_encoded_npy_decodes_back() -> None:
    prediction = torch.randn(2, 3)
    assert torch.equal(_decode(encode(prediction, media.NPY), media.NPY), prediction)
