"""The benchmark's results as a table a person reads at a glance, JSON, and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "throughput_vs_p99.png"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(markdown(results))
    plot(results, paths[2])
    return paths


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark, {results['date']}",
        "",
        f"Machine: {results['machine']}. Mode: {results['mode']} "
        f"({results['seconds']} s per level, median of {results['repeats']}). "
        f"Load: wrk, 1 thread, keep-alive, 127.0.0.1. Command: `{results['command']}`",
        "",
    ]
    for name, workload in results["workloads"].items():
        limits = workload["limits"]
        best = limits["throughput"]["best"]
        tried = ", ".join(
            f"{entry['processes']}x{entry['threads']} b{entry['batch']}: {entry['req_s']:.0f}"
            for entry in limits["throughput"]["grid"]
        )
        lines += [
            f"## {name}: {workload['description']}",
            "",
            f"In-process limits: one request {limits['one_request_ms']:.3f} ms (p50, torch on "
            f"all {limits['cpus']} CPUs); throughput {best['req_s']:.1f} req/s "
            f"({best['processes']} processes x {best['threads']} threads, batch "
            f"{best['batch']}; req/s of processes x threads, batch: {tried}).",
            "",
            "| contender | start to first answer | workers x RSS | PSS, all processes (JVM) "
            "| c | req/s | of throughput limit | p50 ms | p50 / one-request limit | p99 ms "
            "| errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for contender in workload["contenders"].values():
            if "error" in contender:
                lines.append(f"| {contender['label']} | failed: {contender['error']} |" + " |" * 9)
                continue
            startup = f"{contender['startup_s']:.2f} s"
            memory = contender["memory"]
            rss = f"{memory['workers']} x {memory['worker_rss_mb']:.0f} MB"
            pss = f"{memory['total_pss_mb']:.0f} MB ({memory['java_pss_mb']:.0f} MB)"
            for index, level in enumerate(contender["levels"]):
                head = [contender["label"], startup, rss, pss] if index == 0 else [""] * 4
                lines.append(
                    "| "
                    + " | ".join(head)
                    + f" | {level['concurrency']} | {level['throughput']:.0f}"
                    f" | {level['of_throughput_limit']:.2f}x"
                    f" | {level['p50_ms']:.2f} | {level['of_one_request_limit']:.2f}x"
                    f" | {level['p99_ms']:.2f} | {level['errors']} |"
                )
        lines.append("")
        if workload.get("batching"):
            lines += [
                "Dynamic batching, ours with 2 workers:",
                "",
                "| batch size | max delay ms | c=8 req/s | c=8 p99 ms | c=32 req/s | c=32 p99 ms |",
                "| ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for row in workload["batching"]:
                if "levels" not in row:
                    continue
                at8, at32 = row["levels"]
                lines.append(
                    f"| {row['batch_size']} | {row['max_delay_ms']} | {at8['throughput']:.1f} "
                    f"| {at8['p99_ms']:.0f} | {at32['throughput']:.1f} | {at32['p99_ms']:.0f} |"
                )
            lines.append("")
    lines += [
        "## Ratios and targets",
        "",
        "| measure | value | target | met |",
        "| --- | ---: | ---: | --- |",
    ]
    for row in results["ratios"]:
        met = "" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(f"| {row['measure']} | {row['value']} | {row['target']} | {met} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = results["workloads"]
    figure, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5), squeeze=False)
    for axis, (name, workload) in zip(axes[0], workloads.items(), strict=True):
        for contender in workload["contenders"].values():
            if "levels" not in contender:
                continue
            levels = contender["levels"]
            axis.plot(
                [level["p99_ms"] for level in levels],
                [level["throughput"] for level in levels],
                marker="o",
                label=contender["label"],
            )
            for level in levels:
                axis.annotate(
                    f"c={level['concurrency']}",
                    (level["p99_ms"], level["throughput"]),
                    fontsize=7,
                    alpha=0.7,
                )
        axis.set_xscale("log")
        axis.set_xlabel("p99 latency (ms, log)")
        axis.set_ylabel("requests/s")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
