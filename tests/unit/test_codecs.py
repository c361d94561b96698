"""Unit tests for the default decoding of requests and encoding of answers, limits included."""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from PIL import Image

from sagemaker_torch_serving.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedContentType,
    status_for,
)
from sagemaker_torch_serving.handler import codecs, media
from sagemaker_torch_serving.handler.codecs import MAX_IMAGE_PIXELS, decode, encode
from sagemaker_torch_serving.settings import Settings

LIMIT = 6 * 1024 * 1024
DECODED_LIMIT = 32 * LIMIT  # SERVING_MAX_DECODED_MB's default: 192 MiB


def _decode(
    body: bytes,
    content_type: str,
    params: dict[str, str] | None = None,
    max_decoded: int = DECODED_LIMIT,
) -> Any:
    return decode(body, content_type, params or {}, LIMIT, max_decoded)


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


def test_npz_that_unpacks_past_the_decoded_limit_is_a_413() -> None:
    body = _npz(np.zeros(1024 * 1024, dtype=np.uint8), compressed=True)
    max_decoded = 256 * 1024
    assert len(body) < max_decoded
    with pytest.raises(PayloadTooLarge, match="decodes to") as caught:
        _decode(body, media.NPZ, max_decoded=max_decoded)
    assert caught.value.status_code == 413
    # The same archive is fine under a limit it fits.
    assert _decode(body, media.NPZ, max_decoded=2 * 1024 * 1024).shape == (1024 * 1024,)


def test_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    side = 10_000
    assert side * side > MAX_IMAGE_PIXELS
    body = _png_claiming(side, side)
    assert len(body) < 1000
    # Over the pixel limit even where SERVING_MAX_DECODED_MB would allow it.
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(PayloadTooLarge) as caught:
        _decode(body, media.PNG, max_decoded=2**40)
    # Refused for its size: decoding would have failed on the missing rows instead.
    assert f"{side}x{side}" in str(caught.value)
    assert caught.value.status_code == 413


def test_image_under_the_pixel_limit_decodes() -> None:
    # Control for the test above: the same construction, small, with all its rows.
    body = _image(np.zeros((3, 9), dtype=bool), "PNG")
    assert _decode(body, media.PNG).shape == (1, 3, 3, 9)


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def test_npy_header_claiming_a_huge_shape_is_a_413_before_numpy_allocates() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        _decode(_npy_header((2**50,)) + b"\0" * 64, media.NPY)
    assert caught.value.status_code == 413
    assert "(1125899906842624,)" in str(caught.value)
    assert "SERVING_MAX_DECODED_MB" in str(caught.value)


def test_npy_header_claiming_more_than_the_body_holds_is_a_bad_request() -> None:
    # Under the decoded limit, but the body holds 64 of the 8192 bytes the header claims.
    with pytest.raises(BadRequest, match="the body holds less") as caught:
        _decode(_npy_header((1024,)) + b"\0" * 64, media.NPY)
    assert caught.value.status_code == 400


def _patched_length(header: bytes, length: int) -> bytes:
    return header[:8] + struct.pack("<H", length) + header[10:]


MAGIC = b"\x93NUMPY\x01\x00"


def _raw_header(text: str) -> bytes:
    return MAGIC + struct.pack("<H", len(text)) + text.encode("latin-1")


@pytest.mark.parametrize(
    "body",
    [
        MAGIC + b"garbage after the magic string",
        MAGIC,  # no header length
        _patched_length(_npy_header((2,)), 5000) + b"\0" * 16,  # longer than the body
        _patched_length(_npy_header((2,)), 10) + b"\0" * 16,  # cuts the dict short
        _patched_length(_npy_header((2,)), 0) + b"\0" * 16,
        _raw_header("[1, 2, 3]\n"),  # not a dict
        _raw_header("{'descr': '<f4', 'shape': (2,)}\n"),  # a key missing
        _raw_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}\n"),
        _raw_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, -2)}\n"),
        _raw_header("{'descr': '<f4', 'fortran_order': False, 'shape': 'big'}\n"),
        _raw_header("{'descr': 'zz', 'fortran_order': False, 'shape': (2,)}\n"),
        _raw_header("{'descr': {'names': 1}, 'fortran_order': False, 'shape': (2,)}\n"),
        _raw_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2 ** 99,)}\n"),
        _raw_header("[" * 5000 + "]" * 5000),
        _raw_header("{" * 20000),  # over numpy's header size limit
        b"\x93NUMPY\x03\x00" + struct.pack("<I", 4) + b"\xff\xfe{}",  # not UTF-8
        b"\x93NUMPY\x09\x00" + struct.pack("<I", 2) + b"{}",  # unknown version
        b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{}",  # v2: a 2 GiB header
    ],
)
def test_a_malformed_npy_header_is_a_400_that_says_so(body: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        _decode(body, media.NPY)
    assert caught.value.status_code == 400
    assert str(caught.value).startswith("could not decode the application/x-npy body: ")
    # The same bodies inside an archive.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", body)
    with pytest.raises(BadRequest):
        _decode(buffer.getvalue(), media.NPZ)


@pytest.mark.parametrize(
    "body",
    [
        MAGIC + b"garbage after the magic string",
        _patched_length(_npy_header((2,)), 10) + b"\0" * 16,
        _raw_header("[1, 2, 3]\n"),
        _npy_header((2**40,)) + b"\0" * 64,  # numpy would allocate 8 TiB
    ],
)
def test_the_toolkits_guarded_npy_decoder_answers_malformed_headers_with_a_400(
    body: bytes,
) -> None:
    from sagemaker_torch_serving.handler import toolkit

    with pytest.raises(toolkit.RejectedNpy) as caught:
        toolkit.npy_to_numpy(body)
    status, message = status_for(caught.value, "input", "input_fn")
    assert status == 400
    assert message.startswith("the application/x-npy body is not a valid .npy array: ")


def test_npy_over_the_decoded_limit_is_a_413_and_float16_counts_as_float32() -> None:
    body = _npy(np.zeros(1000, dtype=np.float32))
    assert _decode(body, media.NPY, max_decoded=4000).shape == (1000,)
    with pytest.raises(PayloadTooLarge, match="4000 bytes, over the 3999-byte limit"):
        _decode(body, media.NPY, max_decoded=3999)
    # float16 becomes the model's float dtype, float32 by default: counted as such.
    with pytest.raises(PayloadTooLarge, match="4000 bytes"):
        _decode(_npy(np.zeros(1000, dtype=np.float16)), media.NPY, max_decoded=3999)
    assert _decode(_npy(np.zeros(1000, dtype=np.int8)), media.NPY, max_decoded=1000).shape == (
        1000,
    )


def _npz_members(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_npz_with_a_huge_declared_shape_is_a_413_before_it_is_unpacked() -> None:
    body = _npz_members(small=_npy(np.zeros(3)), huge=_npy_header((2**40,)) + b"\0" * 64)
    assert len(body) < 1000
    with pytest.raises(PayloadTooLarge) as caught:
        _decode(body, media.NPZ)
    assert caught.value.status_code == 413
    assert "array 1 of the archive ('huge')" in str(caught.value)
    assert "SERVING_MAX_DECODED_MB" in str(caught.value)


def test_npz_arrays_count_together_against_the_decoded_limit() -> None:
    one = np.zeros(10_000, dtype=np.uint8)
    body = _npz(one, one)
    assert len(_decode(body, media.NPZ, max_decoded=30_000)) == 2
    with pytest.raises(PayloadTooLarge, match="with the arrays before it"):
        _decode(body, media.NPZ, max_decoded=15_000)


def test_npz_member_whose_header_claims_more_than_it_holds_is_a_bad_request() -> None:
    body = _npz_members(lying=_npy_header((1024,)) + b"\0" * 64)
    with pytest.raises(BadRequest, match="holds less"):
        _decode(body, media.NPZ)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 grey JPEG (333 bytes) whose frame header (SOF0) says width x height."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="JPEG")
    body = buffer.getvalue()
    sof = body.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    return body[: sof + 5] + struct.pack(">HH", height, width) + body[sof + 9 :]


def test_jpeg_bomb_is_a_413_before_a_pixel_is_decoded() -> None:
    body = _jpeg_claiming(8192, 8192)
    assert len(body) == 333  # the size of the issue's
    with pytest.raises(PayloadTooLarge) as caught:
        _decode(body, media.JPEG)
    error = caught.value
    assert error.status_code == 413
    message = str(error)
    assert "8192x8192" in message
    assert str(8192 * 8192 * 3 * 4) in message  # 805 MB as float32 [1, 3, H, W]
    assert "SERVING_MAX_DECODED_MB" in message and "192 MiB" in message
    assert status_for(error, "input") == (413, message)


def test_solid_png_of_8192x8192_is_a_413() -> None:
    buffer = io.BytesIO()
    Image.new("1", (8192, 8192)).save(buffer, format="PNG")  # real, and 8 KiB
    with pytest.raises(PayloadTooLarge, match="8192x8192"):
        _decode(buffer.getvalue(), media.PNG)


def test_image_of_exactly_the_decoded_limit_decodes() -> None:
    body = _image(np.zeros((16, 16, 3), dtype=np.uint8), "PNG")
    assert _decode(body, media.PNG, max_decoded=16 * 16 * 3 * 4).shape == (1, 3, 16, 16)
    with pytest.raises(PayloadTooLarge):
        _decode(body, media.PNG, max_decoded=16 * 16 * 3 * 4 - 1)


@pytest.mark.parametrize("fmt", codecs.IMAGE_FORMATS)
def test_every_image_format_read_decodes(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), (255, 0, 0)).save(buffer, format=fmt)
    tensor = _decode(buffer.getvalue(), media.IMAGE)
    assert tensor.shape == (1, 3, 4, 5)


def test_an_icon_is_refused_it_decodes_at_open_whatever_size_it_claims() -> None:
    # An ICO's directory says 16x16; Pillow decodes the PNG inside as it opens the file.
    inner = io.BytesIO()
    Image.new("1", (4096, 4096)).save(inner, format="PNG")
    png = inner.getvalue()
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22)
    body = struct.pack("<HHH", 0, 1, 1) + entry + png
    with pytest.raises(BadRequest, match="not an image in a format this server reads"):
        _decode(body, media.IMAGE)


@pytest.mark.parametrize(
    ("body", "content_type", "size"),
    [
        (b"[[1, 2, 3, 4], [5, 6, 7, 8]]", media.JSON, 32),
        (b'{"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}', media.JSON, 32),
        (b"[1, 2, 3, 4]\n[5, 6, 7, 8]\n", media.JSONLINES, 32),
        (b"1,2,3,4\n5,6,7,8\n", media.CSV, 32),
    ],
)
def test_json_and_csv_count_their_float32_tensor_against_the_decoded_limit(
    body: bytes, content_type: str, size: int
) -> None:
    assert _decode(body, content_type, max_decoded=size).shape == (2, 4)
    with pytest.raises(PayloadTooLarge, match=f"{size} bytes"):
        _decode(body, content_type, max_decoded=size - 1)


@pytest.mark.parametrize("content_type", [media.JSON, media.JSONLINES])
def test_json_nested_100000_deep_is_a_bad_request(content_type: str) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BadRequest) as caught:
        _decode(body, content_type)
    assert caught.value.status_code == 400


def test_a_decoder_that_recurses_too_deeply_is_a_bad_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def recursing(*_args: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(codecs.DECODERS, media.JSON, recursing)
    with pytest.raises(BadRequest, match="nested too deeply"):
        _decode(b"[[[1]]]", media.JSON)


def test_the_decoded_limit_is_the_setting() -> None:
    assert Settings.from_env({}).max_decoded_bytes == DECODED_LIMIT
    assert Settings.from_env({"SERVING_MAX_DECODED_MB": "1"}).max_decoded_bytes == 1024 * 1024


def _mutants(body: bytes, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    mutants = []
    for _ in range(count):
        mutant = bytearray(body)
        for _ in range(rng.randint(1, 6)):
            mutant[rng.randrange(len(mutant))] = rng.randrange(256)
        if rng.random() < 0.2:
            mutant = mutant[: rng.randrange(1, len(mutant))]
        mutants.append(bytes(mutant))
    return mutants


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (media.NPY, _npy(np.arange(10.0))),
        (media.NPZ, _npz(np.arange(10.0), np.ones((3, 3)), compressed=True)),
        (media.NPZ, _npz(np.arange(10.0))),
        (media.PNG, _image(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), "PNG")),
        (media.JPEG, _image(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), "JPEG")),
        (media.JSON, b'{"instances": [[1.5, 2], [3, 4e5]]}'),
        (media.CSV, b"1,2.5\n3,4\n"),
    ],
)
def test_a_corrupted_body_is_decoded_or_a_4xx_never_anything_else(
    content_type: str, body: bytes
) -> None:
    # Corrupted npz members raise zlib.error, NotImplementedError (a compression method),
    # tokenize.TokenError (a .npy header)...: all must be the client's 400.
    for mutant in _mutants(body, 400, seed=len(body)):
        try:
            _decode(mutant, content_type)
        except (BadRequest, PayloadTooLarge, UnsupportedContentType):
            pass


def test_npz_body_sent_as_npy_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="application/x-npz"):
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
