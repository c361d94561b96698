"""``python -m sagemaker_torch_serving predict --model DIR_OR_TAR_GZ --input FILE [--input ...]``

Runs the model through what a worker runs (handler/build.py, then handler/pipeline.py), in this
process: the settings read from the environment as the server reads them, with the model
directory (and so its code/) taken from --model; the same defaults, codecs and error answers.
Several inputs are one batch, each answered on its own, as the server answers a batch. A
model.tar.gz (or a directory holding nothing but one, as for the server) is unpacked safely
(archive.py) into a temporary folder, removed at exit.

Prints on stdout the model, its code and device, each input's answer (status, Content-Type, the
body as text, or for an error the message the server's JSON carries, or a summary of a binary
body unless --output writes it), then a line per stage with the time it took. Exit codes: 0 when
every input was answered 2xx; 1 when one was not, or the model did not load (the server's line,
"the model failed to load: ..."), or its archive could not be unpacked; 2 for a bad argument or
setting. Each failure is one line on stderr, checked arguments before anything loads. The handler
path's log (a 500's traceback) goes to stderr at SAGEMAKER_CONTAINER_LOG_LEVEL; the traceback of
a model that did not load is logged at DEBUG.

Unlike the server, it does not install code/requirements.txt (a line says so), and it answers a
batch that takes longer than SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS (a line says the server
would have answered 504).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sagemaker_torch_serving.archive import ARCHIVE_SUFFIXES, ArchiveError, lone_archive, unpack
from sagemaker_torch_serving.handler import media
from sagemaker_torch_serving.settings import Env, Settings, SettingsError

if TYPE_CHECKING:
    from sagemaker_torch_serving.handler.pipeline import Answer, Pipeline, StageTimes

logger = logging.getLogger("sagemaker_torch_serving.predict")

PROG = "predict"
STDIN = "-"
OCTET_STREAM = "application/octet-stream"
# --content-type by the input file's extension; anything else is OCTET_STREAM.
CONTENT_TYPES = {
    ".json": media.JSON,
    ".jsonl": media.JSONLINES,
    ".csv": media.CSV,
    ".npy": media.NPY,
    ".npz": media.NPZ,
    ".png": media.PNG,
    ".jpg": media.JPEG,
    ".jpeg": media.JPEG,
}
SERVER_NAME = "sagemaker-torch-serving predict"  # context.system_properties["server_name"]

_TOKEN = r"[A-Za-z0-9][\w.+!#$&^-]*"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
_MEDIA_RANGE = re.compile(rf"\*/\*|{_TOKEN}/(?:\*|{_TOKEN})")


class UsageError(Exception):
    """A bad argument or setting: exit 2, with this one line."""


class Failure(Exception):
    """What the server fails on as well (the model's archive, its loading): exit 1."""


@dataclasses.dataclass(frozen=True)
class Input:
    label: str  # the file as given, or "stdin"
    body: bytes
    content_type: str


@dataclasses.dataclass(frozen=True)
class Arguments:
    model: Path
    inputs: list[Input]
    accept: str | None  # None: SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    outputs: list[Path] | None  # one per input


def main(argv: Sequence[str]) -> int:
    """Run the command; the exit code."""
    try:
        arguments = check_arguments(argv)
        Settings.from_env()  # a bad variable fails here, before anything is unpacked or loaded
        return _predict(arguments)
    except UsageError as error:
        _fail(str(error))
        return 2
    except SettingsError as error:
        _fail(f"invalid setting: {error}")
        return 2
    except Failure as error:
        _fail(str(error))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130


def check_arguments(argv: Sequence[str]) -> Arguments:
    """The arguments, each checked, and the inputs read; UsageError says what is wrong."""
    namespace = _parser().parse_args(list(argv))
    model: Path = namespace.model
    if not model.exists():
        raise UsageError(f"--model {model}: no such file or directory")
    if model.is_file() and not _is_archive(model):
        raise UsageError(
            f"--model {model} is neither a folder nor a model.tar.gz: pass the folder that "
            "holds the model file (and its code/), or the model.tar.gz"
        )
    content_type: str | None = namespace.content_type
    if content_type is not None and not _MEDIA_TYPE.fullmatch(_media_part(content_type)):
        raise UsageError(
            f"--content-type {content_type!r} is not a media type (type/subtype, such as "
            "application/json)"
        )
    accept: str | None = namespace.accept
    if accept is not None and not all(
        _MEDIA_RANGE.fullmatch(_media_part(item)) for item in accept.split(",")
    ):
        raise UsageError(
            f"--accept {accept!r} is not a list of media types (such as application/json or "
            "text/csv, */*)"
        )
    names: list[str] = namespace.input
    if names.count(STDIN) > 1:
        raise UsageError("--input - (stdin) may be given once")
    return Arguments(
        model=model,
        inputs=[_read_input(name, content_type) for name in names],
        accept=accept,
        outputs=None if namespace.output is None else _output_paths(namespace.output, len(names)),
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    extensions = ", ".join(f"{suffix} {kind}" for suffix, kind in CONTENT_TYPES.items())
    parser = _Parser(
        prog="python -m sagemaker_torch_serving predict",
        description=(
            "Run a model directory or model.tar.gz with its code/inference.py on inputs, in "
            "this process, through the handler path the server's workers run (no Java, MMS or "
            "Docker), and print each answer and the time each stage took."
        ),
        epilog=(
            "Exit codes: 0 every input answered 2xx; 1 an input answered 4xx/5xx, or the model "
            "did not load; 2 bad arguments. Settings come from the same variables as the "
            "server's (SERVING_*, SAGEMAKER_*)."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="DIR_OR_TAR_GZ",
        help="the model folder (the model file and its code/) or a model.tar.gz",
    )
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="FILE",
        help="a request body; repeat it for a batch of several; - reads stdin",
    )
    parser.add_argument(
        "--content-type",
        metavar="TYPE",
        help=f"of every input; by default by its extension ({extensions}; else {OCTET_STREAM})",
    )
    parser.add_argument(
        "--accept",
        metavar="TYPES",
        help=f"the Accept header; by default {Env.DEFAULT_ACCEPT} (application/json)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write the answer's body to FILE; with several inputs to FILE-0, FILE-1, ... "
        "(before the extension: out-0.json)",
    )
    return parser


def _media_part(value: str) -> str:
    return value.partition(";")[0].strip()


def _is_archive(path: Path) -> bool:
    if path.name.endswith(ARCHIVE_SUFFIXES):
        return True
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _read_input(name: str, content_type: str | None) -> Input:
    if name == STDIN:
        return Input("stdin", sys.stdin.buffer.read(), content_type or OCTET_STREAM)
    path = Path(name)
    try:
        body = path.read_bytes()
    except OSError as error:
        raise UsageError(f"--input {name}: cannot read it: {error.strerror or error}") from None
    return Input(name, body, content_type or CONTENT_TYPES.get(path.suffix.lower(), OCTET_STREAM))


def _output_paths(output: Path, count: int) -> list[Path]:
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder: name a file")
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: the folder {output.parent} does not exist")
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{index}{output.suffix}") for index in range(count)]


def _fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr, flush=True)


def _predict(arguments: Arguments) -> int:
    with _model_dir(arguments.model) as (model_dir, unpack_seconds):
        settings = Settings.from_env(
            {**os.environ, Env.MODEL_DIR: str(model_dir), Env.MODEL_ARCHIVE: ""}
        )
        logging.basicConfig(stream=sys.stderr, level=settings.log_level, format="%(message)s")
        requirements = settings.code_dir / "requirements.txt"
        if requirements.is_file():
            _note(f"{requirements} is not installed here (the server pip-installs it at start)")
        pipeline, load_seconds = _load(settings, len(arguments.inputs))
        if load_seconds > settings.startup_timeout_seconds:
            _note(
                f"the model took {load_seconds:.1f} s to load, over {Env.STARTUP_TIMEOUT}="
                f"{settings.startup_timeout_seconds}: the server would stop"
            )
        _print_model(arguments.model, model_dir, pipeline)
        answers, times, batch_seconds = _answer(pipeline, arguments)
        if batch_seconds > settings.timeout_seconds:
            _note(
                f"the batch took {batch_seconds:.1f} s, over {Env.TIMEOUT_SECONDS}="
                f"{settings.timeout_seconds}: the server would answer 504"
            )
        _report(arguments, pipeline, answers, times, unpack_seconds, load_seconds)
    return 0 if all(200 <= answer.status < 300 for answer in answers) else 1


@contextlib.contextmanager
def _model_dir(model: Path) -> Iterator[tuple[Path, float | None]]:
    """The model directory to load, and the seconds it took to unpack (None: not an archive)."""
    archive = model if model.is_file() else lone_archive(model)
    if archive is None:
        yield model.absolute(), None
        return
    with tempfile.TemporaryDirectory(
        prefix="sagemaker-predict-", ignore_cleanup_errors=True
    ) as tmp:
        destination = Path(tmp) / "model"
        started = time.perf_counter()
        try:
            unpack(archive, destination)
        except ArchiveError as error:
            raise Failure(str(error)) from None
        yield destination, time.perf_counter() - started


def _load(settings: Settings, count: int) -> tuple[Pipeline, float]:
    """The pipeline as a worker builds it, and the seconds that took (not counting the import of
    torch, which the backend does before it forks a worker); Failure with the server's line if
    the model cannot load."""
    from sagemaker_torch_serving.handler.build import build_pipeline  # imports torch
    from sagemaker_torch_serving.handler.model_loading import describe_load_failure

    system_properties = {
        "gpu_id": 0 if settings.gpu_count else None,
        "batch_size": max(settings.batch_size, count),
        "server_name": SERVER_NAME,
        "server_version": _version(),
    }
    started = time.perf_counter()
    try:
        pipeline = build_pipeline(settings, system_properties)
    except Exception as error:
        logger.debug("loading the model failed", exc_info=error)
        reason = describe_load_failure(error, settings.code_dir, settings.trust_pickled_model)
        raise Failure(f"the model failed to load: {reason}") from None
    import torch

    # The batch runs alone, as a lone request does on the server: on every CPU.
    torch.set_num_threads(settings.threads_for(1))
    return pipeline, time.perf_counter() - started


def _version() -> str:
    try:
        return metadata.version("sagemaker-torch-serving")
    except metadata.PackageNotFoundError:
        return "unknown"


def _answer(pipeline: Pipeline, arguments: Arguments) -> tuple[list[Answer], StageTimes, float]:
    """The inputs as one batch through the pipeline: the answers, each stage's time, and the
    whole batch's seconds."""
    from sagemaker_torch_serving.handler.context import ServingContext
    from sagemaker_torch_serving.handler.pipeline import Request, StageTimes

    accept = arguments.accept or pipeline.settings.default_accept
    requests = []
    for item in arguments.inputs:
        request_id = str(uuid.uuid4())
        headers = {"content-type": item.content_type, "accept": accept}
        context = ServingContext(pipeline.system_properties, request_id, headers)
        requests.append(Request(request_id, item.body, item.content_type, accept, context))
    times = StageTimes()
    started = time.perf_counter()
    answers = pipeline.answer(requests, times)
    return answers, times, time.perf_counter() - started


def _print_model(model: Path, model_dir: Path, pipeline: Pipeline) -> None:
    unpacked = "" if model.absolute() == model_dir else f" (unpacked into {model_dir})"
    threads = pipeline.settings.threads_for(1)
    device = pipeline.system_properties["device"]
    print(f"model: {model}{unpacked}")
    print(f"code: {pipeline.contract.describe()}")
    print(f"device: {device}, {threads} torch thread{'s' if threads != 1 else ''}")


def _report(
    arguments: Arguments,
    pipeline: Pipeline,
    answers: list[Answer],
    times: StageTimes,
    unpack_seconds: float | None,
    load_seconds: float,
) -> None:
    from sagemaker_torch_serving.predict import report

    count = len(arguments.inputs)
    for index, (item, answer) in enumerate(zip(arguments.inputs, answers, strict=True)):
        written = None
        if arguments.outputs is not None:
            written = arguments.outputs[index]
            try:
                written.write_bytes(answer.body)
            except OSError as error:
                raise UsageError(f"--output {written}: cannot write it: {error.strerror}") from None
        label = f"[{index}] {item.label} ({item.content_type}, {len(item.body)} bytes)"
        print("\n".join(report.answer_lines(label, answer, written)))
    if pipeline.contract.predict_fn is None:
        predict_note = f"the default predict_fn, batch of {times.predicted}"
    else:
        plural = "s" if times.predicted != 1 else ""
        predict_note = (
            f"{pipeline.contract.predict_fn.name} on {times.predicted} input{plural}, one by one"
        )
    lines = report.timing_lines(unpack_seconds, load_seconds, times, count, predict_note)
    print("\n".join(lines), flush=True)
