"""SageMaker handlers for the example 8x8 handwritten-digit classifier.

Pipeline for one request:

1. ``input_fn`` decodes the image (raw PNG/JPEG bytes, or JSON ``{"image": "<base64>"}``),
   converts it to grayscale ("L"), resizes it to 8x8 with a box filter when needed, then
   ``preprocess`` scales pixels to [0, 1] and normalizes them with the fixed ``MEAN``/``STD``
   computed on the training split (digits are white on a black background).
2. ``model_fn`` and ``predict_fn`` come from the serving runtime's defaults: they load
   ``model.pt`` (TorchScript) or ``model.onnx`` and run one batched forward pass that
   returns raw logits ``[N, 10]``.
3. ``output_fn`` applies softmax and argmax to one request's logits and returns JSON
   ``{"predicted_class": int, "probabilities": [10 floats]}``.

``model/train.py`` imports ``preprocess`` from this file, so training, evaluation and serving
share one preprocessing implementation.
"""

import base64
import io
import json

import numpy as np
import torch
from PIL import Image


# The serving runtime answers an exception with an integer ``status_code`` with that status, so
# these need no import from it, and this module runs under the official toolkits as well.
class UnsupportedContentType(ValueError):
    status_code = 415


class NotAcceptable(ValueError):
    status_code = 406


# Normalization constants: mean/std of the uint8-quantized training pixels scaled to [0, 1].
MEAN: float = 0.3053
STD: float = 0.3758

IMAGE_SIZE: int = 8
NUM_CLASSES: int = 10
MAX_IMAGE_SIDE: int = 4096
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
IMAGE_CONTENT_TYPES: frozenset[str] = frozenset({"image/png", "image/jpeg", "application/x-image"})
SUPPORTED_CONTENT_TYPES: str = "image/png, image/jpeg, application/x-image, application/json"


def preprocess(images: np.ndarray) -> torch.Tensor:
    """Turn uint8 grayscale images ``[N, 8, 8]`` into the normalized input ``[N, 1, 8, 8]``."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape [N, 8, 8], got {list(array.shape)}")
    scaled = array.astype(np.float32) / np.float32(255.0)
    normalized = (scaled - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(np.ascontiguousarray(normalized[:, None, :, :]))


def _decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes into a uint8 ``[8, 8]`` grayscale array, bounding the pixel count."""
    if not data:
        raise ValueError("empty request body: expected image bytes")
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"image too large: at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels are accepted"
        ) from exc
    except Exception as exc:
        raise ValueError(
            f"request body is not a decodable image ({', '.join(IMAGE_FORMATS)})"
        ) from exc
    with img:
        width, height = img.size
        if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
            raise ValueError(
                f"image too large: {width}x{height} pixels, "
                f"at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} are accepted"
            )
        try:
            img.load()
            gray = img.convert("L")
        except Exception as exc:
            raise ValueError("request body is not a decodable image (corrupt image data)") from exc
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.uint8)


def _image_bytes_from_json(request_body: bytes) -> bytes:
    """Extract and base64-decode the ``"image"`` field of a JSON request body."""
    try:
        payload = json.loads(request_body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError('request body is not valid JSON: expected {"image": "<base64>"}') from exc
    if not isinstance(payload, dict) or "image" not in payload:
        raise ValueError('JSON body must be an object with an "image" field: {"image": "<base64>"}')
    encoded = payload["image"]
    if not isinstance(encoded, str):
        raise ValueError('"image" must be a base64-encoded PNG or JPEG string')
    if encoded.startswith("data:") and "," in encoded:  # tolerate data URLs
        encoded = encoded.split(",", 1)[1]
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ValueError('"image" is not valid base64') from exc


def input_fn(request_body: bytes, request_content_type: str) -> torch.Tensor:
    """Deserialize one request into the normalized model input ``[1, 1, 8, 8]``."""
    if isinstance(request_body, str):
        request_body = request_body.encode("utf-8")
    if request_content_type in IMAGE_CONTENT_TYPES:
        image_bytes = bytes(request_body)
    elif request_content_type == "application/json":
        image_bytes = _image_bytes_from_json(request_body)
    else:
        raise UnsupportedContentType(
            f"unsupported content type {request_content_type!r}; "
            f"supported: {SUPPORTED_CONTENT_TYPES}"
        )
    return preprocess(_decode_image(image_bytes)[None, :, :])


def _accepts_json(accept: str | None) -> bool:
    """True when the Accept value allows ``application/json`` (or is empty)."""
    if not accept:
        return True
    for media_range in accept.split(","):
        media_type = media_range.split(";", 1)[0].strip().lower()
        if media_type in ("application/json", "application/*", "*/*", ""):
            return True
    return False


def output_fn(prediction: torch.Tensor | np.ndarray, accept: str) -> tuple[bytes, str]:
    """Serialize one request's logits ``[1, 10]`` as JSON with the class and probabilities."""
    if not _accepts_json(accept):
        raise NotAcceptable(
            f"unsupported accept type {accept!r}: this model supports only application/json"
        )
    if isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().cpu().numpy()
    logits = np.asarray(prediction, dtype=np.float64).reshape(-1)
    if logits.shape != (NUM_CLASSES,):
        raise ValueError(f"expected {NUM_CLASSES} logits for one request, got {logits.size}")
    exp = np.exp(logits - logits.max())
    probabilities = exp / exp.sum()
    body = {
        "predicted_class": int(np.argmax(logits)),
        "probabilities": [round(float(p), 6) for p in probabilities],
    }
    return json.dumps(body).encode("utf-8"), "application/json"
