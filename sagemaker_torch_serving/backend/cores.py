"""How many torch threads a worker's batch gets: the CPUs shared among the requests in flight.

A lone request runs on every CPU; under load the CPUs are shared among the busy workers
without oversubscription (one thread per CPU in all). Settings.threads_for decides, per batch,
when the batch starts, from the number of requests in the server at that moment: the frontend
counts them (java/FrontDoor.java, all models of a multi-model endpoint together) and publishes
the count in a small file of the run directory that every worker maps. Counting requests, not
busy workers, sees the load coming: between two batches under load a worker is idle for a
moment, but the requests it will take next are already in flight.

While this worker's batches take under LIGHT_BATCH_SECONDS on one thread (a moving average,
so that one batch slowed by a preemption does not count), they run on one thread: splitting so
little work saves less than waking the other threads costs, and their pool would keep spinning
on a CPU after the batch (OpenMP's wait) while another worker's request needs it.
bench/RESULTS.md measures all of it against fixed threads.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import time
from collections.abc import Iterator

import torch

from sagemaker_torch_serving.run_dir import IN_FLIGHT_BYTES, IN_FLIGHT_FORMAT, RunPaths
from sagemaker_torch_serving.settings import Settings

LIGHT_BATCH_SECONDS = 0.002
_WEIGHT = 0.2  # of the last batch in the moving average


class CpuShare:
    """Sets this worker's torch threads for each batch (``batch``) from the requests in
    flight, and learns from each batch's time whether more than one thread is worth it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._count: mmap.mmap | None = None
        if settings.run_dir is not None:
            try:
                with RunPaths(settings.run_dir).in_flight.open("rb") as file:
                    self._count = mmap.mmap(file.fileno(), IN_FLIGHT_BYTES, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                pass  # no frontend counts (a test playing MMS): as many as there are workers
        self._threads = torch.get_num_threads()
        self._cost: float | None = None  # seconds of a batch on one thread, moving average

    def in_flight(self) -> int:
        """The frontend's count; with no frontend counting, as many as there are workers."""
        if self._count is None:
            return self._settings.workers
        count: int = struct.unpack_from(IN_FLIGHT_FORMAT, self._count)[0]
        return count

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Around a batch: its threads set before it, its time taken after it."""
        if self._settings.torch_threads:
            threads = self._settings.torch_threads
        else:
            light = self._cost is not None and self._cost < LIGHT_BATCH_SECONDS
            threads = 1 if light else self._settings.threads_for(self.in_flight())
        if threads != self._threads:
            torch.set_num_threads(threads)
            self._threads = threads
        started = time.perf_counter()
        try:
            yield
        finally:
            # On one thread: a light batch on many threads may be heavy on one.
            cost = (time.perf_counter() - started) * threads
            self._cost = cost if self._cost is None else self._cost + _WEIGHT * (cost - self._cost)
