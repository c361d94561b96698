"""What the scripts share: their one-line failures and the Docker client.

The scripts run as ``python scripts/x.py``, which puts scripts/ on sys.path: ``import _common``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import boto3
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


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``<prog>: error: <message>``, exit status 2
    (argparse's own error adds the usage above it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (--help for usage)\n")


NO_CREDENTIALS = (
    "no AWS credentials found: use --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, run `aws configure` or `aws sso login`, or run on a machine with "
    "an instance role"
)


def aws_call(what: str, call: Callable[..., Any], **kwargs: Any) -> Any:
    """``call(**kwargs)``, with botocore's errors turned into a Failure whose one line names the
    call (``SageMaker CreateModel failed: ValidationException: ...``)."""
    import botocore.exceptions  # here, so that the scripts without AWS work without botocore

    try:
        return call(**kwargs)
    except botocore.exceptions.NoCredentialsError as exc:
        raise Failure(NO_CREDENTIALS) from exc
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise Failure(f"{what} failed: {error.get('Code')}: {error.get('Message')}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise Failure(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def aws_session(profile: str | None, region: str | None, service: str) -> boto3.Session:
    """A boto3 session with a region where ``service`` is offered (in any partition) and
    credentials, both checked without a network call to AWS (only an instance role's
    credentials come from the network, from the instance itself); Failure if either is
    missing."""
    import boto3
    import botocore.exceptions

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
        if not session.region_name:
            raise Failure(
                "no AWS region: pass --region, set AWS_REGION or AWS_DEFAULT_REGION, or set "
                "region in the profile"
            )
        known = any(
            session.region_name in session.get_available_regions(service, partition_name=p)
            for p in session.get_available_partitions()
        )
        if not known:
            raise Failure(
                f"unknown AWS region {session.region_name!r} (or {service} is not offered there)"
            )
        if session.get_credentials() is None:
            raise Failure(NO_CREDENTIALS)
    except botocore.exceptions.BotoCoreError as exc:  # ProfileNotFound, a bad config file
        raise Failure(f"{type(exc).__name__}: {exc}") from exc
    return session
