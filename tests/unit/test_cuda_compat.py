"""CUDA forward compatibility, decided from a fake /proc driver file and a fake compat folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagemaker_torch_serving.cuda_compat import (
    compat_driver_version,
    enable_forward_compat,
    host_driver_version,
)

PROC_535 = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
    "GCC version:  gcc version 10.2.1 20210110 (Debian 10.2.1-6)\n"
)


@pytest.fixture
def compat_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "compat"
    folder.mkdir()
    (folder / "libcuda.so.1").touch()  # the soname link: no version to read
    (folder / "libcuda.so.570.124.06").touch()
    return folder


def proc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "version"
    path.write_text(text)
    return path


def test_an_older_host_driver_puts_the_compat_libraries_first(tmp_path, compat_dir):
    environ = {"LD_LIBRARY_PATH": "/usr/local/nvidia/lib64"}
    line = enable_forward_compat(environ, compat_dir, proc(tmp_path, PROC_535))
    assert environ["LD_LIBRARY_PATH"] == f"{compat_dir}:/usr/local/nvidia/lib64"
    assert line is not None and "on" in line and "535.104.05" in line and "570.124.06" in line
    enable_forward_compat(environ, compat_dir, proc(tmp_path, PROC_535))  # idempotent
    assert environ["LD_LIBRARY_PATH"].count(str(compat_dir)) == 1


def test_a_newer_host_driver_needs_nothing(tmp_path, compat_dir):
    environ: dict[str, str] = {}
    text = PROC_535.replace("535.104.05", "580.65.06")
    line = enable_forward_compat(environ, compat_dir, proc(tmp_path, text))
    assert "LD_LIBRARY_PATH" not in environ
    assert line is not None and line.startswith("CUDA forward compatibility: off")


def test_no_gpu_driver_means_no_line(tmp_path, compat_dir, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi either
    environ: dict[str, str] = {}
    assert enable_forward_compat(environ, compat_dir, tmp_path / "missing") is None
    assert environ == {}


def test_versions_are_read_from_proc_and_file_names(tmp_path, compat_dir):
    open_module = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release"
    assert host_driver_version(proc(tmp_path, open_module)) == "550.54.15"
    assert compat_driver_version(compat_dir) == "570.124.06"
    assert compat_driver_version(tmp_path / "nowhere") is None
