"""The limits a server can approach: the same handler chain, called in a plain Python loop.

Our pipeline (built by handler.build.build_pipeline, as a worker builds it) runs batches of the
same request with no HTTP, no MMS and no sockets. Two limits per workload:

- one request: one request at a time in one process with torch on every CPU, the best a lone
  request can do on this machine (a served c=1 p50 is compared with it);
- throughput: the most requests per second over every way of sharing the CPUs that it tries,
  processes x torch threads per process (their product the CPU count) x batch size (served
  req/s are compared with it).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from typing import Any

from bench.workloads import Workload
from sagemaker_torch_serving.settings import Env

BATCH_SIZES = (1, 4, 8)


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def one_request_ms(workload: Workload, requests: int) -> float:
    """Median time of one request through the chain, one at a time, torch on every CPU."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_latency, (workload, _env(1, cpus()), requests))


def throughput_limit(workload: Workload, seconds: float) -> dict[str, Any]:
    """The best req/s over processes x threads x batch size, with every combination tried."""
    grid = []
    for processes in [n for n in range(1, cpus() + 1) if cpus() % n == 0]:
        threads = cpus() // processes
        for batch in BATCH_SIZES:
            rate = throughput(workload, processes, threads, batch, seconds)
            grid.append({"processes": processes, "threads": threads, "batch": batch, "req_s": rate})
    return {"best": max(grid, key=lambda entry: entry["req_s"]), "grid": grid}


def throughput(
    workload: Workload, processes: int, threads: int, batch_size: int, seconds: float
) -> float:
    """Requests per second of ``processes`` processes, each looping over batches."""
    context = multiprocessing.get_context("spawn")
    env = _env(processes, threads)
    with context.Pool(processes) as pool:
        counts = pool.starmap(_loop, [(workload, env, batch_size, seconds)] * processes)
    return sum(counts) / seconds


def _env(processes: int, threads: int) -> dict[str, str]:
    return {
        Env.WORKERS: str(processes),
        Env.TORCH_THREADS: str(threads),
        Env.OMP_NUM_THREADS: str(threads),
    }


def _pipeline(workload: Workload, env: dict[str, str]):
    os.environ.update(
        SERVING_MODEL_DIR=str(workload.model_dir),
        SERVING_CODE_DIR=str(workload.code_dir("ours")),
        SAGEMAKER_CONTAINER_LOG_LEVEL="WARNING",
        **env,
    )
    from sagemaker_torch_serving.handler.build import build_pipeline
    from sagemaker_torch_serving.settings import Settings

    return build_pipeline(Settings.from_env(), {"gpu_id": None})


def _requests(workload: Workload, count: int):
    from sagemaker_torch_serving.handler.context import ServingContext
    from sagemaker_torch_serving.handler.pipeline import Request

    headers = {"content-type": workload.content_type}
    return [
        Request(
            str(i), workload.body, workload.content_type, None, ServingContext({}, str(i), headers)
        )
        for i in range(count)
    ]


def _loop(workload: Workload, env: dict[str, str], batch_size: int, seconds: float) -> int:
    pipeline = _pipeline(workload, env)
    for _ in range(3):
        pipeline.run(_requests(workload, batch_size))  # warm up
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        answers = pipeline.run(_requests(workload, batch_size))
        assert all(answer.status == 200 for answer in answers)
        done += len(answers)
    return done


def _latency(workload: Workload, env: dict[str, str], requests: int) -> float:
    pipeline = _pipeline(workload, env)
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        pipeline.run(_requests(workload, 1))
        times.append(time.perf_counter() - began)
    return statistics.median(times[requests // 10 :]) * 1000
