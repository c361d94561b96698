"""Check that each contender serves: start it on 127.0.0.1, time it to its first answer, check
its answers (one request, then 8 at once), the addresses it listens on, and that SIGTERM to the
launcher alone leaves no process of its group behind.

    python3 bench/contenders/check.py [--only stock,torchserve,torchserve-batching] [--keep]

Any Python 3.10+ runs it (standard library only); the model is made with the contenders'
own Python. Needs bench/contenders/setup.sh first. Prints one line per contender and exits 1
if any check failed. The model root (a temporary folder) holds each launcher's log.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE.parent.parent / ".bench"
BATCHING = {"SAGEMAKER_TS_BATCH_SIZE": "8", "SAGEMAKER_TS_MAX_BATCH_DELAY": "5"}
CONTENDERS = {
    "stock": ("venv-stock", "stock.py", {}),
    "torchserve": ("venv-torchserve", "torchserve.py", {}),
    "torchserve-batching": ("venv-torchserve", "torchserve.py", BATCHING),
}
INFERENCE_PY = """\
import json, numpy as np, torch
def model_fn(model_dir):
    m = torch.jit.load(f"{model_dir}/model.pt"); m.eval(); return m
def input_fn(body, content_type):
    return torch.tensor(json.loads(body), dtype=torch.float32)
def predict_fn(data, model):
    with torch.inference_mode():
        return model(data)
def output_fn(prediction, accept):
    return json.dumps(prediction.tolist())
"""
MAKE_MODEL = """\
import json, sys, torch
torch.manual_seed(0)
model = torch.jit.script(torch.nn.Sequential(
    torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)))
model.save(sys.argv[1] + "/model.pt")
inputs = json.loads(sys.argv[2])
with torch.inference_mode():
    print(json.dumps([model(torch.tensor(rows)).tolist() for rows in inputs]))
"""
LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:")  # Java's IPv4 sockets show as the second
INPUTS = [[[round(0.1 + 0.001 * (k * 64 + j), 4) for j in range(64)]] for k in range(8)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--keep", action="store_true", help="keep the model root and logs")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="contenders-check-"))
    failed = False
    try:
        expected = make_model(root / "model")
        for name in args.only.split(","):
            venv, script, env = CONTENDERS[name]
            python = VENVS / venv / "bin" / "python"
            if not python.exists():
                print(f"{name}: FAIL: {python} missing (run bench/contenders/setup.sh)")
                failed = True
                continue
            ok, line = check(name, python, HERE / script, env, root, expected)
            print(f"{name}: {'ok' if ok else 'FAIL'}: {line}", flush=True)
            failed |= not ok
    finally:
        if args.keep or failed:
            print(f"model root and logs: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def make_model(model_dir: Path) -> list[list[list[float]]]:
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(INFERENCE_PY)
    pythons = [VENVS / venv / "bin" / "python" for venv in ("venv-stock", "venv-torchserve")]
    python = next((path for path in pythons if path.exists()), Path(sys.executable))
    made = subprocess.run(
        [str(python), "-c", MAKE_MODEL, str(model_dir), json.dumps(INPUTS)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(made.stdout)


def check(name, python, script, env, root, expected) -> tuple[bool, str]:
    port = free_port()
    log = root / f"{name}.log"
    environment = {**os.environ, **env}
    for key in [k for k in environment if k.startswith("SAGEMAKER_TS_")]:
        if key not in env:
            del environment[key]
    command = [str(python), str(script), "--model-root", str(root), "--port", str(port)]
    with log.open("wb") as output:
        started = time.monotonic()
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    problems: list[str] = []
    try:
        ping_s, ready_s, body = wait_ready(process, port, started)
        answer = json.loads(body)
        if not close(answer, expected[0]):
            problems.append(f"wrong answer {answer}")
        if request(port, "GET", "/ping")[0] != 200:
            problems.append("/ping is not 200 once loaded")
        answers = concurrently(port, len(INPUTS))
        wrong = [k for k, (status, got) in enumerate(answers) if status != 200
                 or not close(json.loads(got), expected[k])]  # fmt: skip
        if wrong:
            problems.append(f"8 at once: requests {wrong} got wrong answers: {answers}")
        listening = listening_addresses(process.pid)
        workers = count_workers(process.pid)
        if any(not address.startswith(LOOPBACK) for address in listening):
            problems.append(f"listens beyond 127.0.0.1: {listening}")
        extra = ""
        if env:
            batch = re.search(r'"batchSize": (\d+)', log.read_text(errors="replace"))
            extra = f", config batchSize {batch.group(1) if batch else '?'}"
            if not batch or batch.group(1) != env["SAGEMAKER_TS_BATCH_SIZE"]:
                problems.append("the generated config has no batchSize from the environment")
    except (RuntimeError, OSError, ValueError) as error:
        problems.append(f"{type(error).__name__}: {error}")
        ping_s = ready_s = float("nan")
        answer, listening, extra, workers = None, [], "", 0
    finally:
        left = stop(process)
    if left:
        problems.append(f"SIGTERM left {len(left)} processes: {left}")
    # TorchServe's worker logs this once per batch it hands to the handler.
    calls = log.read_text(errors="replace").count("Backend received inference at")
    if calls:
        extra += f", {calls} handler calls for {1 + len(INPUTS)} requests"
        if env and calls >= 1 + len(INPUTS):
            problems.append("no batching: one handler call per request")
    numbers = "none" if answer is None else "[" + ", ".join(f"{x:.4f}" for x in answer[0]) + "]"
    line = (
        f"ready in {ready_s:.2f} s (/ping 200 at {ping_s:.2f} s); POST /invocations -> 200 "
        f"{numbers}; 8 at once correct; {workers} worker processes; listens on "
        f"{', '.join(listening)}{extra}; SIGTERM left {len(left)} processes"
    )
    if problems:
        line = "; ".join(problems) + f" (log: {log})"
    return not problems, line


def wait_ready(process, port, started, timeout=180) -> tuple[float, float, bytes]:
    """Seconds to the first 200 of /ping and of POST /invocations, and that answer's body."""
    ping_s = None
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before answering")
        try:
            if ping_s is None and request(port, "GET", "/ping")[0] == 200:
                ping_s = time.monotonic() - started
            status, body = request(port, "POST", "/invocations", json.dumps(INPUTS[0]))
            if status == 200:
                ready_s = time.monotonic() - started
                return (ping_s if ping_s is not None else ready_s), ready_s, body
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no answer in {timeout} s")


def request(port, method, path, body=None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def concurrently(port, count) -> list[tuple[int, bytes]]:
    barrier = threading.Barrier(count)
    answers: list[tuple[int, bytes]] = [(0, b"")] * count

    def one(k: int) -> None:
        barrier.wait()
        try:
            answers[k] = request(port, "POST", "/invocations", json.dumps(INPUTS[k]))
        except OSError as error:
            answers[k] = (0, str(error).encode())

    threads = [threading.Thread(target=one, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def close(got, want, tolerance=1e-4) -> bool:
    return (
        isinstance(got, list)
        and len(got) == len(want) == 1
        and len(got[0]) == len(want[0]) == 10
        and all(abs(a - b) <= tolerance for a, b in zip(got[0], want[0], strict=True))
    )


def listening_addresses(group: int) -> list[str]:
    """The TCP addresses that the processes of the process group listen on (ss -ltnp)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == group:
                    pids.add(entry.name)
            except OSError:
                continue
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        owners = set(re.findall(r"pid=(\d+)", line))
        if owners & pids:
            found.add(line.split()[3])
    return sorted(found)


def count_workers(group: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == group:
                count += b"model_service_worker" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
    return count


def stop(process, timeout=60) -> list[str]:
    """SIGTERM to the launcher only; then what is left of its group (killed)."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 5
    left: list[str] = []
    while time.monotonic() < deadline:
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) == process.pid:
                    stat = (entry / "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[0] != "Z":
                        left.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:80]!r}")
            except OSError:
                continue
        if not left:
            break
        time.sleep(0.2)
    if left:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    return left


def free_port() -> int:
    """A free port below 32767, the highest MMS accepts (the kernel's picks lie above it)."""
    for port in random.sample(range(20000, 32001), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


if __name__ == "__main__":
    sys.exit(main())
