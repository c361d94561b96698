"""Each batch's torch threads: its share of the CPUs among the requests in flight."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sagemaker_torch_serving.backend.cores import LIGHT_BATCH_SECONDS, CpuShare
from sagemaker_torch_serving.run_dir import IN_FLIGHT_FORMAT, RunPaths
from sagemaker_torch_serving.settings import Settings

CPUS = len(os.sched_getaffinity(0))
NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def served(tmp_path: Path, workers: int, **env: str) -> tuple[CpuShare, Path]:
    """A worker's share, with the frontend's count in a run directory as the server makes it."""
    paths = RunPaths(tmp_path)
    paths.in_flight.write_bytes(struct.pack(IN_FLIGHT_FORMAT, 0))
    settings = Settings.from_env(
        {
            **NO_GPU,
            "SERVING_RUN_DIR": str(tmp_path),
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
            **env,
        }
    )
    return CpuShare(settings), paths.in_flight


def threads_of_a_batch(share: CpuShare, seconds: float) -> int:
    with share.batch():
        threads = torch.get_num_threads()
        time.sleep(seconds)
    return threads


@pytest.mark.skipif(CPUS < 2, reason="one CPU: every batch has one thread")
def test_a_lone_request_gets_every_cpu_and_a_full_server_one_per_worker(tmp_path: Path) -> None:
    share, count = served(tmp_path, workers=CPUS)
    heavy = LIGHT_BATCH_SECONDS * 2
    count.write_bytes(struct.pack(IN_FLIGHT_FORMAT, 1))
    assert share.in_flight() == 1
    assert threads_of_a_batch(share, heavy) == CPUS
    count.write_bytes(struct.pack(IN_FLIGHT_FORMAT, 3 * CPUS))  # more than the workers
    assert threads_of_a_batch(share, heavy) == 1
    count.write_bytes(struct.pack(IN_FLIGHT_FORMAT, 1))
    assert threads_of_a_batch(share, heavy) == CPUS


@pytest.mark.skipif(CPUS < 2, reason="one CPU: every batch has one thread")
def test_light_batches_run_on_one_thread(tmp_path: Path) -> None:
    share, count = served(tmp_path, workers=CPUS)
    count.write_bytes(struct.pack(IN_FLIGHT_FORMAT, 1))
    assert threads_of_a_batch(share, 0) == CPUS  # no time yet: it may be heavy
    assert threads_of_a_batch(share, 0) == 1  # light
    # One slow batch (preempted, say) among light ones does not change it...
    assert threads_of_a_batch(share, LIGHT_BATCH_SECONDS * 3) == 1
    assert threads_of_a_batch(share, 0) == 1
    # ...heavy batches do.
    seen = [threads_of_a_batch(share, LIGHT_BATCH_SECONDS * 3) for _ in range(10)]
    assert seen[-1] == CPUS, seen


def test_set_threads_are_kept_whatever_is_in_flight(tmp_path: Path) -> None:
    share, count = served(tmp_path, workers=2, SERVING_TORCH_THREADS="3")
    for in_flight in (1, 2, 100):
        count.write_bytes(struct.pack(IN_FLIGHT_FORMAT, in_flight))
        assert threads_of_a_batch(share, 0) == 3


def test_without_the_frontends_count_a_worker_takes_its_share_among_the_workers(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env(
        {**NO_GPU, "SERVING_RUN_DIR": str(tmp_path), "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    )
    share = CpuShare(settings)  # no in-flight file: a test playing MMS
    assert share.in_flight() == 2
    assert threads_of_a_batch(share, LIGHT_BATCH_SECONDS * 2) == max(1, CPUS // 2)
