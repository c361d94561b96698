#!/usr/bin/env python3
"""Build the serving image with the Docker SDK for Python (what `make build` runs).

    python scripts/build.py --tag sagemaker-torch-serving:latest            # GPU image
    python scripts/build.py --tag serving:cpu --device cpu                   # CPU image
    python scripts/build.py --tag serving:mme --multi-model                  # for MMEs
    python scripts/build.py --device cpu --base-image local/bookworm:base \
        --wheelhouse /opt/pypi-more/files --wheelhouse /opt/pypi/files

--multi-model builds the multi-model endpoint variant (the Dockerfile's target multi-model:
SageMaker's multi-models label, SAGEMAKER_MULTI_MODEL=true). --device picks the base image:
gpu builds on NVIDIA's CUDA 13.0 base, cpu on debian:bookworm-slim. Both install the same
pinned Python stack (docker/torch.lock, then docker/requirements.lock): PyPI's torch and
torchvision, built for CUDA 13.0, which run on the CPU too (PyPI's torchvision does not import
beside a +cpu torch). --wheelhouse (repeatable)
offers folders of wheels to pip in the build: each is served on 127.0.0.1 for the length of
the build (the build steps share the host's network) and given to pip as find-links, so that
several GB of torch wheels never go into the build context; pip takes from the package index
only what no folder holds.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _common import Failure, docker_client, fail

PROG = "build"
REPO = Path(__file__).resolve().parents[1]
BASE_IMAGES = {
    "gpu": "nvidia/cuda:13.0.2-base-ubuntu24.04",
    "cpu": "debian:bookworm-slim",
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="sagemaker-torch-serving:latest", help="name:tag")
    parser.add_argument("--device", choices=sorted(BASE_IMAGES), default="gpu")
    parser.add_argument("--base-image", help="the FROM image (default: by --device)")
    parser.add_argument("--onnxruntime", default="onnxruntime", help="or onnxruntime-gpu")
    parser.add_argument(
        "--multi-model", action="store_true", help="the multi-model endpoint variant"
    )
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        action="append",
        default=[],
        help="a folder of wheels offered to pip (repeatable)",
    )
    parser.add_argument("--network", default="host", help="network mode of the build steps")
    args = parser.parse_args(argv)

    for folder in args.wheelhouse:
        if not folder.is_dir():
            return fail(PROG, f"--wheelhouse {folder} is not a folder")
    if args.wheelhouse and args.network != "host":
        return fail(PROG, "--wheelhouse needs --network host (its wheels are served on 127.0.0.1)")
    base_image = args.base_image or BASE_IMAGES[args.device]
    try:
        client = docker_client()
    except Failure as error:
        return fail(PROG, error)

    target = "multi-model" if args.multi_model else "single-model"
    print(f"building {args.tag} ({args.device}, {target}) on {base_image}", flush=True)
    with ExitStack() as stack:
        links = [stack.enter_context(serve_folder(folder)) for folder in args.wheelhouse]
        build_args = {
            "BASE_IMAGE": base_image,
            "ONNXRUNTIME": args.onnxruntime,
            "PIP_FIND_LINKS": " ".join(links),
        }
        image_id = None
        for chunk in client.api.build(
            path=str(REPO),
            tag=args.tag,
            target=target,
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


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # pip's requests: not news
        pass


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve a folder's listing and files on 127.0.0.1 while the block runs; yields its URL,
    which pip reads as a find-links page."""
    handler = functools.partial(_QuietHandler, directory=str(folder.resolve()))
    server = _bind(_stable_port(folder), handler)
    thread = threading.Thread(target=server.serve_forever, name=f"wheels {folder}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _stable_port(folder: Path) -> int:
    """The folder's own port, the same at every build: the URL is a build argument of the pip
    layers, so a new port would be a cache miss that reinstalls the torch stack (minutes, and
    6 GB more in the engine for each image built)."""
    return 20000 + zlib.crc32(str(folder.resolve()).encode()) % 10000


def _bind(port: int, handler: functools.partial[_QuietHandler]) -> ThreadingHTTPServer:
    """A server on the first free port from `port` on (a few tries), else on any free port."""
    for candidate in range(port, port + 8):
        try:
            return ThreadingHTTPServer(("127.0.0.1", candidate), handler)
        except OSError:
            continue
    return ThreadingHTTPServer(("127.0.0.1", 0), handler)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
