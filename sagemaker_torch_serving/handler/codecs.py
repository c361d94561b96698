"""The default input_fn and output_fn: request bytes to tensors, predictions to answer bytes.

Nothing here unpickles: npy and npz are read with ``allow_pickle=False``.
JSON, JSON Lines and CSV become float32 tensors (as the official PyTorch toolkit does);
npy and npz keep their dtype; images become float32 ``[1, 3, H, W]`` tensors in [0, 1].

What a body decodes to is bounded by SERVING_MAX_DECODED_MB, checked before the memory is
taken: an image's size from its header (a few hundred bytes of JPEG may declare 8192x8192
pixels, 805 MB as float32), an array's shape and dtype from its .npy header. Over the limit is a
413; a body that cannot be decoded, whatever the decoder raised, is a 400. Images are read in the
formats of IMAGE_FORMATS only: those whose header gives the size before a pixel is decoded.

CSV and JSON Lines bodies are records, one a line. They are decoded all at once; only when that
fails is the body read again line by line, to name the first bad line (``line 7: could not
convert 'abc' to a number``). In batch transform (``decode(..., records=True)``) the bad records
are set aside instead: ``Records`` holds the good ones as one tensor and the others' errors, and
``encode_records`` answers one line per record, in order, an error in place of a bad one.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zipfile
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import orjson
import torch

from sagemaker_torch_serving.errors import (
    BadRequest,
    InferenceError,
    PayloadTooLarge,
    UnsupportedContentType,
    first_line,
)
from sagemaker_torch_serving.handler import media
from sagemaker_torch_serving.settings import Env

MAX_IMAGE_PIXELS = 8192 * 8192  # whatever SERVING_MAX_DECODED_MB allows
IMAGE_CHANNELS = 3  # images become RGB
# Pillow's formats whose header says the size of what decodes ("JPEG" opens MPO too: cameras').
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "AVIF", "PPM", "TGA", "QOI")
FLOAT_BYTES = 4  # float32: images, JSON and CSV become it; so do float16 arrays in the model
ARRAY_OVERHEAD = 1024  # what one array costs as a tensor besides its data, about
MEBIBYTE = 1024 * 1024


def decode(
    body: bytes,
    content_type: str,
    params: dict[str, str],
    max_bytes: int,
    max_decoded: int,
    records: bool = False,
) -> Any:
    """Decode a request body of ``content_type`` (already parsed) into tensors.

    ``records``: a CSV or JSON Lines body becomes ``Records`` (batch transform): its bad records
    set aside, not failing the body, unless every record is bad or the good ones differ in shape.

    ``max_bytes`` is the payload limit, ``max_decoded`` the limit on the bytes the body decodes
    to (SERVING_MAX_DECODED_MB): over it is a 413 (PayloadTooLarge), raised before the memory is
    taken. Whatever else a decoder raises is the body's fault, a 400 (BadRequest); but a
    MemoryError stays one (a 507).
    """
    decoder = DECODERS.get(content_type)
    if decoder is None:
        raise UnsupportedContentType(
            f"Content-Type {content_type!r} is not supported; send one of {', '.join(DECODABLE)}"
        )
    if not body:
        raise BadRequest("the request body is empty")
    try:
        if records and content_type in RECORD_TYPES:
            return _decode_records(body, content_type, params.get("charset"), max_decoded)
        return decoder(body, params, max_bytes, max_decoded)
    except (InferenceError, MemoryError):
        raise
    except RecursionError:
        message = f"could not decode the {content_type} body: it is nested too deeply"
        raise BadRequest(message) from None
    except Exception as error:  # noqa: BLE001 - the decoders read nothing but the client's body
        # zlib.error, tokenize.TokenError (a .npy header), NotImplementedError (a zip's
        # compression), struct.error, SyntaxError (Pillow's plugins): all malformed bodies.
        raise BadRequest(f"could not decode the {content_type} body: {first_line(error)}") from None


def too_large(what: str, size: int, max_decoded: int) -> PayloadTooLarge:
    """The 413 for a body that would decode to ``size`` bytes, over ``max_decoded``."""
    limit = f"{max_decoded / MEBIBYTE:g} MiB" if max_decoded >= MEBIBYTE else f"{max_decoded} B"
    return PayloadTooLarge(
        f"{what} decodes to {size} bytes, over the {max_decoded}-byte limit on what a request "
        f"may decode to ({limit}, {Env.MAX_DECODED_MB})"
    )


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


def _float_tensor(data: Any, max_decoded: int) -> torch.Tensor:
    size = math.prod(_nested_shape(data)) * FLOAT_BYTES
    if size > max_decoded:
        raise too_large("the body", size, max_decoded)
    array = np.asarray(data, dtype=np.float32)  # ragged or non-numeric input raises ValueError
    return torch.from_numpy(array)


def _nested_shape(data: Any) -> list[int]:
    """The shape of nested lists, as numpy finds it: the lengths along the first items (lists
    of other lengths further on make np.asarray fail before it allocates)."""
    shape = []
    while isinstance(data, (list, tuple)):
        shape.append(len(data))
        if not data:
            break
        data = data[0]
    return shape


def _tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind not in "biuf":
        raise ValueError(f"arrays of dtype {array.dtype} cannot become tensors")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(np.ascontiguousarray(array))


NPY_MAGIC = b"\x93NUMPY"


def read_npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype a .npy's header declares, the stream left at its data.

    Raises ValueError for anything malformed (numpy's header parser raises other things too,
    e.g. tokenize's TokenError for a header length that cuts the header short).
    """
    if stream.read(len(NPY_MAGIC)) != NPY_MAGIC:
        raise ValueError("the body is not a .npy array: it does not start with \\x93NUMPY")
    stream.seek(-len(NPY_MAGIC), io.SEEK_CUR)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy format version {version} is not supported")
    except MemoryError:
        raise
    except ValueError as error:  # numpy's own checks; UnicodeDecodeError
        raise ValueError(f"the .npy header is malformed: {first_line(error)}") from None
    except Exception as error:  # noqa: BLE001 - e.g. TokenError: the length cuts the dict short
        kind = type(error).__name__
        raise ValueError(f"the .npy header is malformed: it is no dict literal ({kind})") from None
    if any(side < 0 for side in shape):
        raise ValueError(f"the .npy header declares a negative shape {shape}")
    return shape, dtype


def _decoded_size(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """The bytes an array of ``shape`` and ``dtype`` takes as a tensor in the model: floats
    narrower than float32 count as float32 (the model's float dtype, by default)."""
    itemsize = max(dtype.itemsize, FLOAT_BYTES) if dtype.kind == "f" else dtype.itemsize
    return math.prod(shape) * itemsize


def _load_npy(
    stream: IO[bytes],
    available: int,
    max_decoded: int,
    what: str,
    before: int = 0,
    overhead: int = 0,
) -> np.ndarray:
    """np.load of one .npy, after checking its header: it claims no more than ``available``
    bytes of data (numpy allocates the claimed shape before it reads a byte of data), and that
    with the ``before`` bytes of the body's arrays decoded already, and ``overhead``, it stays
    within ``max_decoded`` (else a 413 that names the array as ``what``)."""
    start = stream.tell()
    shape, dtype = read_npy_header(stream)
    if dtype.kind not in "biuf":
        raise ValueError(f"arrays of dtype {dtype} cannot become tensors")
    total = before + overhead + _decoded_size(shape, dtype)
    if total > max_decoded:
        what = f"{what} (shape {shape}, dtype {dtype})"
        raise too_large(
            f"{what}, with the arrays before it," if before else what, total, max_decoded
        )
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > available:
        raise ValueError(f"the header claims {claimed} bytes of data, the body holds less")
    stream.seek(start)
    array = np.load(stream, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        raise ValueError("the body is not a single .npy array (an .npz is application/x-npz)")
    return array


# Decoders take (body, Content-Type parameters, the payload limit, the decoded limit).
def _decode_npz(
    body: bytes, _params: dict[str, str], _max_bytes: int, max_decoded: int
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    arrays = []
    decoded = 0  # what the arrays read so far take, each with its ARRAY_OVERHEAD
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for number, member in enumerate(archive.infolist()):
            # Read from the archive as it unpacks: no copy of the member's bytes, and a
            # header over the limit refused before its data is unpacked.
            what = f"array {number} of the archive ({member.filename!r})"
            with archive.open(member) as stream:
                array = _load_npy(
                    stream, member.file_size, max_decoded, what, decoded, ARRAY_OVERHEAD
                )
            decoded += ARRAY_OVERHEAD + _decoded_size(array.shape, array.dtype)
            arrays.append(array)
    if not arrays:
        raise ValueError("the archive holds no arrays")
    tensors = tuple(_tensor(array) for array in arrays)
    return tensors[0] if len(tensors) == 1 else tensors


def _decode_image(
    body: bytes, _params: dict[str, str], _max_bytes: int, max_decoded: int
) -> torch.Tensor:
    # Pillow's import costs ~50 ms: only workers that get images pay it.
    from PIL import Image, UnidentifiedImageError

    try:
        # Image.open of these formats reads the header only: the size is known before a pixel
        # is decoded. (Some others decode at open: an ICO its largest image, whatever size
        # its directory claims.)
        with Image.open(io.BytesIO(body), formats=IMAGE_FORMATS) as image:
            width, height = image.size
            _check_image_size(width, height, max_decoded)
            array = np.array(image.convert("RGB"))
    except Image.DecompressionBombError as error:  # over 2x Pillow's MAX_IMAGE_PIXELS
        raise PayloadTooLarge(f"the image is too large: {first_line(error)}") from None
    except UnidentifiedImageError:
        raise ValueError(
            f"not an image in a format this server reads ({', '.join(IMAGE_FORMATS)})"
        ) from None
    height, width, _ = array.shape
    _check_image_size(width, height, max_decoded)  # a plugin that decoded another size
    tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(torch.float32).div_(255.0)


def _check_image_size(width: int, height: int, max_decoded: int) -> None:
    size = width * height * IMAGE_CHANNELS * FLOAT_BYTES
    if size > max_decoded:
        raise too_large(f"the {width}x{height} image", size, max_decoded)
    if width * height > MAX_IMAGE_PIXELS:
        raise PayloadTooLarge(
            f"the image has {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS}"
        )


def _decode_csv(
    body: bytes, params: dict[str, str], _max_bytes: int, max_decoded: int
) -> torch.Tensor:
    return _decode_lines(body, media.CSV, params.get("charset"), max_decoded)


def _decode_json(
    content_type: str,
) -> Callable[[bytes, dict[str, str], int, int], torch.Tensor]:
    def decode_json(
        body: bytes, params: dict[str, str], _max_bytes: int, max_decoded: int
    ) -> torch.Tensor:
        if content_type == media.JSONLINES:
            return _decode_lines(body, content_type, params.get("charset"), max_decoded)
        return _decode_all(body, content_type, params.get("charset"), max_decoded)

    return decode_json


def _decode_all(
    body: bytes, content_type: str, charset: str | None, max_decoded: int
) -> torch.Tensor:
    """The body at once (the fast path): JSON, or CSV and JSON Lines as one tensor of records."""
    tensor = _float_tensor(_decode_text(body, content_type, charset), max_decoded)
    if content_type != media.CSV and torch.isnan(tensor).any():  # JSON has no NaN: a null
        raise ValueError("null is not a number")
    return tensor


# Bodies of records, one a line: CSV rows and JSON lines.
RECORD_TYPES = (media.CSV, media.JSONLINES)
_CELL_CHARS = 40  # of a cell that is not a number, in its record's error


@dataclasses.dataclass
class Records:
    """A CSV or JSON Lines body read as records (batch transform).

    ``tensor`` holds the records that decoded, stacked in order; ``errors`` the others' errors
    (``line 7: ...``, the line counted in the body from 1), by the record's index (blank lines
    are no records). ``count`` is the number of records.
    """

    content_type: str
    tensor: torch.Tensor
    count: int
    errors: dict[int, str]

    def error(self) -> BadRequest:
        """The 400 for the body when its bad records cannot be answered in place."""
        first = self.errors[min(self.errors)]
        return BadRequest(f"could not decode the {self.content_type} body: {first}")


def _decode_lines(
    body: bytes, content_type: str, charset: str | None, max_decoded: int
) -> torch.Tensor:
    """CSV or JSON Lines as one tensor; a bad record fails the body with its line's error."""
    try:
        return _decode_all(body, content_type, charset, max_decoded)
    except (InferenceError, MemoryError):
        raise
    except Exception:  # read again, line by line, to name the line at fault
        _, errors, ragged = _read_records(body, content_type, charset, max_decoded)
        bad = [ragged] if ragged is not None else []
        if errors:
            bad.append(errors[min(errors)])
        if not bad:
            raise
        raise ValueError(min(bad)[1]) from None


def _decode_records(
    body: bytes, content_type: str, charset: str | None, max_decoded: int
) -> Records:
    """CSV or JSON Lines as ``Records``: the good records as one tensor, the bad ones' errors."""
    try:
        tensor = _decode_all(body, content_type, charset, max_decoded)
        return Records(content_type, tensor, int(tensor.shape[0]) if tensor.ndim else 1, {})
    except (InferenceError, MemoryError):
        raise
    except Exception:  # read again, line by line, to set the bad records aside
        good, errors, ragged = _read_records(body, content_type, charset, max_decoded)
        if ragged is not None:
            raise ValueError(ragged[1]) from None
        if not good:
            if errors:
                raise ValueError(errors[min(errors)][1]) from None
            raise
        tensor = torch.from_numpy(np.stack(good))
        messages = {index: message for index, (_, message) in errors.items()}
        return Records(content_type, tensor, len(good) + len(errors), messages)


def _read_records(
    body: bytes, content_type: str, charset: str | None, max_decoded: int
) -> tuple[list[np.ndarray], dict[int, tuple[int, str]], tuple[int, str] | None]:
    """The body line by line (the slow path, after the fast one failed): the good records'
    arrays; the bad ones' line numbers and errors, by record index; and, where the good records
    differ in shape, the first line whose shape is not the most common one's, with its error."""
    text, undecodable = _text(body, charset)
    good: list[np.ndarray] = []
    lines: list[int] = []  # the good records' line numbers
    errors: dict[int, tuple[int, str]] = {}
    size = 0
    record = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            array = _record(line, content_type)
        except ValueError as error:
            why = first_line(error)
            if undecodable and "\ufffd" in line:
                why = f"is not {charset or 'UTF-8'} text"
            errors[record] = (number, f"line {number}: {why}")
        else:
            size += array.nbytes
            if size > max_decoded:
                raise too_large("the body", size, max_decoded)
            good.append(array)
            lines.append(number)
        record += 1
    shapes = Counter(array.shape for array in good)
    ragged = None
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        first = next(n for n, a in zip(lines, good, strict=True) if a.shape == common)
        number, array = next((n, a) for n, a in zip(lines, good, strict=True) if a.shape != common)
        has = _shape_text(array.shape, content_type)
        ragged = (
            number,
            f"line {number}: has {has}, line {first} has {_shape_text(common, content_type)}",
        )
    return good, errors, ragged


def _text(body: bytes, charset: str | None) -> tuple[str, bool]:
    """The body as text, and whether it was not valid text (its bad bytes then U+FFFD)."""
    encoding = "utf-8" if not charset or charset.lower().replace("-", "") == "utf8" else charset
    try:
        return body.decode(encoding), False
    except LookupError:
        raise UnsupportedContentType(f"unknown charset {charset!r}") from None
    except UnicodeDecodeError:
        return body.decode(encoding, errors="replace"), True


def _record(line: str, content_type: str) -> np.ndarray:
    """One record as a float32 array; a ValueError says what is wrong with it."""
    if content_type == media.CSV:
        return np.array([_number(cell) for cell in line.split(",")], dtype=np.float32)
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error.msg} at column {error.colno}") from None
    try:
        array = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise ValueError("not a number or an array of numbers") from None
    if np.isnan(array).any():  # JSON has no NaN: it was a null
        raise ValueError("null is not a number")
    return array


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        text = cell.strip()
        if len(text) > _CELL_CHARS:
            text = text[: _CELL_CHARS - 3] + "..."
        raise ValueError(f"could not convert {text!r} to a number") from None


def _shape_text(shape: tuple[int, ...], content_type: str) -> str:
    if content_type == media.CSV:
        return f"{shape[0]} values"
    return f"shape {list(shape)}"


def encode_records(prediction: Any, accept: str, records: Records) -> bytes | None:
    """One line per record, in order (CSV rows, JSON lines; or one JSON array): the model's
    output row for a good record, its error for a bad one. None where that cannot be: the
    output is not one row per good record, or ``accept`` has no lines."""
    if not isinstance(prediction, (torch.Tensor, np.ndarray)) or accept not in _LINE_TYPES:
        return None
    output = to_numpy(prediction)
    good = records.count - len(records.errors)
    if output.ndim == 0 or good == 0 or len(output) != good:
        return None
    if accept == media.CSV:
        rows: list[bytes] = _encode_csv(output.reshape(good, -1)).splitlines(keepends=True)
        if len(rows) != good:
            return None
        if not records.errors:
            return b"".join(rows)
        errors = {
            index: b'"' + f"error: {message}".replace('"', '""').encode() + b'"\n'
            for index, message in records.errors.items()
        }
        return b"".join(_in_place(rows, errors, records.count))
    if not records.errors:
        return ENCODERS[accept](output)
    objects = {index: {"error": message} for index, message in records.errors.items()}
    items = _in_place(list(output), objects, records.count)
    if accept == media.JSON:
        return _json(items)
    return b"".join(_json(item) + b"\n" for item in items)


def _in_place(good: list[Any], bad: dict[int, Any], count: int) -> list[Any]:
    """``count`` items: ``bad``'s at their indices, ``good``'s in order at the others."""
    rows = iter(good)
    return [bad[index] if index in bad else next(rows) for index in range(count)]


def _decode_npy(
    body: bytes, _params: dict[str, str], _max_bytes: int, max_decoded: int
) -> torch.Tensor:
    if body.startswith(b"PK"):
        raise ValueError(
            "the body is an .npz archive, not a single .npy array: send it as application/x-npz"
        )
    return _tensor(_load_npy(io.BytesIO(body), len(body), max_decoded, "the array"))


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
DECODERS: dict[str, Callable[[bytes, dict[str, str], int, int], Any]] = {
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
_LINE_TYPES = (media.CSV, media.JSONLINES, media.JSON)  # what encode_records writes
ENCODABLE = tuple(ENCODERS)
