"""What the predict command prints: each input's answer, then the time each stage took."""

from __future__ import annotations

import io
import json
from pathlib import Path

from sagemaker_torch_serving.handler import media
from sagemaker_torch_serving.handler.pipeline import Answer, StageTimes

# Bodies printed as text (when they are UTF-8); the rest are summarized.
TEXT_TYPES = (media.JSON, media.JSONLINES, media.CSV, "application/xml")


def answer_lines(label: str, answer: Answer, written: Path | None) -> list[str]:
    """``label: STATUS TYPE (N bytes)``, then the body as text, or for an error the message the
    server's JSON carries, or a summary of a binary body; and where ``written`` the body went."""
    lines = [f"{label}: {answer.status} {answer.content_type} ({len(answer.body)} bytes)"]
    if not 200 <= answer.status < 300:
        lines.append(error_message(answer))
    elif written is None:
        lines.append(body_text(answer))
    if written is not None:
        lines.append(f"wrote the body to {written}")
    return lines


def error_message(answer: Answer) -> str:
    """The ``message`` of an error answer's JSON body (the body itself if it has none)."""
    try:
        message = json.loads(answer.body)["message"]
    except (ValueError, KeyError, TypeError):
        return body_text(answer)
    return str(message)


def body_text(answer: Answer) -> str:
    """The body as text where its type is a text one and it is UTF-8, else a one-line summary."""
    kind = media.parse_content_type(answer.content_type, default="")[0]
    if kind.startswith("text/") or kind in TEXT_TYPES or kind.endswith(("+json", "+xml")):
        try:
            return answer.body.decode("utf-8").rstrip("\n")
        except UnicodeDecodeError:
            pass
    what = _npy_summary(answer.body) if kind == media.NPY else ""
    return f"({len(answer.body)} bytes{what}, not printed: --output FILE writes them)"


def _npy_summary(body: bytes) -> str:
    from sagemaker_torch_serving.handler.codecs import read_npy_header  # imports torch

    try:
        shape, dtype = read_npy_header(io.BytesIO(body))
    except ValueError:
        return ""
    return f": a {dtype} array of shape {list(shape)}"


def timing_lines(
    unpack: float | None, load: float, times: StageTimes, count: int, predict_note: str
) -> list[str]:
    """One line per stage, in milliseconds: the unpacking of a model.tar.gz, the model's load,
    then each request's input and output, and the batch's predict (or each transform)."""
    lines = [] if unpack is None else [f"time: unpack {_ms(unpack)}"]
    lines.append(f"time: model load {_ms(load)}")
    if times.input:
        lines.append(f"time: input {_per_request(times.input, count)}")
    if times.predict is not None:
        lines.append(f"time: predict {_ms(times.predict)} ({predict_note})")
    if times.output:
        lines.append(f"time: output {_per_request(times.output, count)}")
    if times.transform:
        lines.append(f"time: transform {_per_request(times.transform, count)}")
    return lines


def _per_request(seconds: dict[int, float], count: int) -> str:
    if count == 1:
        return ", ".join(_ms(value) for value in seconds.values())
    return ", ".join(f"[{index}] {_ms(value)}" for index, value in sorted(seconds.items()))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"
