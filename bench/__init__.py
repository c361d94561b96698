"""Benchmarks: `python -m bench` (make bench) serves three workloads with each contender, loads
them with wrk on 127.0.0.1 and reports throughput, latency and ratios measured in one run."""
