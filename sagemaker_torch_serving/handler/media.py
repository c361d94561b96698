"""Media types: parsing Content-Type and choosing the answer's type from Accept."""

from __future__ import annotations

from collections.abc import Sequence

from sagemaker_torch_serving.errors import BadRequest, NotAcceptable

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"
JPEG = "image/jpeg"
PNG = "image/png"
IMAGE = "application/x-image"

# Other spellings clients send for the same thing.
ALIASES = {
    "application/jsonl": JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/x-ndjson": JSONLINES,
    "application/csv": CSV,
    "image/jpg": JPEG,
}


# Bodies the official toolkit hands input_fn and transform_fn as text (its Transformer decodes
# them as UTF-8): handler code written for it calls str methods on them.
TEXT_TYPES = (JSON, CSV)


def user_body(body: bytes, content_type: str) -> bytes | str:
    """The request body as user handler code gets it: JSON and CSV as text, the rest as bytes."""
    if content_type not in TEXT_TYPES:
        return body
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"the {content_type} body is not UTF-8 text: {error.reason}") from None


# A body that nests deeper than this and made its parser recurse too deeply (RecursionError) is
# at fault, not the code that parsed it: no tensor nests so deep (numpy stops at 64 dimensions).
DEEP_NESTING = 100


def nesting_depth(body: bytes) -> int:
    """How deep the brackets of ``body`` (``[{(`` and ``]})``, in any text) nest at most.

    Cheap (numpy, no parse), and for the error path: telling a body nested 100,000 levels deep,
    which makes a recursive parser such as ``json.loads`` raise RecursionError, from a bug.
    """
    import numpy as np  # only this error path needs it

    step = np.zeros(256, dtype=np.int32)  # by byte: +1 opens, -1 closes
    step[list(b"[{(")] = 1
    step[list(b"]})")] = -1
    data = np.frombuffer(body, dtype=np.uint8)
    # In chunks through two small buffers: a running sum of the whole body at once would touch
    # 10x its size in new memory (over 1 s for 6 MB on a slow machine, mostly page faults).
    steps = np.empty(_DEPTH_CHUNK, dtype=np.int32)
    depths = np.empty(_DEPTH_CHUNK, dtype=np.int32)
    deepest = depth = 0
    for start in range(0, len(data), _DEPTH_CHUNK):
        count = min(_DEPTH_CHUNK, len(data) - start)
        np.take(step, data[start : start + count], out=steps[:count])
        np.cumsum(steps[:count], out=depths[:count])
        deepest = max(deepest, depth + int(depths[:count].max()))
        depth += int(depths[count - 1])
    return deepest


_DEPTH_CHUNK = 256 * 1024


def parse_content_type(header: str | None, default: str = JSON) -> tuple[str, dict[str, str]]:
    """``"application/json; charset=UTF-8"`` -> ``("application/json", {"charset": "UTF-8"})``."""
    if not header or not header.strip():
        return default, {}
    media, _, rest = header.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    media = media.strip().lower()
    return ALIASES.get(media, media), params


def parse_accept(header: str) -> list[str]:
    """Media ranges of an Accept header, most preferred first; ranges with q=0 are dropped."""
    ranges: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")):
        media, params = parse_content_type(item, default="")
        if not media:
            continue
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0:
            ranges.append((-quality, position, media))
    return [media for _, _, media in sorted(ranges)]


def negotiate(accept: str | None, supported: Sequence[str], default: str) -> str:
    """The first type the client accepts that ``supported`` holds.

    A missing Accept, or a wildcard that covers it, means ``default``
    (SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT). Raises NotAcceptable when nothing fits.
    """
    default = parse_content_type(default)[0]
    if not accept or not accept.strip():
        ranges = ["*/*"]
    else:
        ranges = parse_accept(accept)
    for media in ranges:
        if media == "*/*":
            return default if default in supported else supported[0]
        if media.endswith("/*"):
            prefix = media[:-1]
            if default.startswith(prefix) and default in supported:
                return default
            matches = [candidate for candidate in supported if candidate.startswith(prefix)]
            if matches:
                return matches[0]
        elif media in supported:
            return media
    answers = ", ".join(supported)
    raise NotAcceptable(f"cannot answer in {accept!r}; this model answers in {answers}")
