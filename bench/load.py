"""Load with wrk (C, event loop, keep-alive): fixed concurrency, bounded in time, 127.0.0.1.

One wrk thread drives all connections, so that on this 2-core machine the load generator takes
as little as it can from the server. Its Lua script posts one body and prints a JSON summary.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import tempfile
from pathlib import Path

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local file = io.open("{body}", "rb")
wrk.body = file:read("*a")
file:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


@dataclasses.dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    port: int, body: bytes, content_type: str, concurrency: int, seconds: float
) -> LoadResult:
    with tempfile.TemporaryDirectory() as scratch:
        body_path = Path(scratch) / "body"
        body_path.write_bytes(body)
        script = Path(scratch) / "post.lua"
        script.write_text(LUA.format(content_type=content_type, body=body_path))
        command = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds:g}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/invocations",
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    summary = json.loads(output.strip().splitlines()[-1])
    return LoadResult(
        concurrency=concurrency,
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        errors=summary["socket_errors"] + summary["non_2xx"],
        p50_ms=summary["p50_us"] / 1000,
        p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )
