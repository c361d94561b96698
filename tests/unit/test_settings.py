"""Unit tests for ``Settings.from_env``: defaults, precedence, and errors that name the variable."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sagemaker_torch_serving.settings import (
    DEFAULT_VMARGS,
    MEBIBYTE,
    Settings,
    SettingsError,
    visible_gpu_count,
)

# No GPUs, so that worker counts do not depend on the machine the tests run on.
NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}


def test_defaults() -> None:
    settings = Settings.from_env(dict(NO_GPU))
    assert settings.port == 8080
    assert settings.host == "127.0.0.1"
    assert settings.model_dir == Path("/opt/ml/model")
    assert settings.code_dir == Path("/opt/ml/model/code")
    assert settings.timeout_seconds == 60
    assert settings.startup_timeout_seconds == 600
    assert settings.max_payload_bytes == 6 * MEBIBYTE == 6 * 1024 * 1024
    assert settings.max_decoded_bytes == 32 * settings.max_payload_bytes
    assert settings.request_read_seconds == 20
    assert settings.keepalive_seconds == 600
    assert settings.batch_size == 1
    assert settings.max_batch_delay_ms == 5
    assert settings.default_accept == "application/json"
    assert settings.log_level == logging.INFO
    assert settings.program is None
    assert settings.program_path == Path("/opt/ml/model/code/inference.py")
    assert settings.device == "auto"
    assert settings.trust_pickled_model is False
    assert settings.warmup_shape is None
    assert settings.handler_class is None
    assert settings.compile_model is False
    assert settings.vmargs == DEFAULT_VMARGS
    assert settings.run_dir is None
    assert settings.gpu_count == 0
    assert settings.workers == (os.cpu_count() or 1)


def test_blank_values_mean_the_default() -> None:
    settings = Settings.from_env(
        {**NO_GPU, "SAGEMAKER_BIND_TO_PORT": "  ", "SAGEMAKER_PROGRAM": ""}
    )
    assert settings.port == 8080
    assert settings.program is None


def test_program_names_the_handler_in_the_code_dir() -> None:
    settings = Settings.from_env({**NO_GPU, "SAGEMAKER_PROGRAM": "serve.py"})
    assert settings.program == "serve.py"
    assert settings.program_path == Path("/opt/ml/model/code/serve.py")


def test_timeout_seconds_wins_over_timeout() -> None:
    both = {
        **NO_GPU,
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "30",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90",
    }
    assert Settings.from_env(both).timeout_seconds == 30


def test_legacy_timeout_is_read_as_seconds() -> None:
    settings = Settings.from_env({**NO_GPU, "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90"})
    assert settings.timeout_seconds == 90


def test_base_dir_moves_the_model_dir() -> None:
    settings = Settings.from_env({**NO_GPU, "SAGEMAKER_BASE_DIR": "/srv/ml"})
    assert settings.model_dir == Path("/srv/ml/model")
    assert settings.code_dir == Path("/srv/ml/model/code")
    assert settings.program_path == Path("/srv/ml/model/code/inference.py")


def test_relative_model_dir_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({**NO_GPU, "SERVING_MODEL_DIR": "some/model"})
    assert settings.model_dir.is_absolute()
    assert settings.model_dir == tmp_path / "some" / "model"
    assert settings.code_dir == tmp_path / "some" / "model" / "code"


def test_code_dir_can_be_set_on_its_own() -> None:
    settings = Settings.from_env({**NO_GPU, "SERVING_CODE_DIR": "/srv/code"})
    assert settings.model_dir == Path("/opt/ml/model")
    assert settings.code_dir == Path("/srv/code")


@pytest.mark.parametrize("workers", [1, 2, 3, 1000])
@pytest.mark.parametrize("in_flight", [0, 1, 2, 3, 1000])
def test_torch_threads_default_to_a_share_of_the_cpus_per_busy_worker(
    workers: int, in_flight: int
) -> None:
    settings = Settings.from_env({**NO_GPU, "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)})
    cpus = len(os.sched_getaffinity(0))
    assert settings.cpus == cpus
    busy_workers = max(1, min(in_flight, workers))
    assert settings.threads_for(in_flight) == max(1, cpus // busy_workers)
    assert settings.threads_for(1) == settings.max_torch_threads == cpus


def test_a_multi_model_endpoints_requests_may_keep_as_many_workers_busy() -> None:
    settings = Settings.from_env({**NO_GPU, "SAGEMAKER_MULTI_MODEL": "true"})
    assert settings.workers == 1
    cpus = len(os.sched_getaffinity(0))
    assert settings.threads_for(1) == cpus
    assert settings.threads_for(cpus) == 1


def test_torch_threads_can_be_set() -> None:
    settings = Settings.from_env({**NO_GPU, "SERVING_TORCH_THREADS": "7"})
    assert settings.threads_for(1) == settings.threads_for(7) == settings.max_torch_threads == 7


def test_workers_default_to_visible_gpus() -> None:
    settings = Settings.from_env({"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert settings.gpu_count == 3
    assert settings.workers == 3


@pytest.mark.parametrize(
    ("value", "level"),
    [("10", logging.DEBUG), ("40", 40), ("debug", logging.DEBUG), ("WARNING", logging.WARNING)],
)
def test_log_level_by_number_or_name(value: str, level: int) -> None:
    settings = Settings.from_env({**NO_GPU, "SAGEMAKER_CONTAINER_LOG_LEVEL": value})
    assert settings.log_level == level


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("YES", True), ("on", True), ("false", False), ("0", False)],
)
def test_trust_pickled_model_flag(value: str, expected: bool) -> None:
    settings = Settings.from_env({**NO_GPU, "SERVING_TRUST_PICKLED_MODEL": value})
    assert settings.trust_pickled_model is expected


def test_other_values_are_read() -> None:
    settings = Settings.from_env(
        {
            **NO_GPU,
            "SAGEMAKER_BIND_TO_PORT": "9000",
            "SERVING_HOST": "0.0.0.0",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
            "SAGEMAKER_MODEL_SERVER_BATCH_SIZE": "8",
            "SERVING_MAX_BATCH_DELAY_MS": "0",
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv",
            "SERVING_DEVICE": "CPU",
            "SERVING_WARMUP_SHAPE": "1, 3, 8, 8",
            "SERVING_RUN_DIR": "/tmp/run",
            "SERVING_HANDLER_CLASS": " handlers.torch_handler:Outer.Handler ",
            "SERVING_COMPILE": "true",
        }
    )
    assert settings.port == 9000
    assert settings.host == "0.0.0.0"
    assert settings.max_payload_bytes == 20 * 1024 * 1024
    assert settings.max_decoded_bytes == 32 * 20 * 1024 * 1024  # follows the payload limit
    assert settings.batch_size == 8
    assert settings.max_batch_delay_ms == 0
    assert settings.default_accept == "text/csv"
    assert settings.device == "cpu"
    assert settings.warmup_shape == (1, 3, 8, 8)
    assert settings.run_dir == Path("/tmp/run")
    assert settings.handler_class == "handlers.torch_handler:Outer.Handler"
    assert settings.compile_model is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "abc"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "-1"),
        ("SAGEMAKER_BIND_TO_PORT", "70000"),
        ("SAGEMAKER_BIND_TO_PORT", "0"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", "1.5"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0"),
        ("SERVING_MAX_BATCH_DELAY_MS", "-5"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "LOUD"),
        ("SERVING_DEVICE", "tpu"),
        ("SERVING_TRUST_PICKLED_MODEL", "maybe"),
        ("SERVING_WARMUP_SHAPE", "1,x"),
        ("SERVING_WARMUP_SHAPE", "1,0,8"),
        ("SERVING_HANDLER_CLASS", "handler"),
        ("SERVING_HANDLER_CLASS", "handler.py:Handler"),
        ("SERVING_HANDLER_CLASS", ":Handler"),
        ("SERVING_HANDLER_CLASS", "handler:"),
        ("SERVING_HANDLER_CLASS", "handler:Handler()"),
        ("SERVING_COMPILE", "inductor"),
    ],
)
def test_invalid_values_raise_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**NO_GPU, name: value})
    assert name in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("visible", "count"),
    [("0,1", 2), ("0", 1), ("GPU-abc, GPU-def, GPU-123", 3), ("", 0), ("-1", 0), (" , ", 0)],
)
def test_visible_gpu_count(visible: str, count: int) -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": visible}) == count


def test_the_decoded_limit_and_the_clocks_can_be_set_and_are_checked() -> None:
    settings = Settings.from_env(
        {
            **NO_GPU,
            "SERVING_MAX_DECODED_MB": "100",
            "SERVING_REQUEST_READ_SECONDS": "5",
            "SERVING_KEEPALIVE_SECONDS": "30",
        }
    )
    assert settings.max_decoded_bytes == 100 * MEBIBYTE
    assert (settings.request_read_seconds, settings.keepalive_seconds) == (5, 30)
    for name in ("SERVING_MAX_DECODED_MB", "SERVING_REQUEST_READ_SECONDS"):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({**NO_GPU, name: "0"})


def test_the_sdks_submit_directory_is_the_code_directory_when_it_is_a_folder_here(
    tmp_path: Path,
) -> None:
    code = tmp_path / "opt-ml-code"
    code.mkdir()
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    base = {**NO_GPU, "SERVING_MODEL_DIR": str(model)}
    assert Settings.from_env({**base, "SAGEMAKER_SUBMIT_DIRECTORY": str(code)}).code_dir == code
    assert (
        Settings.from_env({**base, "SAGEMAKER_SUBMIT_DIRECTORY": f"file://{code}"}).code_dir == code
    )
    # an S3 prefix (the SDK packs that code into the archive's code/), or a folder not here
    for elsewhere in ("s3://bucket/prefix/sourcedir.tar.gz", str(tmp_path / "missing")):
        settings = Settings.from_env({**base, "SAGEMAKER_SUBMIT_DIRECTORY": elsewhere})
        assert settings.code_dir == model / "code"


def test_batch_transform_settings() -> None:
    settings = Settings.from_env({**NO_GPU, "SAGEMAKER_MODEL_SERVER_WORKERS": "3"})
    assert (settings.batch_transform, settings.batch_strategy) == (False, "MultiRecord")
    assert settings.max_concurrent_transforms == 3  # one request per worker
    settings = Settings.from_env(
        {
            **NO_GPU,
            "SAGEMAKER_BATCH": "true",
            "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
            "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "8",
        }
    )
    assert (settings.batch_transform, settings.batch_strategy) == (True, "SingleRecord")
    assert settings.max_concurrent_transforms == 8
    with pytest.raises(SettingsError, match="SAGEMAKER_BATCH_STRATEGY must be MultiRecord"):
        Settings.from_env({**NO_GPU, "SAGEMAKER_BATCH_STRATEGY": "Lines"})


def test_multi_model_settings(tmp_path: Path) -> None:
    settings = Settings.from_env({**NO_GPU, "SAGEMAKER_MULTI_MODEL": "true"})
    assert settings.multi_model
    assert settings.workers == 1  # per model: many models share the machine
    assert settings.memory_reserve_bytes == 512 * MEBIBYTE
    model = settings.for_model(tmp_path / "models" / "a" / "model")
    assert (model.model_dir, model.code_dir) == (
        tmp_path / "models" / "a" / "model",
        tmp_path / "models" / "a" / "model" / "code",
    )
    assert model.program_path == model.code_dir / "inference.py"
    settings = Settings.from_env(
        {
            **NO_GPU,
            "SAGEMAKER_MULTI_MODEL": "true",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
            "SERVING_MEMORY_RESERVE_MB": "0",
        }
    )
    assert (settings.workers, settings.memory_reserve_bytes) == (2, 0)
    assert not Settings.from_env(NO_GPU).multi_model


def test_the_frontend_takes_a_network_thread_per_four_cpus_unless_set() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert Settings.from_env(NO_GPU).frontend_threads == max(1, cpus // 4)
    assert Settings.from_env({**NO_GPU, "SERVING_FRONTEND_THREADS": "3"}).frontend_threads == 3
    with pytest.raises(SettingsError):
        Settings.from_env({**NO_GPU, "SERVING_FRONTEND_THREADS": "0"})
