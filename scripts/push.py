"""Push a local container image to Amazon ECR, ready for a SageMaker model (CreateModel).

Usage:
    python scripts/push.py IMAGE [--repository NAME] [--tag TAG] [--region REGION]
                           [--profile PROFILE] [--endpoint-url URL] [--registry HOST[:PORT]]

    python scripts/push.py sagemaker-torch-serving:cpu --region eu-west-1
    python scripts/push.py sagemaker-torch-serving:cpu --registry 127.0.0.1:5000

IMAGE is a local image (name:tag). The repository defaults to the image's name without its tag
(the last path part), the tag to the image's tag, or "latest".

ECR (the default): account and region come from boto3 the usual way (--profile, AWS_PROFILE,
AWS_REGION / AWS_DEFAULT_REGION, the shared config and credentials files, an instance role), and
--region overrides the region. The script creates the repository if it is missing (scan on push
on), logs the Docker engine in with a temporary ECR token (kept in memory, never written to
~/.docker/config.json), tags IMAGE as <registry>/<repository>:<tag>, pushes it and prints the
image URI for CreateModel, by tag and by digest. --endpoint-url sends the ECR and STS calls to
another endpoint (a local emulator, a VPC endpoint).

--registry HOST[:PORT] pushes to that registry instead (a plain registry such as the CNCF
distribution server): no AWS call, no login.

Exit codes: 0 pushed; 1 a failure, explained in one line on stderr; 2 bad arguments.
"""

import argparse
import base64
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import boto3
import botocore.exceptions
import docker
import requests
from botocore.config import Config

# ECR's rules for repository names, and Docker's for tags.
REPOSITORY_RE = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
BOTO_CONFIG = Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard"})
CREDENTIALS_HELP = (
    "no AWS credentials found: use --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, run `aws configure` or `aws sso login`, or run on a machine with an "
    "instance role"
)


class PushError(Exception):
    """A failure the user can act on: main() prints its message as one line and exits 1."""


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


def one_line(text: object, limit: int = 400) -> str:
    """The first line of a message, shortened: error output stays one line."""
    lines = str(text).strip().splitlines()
    first = lines[0].strip() if lines else type(text).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."


def split_reference(image: str) -> tuple[str, str | None]:
    """``registry:5000/team/name:tag`` -> (``name``, ``tag``); no tag (or a digest) -> None."""
    name, tag = image.split("@", 1)[0], None
    colon, slash = name.rfind(":"), name.rfind("/")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name.rsplit("/", 1)[-1], tag


def image_uri(
    registry: str, repository: str, tag: str | None = None, digest: str | None = None
) -> str:
    """``registry/repository:tag``, or ``registry/repository@sha256:...`` given a digest."""
    if digest:
        return f"{registry}/{repository}@{digest}"
    return f"{registry}/{repository}:{tag or 'latest'}"


# --- AWS -------------------------------------------------------------------------------------


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def aws_error(what: str, exc: Exception) -> PushError:
    """One line for a failed AWS call: which call, and the error code (or what went wrong)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        message = one_line(exc.response.get("Error", {}).get("Message") or "no message")
        return PushError(f"{what} failed: {error_code(exc)}: {message}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return PushError(CREDENTIALS_HELP)
    return PushError(f"{what} failed: {type(exc).__name__}: {one_line(exc)}")


def aws_call(what: str, call: Callable[..., Any], **kwargs: Any) -> Any:
    """``call(**kwargs)``, with botocore's errors turned into one line naming the call."""
    try:
        return call(**kwargs)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise aws_error(what, exc) from exc


def make_session(profile: str | None, region: str | None) -> boto3.Session:
    try:
        return boto3.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise PushError(f"{one_line(exc)} (profiles live in ~/.aws/config)") from exc


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


def check_credentials(session: boto3.Session) -> None:
    try:
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise PushError(f"AWS credentials could not be loaded: {one_line(exc)}") from exc
    if credentials is None:
        raise PushError(CREDENTIALS_HELP)


def ensure_repository(ecr_client: Any, name: str) -> tuple[dict[str, Any], bool]:
    """The ECR repository ``name``, created with scan on push if missing: (repository, created).
    Idempotent; errors are PushErrors naming the call."""
    describe = "ECR DescribeRepositories"
    try:
        found = ecr_client.describe_repositories(repositoryNames=[name])
        return found["repositories"][0], False
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "RepositoryNotFoundException":
            raise aws_error(describe, exc) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise aws_error(describe, exc) from exc
    try:
        created = ecr_client.create_repository(
            repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
        )
        return created["repository"], True
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "RepositoryAlreadyExistsException":
            raise aws_error("ECR CreateRepository", exc) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise aws_error("ECR CreateRepository", exc) from exc
    # Created by someone else between the two calls.
    found = aws_call(describe, ecr_client.describe_repositories, repositoryNames=[name])
    return found["repositories"][0], False


def ecr_target(
    session: boto3.Session,
    repository: str,
    endpoint_url: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Target:
    """Check region and credentials, make sure the repository exists, fetch a login token."""
    region = check_region(session)
    check_credentials(session)
    sts = session.client("sts", endpoint_url=endpoint_url, config=BOTO_CONFIG)
    ecr = session.client("ecr", endpoint_url=endpoint_url, config=BOTO_CONFIG)
    account = aws_call("STS GetCallerIdentity", sts.get_caller_identity)["Account"]
    _, created = ensure_repository(ecr, repository)
    log(f"{'Created' if created else 'Using'} ECR repository {repository} ({account}, {region})")
    token = aws_call("ECR GetAuthorizationToken", ecr.get_authorization_token)
    try:
        data = token["authorizationData"][0]
        username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
        registry = data["proxyEndpoint"].removeprefix("https://").rstrip("/")
    except (KeyError, IndexError, ValueError) as exc:
        raise PushError(f"ECR GetAuthorizationToken returned an unusable token: {exc!r}") from exc
    return Target(registry, username, password, account, region)


# --- Docker ----------------------------------------------------------------------------------


def docker_client() -> docker.DockerClient:
    """A client for the local engine, checked with a ping."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise PushError(
            f"cannot reach the Docker engine (is it running? is DOCKER_HOST right?): "
            f"{one_line(exc)}"
        ) from exc
    return client


def find_image(client: docker.DockerClient, image: str) -> Any:
    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise PushError(f"image {image} not found locally (`docker images` lists them)") from exc
    except docker.errors.APIError as exc:
        raise PushError(f"cannot look up image {image}: {one_line(exc.explanation)}") from exc


def login(client: docker.DockerClient, target: Target) -> None:
    if target.auth is None:
        return
    try:
        client.login(
            username=target.username,
            password=target.password,
            registry=target.registry,
            reauth=True,
        )
    except docker.errors.APIError as exc:
        raise PushError(
            f"docker login to {target.registry} failed: {one_line(exc.explanation)}"
        ) from exc


class Progress:
    """Shows a push stream: one line per layer status change, or one live line per layer on a
    terminal (rewritten in place, like the docker CLI)."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.status: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self.lines: list[str] = []  # on a terminal: the key of each line shown, top to bottom

    def _text(self, event: Mapping[str, Any]) -> str:
        layer, status = event.get("id"), event.get("status", "")
        text = f"{layer}: {status}" if layer else status
        if self.tty and event.get("progress"):
            text += f" {event['progress']}"
        elif layer and status == "Pushed" and layer in self.sizes:
            text += f" ({self.sizes[layer] / 1e6:.1f} MB)"
        return text

    def _show(self, key: str, text: str) -> None:
        if not self.tty:
            print(text, file=self.out, flush=True)
            return
        width = max(shutil.get_terminal_size().columns - 1, 20)
        text = text[:width]
        if key in self.lines:
            up = len(self.lines) - self.lines.index(key)
            self.out.write(f"\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")
        else:
            self.lines.append(key)
            self.out.write(f"{text}\n")
        self.out.flush()

    def update(self, event: Mapping[str, Any]) -> None:
        status = event.get("status")
        if not status:
            return
        layer = event.get("id")
        total = (event.get("progressDetail") or {}).get("total")
        if layer and total:
            self.sizes[layer] = total
        if not layer:
            self._show(f"message-{len(self.lines)}-{status}", self._text(event))
        elif self.status.get(layer) != status or (self.tty and event.get("progress")):
            self.status[layer] = status
            self._show(layer, self._text(event))


def push_image(
    client: docker.DockerClient,
    image: str,
    registry: str,
    repository: str,
    tag: str,
    auth: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> str:
    """Tag ``image`` as registry/repository:tag and push it, showing progress; returns the
    manifest digest. A tag this call added is removed again if the push fails."""
    target = f"{registry}/{repository}"
    found = find_image(client, image)
    added = f"{target}:{tag}" not in found.tags
    try:
        found.tag(target, tag=tag)
    except docker.errors.APIError as exc:
        message = one_line(exc.explanation)
        raise PushError(f"cannot tag {image} as {target}:{tag}: {message}") from exc
    try:
        return stream_push(client, target, tag, auth, sys.stdout if out is None else out)
    except PushError:
        if added:
            try:
                client.images.remove(f"{target}:{tag}", noprune=True)
            except docker.errors.APIError:
                pass  # the push error is the one to report
        raise


def stream_push(
    client: docker.DockerClient,
    target: str,
    tag: str,
    auth: Mapping[str, str] | None,
    out: TextIO,
) -> str:
    """Push target:tag, show the engine's progress stream, return the digest it reports."""
    progress = Progress(out)
    digest = None
    try:
        stream: Iterable[dict[str, Any]] = client.api.push(
            target, tag=tag, stream=True, decode=True, auth_config=dict(auth) if auth else None
        )
        for event in stream:
            if event.get("error") or event.get("errorDetail"):
                detail = event.get("errorDetail") or {}
                raise PushError(f"push failed: {one_line(detail.get('message') or event['error'])}")
            aux = event.get("aux") or {}
            if DIGEST_RE.fullmatch(str(aux.get("Digest", ""))):
                digest = aux["Digest"]
            elif found := DIGEST_RE.search(str(event.get("status", ""))):
                digest = digest or found.group(0)
            progress.update(event)
    except docker.errors.APIError as exc:
        raise PushError(f"push failed: {one_line(exc.explanation or exc)}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise PushError(f"push failed: {one_line(exc)}") from exc
    if digest is None:
        raise PushError(f"push of {target}:{tag} ended without a digest")
    return digest


# --- Command line ----------------------------------------------------------------------------


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
    parser.add_argument("--endpoint-url", help="send the ECR and STS calls to this endpoint")
    parser.add_argument(
        "--registry", metavar="HOST[:PORT]", help="push to this registry instead of ECR (no AWS)"
    )
    args = parser.parse_args(argv)
    name, image_tag = split_reference(args.image)
    if args.repository is None and args.image.startswith("sha256:"):
        parser.error("IMAGE is an image ID: give --repository (and --tag)")
    args.repository = args.repository or name
    args.tag = args.tag or image_tag or "latest"
    shortest = 1 if args.registry else 2  # ECR wants 2 characters or more
    if not (shortest <= len(args.repository) <= 256 and REPOSITORY_RE.fullmatch(args.repository)):
        parser.error(
            f"invalid repository name {args.repository!r}: lower-case letters, digits, and . _ - / "
            "between them"
        )
    if not TAG_RE.fullmatch(args.tag):
        parser.error(f"invalid tag {args.tag!r}: letters, digits, _ . - (up to 128)")
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

    def log(message: str) -> None:
        print(message, flush=True)

    try:
        session = None
        if args.registry is None:
            # Everything that can be checked without a network call first.
            session = make_session(args.profile, args.region)
            check_region(session)
            check_credentials(session)
        client = docker_client()
        find_image(client, args.image)
        if session is None:
            target = Target(args.registry)
        else:
            target = ecr_target(session, args.repository, args.endpoint_url, log=log)
            login(client, target)
        destination = image_uri(target.registry, args.repository, args.tag)
        log(f"Pushing {args.image} as {destination}")
        digest = push_image(
            client, args.image, target.registry, args.repository, args.tag, target.auth
        )
    except PushError as exc:
        print(f"push.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("push.py: interrupted", file=sys.stderr)
        return 130
    log(f"Pushed digest: {digest}")
    log(f"Image URI by digest: {image_uri(target.registry, args.repository, digest=digest)}")
    log(f"Image URI for CreateModel: {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
