#!/usr/bin/env python3
"""Build the serving image with the Docker SDK for Python (what `make build` runs).

    python scripts/build.py --tag sagemaker-torch-serving:latest            # GPU image
    python scripts/build.py --tag serving:cpu --device cpu                   # CPU image
    python scripts/build.py --device cpu --base-image local/bookworm:base --wheelhouse /opt/wheels

--device picks the defaults: gpu builds on NVIDIA's CUDA 12.8 runtime with torch for CUDA 12.8,
cpu on debian:bookworm-slim with the CPU-only torch. --wheelhouse offers a folder of wheels
(e.g. a local torch wheel) to pip in the build; with one, pip uses no extra package index
unless --torch-index-url says so, which is what an air-gapped build wants.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

import docker.utils
from _common import Failure, docker_client, fail

PROG = "build"
REPO = Path(__file__).resolve().parents[1]
DEVICES = {
    "gpu": {
        "BASE_IMAGE": "nvidia/cuda:12.8.1-runtime-ubuntu24.04",
        "TORCH_VARIANT": "+cu128",
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu128",
    },
    "cpu": {
        "BASE_IMAGE": "debian:bookworm-slim",
        "TORCH_VARIANT": "+cpu",
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
    },
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="sagemaker-torch-serving:latest", help="name:tag")
    parser.add_argument("--device", choices=sorted(DEVICES), default="gpu")
    parser.add_argument("--base-image", help="the FROM image (default: by --device)")
    parser.add_argument("--torch-version", default="2.13.0")
    parser.add_argument("--torch-index-url", help="extra pip index for torch (default: by device)")
    parser.add_argument("--onnxruntime", default="onnxruntime", help="or onnxruntime-gpu")
    parser.add_argument("--wheelhouse", type=Path, help="a folder of wheels offered to pip")
    parser.add_argument("--network", default="host", help="network mode of the build steps")
    args = parser.parse_args(argv)

    if args.wheelhouse is not None and not args.wheelhouse.is_dir():
        return fail(PROG, f"--wheelhouse {args.wheelhouse} is not a folder")
    defaults = DEVICES[args.device]
    index_url = args.torch_index_url
    if index_url is None:
        index_url = "" if args.wheelhouse else defaults["TORCH_INDEX_URL"]
    build_args = {
        "BASE_IMAGE": args.base_image or defaults["BASE_IMAGE"],
        "TORCH_VERSION": args.torch_version,
        "TORCH_VARIANT": defaults["TORCH_VARIANT"],
        "TORCH_INDEX_URL": index_url,
        "ONNXRUNTIME": args.onnxruntime,
    }
    try:
        client = docker_client()
    except Failure as error:
        return fail(PROG, error)

    print(f"building {args.tag} ({args.device}) on {build_args['BASE_IMAGE']}", flush=True)
    context = build_context(args.wheelhouse)
    image_id = None
    for chunk in client.api.build(
        fileobj=context,
        custom_context=True,
        tag=args.tag,
        buildargs=build_args,
        network_mode=args.network,
        rm=True,
        forcerm=True,
        decode=True,
    ):
        if "stream" in chunk:
            sys.stdout.write(chunk["stream"])
            sys.stdout.flush()
        if "error" in chunk:
            return fail(PROG, f"the build failed: {chunk['error'].strip()}")
        image_id = chunk.get("aux", {}).get("ID", image_id)
    print(f"built {args.tag} ({image_id})")
    return 0


def build_context(wheelhouse: Path | None) -> io.BytesIO:
    """The build context as a tar: what .dockerignore lets through, as `docker build .` and the
    Docker SDK given path= send it, with the --wheelhouse wheels as wheelhouse/ (in place of any
    wheelhouse/ in the repository)."""
    lines = (line.strip() for line in (REPO / ".dockerignore").read_text().splitlines())
    exclude = [line for line in lines if line and not line.startswith("#")]
    if wheelhouse is not None:
        exclude.append("wheelhouse")
    context = docker.utils.tar(str(REPO), exclude=exclude, fileobj=io.BytesIO())
    if wheelhouse is not None:
        with tarfile.open(fileobj=context, mode="a") as archive:
            for wheel in sorted(wheelhouse.glob("*.whl")):
                archive.add(wheel, arcname=f"wheelhouse/{wheel.name}")
        context.seek(0)
    return context


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
