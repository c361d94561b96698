"""One worker: loads the model when MMS says so, then answers MMS's batches.

process.py forks it for a connection from MMS's frontend and it lives as long as that
connection; the frames are protocol.py's, the model and its handler the handler path's
(handler/build.py). A worker that cannot load the model writes the reason to the run directory
(the serving process exits with it; on a multi-model endpoint the frontend answers that
model's load with it) and answers MMS's load with the error. On a multi-model endpoint the
model is the one MMS's load command names (its directory, with its own code/). Every request of a
batch gets its own answer, whatever happens to the others.

Importing this module imports torch: the backend does it once, before it forks.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import mms

from sagemaker_torch_serving.backend import protocol
from sagemaker_torch_serving.backend.cores import CpuShare
from sagemaker_torch_serving.backend.protocol import FrameReader, LoadCommand, WireRequest
from sagemaker_torch_serving.handler.build import build_pipeline
from sagemaker_torch_serving.handler.context import ServingContext
from sagemaker_torch_serving.handler.model_loading import describe_load_failure, out_of_memory
from sagemaker_torch_serving.handler.pipeline import Pipeline, Request, error_answer
from sagemaker_torch_serving.run_dir import RunPaths, mark_loaded, write_load_failure
from sagemaker_torch_serving.settings import Env, Settings

logger = logging.getLogger(__name__)

# The exit code of a worker that could not load the model and wrote why (process.py reports
# any other death before loading).
LOAD_FAILED = 3


def serve(connection: socket.socket, tmp_dir: Path) -> int:
    """Load the model when MMS says so, then answer batches until MMS hangs up; the exit code."""
    reader = FrameReader(connection.makefile("rb"))
    worker: Worker | None = None
    try:
        while True:
            if reader.command() == protocol.LOAD:
                worker = _load(reader.load(), connection, tmp_dir)
                if worker is None:
                    return LOAD_FAILED
            elif worker is None:
                raise ValueError("MMS sent requests before loading the model")
            else:
                worker.answer(reader.batch())
    except (protocol.Disconnected, BrokenPipeError, ConnectionResetError):
        return 0  # MMS hung up: it stops, or it gave up on this worker
    except Exception:
        logger.exception("the worker failed")
        return 1
    finally:
        connection.close()
        sys.stdout.flush()
        sys.stderr.flush()


def _load(command: LoadCommand, connection: socket.socket, tmp_dir: Path) -> Worker | None:
    """Load the model and answer MMS; None if loading failed (and was reported)."""
    settings = Settings.from_env()
    if settings.multi_model:
        settings = settings.for_model(Path(command.model_path))
    logging.basicConfig(stream=sys.stdout, level=settings.log_level, format="%(message)s")
    # MMS reads each worker's output from two FIFOs it names, which must exist when it gets the
    # answer (else it creates plain files and never sees a line).
    outputs = [tmp_dir / f"{command.io_name}-{stream}" for stream in ("stdout", "stderr")]
    for path in outputs:
        os.mkfifo(path)
    started = time.perf_counter()
    system_properties = {
        "gpu_id": command.gpu_id,
        "batch_size": command.batch_size,
        "server_name": "MMS",
        "server_version": mms.__version__,
    }
    try:
        worker = Worker(build_pipeline(settings, system_properties), connection)
    except Exception as error:
        reason = describe_load_failure(error, settings.code_dir, settings.trust_pickled_model)
        logger.error("loading the model failed: %s", reason, exc_info=error)
        code = 507 if out_of_memory(error) else 500
        if settings.run_dir is not None:
            model_name = command.model_name if settings.multi_model else None
            write_load_failure(RunPaths(settings.run_dir), model_name, code, reason)
        connection.sendall(protocol.load_answer(code, reason))
        return None
    # MMS takes the worker's pid from the end of this message.
    message = f"loaded model {command.model_name}. [PID]:{os.getpid()}"
    connection.sendall(protocol.load_answer(200, message))
    _write_to(outputs)
    logger.info(
        "worker %d loaded the model in %.2f s (%s)",
        os.getpid(),
        time.perf_counter() - started,
        worker.pipeline.contract.describe(),
    )
    return worker


def _write_to(outputs: list[Path]) -> None:
    """Send this process's stdout and stderr into MMS's FIFOs for this worker."""
    for path, stream in zip(outputs, (sys.stdout, sys.stderr), strict=True):
        stream.flush()
        fd = os.open(path, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)


def release_free_memory() -> None:
    """Give the memory a batch freed back to the system: glibc's malloc keeps it otherwise
    (freed buffers below its mmap threshold, which grows to 32 MB), so an idle worker would
    hold the peak of its last batches. The watcher calls it once the worker is idle."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class Worker:
    """A loaded pipeline answering MMS's batches on its connection, each batch within
    SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS.

    MMS's own limit on a worker's answer also applies to loading the model, which may take
    much longer (mms_config gives MMS the startup timeout plus this one), so the limit per
    batch is kept here: a thread watches the batch in progress, and when it is late answers
    each of its requests with a 504 and ends the worker, whose forward pass cannot be
    stopped otherwise; MMS then starts a new one.
    """

    def __init__(self, pipeline: Pipeline, connection: socket.socket) -> None:
        self.pipeline = pipeline
        self.connection = connection
        run_dir = pipeline.settings.run_dir
        if run_dir is not None:
            mark_loaded(RunPaths(run_dir).loaded)
        self._cpus = CpuShare(pipeline.settings)  # each batch's torch threads
        self._sending = threading.Lock()  # one answer per batch: ours or the watcher's
        self._batch: list[str] | None = None  # the request ids of the batch in progress
        self._batch_started = 0.0
        timeout = pipeline.settings.timeout_seconds
        watcher = threading.Thread(target=self._watch, args=(timeout,), name="batch-timeout")
        watcher.daemon = True
        watcher.start()

    def answer(self, batch: list[WireRequest]) -> None:
        """Answer a batch: every request gets its own answer, whatever happens."""
        ids = [item.request_id for item in batch]
        self._batch_started = time.monotonic()
        self._batch = ids
        properties = self.pipeline.system_properties
        requests = [
            Request(
                request_id=item.request_id,
                body=item.body,
                content_type=item.headers.get("content-type"),
                accept=item.headers.get("accept"),
                context=ServingContext(properties, item.request_id, item.headers),
            )
            for item in batch
        ]
        with self._cpus.batch():
            answers = self.pipeline.answer(requests)
        frame = protocol.batch_answer(zip(ids, answers, strict=True))
        with self._sending:
            self._batch = None
            self.connection.sendall(frame)

    def _watch(self, timeout: int) -> None:
        seen = trimmed = 0.0  # _batch_started at the last tick, and at the last trim
        while True:
            time.sleep(min(1.0, timeout / 4))
            ids = self._batch
            # Idle for a whole tick after a batch: not under load, where it would cost time.
            if ids is None and self._batch_started == seen != trimmed:
                trimmed = seen
                release_free_memory()
            seen = self._batch_started
            if ids is None or time.monotonic() - self._batch_started < timeout:
                continue
            with self._sending:
                if self._batch is not ids:
                    continue  # answered meanwhile
                message = (
                    f"the model did not answer within {timeout} s "
                    f"({Env.TIMEOUT_SECONDS}); its worker is restarted"
                )
                answers = [
                    (request_id, error_answer(request_id, 504, message)) for request_id in ids
                ]
                self.connection.sendall(protocol.batch_answer(answers))
                # Hang up now, not when the exit has freed the process's memory: MMS must see
                # the end right after the answers, before it sends this worker another batch.
                self.connection.shutdown(socket.SHUT_RDWR)
                logger.error(
                    "a batch took over %d s: answered 504, ending worker %d", timeout, os.getpid()
                )
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
