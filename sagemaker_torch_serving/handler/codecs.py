"""The default input_fn and output_fn: request bytes to tensors, predictions to answer bytes.

Nothing here unpickles: npy and npz are read with ``allow_pickle=False``.
JSON, JSON Lines and CSV become float32 tensors (as the official PyTorch toolkit does);
npy and npz keep their dtype; images become float32 ``[1, 3, H, W]`` tensors in [0, 1].
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import orjson
import torch

from sagemaker_torch_serving.errors import BadRequest, InferenceError, UnsupportedContentType
from sagemaker_torch_serving.handler import media

MAX_IMAGE_PIXELS = 8192 * 8192
MAX_NPZ_EXPANSION = 16  # an npz may unpack to this many times the payload limit


def decode(body: bytes, content_type: str, params: dict[str, str], max_bytes: int) -> Any:
    """Decode a request body of ``content_type`` (already parsed) into tensors."""
    decoder = DECODERS.get(content_type)
    if decoder is None:
        raise UnsupportedContentType(
            f"Content-Type {content_type!r} is not supported; send one of {', '.join(DECODABLE)}"
        )
    if not body:
        raise BadRequest("the request body is empty")
    try:
        return decoder(body, params, max_bytes)
    except InferenceError:
        raise
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise BadRequest(f"could not decode the {content_type} body: {error}") from None


def encode(prediction: Any, accept: str) -> bytes:
    """Encode a prediction (tensors, arrays, lists, dicts, numbers) as ``accept``, one of
    ENCODABLE."""
    return ENCODERS[accept](to_numpy(prediction))


def to_numpy(value: Any) -> Any:
    """Tensors (also inside lists, tuples and dicts) as numpy arrays on the CPU."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.cpu().numpy()
    if isinstance(value, (list, tuple)):
        return [to_numpy(item) for item in value]
    if isinstance(value, dict):
        return {key: to_numpy(item) for key, item in value.items()}
    return value


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=_json_fallback)


def _json_fallback(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()  # dtypes orjson does not take natively, e.g. float16
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _decode_text(body: bytes, content_type: str, charset: str | None) -> Any:
    text: bytes | str = body
    if charset and charset.lower().replace("-", "") != "utf8":
        try:
            text = body.decode(charset)
        except LookupError:
            raise UnsupportedContentType(f"unknown charset {charset!r}") from None
    if content_type == media.JSON:
        data = orjson.loads(text)
        if isinstance(data, dict):
            keys = [key for key in ("instances", "inputs") if key in data]
            if not keys:
                raise ValueError('a JSON object must hold the input under "instances" or "inputs"')
            data = data[keys[0]]
        return data
    lines = (text.decode() if isinstance(text, bytes) else text).splitlines()
    if content_type == media.JSONLINES:
        return [orjson.loads(line) for line in lines if line.strip()]
    return [[float(cell) for cell in line.split(",")] for line in lines if line.strip()]


def _float_tensor(data: Any) -> torch.Tensor:
    array = np.asarray(data, dtype=np.float32)  # ragged or non-numeric input raises ValueError
    return torch.from_numpy(array)


def _tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind not in "biuf":
        raise ValueError(f"arrays of dtype {array.dtype} cannot become tensors")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(np.ascontiguousarray(array))


def _load_npy(stream: IO[bytes], available: int) -> np.ndarray:
    """np.load of one .npy, after checking that its header claims no more than ``available``
    bytes (numpy allocates the claimed shape before it reads a byte of data)."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"npy format version {version} is not supported")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > available:
        raise ValueError(f"the header claims {claimed} bytes of data, the body holds less")
    stream.seek(0)
    array = np.load(stream, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        raise ValueError("the body is not a single .npy array (an .npz is application/x-npz)")
    return array


def _decode_npz(
    body: bytes, _params: dict[str, str], max_bytes: int
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    max_unpacked = max_bytes * MAX_NPZ_EXPANSION
    arrays = []
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        members = archive.infolist()
        unpacked = sum(member.file_size for member in members)
        if unpacked > max_unpacked:
            raise ValueError(f"the archive unpacks to {unpacked} bytes, over {max_unpacked}")
        for member in members:
            with archive.open(member) as stream:
                arrays.append(_load_npy(io.BytesIO(stream.read()), member.file_size))
    if not arrays:
        raise ValueError("the archive holds no arrays")
    tensors = tuple(_tensor(array) for array in arrays)
    return tensors[0] if len(tensors) == 1 else tensors


def _decode_image(body: bytes, _params: dict[str, str], _max_bytes: int) -> torch.Tensor:
    from PIL import Image  # Pillow's import costs ~50 ms: only workers that get images pay it

    try:
        with Image.open(io.BytesIO(body)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(f"the image has {width}x{height} pixels, over {MAX_IMAGE_PIXELS}")
            array = np.array(image.convert("RGB"))
    except Image.DecompressionBombError as error:
        raise ValueError(str(error)) from None
    tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(torch.float32).div_(255.0)


# Decoders take (body, Content-Type parameters, the payload limit).
def _decode_csv(body: bytes, params: dict[str, str], _max_bytes: int) -> torch.Tensor:
    return _float_tensor(_decode_text(body, media.CSV, params.get("charset")))


def _decode_json(content_type: str) -> Callable[[bytes, dict[str, str], int], torch.Tensor]:
    def decode_json(body: bytes, params: dict[str, str], _max_bytes: int) -> torch.Tensor:
        tensor = _float_tensor(_decode_text(body, content_type, params.get("charset")))
        if torch.isnan(tensor).any():  # JSON has no NaN: it was a null
            raise ValueError("null is not a number")
        return tensor

    return decode_json


def _decode_npy(body: bytes, _params: dict[str, str], _max_bytes: int) -> torch.Tensor:
    return _tensor(_load_npy(io.BytesIO(body), len(body)))


def _encode_jsonlines(value: Any) -> bytes:
    is_rows = isinstance(value, list) or (isinstance(value, np.ndarray) and value.ndim > 0)
    rows = value if is_rows else [value]
    return b"".join(_json(row) + b"\n" for row in rows)


def _encode_csv(value: Any) -> bytes:
    table = np.asarray(value)
    table = table.reshape(len(table), -1) if table.ndim > 1 else np.atleast_2d(table)
    buffer = io.StringIO()
    np.savetxt(buffer, table, delimiter=",", fmt="%.9g" if table.dtype.kind == "f" else "%s")
    return buffer.getvalue().encode()


def _encode_npy(value: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


def _encode_npz(value: Any) -> bytes:
    buffer = io.BytesIO()
    if isinstance(value, dict):
        np.savez(buffer, **value)
    else:
        np.savez(buffer, *(value if isinstance(value, (list, tuple)) else [value]))
    return buffer.getvalue()


# The media types the defaults read and write: the tables are the lists.
DECODERS: dict[str, Callable[[bytes, dict[str, str], int], Any]] = {
    media.JSON: _decode_json(media.JSON),
    media.JSONLINES: _decode_json(media.JSONLINES),
    media.CSV: _decode_csv,
    media.NPY: _decode_npy,
    media.NPZ: _decode_npz,
    media.JPEG: _decode_image,
    media.PNG: _decode_image,
    media.IMAGE: _decode_image,
}
ENCODERS: dict[str, Callable[[Any], bytes]] = {
    media.JSON: _json,
    media.JSONLINES: _encode_jsonlines,
    media.CSV: _encode_csv,
    media.NPY: _encode_npy,
    media.NPZ: _encode_npz,
}
DECODABLE = tuple(DECODERS)
ENCODABLE = tuple(ENCODERS)
