"""Push a local container image to Amazon ECR, ready for a SageMaker model (CreateModel).

    python scripts/push.py sagemaker-torch-serving:cpu --region eu-west-1
    python scripts/push.py sagemaker-torch-serving:cpu --registry 127.0.0.1:5000

IMAGE is a local image (name:tag). The repository defaults to the image's name without its tag
(the last path part), the tag to the image's tag, or "latest".

ECR (the default): boto3 finds the credentials and region the usual way (--profile, AWS_PROFILE,
AWS_REGION / AWS_DEFAULT_REGION, the shared config and credentials files, an instance role;
--region overrides the region). The script creates the repository if it is missing (scan on
push on), gets a temporary ECR token for the push (kept in memory, never written to
~/.docker/config.json), tags IMAGE as <registry>/<repository>:<tag>, pushes it and prints the
image URI for CreateModel, by tag and by digest. --endpoint-url sends the ECR calls to another
endpoint (a local emulator, a VPC endpoint). --registry HOST[:PORT] pushes to that registry
instead (a plain registry such as the CNCF distribution server): no AWS call, no login.

Exit codes: 0 pushed; 1 a failure, explained in one line on stderr; 2 bad arguments.
"""

import argparse
import base64
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import boto3
import botocore.exceptions
import docker
import docker.errors
import requests
from _common import Failure as PushError
from _common import docker_client, fail
from botocore.config import Config
from docker.utils import match_tag, parse_repository_tag

BOTO_CONFIG = Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard"})


@dataclass(frozen=True)
class Target:
    """Where to push: a registry host, and the credentials to log in with (None: no login)."""

    registry: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    account: str | None = None
    region: str | None = None

    @property
    def auth(self) -> dict[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return {"username": self.username, "password": self.password}


def image_uri(
    registry: str, repository: str, tag: str | None = None, digest: str | None = None
) -> str:
    """``registry/repository:tag``, or ``registry/repository@sha256:...`` given a digest."""
    if digest:
        return f"{registry}/{repository}@{digest}"
    return f"{registry}/{repository}:{tag or 'latest'}"


def aws_call(what: str, call: Callable[..., Any], **kwargs: Any) -> Any:
    """``call(**kwargs)``, with botocore's errors turned into one line naming the call."""
    try:
        return call(**kwargs)
    except botocore.exceptions.NoCredentialsError as exc:
        raise PushError(
            "no AWS credentials found: use --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, run `aws configure` or `aws sso login`, or run on a machine "
            "with an instance role"
        ) from exc
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise PushError(f"{what} failed: {error.get('Code')}: {error.get('Message')}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise PushError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def check_region(session: boto3.Session) -> str:
    """The session's region, if ECR exists there in any partition (aws, aws-cn, ...): no I/O."""
    region = session.region_name
    if not region:
        raise PushError(
            "no AWS region: pass --region, set AWS_REGION or AWS_DEFAULT_REGION, or set region "
            "in the profile"
        )
    for partition in session.get_available_partitions():
        if region in session.get_available_regions("ecr", partition_name=partition):
            return region
    raise PushError(f"unknown AWS region {region!r} (or ECR is not offered there)")


def ensure_repository(ecr: Any, name: str) -> tuple[dict[str, Any], bool]:
    """The ECR repository ``name``, created with scan on push if missing: (repository, created)."""
    describe = ("ECR DescribeRepositories", ecr.describe_repositories)
    try:
        return aws_call(*describe, repositoryNames=[name])["repositories"][0], False
    except PushError as exc:
        if not isinstance(exc.__cause__, ecr.exceptions.RepositoryNotFoundException):
            raise
    try:
        created = aws_call(
            "ECR CreateRepository",
            ecr.create_repository,
            repositoryName=name,
            imageScanningConfiguration={"scanOnPush": True},
        )
    except PushError as exc:  # created by someone else meanwhile?
        if not isinstance(exc.__cause__, ecr.exceptions.RepositoryAlreadyExistsException):
            raise
        return aws_call(*describe, repositoryNames=[name])["repositories"][0], False
    return created["repository"], True


def ecr_target(
    session: boto3.Session,
    repository: str,
    endpoint_url: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Target:
    """Make sure the repository exists (its registry ID is the account) and get a login token."""
    region = check_region(session)
    ecr = session.client("ecr", endpoint_url=endpoint_url, config=BOTO_CONFIG)
    found, created = ensure_repository(ecr, repository)
    account = found["registryId"]
    log(f"{'Created' if created else 'Using'} ECR repository {repository} ({account}, {region})")
    token = aws_call("ECR GetAuthorizationToken", ecr.get_authorization_token)
    data = token["authorizationData"][0]  # "AWS:<password>", for the registry proxyEndpoint
    username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    registry = data["proxyEndpoint"].removeprefix("https://").rstrip("/")
    return Target(registry, username, password, account, region)


class Progress:
    """Shows a push stream: one line per layer status change, or one live line per layer on a
    terminal (rewritten in place, like the docker CLI)."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.status: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self.lines: list[str] = []  # on a terminal: the key of each line shown, top to bottom

    def update(self, event: Mapping[str, Any]) -> None:
        layer, status = event.get("id"), event.get("status")
        if not status:
            return
        total = (event.get("progressDetail") or {}).get("total")
        if layer and total:
            self.sizes[layer] = total
        live = self.tty and event.get("progress")
        if layer and self.status.get(layer) == status and not live:
            return  # nothing new to show
        text = f"{layer}: {status}" if layer else status
        if live:
            text += f" {event['progress']}"
        elif layer and status == "Pushed" and layer in self.sizes:
            text += f" ({self.sizes[layer] / 1e6:.1f} MB)"
        if layer:
            self.status[layer] = status
        self._show(layer or f"message-{len(self.lines)}-{status}", text)

    def _show(self, key: str, text: str) -> None:
        if not self.tty:
            print(text, file=self.out, flush=True)
            return
        text = text[: max(shutil.get_terminal_size().columns - 1, 20)]
        if key in self.lines:
            up = len(self.lines) - self.lines.index(key)
            self.out.write(f"\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")
        else:
            self.lines.append(key)
            self.out.write(f"{text}\n")
        self.out.flush()


def push_image(client: docker.DockerClient, image: Any, name: str, tag: str, auth: Any) -> str:
    """Tag ``image`` as name:tag and push it (with ``auth``, if not None), showing progress;
    returns the digest the push ends with. A tag this call added is removed if the push fails."""
    added = f"{name}:{tag}" not in image.tags
    digest = error = None
    try:
        image.tag(name, tag=tag)
        progress = Progress(sys.stdout)
        for event in client.api.push(name, tag=tag, stream=True, decode=True, auth_config=auth):
            progress.update(event)
            digest = (event.get("aux") or {}).get("Digest", digest)
            error = error or event.get("error")
    except (docker.errors.DockerException, requests.RequestException) as exc:
        error = getattr(exc, "explanation", None) or exc
    if error or digest is None:
        if added:
            try:
                client.images.remove(f"{name}:{tag}", noprune=True)
            except docker.errors.APIError:
                pass  # the push error is the one to report
        raise PushError(f"push failed: {error or 'the engine reported no digest'}")
    return digest


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="push.py",
        description="Push a local image to Amazon ECR (or --registry) for a SageMaker model.",
    )
    parser.add_argument("image", metavar="IMAGE", help="local image, name:tag")
    parser.add_argument("--repository", help="repository name (default: the image's name)")
    parser.add_argument("--tag", help="tag to push (default: the image's tag, or latest)")
    parser.add_argument("--region", help="AWS region (default: from the profile/environment)")
    parser.add_argument("--profile", help="AWS profile (default: AWS_PROFILE, or default)")
    parser.add_argument("--endpoint-url", help="send the ECR calls to this endpoint")
    parser.add_argument(
        "--registry", metavar="HOST[:PORT]", help="push to this registry instead of ECR (no AWS)"
    )
    args = parser.parse_args(argv)
    if args.repository is None and args.image.startswith("sha256:"):
        parser.error("IMAGE is an image ID: give --repository (and --tag)")
    name, image_tag = parse_repository_tag(args.image)
    args.repository = args.repository or name.rsplit("/", 1)[-1]
    args.tag = args.tag or ("@" not in args.image and image_tag) or "latest"
    if not match_tag(f"{args.repository}:{args.tag}"):
        parser.error(f"invalid repository name or tag: {args.repository}:{args.tag}")
    if args.registry is not None:
        args.registry = args.registry.removeprefix("https://").removeprefix("http://").rstrip("/")
        if not args.registry or "/" in args.registry:
            parser.error("--registry takes HOST or HOST:PORT")
        aws_only = {"--region": args.region, "--profile": args.profile}
        aws_only["--endpoint-url"] = args.endpoint_url
        if given := [flag for flag, value in aws_only.items() if value]:
            parser.error(f"{', '.join(given)}: for ECR only, not with --registry")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        session = None
        if args.registry is None:  # what can be checked without a network call first
            session = boto3.Session(profile_name=args.profile, region_name=args.region)
            check_region(session)
        client = docker_client()
        try:
            image = client.images.get(args.image)
        except docker.errors.ImageNotFound as exc:
            message = f"image {args.image} not found locally (`docker images` lists them)"
            raise PushError(message) from exc
        target = Target(args.registry)
        if session is not None:
            target = ecr_target(session, args.repository, args.endpoint_url, log=print)
        destination = image_uri(target.registry, args.repository, args.tag)
        print(f"Pushing {args.image} as {destination}", flush=True)
        name = f"{target.registry}/{args.repository}"
        digest = push_image(client, image, name, args.tag, target.auth)
    except (PushError, botocore.exceptions.BotoCoreError) as exc:  # e.g. ProfileNotFound
        return fail("push.py: error", exc)
    except docker.errors.APIError as exc:
        return fail("push.py: error", exc.explanation)
    except KeyboardInterrupt:
        fail("push.py", "interrupted")
        return 130
    print(f"Pushed digest: {digest}")
    print(f"Image URI by digest: {image_uri(target.registry, args.repository, digest=digest)}")
    print(f"Image URI for CreateModel: {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
