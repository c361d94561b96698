#!/usr/bin/env bash
# Starts dockerd in the background for machines where no engine runs (CI here): no bridge, no
# iptables, so containers use --network host and nothing is set up on private address ranges.
# Prints the daemon's PID; `kill` it to stop the engine. Does nothing if an engine answers.
set -euo pipefail
log=${DOCKERD_LOG:-/tmp/dockerd.log}
if docker version >/dev/null 2>&1; then
  exit 0
fi
mountpoint -q /sys/fs/cgroup || cgroupfs-mount
dockerd --bridge=none --iptables=false --ip-masq=false --log-level=warn >"$log" 2>&1 &
pid=$!
for _ in $(seq 60); do
  if docker version >/dev/null 2>&1; then
    echo "$pid"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.5
done
echo "dockerd did not answer in 30 s; its log:" >&2
cat "$log" >&2
exit 1
