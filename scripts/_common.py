"""What the scripts share: their one-line failures and the Docker client.

The scripts run as ``python scripts/x.py``, which puts scripts/ on sys.path: ``import _common``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker


class Failure(Exception):
    """A failure the user can act on: the script prints it with fail() and exits 1."""


def one_line(text: object, limit: int = 400) -> str:
    """The first line of a message, shortened: error output stays one line."""
    lines = str(text).strip().splitlines()
    first = lines[0].strip() if lines else type(text).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."


def fail(prog: str, message: object) -> int:
    """Print ``<prog>: <message>`` as one line on stderr; return 1, the exit status."""
    print(f"{prog}: {one_line(message)}", file=sys.stderr)
    return 1


def docker_client() -> docker.DockerClient:
    """A client for the local Docker engine, checked with a ping; Failure if none answers."""
    import docker  # here, so that the scripts without Docker work without the Docker SDK

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise Failure(
            f"cannot reach the Docker daemon ({one_line(error)}); is Docker running?"
        ) from error
    return client
