"""MMS's configuration and command line, written into the server's private run directory.

Everything MMS reads or writes is in the run directory (config, log config, sockets, the model
link); the management API is a Unix socket there; timeouts are in seconds; the JVM respects the
container's memory; model_server_home points at backend/mms_home/, so MMS runs our backend, and
the plugin jar comes first on the class path. docs/architecture.md lists the stock setup's
faults that this fixes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from sagemaker_torch_serving.run_dir import IN_FLIGHT_BYTES, MODEL_NAME, RunPaths
from sagemaker_torch_serving.settings import (
    MEBIBYTE,
    ORIGINAL_CONTENT_TYPE_HEADER,
    Env,
    Settings,
)

PACKAGE = Path(__file__).resolve().parents[1]
# MMS wants a handler name for the model; our worker (backend/worker.py) needs none.
HANDLER = "sagemaker_torch_serving.backend.worker"
PLUGIN_JAR = PACKAGE / "java" / "serving-plugin.jar"
NATIVE_DIR = PACKAGE / "java" / "native"  # Netty's epoll library, see build_plugin.sh
# The frontend's classes, ready to map at start (server/class_archive.py makes it).
CLASS_ARCHIVE = PACKAGE / "java" / "frontend.jsa"
# MMS runs <model_server_home>/mms/model_service_worker.py as the model's backend: ours.
MMS_HOME = PACKAGE / "backend" / "mms_home"

# Room for MMS's framing of an answer on top of the payload limit.
RESPONSE_SLACK_BYTES = 64 * 1024


def write_run_dir(settings: Settings, paths: RunPaths) -> None:
    """Write the config, the log config and the link to the model (none on a multi-model
    endpoint: its models come and go through /models)."""
    paths.loaded.mkdir()
    paths.in_flight.write_bytes(bytes(IN_FLIGHT_BYTES))
    if not settings.multi_model:
        paths.model_link.symlink_to(settings.model_dir.resolve(), target_is_directory=True)
    paths.config.write_text(properties(settings, paths))
    paths.log_config.write_text(log_config(settings.log_level))


def properties(settings: Settings, paths: RunPaths) -> str:
    values = {
        "inference_address": f"http://{settings.host}:{settings.port}",
        "management_address": f"unix:{paths.management_socket}",
        # A multi-model endpoint's loads name absolute paths (/opt/ml/models/<name>/model),
        # which MMS looks up under its model store.
        "model_store": "/" if settings.multi_model else str(paths.root),
        "default_service_handler": HANDLER,
        "default_workers_per_model": str(settings.workers),
        "default_response_timeout_seconds": str(
            settings.startup_timeout_seconds + settings.timeout_seconds
        ),
        # The front door (java/FrontDoor.java) answers larger bodies with a JSON 413 first.
        "max_request_size": str(settings.max_payload_bytes),
        "max_response_size": str(settings.max_payload_bytes + RESPONSE_SLACK_BYTES),
        "number_of_gpu": str(settings.gpu_count),
        "decode_input_request": "false",
        "enable_envvars_config": "false",
        "async_logging": "true",
        # Netty's event loops: for clients' connections, and for the workers' sockets
        "number_of_netty_threads": str(settings.frontend_threads),
        "netty_client_threads": str(settings.frontend_threads),
    }
    if not settings.multi_model:
        values["load_models"] = f"{MODEL_NAME}={MODEL_NAME}"
    return "".join(f"{key}={value}\n" for key, value in values.items())


def log_config(level: int) -> str:
    """log4j2 config: MMS and worker output to stdout at the level asked for.

    The access log, the metrics, the per-batch "Backend response time" and the per-call
    plugin lines (every /ping) show at DEBUG only: at INFO they are lines per request.
    """
    java_level = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}.get(
        level, "error" if level > logging.WARNING else "debug"
    )
    debug = level <= logging.DEBUG
    chatty = "info" if debug else "off"
    batches = "info" if debug else "warn"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{{ISO8601}} [%-5p] %t %c{{1}} - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="{chatty}"/>
    <Logger name="MMS_METRICS" level="{chatty}"/>
    <Logger name="MODEL_METRICS" level="{chatty}"/>
    <Logger name="com.amazonaws.ml.mms.wlm.WorkerThread" level="{batches}"/>
    <Logger name="com.amazonaws.ml.mms.http.HttpRequestHandler" level="{batches}"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Root level="{java_level}"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


def java_command(settings: Settings, paths: RunPaths) -> list[str]:
    """The MMS frontend's command line, as mms.model_server would build it, minus its pid file,
    with our worker program in place of MMS's."""
    archive = [f"-XX:SharedArchiveFile={CLASS_ARCHIVE}"] if CLASS_ARCHIVE.exists() else []
    return [
        java(),
        *settings.vmargs.split(),
        *archive,
        f"-Dmodel_server_home={MMS_HOME}",
        f"-Dlog4j.configurationFile=file://{paths.log_config}",
        f"-Djava.io.tmpdir={paths.root}",
        f"-Djava.library.path={NATIVE_DIR}",
        *front_door_properties(settings, paths),
        "-cp",
        class_path(),
        "com.amazonaws.ml.mms.ModelServer",
        "--python",
        sys.executable,
        "-f",
        str(paths.config),
    ]


def java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else "java"


def class_path() -> str:
    """The plugin jar first: its ModelResponseDecoder replaces MMS's (see its comment)."""
    import mms

    return f"{PLUGIN_JAR}:{Path(mms.__file__).resolve().parent / 'frontend' / '*'}"


def front_door_properties(settings: Settings, paths: RunPaths) -> list[str]:
    """The serving port's limits, for java/FrontDoor.java (with the variables that set them,
    for its messages), batch transform's execution parameters and what a multi-model
    endpoint's loads need."""
    values = {
        "maxPayloadBytes": settings.max_payload_bytes,
        "payloadVariable": Env.MAX_PAYLOAD_IN_MB,
        "requestReadSeconds": settings.request_read_seconds,
        "requestReadVariable": Env.REQUEST_READ_SECONDS,
        "keepaliveSeconds": settings.keepalive_seconds,
        "contentTypeHeader": ORIGINAL_CONTENT_TYPE_HEADER,
        # GET /execution-parameters (java/ExecutionParameters.java), for batch transform
        "maxConcurrentTransforms": settings.max_concurrent_transforms,
        "batchStrategy": settings.batch_strategy,
        "maxPayloadMb": settings.max_payload_bytes // MEBIBYTE,
        # batching (java/BatchDelay.java), a multi-model endpoint's /models (java/MultiModels.java)
        "multiModel": str(settings.multi_model).lower(),
        "workersPerModel": settings.workers,
        "batchSize": settings.batch_size,
        "maxBatchDelay": settings.max_batch_delay_ms,
        "memoryReserveBytes": settings.memory_reserve_bytes,
        "memoryReserveVariable": Env.MEMORY_RESERVE_MB,
        "startupTimeoutSeconds": settings.startup_timeout_seconds,
        "startupTimeoutVariable": Env.STARTUP_TIMEOUT,
        "loadFailures": paths.model_load_failures,
        # the requests in flight, for the workers' threads (backend/cores.py)
        "inFlightFile": paths.in_flight,
    }
    return [f"-Dserving.{name}={value}" for name, value in values.items()]


def batching_query(settings: Settings) -> str:
    """The plugin call that sets batching on the model MMS loaded at start."""
    return (
        f"/serving?batch_size={settings.batch_size}&max_batch_delay={settings.max_batch_delay_ms}"
    )


def worker_environment(settings: Settings, paths: RunPaths) -> dict[str, str]:
    """The environment of MMS and so of its workers: the settings as this process resolved
    them, where the prestarted backend waits, and thread pools no larger than torch's.

    With SERVING_TRUST_PICKLED_MODEL on, the user's own ``torch.load(path)`` in model_fn may
    unpickle a whole model too: torch's variable turns its weights_only default off (a call
    that passes weights_only=True explicitly keeps it), unless the user set torch's variable
    that forces weights_only on (both at once make every torch.load fail).
    """
    threads = str(settings.max_torch_threads)
    environment = {
        **os.environ,
        **settings.to_env(),
        Env.BACKEND_HANDOVER: str(paths.backend_handover),
        Env.OMP_NUM_THREADS: os.environ.get(Env.OMP_NUM_THREADS, threads),
        Env.MKL_NUM_THREADS: os.environ.get(Env.MKL_NUM_THREADS, threads),
        "PYTHONUNBUFFERED": "1",
    }
    if settings.trust_pickled_model and Env.TORCH_FORCE_WEIGHTS_ONLY_LOAD not in os.environ:
        environment.setdefault(Env.TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, "1")
    return environment
