"""Every setting the runtime reads, from the environment, in one place.

SageMaker's own variables keep SageMaker's names; what is ours starts with ``SERVING_``.
``Settings.from_env`` is called at start (server) and at model load (worker), never at import.

| variable | default | meaning |
| --- | --- | --- |
| SAGEMAKER_BIND_TO_PORT | 8080 | port for /ping and /invocations |
| SERVING_HOST | 127.0.0.1 | address to bind (the container sets 0.0.0.0) |
| SAGEMAKER_BASE_DIR | /opt/ml | base of the model directory |
| SERVING_MODEL_DIR | $SAGEMAKER_BASE_DIR/model | the extracted model (model.tar.gz's content) |
| SERVING_MODEL_ARCHIVE | (none) | a model.tar.gz to unpack and serve instead of the directory |
| SERVING_CODE_DIR | see below | where SAGEMAKER_PROGRAM and requirements.txt live |
| SERVING_DEFAULT_CODE_DIR | (none) | code for models that bring none (the image bakes code/ here) |
| SAGEMAKER_PROGRAM | inference.py | the handler module (required only when set) |
| SAGEMAKER_SUBMIT_DIRECTORY | (none) | the SDK's code folder, used when it is a folder here |
| SERVING_HANDLER_CLASS | (none) | module:Class: a toolkit DefaultInferenceHandler subclass |
| SAGEMAKER_MODEL_SERVER_WORKERS | GPUs, else CPUs | worker processes (multi-model: 1 per model) |
| SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS | 60 | seconds one batch may take: then 504, new worker |
| SAGEMAKER_MODEL_SERVER_TIMEOUT | (same) | read as seconds too, when the _SECONDS one is unset |
| SAGEMAKER_STARTUP_TIMEOUT | 600 | seconds the model may take to load |
| SAGEMAKER_MAX_PAYLOAD_IN_MB | 6 | limit on request and response bodies |
| SERVING_MAX_DECODED_MB | 32 x payload limit | limit on what one body decodes to (pixels, arrays) |
| SERVING_REQUEST_READ_SECONDS | 20 | a whole request must arrive within this of its first byte |
| SERVING_KEEPALIVE_SECONDS | 600 | an idle connection is closed after this many seconds |
| SAGEMAKER_CONTAINER_LOG_LEVEL | 20 | Python logging level, a number or a name |
| SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT | application/json | answer type when Accept is */* or none |
| SAGEMAKER_MODEL_SERVER_BATCH_SIZE | 1 | requests MMS hands the handler at once |
| SERVING_MAX_BATCH_DELAY_MS | 5 | how long MMS waits to fill a batch (only while requests queue) |
| SAGEMAKER_MODEL_SERVER_VMARGS | see DEFAULT_VMARGS | JVM flags for the MMS frontend |
| SERVING_TORCH_THREADS | (adaptive) | torch threads per worker; unset: CPUs / busy workers |
| SERVING_FRONTEND_THREADS | CPUs / 4, at least 1 | the frontend's network threads, each side |
| SERVING_DEVICE | auto | auto, cpu or cuda: where the default model_fn places the model |
| SERVING_TRUST_PICKLED_MODEL | false | unpickle whole nn.Modules (default model_fn, torch.load) |
| SERVING_HALF_PRECISION | false | on a GPU, the default model_fn casts the model to float16 |
| SERVING_WARMUP_SHAPE | (off) | e.g. 1,1,8,8: run zeros of this shape through the model at load |
| SERVING_COMPILE | false | torch.compile the default model_fn's nn.Module (needs g++) |
| SERVING_DRAIN_SECONDS | 25 | on SIGTERM, how long requests in flight may take to finish |
| SAGEMAKER_BATCH | false | a batch transform job (SageMaker sets it): per-record errors |
| SAGEMAKER_BATCH_STRATEGY | MultiRecord | /execution-parameters' BatchStrategy (or SingleRecord) |
| SAGEMAKER_MAX_CONCURRENT_TRANSFORMS | workers | /execution-parameters' MaxConcurrentTransforms |
| SAGEMAKER_MULTI_MODEL | false | a multi-model endpoint: models loaded and unloaded on /models |
| SERVING_MEMORY_RESERVE_MB | 512 | multi-model: memory a load must leave free, else 507 |

The code directory is SERVING_CODE_DIR if set, else SAGEMAKER_SUBMIT_DIRECTORY if it is a folder
here (the SDK's framework models set it), else the model's own code/ (SageMaker's layout) if it
has one, else SERVING_DEFAULT_CODE_DIR if set, else $SERVING_MODEL_DIR/code.
A model directory holding nothing but one .tar.gz is served as that archive.

The server makes a private run directory under TMPDIR and tells its workers where it is in
SERVING_RUN_DIR (internal: not a setting).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path


class Env:
    """The name of every variable the runtime reads or passes on: written here once, and used
    by name everywhere else (the table above says what each means)."""

    BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
    HOST = "SERVING_HOST"
    BASE_DIR = "SAGEMAKER_BASE_DIR"
    MODEL_DIR = "SERVING_MODEL_DIR"
    MODEL_ARCHIVE = "SERVING_MODEL_ARCHIVE"
    CODE_DIR = "SERVING_CODE_DIR"
    DEFAULT_CODE_DIR = "SERVING_DEFAULT_CODE_DIR"
    PROGRAM = "SAGEMAKER_PROGRAM"
    SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"
    HANDLER_CLASS = "SERVING_HANDLER_CLASS"
    WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
    TIMEOUT_SECONDS = "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"
    TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
    STARTUP_TIMEOUT = "SAGEMAKER_STARTUP_TIMEOUT"
    MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
    MAX_DECODED_MB = "SERVING_MAX_DECODED_MB"
    REQUEST_READ_SECONDS = "SERVING_REQUEST_READ_SECONDS"
    KEEPALIVE_SECONDS = "SERVING_KEEPALIVE_SECONDS"
    LOG_LEVEL = "SAGEMAKER_CONTAINER_LOG_LEVEL"
    DEFAULT_ACCEPT = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
    BATCH_SIZE = "SAGEMAKER_MODEL_SERVER_BATCH_SIZE"
    MAX_BATCH_DELAY_MS = "SERVING_MAX_BATCH_DELAY_MS"
    VMARGS = "SAGEMAKER_MODEL_SERVER_VMARGS"
    TORCH_THREADS = "SERVING_TORCH_THREADS"
    FRONTEND_THREADS = "SERVING_FRONTEND_THREADS"
    DEVICE = "SERVING_DEVICE"
    TRUST_PICKLED_MODEL = "SERVING_TRUST_PICKLED_MODEL"
    HALF_PRECISION = "SERVING_HALF_PRECISION"
    WARMUP_SHAPE = "SERVING_WARMUP_SHAPE"
    COMPILE = "SERVING_COMPILE"
    DRAIN_SECONDS = "SERVING_DRAIN_SECONDS"
    BATCH = "SAGEMAKER_BATCH"
    BATCH_STRATEGY = "SAGEMAKER_BATCH_STRATEGY"
    MAX_CONCURRENT_TRANSFORMS = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"
    MULTI_MODEL = "SAGEMAKER_MULTI_MODEL"
    MEMORY_RESERVE_MB = "SERVING_MEMORY_RESERVE_MB"
    # Internal: how the serving process tells the processes it starts about this run.
    RUN_DIR = "SERVING_RUN_DIR"
    BACKEND_HANDOVER = "SERVING_BACKEND_HANDOVER"  # the waiting backend's socket (backend/)
    # Not ours, read where CUDA's, the thread pools', torch.load's and torch.compile's own
    # rules apply.
    CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
    OMP_NUM_THREADS = "OMP_NUM_THREADS"
    MKL_NUM_THREADS = "MKL_NUM_THREADS"
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    TORCH_FORCE_WEIGHTS_ONLY_LOAD = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    INDUCTOR_COMPILE_THREADS = "TORCHINDUCTOR_COMPILE_THREADS"
    C_COMPILER = "CC"  # Triton's launcher, on GPUs


# The frontend (java/FrontDoor.java) moves a form body's Content-Type here, out of MMS's sight;
# the worker (backend/protocol.py) moves it back.
ORIGINAL_CONTENT_TYPE_HEADER = "x-serving-content-type"

# The frontend holds little but the requests in flight: the serial collector, a heap that
# starts small and grows only as needed (up to 20% of the container's memory) and compiler
# threads capped (the JVM starts more on more CPUs) keep it near 140 MB, where the parallel
# collector's first heap alone is 1/64 of the machine's memory (bench/RESULTS.md: PSS, JVM).
DEFAULT_VMARGS = (
    "-XX:+UseContainerSupport -XX:MaxRAMPercentage=20 -XX:+UseSerialGC -Xms8m "
    "-XX:CICompilerCount=2 -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData -Xss512k"
)
MEBIBYTE = 1024 * 1024
MAX_MMS_PORT = 32766
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_HANDLER_CLASS = re.compile(rf"{_DOTTED}:{_DOTTED}")


class SettingsError(ValueError):
    """A variable holds a value the runtime cannot use; the message names it."""


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str
    port: int
    model_dir: Path
    model_archive: Path | None
    code_dir: Path
    program: str | None
    handler_class: str | None  # "module:Class"
    workers: int
    gpu_count: int
    timeout_seconds: int
    startup_timeout_seconds: int
    max_payload_bytes: int
    max_decoded_bytes: int
    request_read_seconds: int
    keepalive_seconds: int
    log_level: int
    default_accept: str
    batch_size: int
    max_batch_delay_ms: int
    vmargs: str
    cpus: int
    torch_threads: int | None  # None: each batch takes its share of the CPUs (threads_for)
    frontend_threads: int
    device: str
    trust_pickled_model: bool
    half_precision: bool
    warmup_shape: tuple[int, ...] | None
    compile_model: bool
    drain_seconds: int
    batch_transform: bool
    batch_strategy: str  # "MultiRecord" or "SingleRecord", the API's spelling
    max_concurrent_transforms: int
    multi_model: bool
    memory_reserve_bytes: int
    run_dir: Path | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Reader(os.environ if environ is None else environ)
        base_dir = Path(env.text(Env.BASE_DIR, "/opt/ml"))
        model_dir = Path(env.text(Env.MODEL_DIR, str(base_dir / "model"))).absolute()
        gpu_count = visible_gpu_count(env.raw)
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on
        multi_model = env.flag(Env.MULTI_MODEL)
        # Many models share the machine: one worker each unless asked otherwise.
        workers = env.positive_int(Env.WORKERS, 1 if multi_model else gpu_count or cpus)
        timeout = env.positive_int(
            Env.TIMEOUT_SECONDS,
            env.positive_int(Env.TIMEOUT, 60),
        )
        device = env.text(Env.DEVICE, "auto").lower()
        if device not in ("auto", "cpu", "cuda"):
            raise SettingsError(f"{Env.DEVICE} must be auto, cpu or cuda, got {device!r}")
        run_dir = env.text(Env.RUN_DIR, "")
        payload_mb = env.positive_int(Env.MAX_PAYLOAD_IN_MB, 6)
        return cls(
            host=env.text(Env.HOST, "127.0.0.1"),
            port=env.port(Env.BIND_TO_PORT, 8080),
            model_dir=model_dir,
            model_archive=_optional_path(env.text(Env.MODEL_ARCHIVE, "")),
            code_dir=_code_dir(env, model_dir),
            program=env.raw.get(Env.PROGRAM, "").strip() or None,
            handler_class=env.handler_class(Env.HANDLER_CLASS),
            workers=workers,
            gpu_count=gpu_count,
            timeout_seconds=timeout,
            startup_timeout_seconds=env.positive_int(Env.STARTUP_TIMEOUT, 600),
            max_payload_bytes=payload_mb * MEBIBYTE,
            max_decoded_bytes=env.positive_int(Env.MAX_DECODED_MB, 32 * payload_mb) * MEBIBYTE,
            request_read_seconds=env.positive_int(Env.REQUEST_READ_SECONDS, 20),
            keepalive_seconds=env.positive_int(Env.KEEPALIVE_SECONDS, 600),
            log_level=env.log_level(Env.LOG_LEVEL, logging.INFO),
            default_accept=env.text(Env.DEFAULT_ACCEPT, "application/json"),
            batch_size=env.positive_int(Env.BATCH_SIZE, 1),
            max_batch_delay_ms=env.non_negative_int(Env.MAX_BATCH_DELAY_MS, 5),
            vmargs=env.text(Env.VMARGS, DEFAULT_VMARGS),
            cpus=cpus,
            torch_threads=env.positive_int(Env.TORCH_THREADS, 0) or None,
            # The frontend's share of a request's CPU is about a quarter of the workers' on the
            # lightest model (docs/architecture.md); more threads only hand requests between them.
            frontend_threads=env.positive_int(Env.FRONTEND_THREADS, max(1, cpus // 4)),
            device=device,
            trust_pickled_model=env.flag(Env.TRUST_PICKLED_MODEL),
            half_precision=env.flag(Env.HALF_PRECISION),
            warmup_shape=env.shape(Env.WARMUP_SHAPE),
            compile_model=env.flag(Env.COMPILE),
            drain_seconds=env.non_negative_int(Env.DRAIN_SECONDS, 25),
            batch_transform=env.flag(Env.BATCH),
            batch_strategy=env.batch_strategy(Env.BATCH_STRATEGY),
            max_concurrent_transforms=env.positive_int(Env.MAX_CONCURRENT_TRANSFORMS, workers),
            multi_model=multi_model,
            memory_reserve_bytes=env.non_negative_int(Env.MEMORY_RESERVE_MB, 512) * MEBIBYTE,
            run_dir=Path(run_dir) if run_dir else None,
        )

    def to_env(self) -> dict[str, str]:
        """The variables that pass what the serving process resolved on to the processes it
        starts, so that they read the same settings (paths absolute: they run elsewhere)."""
        env = {
            Env.MODEL_DIR: str(self.model_dir),
            Env.CODE_DIR: str(self.code_dir),
            Env.MODEL_ARCHIVE: "",  # unpacked already: model_dir holds it
        }
        if self.run_dir is not None:
            env[Env.RUN_DIR] = str(self.run_dir)
        return env

    def for_model(self, model_dir: Path) -> Settings:
        """The settings of one model of a multi-model endpoint: its own directory and code."""
        return dataclasses.replace(self, model_dir=model_dir, code_dir=model_dir / "code")

    def threads_for(self, in_flight: int) -> int:
        """Torch threads for a batch that starts while ``in_flight`` requests are in the server
        (its own included): SERVING_TORCH_THREADS if set, else the batch's share of the CPUs
        among the workers those requests keep busy, all of them for a lone request
        (backend/cores.py). A multi-model endpoint's requests may be for as many models."""
        if self.torch_threads:
            return self.torch_threads
        busy = min(max(1, in_flight), self.cpus if self.multi_model else self.workers)
        return max(1, self.cpus // busy)

    @property
    def max_torch_threads(self) -> int:
        """The most threads a batch may take: the size of the OpenMP and MKL pools."""
        return self.torch_threads or self.cpus

    @property
    def program_path(self) -> Path:
        """The handler module: SAGEMAKER_PROGRAM, else the optional ``inference.py``."""
        return self.code_dir / (self.program or "inference.py")


def _optional_path(value: str) -> Path | None:
    return Path(value).absolute() if value else None


def _code_dir(env: _Reader, model_dir: Path) -> Path:
    explicit = env.text(Env.CODE_DIR, "")
    if explicit:
        return Path(explicit).absolute()
    # The SDK's framework models name the code's folder: /opt/ml/model/code once packed into
    # the archive, /opt/ml/code in local mode (where it mounts source_dir); an s3:// one is
    # packed into the archive's code/ by the SDK (framework_version 1.2 and later), found below.
    submitted = env.text(Env.SUBMIT_DIRECTORY, "").removeprefix("file://")
    if submitted.startswith("/") and Path(submitted).is_dir():
        return Path(submitted)
    own = model_dir / "code"
    default = env.text(Env.DEFAULT_CODE_DIR, "")
    return own if own.is_dir() or not default else Path(default).absolute()


def visible_gpu_count(environ: Mapping[str, str]) -> int:
    """NVIDIA GPUs this process may use, found without importing torch (which takes seconds)."""
    visible = environ.get(Env.CUDA_VISIBLE_DEVICES)
    if visible is not None:
        ids = [part for part in visible.split(",") if part.strip()]
        return 0 if not ids or ids[0].strip() == "-1" else len(ids)
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


class _Reader:
    """Typed access to variables; every failure names the variable and the value."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw

    def text(self, name: str, default: str) -> str:
        value = self.raw.get(name, "").strip()
        return value or default

    def _int(self, name: str, default: int, minimum: int, what: str) -> int:
        value = self.raw.get(name, "").strip()
        if not value:
            return default
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise SettingsError(f"{name} must be {what}, got {value!r}")
        return number

    def positive_int(self, name: str, default: int) -> int:
        return self._int(name, default, 1, "a positive integer")

    def non_negative_int(self, name: str, default: int) -> int:
        return self._int(name, default, 0, "an integer of 0 or more")

    def port(self, name: str, default: int) -> int:
        # MMS refuses ports from 32767 up ("Invalid port number"), so say so before it starts.
        port = self._int(name, default, 1, "a TCP port (1-32766)")
        if port > MAX_MMS_PORT:
            raise SettingsError(f"{name} must be a TCP port below 32767 (MMS's limit), got {port}")
        return port

    def flag(self, name: str) -> bool:
        value = self.raw.get(name, "").strip().lower()
        if value in ("", "0", "false", "no", "off"):
            return False
        if value in ("1", "true", "yes", "on"):
            return True
        raise SettingsError(f"{name} must be true or false, got {value!r}")

    def log_level(self, name: str, default: int) -> int:
        value = self.raw.get(name, "").strip()
        if not value:
            return default
        if value.isdigit():
            return int(value)
        level = logging.getLevelName(value.upper())
        if not isinstance(level, int):
            raise SettingsError(f"{name} must be a logging level (20, INFO, ...), got {value!r}")
        return level

    def handler_class(self, name: str) -> str | None:
        # Only the form is checked here (a bad one stops the server at once, with exit code 2);
        # whether the module and the class exist is the handler's check, when it loads them.
        value = self.raw.get(name, "").strip()
        if not value:
            return None
        # handler.py:Handler would be a module "py" in a package "handler": a file name, surely.
        if not _HANDLER_CLASS.fullmatch(value) or value.partition(":")[0].endswith(".py"):
            raise SettingsError(
                f"{name} must be module:Class (a module in the code directory and a class "
                f"in it, like handler:MyHandler), got {value!r}"
            )
        return value

    def batch_strategy(self, name: str) -> str:
        # The API's spelling (MultiRecord), also read from the container docs' MULTI_RECORD.
        value = self.raw.get(name, "").strip()
        key = value.replace("_", "").replace("-", "").lower()
        strategies = {"multirecord": "MultiRecord", "singlerecord": "SingleRecord"}
        if not value:
            return "MultiRecord"
        if key not in strategies:
            raise SettingsError(f"{name} must be MultiRecord or SingleRecord, got {value!r}")
        return strategies[key]

    def shape(self, name: str) -> tuple[int, ...] | None:
        value = self.raw.get(name, "").strip()
        if not value:
            return None
        try:
            shape = tuple(int(part) for part in value.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise SettingsError(f"{name} must be positive integers like 1,3,224,224, got {value!r}")
        return shape
