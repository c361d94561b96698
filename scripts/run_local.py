#!/usr/bin/env python3
"""Run the image locally as SageMaker would (`docker run IMAGE serve`), on a mounted model.

    python scripts/run_local.py --image sagemaker-torch-serving:latest --model build/model
    python scripts/run_local.py --model model.tar.gz --port 8080 --gpu

--model is a directory (mounted read-only at /opt/ml/model, as SageMaker does after unpacking
model.tar.gz) or a model.tar.gz (mounted as the only file there, unpacked at start). The
container's log streams here; Ctrl-C, SIGTERM or a closed terminal (SIGHUP) stops it as
SageMaker does (SIGTERM, then SIGKILL after 30 s), and removes it. --network host serves on the
host's 127.0.0.1 directly (for hosts without a bridge).
"""

from __future__ import annotations

import argparse
import signal
import sys
import uuid
from pathlib import Path

import docker
import docker.errors
from _common import Failure, docker_client, fail
from docker.types import DeviceRequest

from sagemaker_torch_serving.archive import ARCHIVE_SUFFIXES
from sagemaker_torch_serving.settings import Env

PROG = "run_local"
# Set explicitly: a background shell starts us with SIGINT ignored, and SIGTERM and SIGHUP
# would otherwise end this process without stopping the container.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A signal asked run_local to stop the container."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="sagemaker-torch-serving:latest")
    parser.add_argument("--model", type=Path, required=True, help="a directory or model.tar.gz")
    parser.add_argument("--port", type=int, default=8080, help="the host port to serve on")
    parser.add_argument("--gpu", action="store_true", help="give the container every GPU")
    parser.add_argument("--network", choices=("bridge", "host"), default="bridge")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the container")
    args = parser.parse_args(argv)

    model = args.model.resolve()
    if model.is_dir():
        volumes = {str(model): {"bind": "/opt/ml/model", "mode": "ro"}}
    elif model.is_file() and model.name.endswith(ARCHIVE_SUFFIXES):
        volumes = {str(model): {"bind": "/opt/ml/model/model.tar.gz", "mode": "ro"}}
    else:
        return fail(
            PROG,
            f"model not found: {args.model} (a directory or a .tar.gz; `make model` "
            "builds the example in build/model)",
        )
    environment = dict(item.split("=", 1) for item in args.env if "=" in item)
    options: dict = {"volumes": volumes, "environment": environment}
    if args.network == "host":
        options["network_mode"] = "host"
        environment[Env.BIND_TO_PORT] = str(args.port)
    else:
        options["ports"] = {"8080/tcp": args.port}
    if args.gpu:
        options["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]

    try:
        client = docker_client()
    except Failure as error:
        return fail(PROG, error)
    try:
        # Only a local image: containers.run would otherwise try to pull it from a registry.
        client.images.get(args.image)
    except docker.errors.ImageNotFound:
        return fail(PROG, f"image {args.image} not found: build it with `make build`")
    name = f"sagemaker-serving-{uuid.uuid4().hex[:8]}"
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)
    try:
        container = client.containers.run(args.image, ["serve"], name=name, detach=True, **options)
    except Stopped:
        _remove(client, name)
        return 130
    except docker.errors.APIError as error:
        _remove(client, name)  # a failed start leaves a container in state Created
        if args.gpu and "device driver" in str(error):
            return fail(
                PROG,
                "--gpu needs the NVIDIA Container Toolkit, which this Docker host "
                f"lacks ({error.explanation})",
            )
        return fail(PROG, f"docker could not start the container: {error.explanation}")

    try:
        print(f"{name}: serving {args.model} on port {args.port}; Ctrl-C stops it", flush=True)
        try:
            for line in container.logs(stream=True, follow=True):
                sys.stdout.write(line.decode(errors="replace"))
                sys.stdout.flush()
        except Stopped as stop:
            for signum in STOP_SIGNALS:  # the stop itself is not to be cut short
                signal.signal(signum, signal.SIG_IGN)
            print(f"\n{stop}: stopping {name}", flush=True)
            container.stop(timeout=30)
        code: int = container.wait()["StatusCode"]
        print(f"{name} exited with code {code}")
        return code
    finally:
        _remove(client, name)  # also when this process fails, or a second signal comes early


def _remove(client: docker.DockerClient, name: str) -> None:
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
