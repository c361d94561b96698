"""SageMaker's platform contracts, measured on our server (natively, on 127.0.0.1):

    python -m bench.contracts records [--records 20000] [--repeats 3]
    python -m bench.contracts models [--models 4] [--size-mb 64]

records: a batch transform's records answered MultiRecord (SplitType=Line: as many records per
request as MaxPayloadInMB allows) against the same records sent one per request (SingleRecord),
both with MaxConcurrentTransforms requests in flight, as SageMaker's agent sends them; records/s
of each and the ratio, from interleaved runs (median), and whether every answer is the same.

models: a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true) loading N models, each with its own
code/ and SIZE MB of weights: each load's time, the memory of each model's processes (PSS) and
the drop in the machine's available memory, the first invocation, each unload's time and the
memory it gave back.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
import torch

from sagemaker_torch_serving.settings import Env
from tests.ports import free_port
from tests.processes import model_processes


class Server:
    """``python -m sagemaker_torch_serving`` in a process group of its own, stopped on exit."""

    def __init__(self, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, Env.BIND_TO_PORT: str(self.port), Env.LOG_LEVEL: "WARNING"}
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sagemaker_torch_serving"],
                env={**environment, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the server did not start; see {log}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/ping", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(40)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class RowWise(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def records(args: argparse.Namespace, work: Path) -> None:
    model_dir = work / "rowwise"
    model_dir.mkdir()
    torch.manual_seed(0)
    torch.jit.script(RowWise()).save(str(model_dir / "model.pt"))
    lines = [
        ",".join(f"{(i * 7 + j) % 13 / 13:.4f}" for j in range(16)) for i in range(args.records)
    ]
    server = Server(work / "records.log", SAGEMAKER_BATCH="true", SERVING_MODEL_DIR=str(model_dir))
    try:
        parameters = requests.get(f"{server.url}/execution-parameters", timeout=5).json()
        concurrency = parameters["MaxConcurrentTransforms"]
        payload = parameters["MaxPayloadInMB"] << 20
        chunks = _chunks(lines, payload)
        single, multi, same = [], [], True
        for _ in range(args.repeats):
            seconds, one_by_one = _send(server.url, lines, concurrency)
            single.append(args.records / seconds)
            seconds, answers = _send(
                server.url, ["\n".join(chunk) for chunk in chunks], concurrency
            )
            multi.append(args.records / seconds)
            same &= _agree("\n".join(answers).split("\n"), one_by_one)
    finally:
        server.stop()
    s, m = statistics.median(single), statistics.median(multi)
    print(
        f"{args.records} CSV records (16 numbers each), {concurrency} requests in flight "
        f"(MaxConcurrentTransforms), {len(chunks)} MultiRecord request(s) of at most "
        f"{payload >> 20} MB; median of {args.repeats} interleaved runs"
    )
    print(f"SingleRecord (one record per request): {s:,.0f} records/s")
    print(f"MultiRecord (SplitType=Line):          {m:,.0f} records/s ({m / s:.1f}x)")
    print(f"every record's answer the same both ways (to float32's precision): {same}")


def _agree(multi: list[str], single: list[str]) -> bool:
    """One answer line per record both ways, with the same numbers: a batch's matrix product
    may round the last bits differently from a single row's."""
    if len(multi) != len(single):
        return False
    for many, one in zip(multi, single, strict=True):
        a, b = many.split(","), one.split(",")
        if len(a) != len(b) or any(
            not math.isclose(float(x), float(y), rel_tol=1e-5, abs_tol=1e-6)
            for x, y in zip(a, b, strict=True)
        ):
            return False
    return True


def _chunks(lines: list[str], limit: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for line in lines:
        if chunks[-1] and size + len(line) + 1 > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line) + 1
    return chunks


def _send(url: str, bodies: list[str], concurrency: int) -> tuple[float, list[str]]:
    """Post every body (text/csv), ``concurrency`` at a time: seconds, and the answers."""
    sessions = [requests.Session() for _ in range(concurrency)]
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}

    def post(index: int) -> str:
        session = sessions[index % concurrency]
        response = session.post(f"{url}/invocations", data=bodies[index], headers=headers)
        response.raise_for_status()
        return response.text.strip("\n")

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(post, range(len(bodies))))
    seconds = time.perf_counter() - started
    for session in sessions:
        session.close()
    return seconds, answers


class Wide(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)[:, :4]


def models(args: argparse.Namespace, work: Path) -> None:
    width = int((args.size_mb * 2**20 / 4) ** 0.5)
    urls = {}
    for index in range(args.models):
        name = f"model-{index}"
        directory = work / "models" / name / "model"
        (directory / "code").mkdir(parents=True)
        torch.jit.script(Wide(width)).save(str(directory / "model.pt"))
        (directory / "code" / "inference.py").write_text(
            textwrap.dedent(f"""
            import json

            def output_fn(prediction, accept):
                return json.dumps({{"model": "{name}", "y": prediction.tolist()}})
        """)
        )
        urls[name] = str(directory)
    server = Server(work / "models.log", SAGEMAKER_MULTI_MODEL="true")
    print(f"{args.models} models of {args.size_mb} MB of weights each (TorchScript), 1 worker each")
    print("| model | load s | PSS MB | available memory drop MB | first answer ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    loads, unloads = [], []
    try:
        for name, url in urls.items():
            before = psutil.virtual_memory().available
            started = time.perf_counter()
            response = requests.post(f"{server.url}/models", json={"model_name": name, "url": url})
            loads.append(time.perf_counter() - started)
            response.raise_for_status()
            time.sleep(0.5)  # let the worker settle
            drop = (before - psutil.virtual_memory().available) / 2**20
            started = time.perf_counter()
            answer = requests.post(f"{server.url}/models/{name}/invoke", json=[[1.0] * width])
            first = (time.perf_counter() - started) * 1000
            assert answer.json()["model"] == name, answer.text
            pss = sum(p.memory_full_info().pss for p in model_processes(url)) / 2**20
            print(f"| {name} | {loads[-1]:.2f} | {pss:.0f} | {drop:.0f} | {first:.1f} |")
        print("| model | unload s | available memory back MB | processes left |")
        print("| --- | ---: | ---: | ---: |")
        for name, url in urls.items():
            before = psutil.virtual_memory().available
            started = time.perf_counter()
            requests.delete(f"{server.url}/models/{name}").raise_for_status()
            unloads.append(time.perf_counter() - started)
            deadline = time.monotonic() + 10
            while model_processes(url) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            back = (psutil.virtual_memory().available - before) / 2**20
            print(f"| {name} | {unloads[-1]:.2f} | {back:.0f} | {len(model_processes(url))} |")
    finally:
        server.stop()
    print(
        f"load: median {statistics.median(loads):.2f} s; "
        f"unload: median {statistics.median(unloads):.2f} s"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("records", help="batch transform: MultiRecord against SingleRecord")
    one.add_argument("--records", type=int, default=20000)
    one.add_argument("--repeats", type=int, default=3)
    many = commands.add_parser("models", help="multi-model endpoint: load, memory, unload")
    many.add_argument("--models", type=int, default=4)
    many.add_argument("--size-mb", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-platform-", dir="/tmp") as work:
        (records if args.command == "records" else models)(args, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
