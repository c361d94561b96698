"""python -m bench.coldstart [--runs N]: how long ``make serve`` takes to its first answer, and
where the time goes.

Each run starts make serve's command (the example digits model, warmed up at load) on a free
port and times, from the process start: the JVM listening (MMS's "Inference API bind to"), the
backend done importing torch (it announces itself to MMS: "[PID]"), the first worker done
loading and warming up the model, and the first 200 answer to a digit PNG. The import of torch
and the handler path is also timed alone, in a process of its own with nothing else running:
the floor of a cold start on this machine. Prints each figure's median over the runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.servers import post
from bench.workloads import REPO, prepare
from sagemaker_torch_serving.settings import Env
from tests.ports import free_port

# MMS's log lines (its log4j pattern) that mark the phases, and the worker's own.
_STAMP = r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3})"
PHASES = {
    "jvm_listening_s": re.compile(_STAMP + r".*Inference API bind to", re.M),
    "torch_imported_s": re.compile(_STAMP + r".*WorkerLifeCycle - \[PID\]", re.M),
    "model_loaded_s": re.compile(_STAMP + r".*loaded the model in", re.M),
}
LOAD = re.compile(r"loaded the model in ([\d.]+) s")
IMPORT = "import sagemaker_torch_serving.backend.worker"


def one_run(body: bytes, log: Path) -> dict[str, float]:
    port = free_port()
    env = {
        **os.environ,
        Env.BIND_TO_PORT: str(port),
        Env.MODEL_DIR: str(REPO / "build" / "model"),
        Env.CODE_DIR: str(REPO / "code"),
        Env.WARMUP_SHAPE: "1,1,8,8",
    }
    started_wall = time.time()
    started = time.monotonic()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sagemaker_torch_serving"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited; see {log}")
            if time.monotonic() - started > 120:
                raise RuntimeError(f"no answer in 120 s; see {log}")
            try:
                if post(port, body, "image/png") == 200:
                    break
            except OSError:
                time.sleep(0.005)
        figures = {"first_answer_s": time.monotonic() - started}
    finally:
        process.terminate()
        process.wait(60)
    text = log.read_text(errors="replace")
    for name, pattern in PHASES.items():
        match = pattern.search(text)
        if match:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S,%f")
            figures[name] = stamp.timestamp() - started_wall
    load = LOAD.search(text)
    if load:
        figures["load_and_warm_up_s"] = float(load.group(1))
    return figures


def import_alone() -> float:
    """From the interpreter's start to the end of the import (not to its exit, which is slow
    with torch loaded and is no part of a cold start)."""
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", f"{IMPORT}; import time; print(time.time())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.split()[-1]) - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    body = prepare("digits", REPO / "build" / "bench").body
    if not (REPO / "build" / "model" / "model.pt").exists():
        sys.exit("the example model is missing: make model")
    runs = []
    with tempfile.TemporaryDirectory(prefix="coldstart-") as scratch:
        one_run(body, Path(scratch) / "warm-up.log")  # the page cache holds the files after it
        for index in range(args.runs):
            figures = one_run(body, Path(scratch) / f"run-{index}.log")
            figures["import_alone_s"] = import_alone()
            runs.append(figures)
    print(f"make serve, start to first answer, median of {args.runs} runs (min-max):")
    for name in (
        "import_alone_s",
        "jvm_listening_s",
        "torch_imported_s",
        "model_loaded_s",
        "load_and_warm_up_s",
        "first_answer_s",
    ):
        values = [run[name] for run in runs if name in run]
        if values:
            print(
                f"  {name:20} {statistics.median(values):6.3f} s "
                f"({min(values):.3f}-{max(values):.3f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
