"""The limit a server can approach: the same handler chain, called in a plain Python loop.

Our pipeline (built by worker.build_pipeline, as a worker builds it) runs batches of the same
request with no HTTP, no MMS and no sockets, in as many processes as the server has workers,
with the server's settings (``env``: workers, so torch threads per worker; half precision...).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time

from bench.workloads import Workload
from sagemaker_torch_serving.settings import Env


def throughput(workload: Workload, env: dict[str, str], batch_size: int, seconds: float) -> float:
    """Requests per second of one process per worker, each looping over batches."""
    workers = int(env[Env.WORKERS])
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        counts = pool.starmap(_loop, [(workload, env, batch_size, seconds)] * workers)
    return sum(counts) / seconds


def latency_p50_ms(workload: Workload, env: dict[str, str], requests: int) -> float:
    """Median time of one request through the chain, one at a time, in one process that has
    one worker's share of the CPUs."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_latency, (workload, env, requests))


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
