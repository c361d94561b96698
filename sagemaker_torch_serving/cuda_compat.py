"""CUDA forward compatibility: an image whose CUDA is newer than the host's driver.

SageMaker's GPU hosts often run older drivers (470 on ml.g4dn and ml.g5 by default, 535 or 550
on newer families, chosen by InferenceAmiVersion). NVIDIA's compat package (cuda-compat-X-Y,
in /usr/local/cuda/compat of the CUDA base images) holds the user-space driver (libcuda.so) of
a newer driver, which runs on an older kernel driver for data-center GPUs: the image's CUDA 13.0
runs so on 535 and 550, not on 470 (README, "Build the image"). It must come first
on the library path of every process that loads CUDA, and the NVIDIA Container Toolkit stopped
arranging that itself in 1.17.4. So the entrypoint calls this before it starts the server
(whose workers inherit the environment) or execs any other command: a variable exported by a
child shell would never reach them.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import MutableMapping
from pathlib import Path

COMPAT_DIR = Path("/usr/local/cuda/compat")
PROC_VERSION = Path("/proc/driver/nvidia/version")
# "... Kernel Module  535.104.05  Sat Aug ..." or "... Open Kernel Module for x86_64  550.54.15 ..."
DRIVER_VERSION = re.compile(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)*)\s")


def enable_forward_compat(
    environ: MutableMapping[str, str],
    compat_dir: Path = COMPAT_DIR,
    proc_version: Path = PROC_VERSION,
) -> str | None:
    """Put the compat libraries first on LD_LIBRARY_PATH when the host driver is older.

    Returns the one log line that says what was decided, or None where there is no GPU driver.
    """
    host = host_driver_version(proc_version)
    if host is None:
        return None
    compat = compat_driver_version(compat_dir)
    if compat is None:
        return f"CUDA forward compatibility: off (host driver {host}; no compat libraries)"
    if _key(host) >= _key(compat):
        return (
            f"CUDA forward compatibility: off (host driver {host} is not older than "
            f"the image's {compat})"
        )
    paths = [part for part in environ.get("LD_LIBRARY_PATH", "").split(":") if part]
    if str(compat_dir) not in paths:
        environ["LD_LIBRARY_PATH"] = ":".join([str(compat_dir), *paths])
    return (
        f"CUDA forward compatibility: on (host driver {host} is older than the image's "
        f"{compat}; {compat_dir} is first on LD_LIBRARY_PATH)"
    )


def host_driver_version(proc_version: Path = PROC_VERSION) -> str | None:
    """The kernel driver's version, from /proc (no NVML needed), else from nvidia-smi."""
    try:
        match = DRIVER_VERSION.search(proc_version.read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = output.strip().splitlines()
    return lines[0].strip() if lines and _key(lines[0].strip()) else None


def compat_driver_version(compat_dir: Path = COMPAT_DIR) -> str | None:
    """The driver version of the compat libcuda (its file is named libcuda.so.<version>)."""
    versions = [path.name.removeprefix("libcuda.so.") for path in compat_dir.glob("libcuda.so.*")]
    versions = [version for version in versions if len(_key(version)) > 1]
    return max(versions, key=_key) if versions else None


def _key(version: str) -> tuple[int, ...]:
    """``"535.104.05"`` -> ``(535, 104, 5)``, for comparing; ``()`` for what is no version."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()
