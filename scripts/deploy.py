"""Deploy an image and a model to a SageMaker endpoint (create or update it), or delete it.

    python scripts/deploy.py --image URI --model build/model.tar.gz --role ROLE_ARN \\
        --instance-type ml.g5.xlarge [--instance-count 2] [--name digits]
    python scripts/deploy.py --image URI --model s3://bucket/model.tar.gz --role ROLE_ARN \\
        --serverless-memory 4096 [--serverless-concurrency 5]
    python scripts/deploy.py ... --autoscale-max 4 --target-invocations 200
    python scripts/deploy.py --delete --name digits

URI is the ECR image URI `make push` printed. --model is a model.tar.gz, uploaded to S3 (to
--bucket, default SageMaker's default bucket sagemaker-<region>-<account>, created if missing),
or an s3:// URI used as it is. --role is the SageMaker execution role's ARN.

The script makes a model and an endpoint config named <name>-<UTC time> (so that every deploy
makes new ones), tagged sagemaker-torch-serving:endpoint=<name>, and creates the endpoint <name>,
or, when it exists (and this script made it), updates it in place to the new config. It waits
for the endpoint, printing each status change with the time elapsed, registers target-tracking
autoscaling on invocations per instance when asked to, and invokes the endpoint once. When a
new endpoint fails (SageMaker's FailureReason is the error line), what this run made is deleted
again (--keep-on-failure keeps it, to look at); what cannot be deleted is named. A wait that
runs out, or Ctrl-C, leaves the endpoint to go on and says so. A failed update leaves the
endpoint on its previous config and deletes the new model and config. The previous configs and
models stay (to go back to one); --delete deletes the endpoint, every config and model this
script made for it, the model archives it uploaded, and its autoscaling; run twice, the second
does nothing.

Every argument is checked before the first call to AWS. boto3 finds the credentials and the
region the usual way (--profile, AWS_PROFILE, AWS_REGION, the config files, an instance role;
--region overrides); AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_SAGEMAKER, _S3, ...) sends the calls
elsewhere, as boto3 does for every client.

Exit codes: 0 deployed (or deleted); 1 a failure, explained in one line on stderr; 2 bad
arguments, in one line.
"""

from __future__ import annotations

import argparse
import difflib
import gzip
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import botocore.exceptions
import botocore.session
from _common import Failure, OneLineParser, aws_call, aws_session, fail, one_line
from botocore.config import Config

from sagemaker_torch_serving.settings import Env, Settings, SettingsError

PROG = "deploy.py"
BOTO_CONFIG = Config(connect_timeout=10, read_timeout=70, retries={"mode": "standard"})
TAG_KEY = "sagemaker-torch-serving:endpoint"  # on what deploy made: the endpoint's name
UPLOAD_TAG_KEY = "sagemaker-torch-serving:uploaded"  # on a model: the archive deploy uploaded
UPLOAD_PREFIX = "sagemaker-torch-serving"  # S3 keys: <prefix>/<name>/<stamp>/model.tar.gz
VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_NAME = 63 - len("-20250101-120000-000")  # what the model and config names leave for it
IN_PROGRESS = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
FAILED = {"Failed", "UpdateRollbackFailed", "OutOfService"}
# The image needs NVIDIA driver 535+ (CUDA 13.0 through forward compatibility, see README's
# "Drivers on SageMaker"): these families run driver 470 unless the endpoint config names an
# AMI, and this one (driver 550) is documented for them.
GPU_AMI = "al2-ami-sagemaker-inference-gpu-3-1"
GPU_AMI_FAMILIES = {"g4dn", "g5", "g6", "g6e", "p4d", "p4de", "p5"}
# GPUs older than compute capability 7.5, which CUDA 13 (this image's torch) does not support.
UNSUPPORTED_GPU_FAMILIES = {"p2": "K80 (Kepler)", "p3": "V100 (Volta)", "p3dn": "V100 (Volta)"}
# Environment variables the image sets itself, or SageMaker does: not for --env.
NOT_FOR_ENDPOINTS = {
    Env.HOST: "the image sets it to 0.0.0.0, where SageMaker's health check reaches it",
    Env.BIND_TO_PORT: "SageMaker sets it (the image accepts bind-to-port)",
    Env.RUN_DIR: "internal to the server",
    Env.BACKEND_HANDOVER: "internal to the server",
}
CONTENT_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/jsonlines",
    ".csv": "text/csv",
    ".npy": "application/x-npy",
    ".npz": "application/x-npz",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}
DEFAULT_BODY = b"[[0.0]]"  # any answer of the container proves the endpoint answers
MAX_PAYLOAD = {"real-time": 6 * 1024 * 1024, "serverless": 4 * 1024 * 1024}

_ECR_IMAGE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<repository>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_ROLE = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[a-zA-Z_0-9+=,.@\-/]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_URI = re.compile(r"s3://(?P<bucket>[^/]+)/(?P<key>.+)")
_ENV_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def instance_types() -> list[str]:
    """The instance types SageMaker endpoints take, from botocore's SageMaker model (no I/O)."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("ProductionVariantInstanceType").enum)


def ami_versions() -> list[str]:
    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("ProductionVariantInferenceAmiVersion").enum)


def instance_family(instance_type: str) -> str:
    return instance_type.split(".")[1]


def stamp(now: datetime | None = None) -> str:
    """UTC time to the millisecond, the suffix of the model's and the config's names."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"


def made_name(name: str) -> re.Pattern[str]:
    """What the names deploy gives models and configs of the endpoint ``name`` look like."""
    return re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}-\d{{3}}")


def known_variables() -> dict[str, str]:
    """Every SAGEMAKER_* and SERVING_* variable the runtime reads, from settings.Env."""
    names = (value for key, value in vars(Env).items() if not key.startswith("_"))
    return {
        name: name
        for name in names
        if isinstance(name, str) and name.startswith(("SAGEMAKER_", "SERVING_"))
    }


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    """--env KEY=VALUE pairs, checked: names as SageMaker takes them, ours by settings.Env (a
    SAGEMAKER_* or SERVING_* name the runtime does not read is a typo), and values as the
    runtime would read them at start (Settings.from_env). ValueError says what is wrong."""
    env: dict[str, str] = {}
    known = known_variables()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.fullmatch(key):
            raise ValueError(f"--env takes NAME=VALUE, got {pair!r}")
        if key in env:
            raise ValueError(f"--env {key} is given twice")
        if len(key) > 1024 or len(value) > 1024:
            raise ValueError(f"--env {key}: SageMaker takes names and values of 1,024 characters")
        if key in NOT_FOR_ENDPOINTS:
            raise ValueError(f"--env {key}: not for an endpoint ({NOT_FOR_ENDPOINTS[key]})")
        if key.startswith(("SAGEMAKER_", "SERVING_")) and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(
                f"--env {key}: not a variable this image reads (sagemaker_torch_serving/"
                f"settings.py lists them){hint}"
            )
        env[key] = value
    if len(env) > 100:
        raise ValueError("--env: SageMaker takes at most 100 variables")
    try:
        Settings.from_env(env)
    except SettingsError as exc:
        raise ValueError(f"--env {exc}") from exc
    return env


def check_image(uri: str) -> re.Match[str]:
    found = _ECR_IMAGE.fullmatch(uri)
    if not found:
        raise ValueError(
            f"--image {uri!r} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/"
            "<repository>:<tag>, the one `make push` prints)"
        )
    return found


def check_instance_type(value: str) -> str:
    known = instance_types()
    if value not in known:
        close = difflib.get_close_matches(value, known, n=3, cutoff=0.8)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"--instance-type {value!r}: not a SageMaker endpoint instance type{hint}")
    if instance_family(value) in UNSUPPORTED_GPU_FAMILIES:
        gpu = UNSUPPORTED_GPU_FAMILIES[instance_family(value)]
        raise ValueError(
            f"--instance-type {value}: its GPU, {gpu}, is older than compute capability 7.5, "
            "which the image's CUDA 13 needs (ml.g4dn, ml.g5, ml.g6 and newer work)"
        )
    return value


def check_model(value: str) -> str:
    """An s3:// URI (its form), or a local model.tar.gz (exists, is a file, is gzip)."""
    if value.startswith("s3://"):
        found = _S3_URI.fullmatch(value)
        if not found or not _BUCKET.fullmatch(found["bucket"]):
            raise ValueError(f"--model {value!r}: not an S3 URI (s3://bucket/key)")
        return value
    path = Path(value)
    if not path.exists():
        raise ValueError(f"--model {value}: no such file (make package writes build/model.tar.gz)")
    if path.is_dir():
        raise ValueError(
            f"--model {value} is a directory: package it first (scripts/package_model.py, or "
            "make package for the example)"
        )
    with path.open("rb") as archive:
        if archive.read(2) != b"\x1f\x8b":
            raise ValueError(f"--model {value}: not a model.tar.gz (not gzip)")
    try:
        with gzip.open(path) as archive:
            archive.read(1)
    except (OSError, EOFError) as exc:
        raise ValueError(f"--model {value}: not a readable gzip file ({exc})") from exc
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(
        prog=PROG,
        description="Deploy an image and a model.tar.gz to a SageMaker endpoint, or --delete it.",
    )
    parser.add_argument("--name", default="sagemaker-torch-serving", help="the endpoint's name")
    parser.add_argument("--image", metavar="URI", help="ECR image URI (what make push printed)")
    parser.add_argument("--model", help="model.tar.gz (uploaded to S3), or an s3:// URI")
    parser.add_argument("--role", metavar="ARN", help="SageMaker execution role ARN")
    parser.add_argument("--bucket", help="S3 bucket for the upload (default: SageMaker's)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the container (repeatable)",
    )
    real_time = parser.add_argument_group("real-time endpoints")
    real_time.add_argument("--instance-type", help="e.g. ml.g5.xlarge, ml.c7i.xlarge")
    real_time.add_argument("--instance-count", type=int, metavar="N", help="instances (default 1)")
    real_time.add_argument(
        "--inference-ami-version",
        choices=[*ami_versions(), "none"],
        metavar="VERSION",
        help=f"the host's AMI: one of {', '.join(ami_versions())}, or none (SageMaker's "
        f"default); default for the GPU families {', '.join(sorted(GPU_AMI_FAMILIES))}: "
        f"{GPU_AMI}, whose driver runs the image",
    )
    real_time.add_argument(
        "--autoscale-min", type=int, metavar="N", help="autoscaling: fewest instances (1)"
    )
    real_time.add_argument(
        "--autoscale-max",
        type=int,
        metavar="N",
        help="autoscaling: most instances (turns autoscaling on)",
    )
    real_time.add_argument(
        "--target-invocations",
        type=float,
        metavar="N",
        help="autoscaling: invocations per instance per minute to keep to",
    )
    real_time.add_argument(
        "--scale-in-cooldown", type=int, default=300, metavar="SECONDS", help="(300)"
    )
    real_time.add_argument(
        "--scale-out-cooldown", type=int, default=60, metavar="SECONDS", help="(60)"
    )
    serverless = parser.add_argument_group("serverless endpoints")
    serverless.add_argument(
        "--serverless-memory",
        type=int,
        metavar="MB",
        help=f"one of {', '.join(map(str, SERVERLESS_MEMORY_MB))}",
    )
    serverless.add_argument(
        "--serverless-concurrency",
        type=int,
        metavar="N",
        help="most concurrent invocations, 1-200 (default 5)",
    )
    checks = parser.add_argument_group("waiting and the test invocation")
    checks.add_argument(
        "--wait",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="how long to wait for the endpoint (3600)",
    )
    checks.add_argument(
        "--poll",
        type=float,
        default=15,
        metavar="SECONDS",
        help="how often to ask for its status (15)",
    )
    checks.add_argument("--invoke-file", type=Path, help="body of the test invocation")
    checks.add_argument("--content-type", help="its Content-Type (default: from the extension)")
    checks.add_argument("--no-invoke", action="store_true", help="skip the test invocation")
    checks.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="keep a new endpoint that failed after it was created",
    )
    parser.add_argument("--region", help="AWS region (default: from the profile/environment)")
    parser.add_argument("--profile", help="AWS profile (default: AWS_PROFILE, or default)")
    parser.add_argument(
        "--delete",
        action="store_true",
        help="delete the endpoint --name and everything deploy made for it",
    )
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


DEPLOY_ONLY = ("image", "model", "role", "bucket", "invoke_file", "content_type", "no_invoke")
REAL_TIME_ONLY = (
    "instance_type",
    "instance_count",
    "inference_ami_version",
    "autoscale_min",
    "autoscale_max",
    "target_invocations",
)
SERVERLESS_ONLY = ("serverless_memory", "serverless_concurrency")


def flags(args: argparse.Namespace, keys: Iterable[str]) -> list[str]:
    """The options among ``keys`` that were given, as --flags."""
    return [f"--{key.replace('_', '-')}" for key in keys if getattr(args, key) not in (None, False)]


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked without AWS; ValueError says what is wrong."""
    if not _NAME.fullmatch(args.name) or len(args.name) > MAX_NAME:
        raise ValueError(
            f"--name {args.name!r}: letters, digits and hyphens, at most {MAX_NAME} characters "
            "(the model's and config's names add the time to it)"
        )
    if not args.wait > 0 or not args.poll > 0:
        raise ValueError("--wait and --poll take a number of seconds above 0")
    if args.delete:
        given = flags(args, (*DEPLOY_ONLY, *REAL_TIME_ONLY, *SERVERLESS_ONLY))
        given += ["--env"] if args.env else []
        if given:
            raise ValueError(f"{', '.join(given)}: for a deploy, not with --delete")
        return
    missing = [f"--{key}" for key in ("image", "model", "role") if not getattr(args, key)]
    if missing:
        raise ValueError(f"the following arguments are required: {', '.join(missing)}")
    check_image(args.image)
    if not _ROLE.fullmatch(args.role):
        raise ValueError(
            f"--role {args.role!r}: not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
        )
    args.model = check_model(args.model)
    if args.bucket is not None:
        if args.model.startswith("s3://"):
            raise ValueError("--bucket: for uploading a local model, not with an s3:// --model")
        if not _BUCKET.fullmatch(args.bucket):
            raise ValueError(f"--bucket {args.bucket!r}: not an S3 bucket name")
    args.env = parse_env(args.env)
    check_capacity(args)
    check_invocation(args)


def check_capacity(args: argparse.Namespace) -> None:
    if flags(args, SERVERLESS_ONLY):
        real_time = flags(args, REAL_TIME_ONLY)
        if real_time:
            raise ValueError(f"{', '.join(real_time)}: for real-time endpoints, not serverless")
        sizes = ", ".join(map(str, SERVERLESS_MEMORY_MB))
        if args.serverless_memory is None:
            raise ValueError(f"a serverless endpoint takes --serverless-memory ({sizes} MB)")
        if args.serverless_memory not in SERVERLESS_MEMORY_MB:
            raise ValueError(
                f"--serverless-memory {args.serverless_memory}: SageMaker's sizes are {sizes} (MB)"
            )
        if args.serverless_concurrency is None:
            args.serverless_concurrency = 5
        if not 1 <= args.serverless_concurrency <= 200:
            raise ValueError("--serverless-concurrency: 1 to 200")
        args.kind = "serverless"
        return
    args.kind = "real-time"
    if args.instance_type is None:
        raise ValueError(
            "give --instance-type (a real-time endpoint, e.g. ml.g5.xlarge) or "
            "--serverless-memory (a serverless one)"
        )
    check_instance_type(args.instance_type)
    if args.instance_count is None:  # autoscaling starts from its minimum
        args.instance_count = args.autoscale_min or 1
    if args.instance_count < 1:
        raise ValueError("--instance-count: 1 or more")
    if args.inference_ami_version is None and instance_family(args.instance_type) in (
        GPU_AMI_FAMILIES
    ):
        args.inference_ami_version = GPU_AMI
    if args.inference_ami_version == "none":
        args.inference_ami_version = None
    autoscale = (args.autoscale_min, args.autoscale_max, args.target_invocations)
    if any(value is not None for value in autoscale):
        if args.autoscale_max is None or args.target_invocations is None:
            raise ValueError(
                "autoscaling takes --autoscale-max and --target-invocations (the invocations "
                "per minute one instance should take), --autoscale-min optionally"
            )
        args.autoscale_min = 1 if args.autoscale_min is None else args.autoscale_min
        if not 1 <= args.autoscale_min <= args.autoscale_max:
            raise ValueError("autoscaling needs 1 <= --autoscale-min <= --autoscale-max")
        if not args.autoscale_min <= args.instance_count <= args.autoscale_max:
            raise ValueError(
                f"--instance-count {args.instance_count} is outside --autoscale-min "
                f"{args.autoscale_min} to --autoscale-max {args.autoscale_max}"
            )
        if not args.target_invocations > 0:
            raise ValueError("--target-invocations: a number above 0")
        if args.scale_in_cooldown < 0 or args.scale_out_cooldown < 0:
            raise ValueError("--scale-in-cooldown and --scale-out-cooldown: 0 seconds or more")


def check_invocation(args: argparse.Namespace) -> None:
    if args.no_invoke:
        if args.invoke_file or args.content_type:
            raise ValueError("--invoke-file, --content-type: not with --no-invoke")
        return
    if args.invoke_file is None:
        if args.content_type:
            raise ValueError("--content-type: goes with --invoke-file")
        args.content_type = "application/json"
        return
    path: Path = args.invoke_file
    if not path.is_file():
        raise ValueError(f"--invoke-file {path}: no such file")
    size, limit = path.stat().st_size, MAX_PAYLOAD[args.kind]
    if size > limit:
        raise ValueError(
            f"--invoke-file {path}: {size} bytes, over the {args.kind} limit of {limit} bytes"
        )
    args.content_type = args.content_type or CONTENT_TYPES.get(path.suffix.lower())
    if args.content_type is None:
        raise ValueError(f"--invoke-file {path}: give --content-type (unknown extension)")


# --- AWS ---------------------------------------------------------------------------------------


def undeploy_command(args: argparse.Namespace) -> str:
    """The command that deletes this endpoint and what deploy made for it."""
    region = f" REGION={args.region}" if args.region else ""
    return f"make undeploy ENDPOINT={args.name}{region}"


def log(text: str) -> None:
    print(text, flush=True)


def client_error_code(exc: BaseException) -> str | None:
    cause = exc.__cause__
    if isinstance(cause, botocore.exceptions.ClientError):
        return str(cause.response.get("Error", {}).get("Code"))
    return None


def not_found(exc: Failure) -> bool:
    """Whether SageMaker said "Could not find ..." (it answers a missing resource with a
    ValidationException)."""
    return client_error_code(exc) == "ValidationException" and "Could not find" in str(exc)


@dataclass
class Clients:
    sagemaker: Any
    runtime: Any
    s3: Any
    sts: Any
    autoscaling: Any
    region: str

    @classmethod
    def from_session(cls, session: boto3.Session) -> Clients:
        def client(name: str) -> Any:
            return session.client(name, config=BOTO_CONFIG)

        return cls(
            sagemaker=client("sagemaker"),
            runtime=client("sagemaker-runtime"),
            s3=client("s3"),
            sts=client("sts"),
            autoscaling=client("application-autoscaling"),
            region=str(session.region_name),
        )


def describe_endpoint(sagemaker: Any, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = aws_call(
            "SageMaker DescribeEndpoint", sagemaker.describe_endpoint, EndpointName=name
        )
    except Failure as exc:
        if not_found(exc):
            return None
        raise
    return found


def tags_of(sagemaker: Any, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    token: str | None = None
    while True:
        page = aws_call(
            "SageMaker ListTags",
            sagemaker.list_tags,
            ResourceArn=arn,
            **({"NextToken": token} if token else {}),
        )
        tags.update({tag["Key"]: tag["Value"] for tag in page.get("Tags", [])})
        token = page.get("NextToken")
        if not token:
            return tags


def ours(sagemaker: Any, arn: str, name: str) -> bool:
    return tags_of(sagemaker, arn).get(TAG_KEY) == name


def resource_id(name: str) -> str:
    return f"endpoint/{name}/variant/{VARIANT}"


class EndpointFailed(Failure):
    """The endpoint ended Failed (or an update rolled back): SageMaker's reason is the message."""


class StillWaiting(Failure):
    """The wait ran out with the endpoint still changing (which goes on)."""


def wait_for_endpoint(
    describe: Callable[[], dict[str, Any] | None],
    name: str,
    config: str,
    timeout: float,
    poll: float,
    previous_reason: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    out: Callable[[str], None] = log,
) -> dict[str, Any]:
    """Poll until the endpoint is InService on ``config``: one line per status change, with
    the seconds elapsed, and one every 5 minutes without a change. An endpoint that ends Failed,
    or an update that SageMaker rolls back (InService again on another config, with a new
    FailureReason), raises EndpointFailed; running past ``timeout``, StillWaiting."""
    start = clock()
    status = None
    changed = False
    note = 300.0
    while True:
        found = describe()
        elapsed = clock() - start
        if found is None:
            raise EndpointFailed(f"endpoint {name} is gone (deleted by someone else?)")
        now = found["EndpointStatus"]
        reason = found.get("FailureReason") or None
        if now != status:
            out(f"Endpoint {name}: {now} ({elapsed:.0f} s)")
            status, note = now, elapsed + 300
        elif elapsed >= note:
            out(f"Endpoint {name}: still {now} ({elapsed:.0f} s)")
            note += 300
        if now == "InService":
            if found.get("EndpointConfigName") == config:
                return found
            if changed or (reason and reason != previous_reason):
                raise EndpointFailed(
                    f"endpoint {name}: the update failed and SageMaker rolled it back after "
                    f"{elapsed:.0f} s (it serves {found.get('EndpointConfigName')} still): "
                    f"{reason or 'no reason given'}"
                )
        elif now in FAILED:
            raise EndpointFailed(
                f"endpoint {name} is {now} after {elapsed:.0f} s: {reason or 'no reason given'}"
            )
        else:
            changed = True
        if elapsed >= timeout:
            raise StillWaiting(f"endpoint {name} is still {now} after {elapsed:.0f} s")
        sleep(min(poll, max(timeout - elapsed, 0.01)))


@dataclass
class Made:
    """What this run created, to take back when it fails."""

    endpoint: str | None = None
    config: str | None = None
    model: str | None = None
    upload: tuple[str, str] | None = None  # (bucket, key)
    bucket: str | None = None  # created by this run

    def names(self) -> list[str]:
        names = [
            f"endpoint {self.endpoint}" if self.endpoint else "",
            f"endpoint config {self.config}" if self.config else "",
            f"model {self.model}" if self.model else "",
            f"s3://{self.upload[0]}/{self.upload[1]}" if self.upload else "",
        ]
        return [name for name in names if name]


@dataclass
class Deployment:
    args: argparse.Namespace
    clients: Clients
    made: Made = field(default_factory=Made)
    previous_type: str | None = None  # the instance type of the endpoint being updated

    @property
    def name(self) -> str:
        return str(self.args.name)

    def run(self) -> None:
        sagemaker = self.clients.sagemaker
        existing = describe_endpoint(sagemaker, self.name)
        if existing is not None:
            self.check_updatable(existing)
        suffix = stamp()
        resources = f"{self.name}-{suffix}"
        data_url = self.model_data(suffix)
        self.create_model(resources, data_url)
        self.create_config(resources)
        if existing is None:
            self.create_endpoint(resources)
            self.after_create(resources)
        else:
            self.update_endpoint(existing, resources)

    def check_updatable(self, existing: dict[str, Any]) -> None:
        if not ours(self.clients.sagemaker, existing["EndpointArn"], self.name):
            raise Failure(
                f"endpoint {self.name} exists and was not made by deploy.py (no {TAG_KEY} tag): "
                "give another --name"
            )
        status = existing["EndpointStatus"]
        if status in FAILED:
            raise Failure(
                f"endpoint {self.name} is {status} ({existing.get('FailureReason')}); SageMaker "
                f"cannot update it: {undeploy_command(self.args)}, then deploy again"
            )
        if status != "InService":
            raise Failure(f"endpoint {self.name} is {status}: deploy again once it is InService")
        self.previous_type = self.instance_type_of(existing["EndpointConfigName"])
        if self.previous_type and self.args.kind == "serverless":
            raise Failure(
                f"endpoint {self.name} is a real-time endpoint ({self.previous_type}), which "
                "SageMaker cannot turn into a serverless one: give another --name, or make "
                f"undeploy ENDPOINT={self.name} first"
            )
        log(f"Endpoint {self.name} exists ({existing['EndpointConfigName']}): updating it")

    def model_data(self, suffix: str) -> str:
        s3 = self.clients.s3
        model: str = self.args.model
        if model.startswith("s3://"):
            found = _S3_URI.fullmatch(model)
            assert found is not None
            try:
                aws_call("S3 HeadObject", s3.head_object, Bucket=found["bucket"], Key=found["key"])
            except Failure as exc:
                if client_error_code(exc) in ("404", "NoSuchKey", "NoSuchBucket"):
                    raise Failure(f"--model {model}: no such object") from exc
                raise
            return model
        bucket = self.args.bucket or self.default_bucket()
        key = f"{UPLOAD_PREFIX}/{self.name}/{suffix}/model.tar.gz"
        path = Path(model)
        size = path.stat().st_size
        log(f"Uploading {model} ({size / 1e6:.1f} MB) to s3://{bucket}/{key}")
        started = time.monotonic()
        try:
            s3.upload_file(str(path), bucket, key)
        except (
            boto3.exceptions.S3UploadFailedError,
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        ) as exc:
            raise Failure(f"S3 upload to s3://{bucket}/{key} failed: {one_line(exc)}") from exc
        self.made.upload = (bucket, key)
        log(f"Uploaded in {time.monotonic() - started:.1f} s")
        return f"s3://{bucket}/{key}"

    def default_bucket(self) -> str:
        """SageMaker's default bucket, sagemaker-<region>-<account>, created if missing."""
        s3, region = self.clients.s3, self.clients.region
        identity = aws_call("STS GetCallerIdentity", self.clients.sts.get_caller_identity)
        bucket = f"sagemaker-{region}-{identity['Account']}"
        try:
            aws_call("S3 HeadBucket", s3.head_bucket, Bucket=bucket)
            return bucket
        except Failure as exc:
            code = client_error_code(exc)
            if code == "403":
                raise Failure(
                    f"S3 bucket {bucket} exists but is not yours to write: give --bucket"
                ) from exc
            if code not in ("404", "NoSuchBucket"):
                raise
        location = {} if region == "us-east-1" else {"LocationConstraint": region}
        aws_call(
            "S3 CreateBucket",
            s3.create_bucket,
            Bucket=bucket,
            **({"CreateBucketConfiguration": location} if location else {}),
        )
        self.made.bucket = bucket
        log(f"Created S3 bucket {bucket}")
        return bucket

    def tags(self) -> list[dict[str, str]]:
        return [{"Key": TAG_KEY, "Value": self.name}]

    def create_model(self, name: str, data_url: str) -> None:
        container: dict[str, Any] = {"Image": self.args.image, "ModelDataUrl": data_url}
        if self.args.env:
            container["Environment"] = self.args.env
        tags = self.tags()
        if self.made.upload:
            tags.append({"Key": UPLOAD_TAG_KEY, "Value": data_url})
        aws_call(
            "SageMaker CreateModel",
            self.clients.sagemaker.create_model,
            ModelName=name,
            PrimaryContainer=container,
            ExecutionRoleArn=self.args.role,
            Tags=tags,
        )
        self.made.model = name
        log(f"Created model {name}")

    def variant(self, model: str) -> dict[str, Any]:
        variant: dict[str, Any] = {"VariantName": VARIANT, "ModelName": model}
        if self.args.kind == "serverless":
            variant["ServerlessConfig"] = {
                "MemorySizeInMB": self.args.serverless_memory,
                "MaxConcurrency": self.args.serverless_concurrency,
            }
            return variant
        variant["InstanceType"] = self.args.instance_type
        variant["InitialInstanceCount"] = self.args.instance_count
        if self.args.inference_ami_version:
            variant["InferenceAmiVersion"] = self.args.inference_ami_version
        return variant

    def describe_capacity(self) -> str:
        if self.args.kind == "serverless":
            return (
                f"serverless, {self.args.serverless_memory} MB, at most "
                f"{self.args.serverless_concurrency} concurrent invocations"
            )
        ami = f", AMI {self.args.inference_ami_version}" if self.args.inference_ami_version else ""
        return f"real-time, {self.args.instance_count} x {self.args.instance_type}{ami}"

    def create_config(self, name: str) -> None:
        aws_call(
            "SageMaker CreateEndpointConfig",
            self.clients.sagemaker.create_endpoint_config,
            EndpointConfigName=name,
            ProductionVariants=[self.variant(name)],
            Tags=self.tags(),
        )
        self.made.config = name
        log(f"Created endpoint config {name} ({self.describe_capacity()})")

    def create_endpoint(self, config: str) -> None:
        aws_call(
            "SageMaker CreateEndpoint",
            self.clients.sagemaker.create_endpoint,
            EndpointName=self.name,
            EndpointConfigName=config,
            Tags=self.tags(),
        )
        self.made.endpoint = self.name
        log(f"Creating endpoint {self.name}")

    def wait(self, config: str, previous_reason: str | None = None) -> dict[str, Any]:
        sagemaker = self.clients.sagemaker
        return wait_for_endpoint(
            lambda: describe_endpoint(sagemaker, self.name),
            self.name,
            config,
            timeout=self.args.wait,
            poll=self.args.poll,
            previous_reason=previous_reason,
        )

    def after_create(self, config: str) -> None:
        self.wait(config)
        self.autoscale()
        self.invoke()
        self.done(config, None)

    def update_endpoint(self, existing: dict[str, Any], config: str) -> None:
        previous = existing["EndpointConfigName"]
        autoscaling = self.clients.autoscaling
        scaled = autoscaling_of(autoscaling, self.name)
        retain = False
        if scaled is not None:
            # Application Auto Scaling fails an update that changes a scaled variant's instance
            # type: then autoscaling goes off for the update (and back on after, if asked for).
            # Otherwise it stays, and the update keeps the instance count it has reached.
            if self.args.autoscale_max is None:
                remove_autoscaling(autoscaling, self.name)
                log(f"Autoscaling of {self.name}: off (this deploy has no --autoscale-max)")
            elif self.previous_type != self.args.instance_type:
                remove_autoscaling(autoscaling, self.name)
                log(f"Autoscaling of {self.name}: off for the update")
            else:
                retain = True
                log(f"Autoscaling of {self.name}: on; the update keeps the instance count")
        try:
            aws_call(
                "SageMaker UpdateEndpoint",
                self.clients.sagemaker.update_endpoint,
                EndpointName=self.name,
                EndpointConfigName=config,
                **({"RetainAllVariantProperties": True} if retain else {}),
            )
            log(f"Updating endpoint {self.name} to {config}")
            self.wait(config, previous_reason=existing.get("FailureReason"))
        except (StillWaiting, KeyboardInterrupt):
            log(
                f"The update goes on: endpoint {self.name} moves from {previous} to {config}; "
                f"{undeploy_command(self.args)} deletes all"
            )
            raise
        except Failure:
            if scaled is not None and not retain:
                try:
                    restore_autoscaling(autoscaling, scaled)
                    log(f"Autoscaling of {self.name}: on again, as before")
                except Failure as exc:
                    log(f"Autoscaling of {self.name}: could not turn it on again: {exc}")
            raise
        # From here the endpoint serves the new config: a failure below leaves it so.
        self.made = Made()
        self.autoscale()
        self.invoke()
        self.done(config, previous)

    def instance_type_of(self, config: str) -> str | None:
        try:
            found = aws_call(
                "SageMaker DescribeEndpointConfig",
                self.clients.sagemaker.describe_endpoint_config,
                EndpointConfigName=config,
            )
        except Failure as exc:
            if not_found(exc):
                return None
            raise
        variants = found.get("ProductionVariants") or [{}]
        instance_type = variants[0].get("InstanceType")
        return str(instance_type) if instance_type else None

    def autoscale(self) -> None:
        if self.args.kind != "real-time" or self.args.autoscale_max is None:
            return
        autoscaling, target = self.clients.autoscaling, scaling_target(self.name)
        aws_call(
            "Application Auto Scaling RegisterScalableTarget",
            autoscaling.register_scalable_target,
            MinCapacity=self.args.autoscale_min,
            MaxCapacity=self.args.autoscale_max,
            **target,
        )
        aws_call(
            "Application Auto Scaling PutScalingPolicy",
            autoscaling.put_scaling_policy,
            PolicyName=f"{self.name}-invocations",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": self.args.target_invocations,
                "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_METRIC},
                "ScaleInCooldown": self.args.scale_in_cooldown,
                "ScaleOutCooldown": self.args.scale_out_cooldown,
            },
            **target,
        )
        log(
            f"Autoscaling of {self.name}: {self.args.autoscale_min} to {self.args.autoscale_max} "
            f"instances, {self.args.target_invocations:g} invocations per instance per minute"
        )

    def invoke(self) -> None:
        if self.args.no_invoke:
            return
        own_body = self.args.invoke_file is not None
        body = self.args.invoke_file.read_bytes() if own_body else DEFAULT_BODY
        started = time.monotonic()
        try:
            answer = aws_call(
                "SageMaker Runtime InvokeEndpoint",
                self.clients.runtime.invoke_endpoint,
                EndpointName=self.name,
                ContentType=self.args.content_type,
                Body=body,
            )
        except Failure as exc:
            status = model_error_status(exc)
            if status is None or status >= 500 or own_body:
                raise
            # The container answered (a 4xx): the endpoint works; the body did not fit.
            log(
                f"Invoked {self.name}: the container answered {status} to the test body "
                f"{DEFAULT_BODY.decode()} ({one_line(exc, 200)}); the endpoint answers "
                "(--invoke-file sends a body that fits the model)"
            )
            return
        text = answer["Body"].read()
        elapsed = time.monotonic() - started
        shown = one_line(text.decode(errors="replace"), 200) if text else "(empty)"
        log(
            f"Invoked {self.name}: {answer.get('ContentType')}, {len(text)} bytes in "
            f"{elapsed:.2f} s: {shown}"
        )

    def done(self, config: str, previous: str | None) -> None:
        what = "updated" if previous else "created"
        log(f"Endpoint {self.name} {what}: {config} ({self.describe_capacity()})")
        if previous:
            log(f"Previous config {previous} kept, to go back to; make undeploy deletes all")
        log(f"Delete it with: {undeploy_command(self.args)}")

    def take_back(self) -> list[str]:
        """Delete what this run made, newest first; returns what could not be deleted."""
        sagemaker, made, left = self.clients.sagemaker, self.made, []
        steps: list[tuple[str, str | None, Callable[[], Any]]] = [
            (
                "endpoint",
                made.endpoint,
                lambda: delete_endpoint(sagemaker, made.endpoint or "", wait=False),
            ),
            (
                "endpoint config",
                made.config,
                lambda: aws_call(
                    "SageMaker DeleteEndpointConfig",
                    sagemaker.delete_endpoint_config,
                    EndpointConfigName=made.config,
                ),
            ),
            (
                "model",
                made.model,
                lambda: aws_call(
                    "SageMaker DeleteModel", sagemaker.delete_model, ModelName=made.model
                ),
            ),
        ]
        if made.endpoint:
            try:
                remove_autoscaling(self.clients.autoscaling, made.endpoint)
            except Failure as exc:
                log(f"Could not delete the autoscaling of {made.endpoint}: {one_line(exc)}")
                left.append(f"the autoscaling of endpoint {made.endpoint}")
        for kind, name, delete in steps:
            if name is None:
                continue
            try:
                delete()
                log(f"Deleted {kind} {name} (this deploy failed)")
            except Failure as exc:
                log(f"Could not delete {kind} {name}: {one_line(exc)}")
                left.append(f"{kind} {name}")
        if made.upload:
            bucket, key = made.upload
            try:
                aws_call("S3 DeleteObject", self.clients.s3.delete_object, Bucket=bucket, Key=key)
                log(f"Deleted s3://{bucket}/{key} (this deploy failed)")
            except Failure as exc:
                log(f"Could not delete s3://{bucket}/{key}: {one_line(exc)}")
                left.append(f"s3://{bucket}/{key}")
        if made.bucket and not any(thing.startswith("s3://") for thing in left):
            self.remove_created_bucket(made.bucket)
        self.made = Made()
        return left

    def remove_created_bucket(self, bucket: str) -> None:
        try:
            aws_call("S3 DeleteBucket", self.clients.s3.delete_bucket, Bucket=bucket)
            log(f"Deleted S3 bucket {bucket} (created by this deploy)")
        except Failure as exc:
            log(f"Kept S3 bucket {bucket}: {one_line(exc)}")


def model_error_status(exc: Failure) -> int | None:
    """The container's status code, when SageMaker runtime answered with a ModelError."""
    cause = exc.__cause__
    if not isinstance(cause, botocore.exceptions.ClientError):
        return None
    if cause.response.get("Error", {}).get("Code") != "ModelError":
        return None
    status = cause.response.get("OriginalStatusCode")
    return int(status) if isinstance(status, int) else None


def scaling_target(name: str) -> dict[str, str]:
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(name),
        "ScalableDimension": SCALABLE_DIMENSION,
    }


@dataclass(frozen=True)
class Autoscaling:
    """An endpoint variant's scalable target and its scaling policies, as described."""

    target: dict[str, Any]
    policies: list[dict[str, Any]]


def autoscaling_of(autoscaling: Any, name: str) -> Autoscaling | None:
    """The endpoint variant's autoscaling, or None when it has none."""
    target = scaling_target(name)
    targets = [
        found
        for found in aws_call(
            "Application Auto Scaling DescribeScalableTargets",
            autoscaling.describe_scalable_targets,
            ServiceNamespace="sagemaker",
            ResourceIds=[target["ResourceId"]],
            ScalableDimension=SCALABLE_DIMENSION,
        )["ScalableTargets"]
        if found["ResourceId"] == target["ResourceId"]
    ]
    policies = [
        policy
        for policy in aws_call(
            "Application Auto Scaling DescribeScalingPolicies",
            autoscaling.describe_scaling_policies,
            **target,
        )["ScalingPolicies"]
        if policy["ResourceId"] == target["ResourceId"]
    ]
    if not targets and not policies:
        return None
    return Autoscaling(targets[0] if targets else {}, policies)


def restore_autoscaling(autoscaling: Any, saved: Autoscaling) -> None:
    """Register a target and put its policies again, as autoscaling_of described them."""
    if saved.target:
        aws_call(
            "Application Auto Scaling RegisterScalableTarget",
            autoscaling.register_scalable_target,
            ServiceNamespace=saved.target["ServiceNamespace"],
            ResourceId=saved.target["ResourceId"],
            ScalableDimension=saved.target["ScalableDimension"],
            MinCapacity=saved.target["MinCapacity"],
            MaxCapacity=saved.target["MaxCapacity"],
        )
    for policy in saved.policies:
        settings = {
            key: policy[key]
            for key in (
                "TargetTrackingScalingPolicyConfiguration",
                "StepScalingPolicyConfiguration",
            )
            if key in policy
        }
        aws_call(
            "Application Auto Scaling PutScalingPolicy",
            autoscaling.put_scaling_policy,
            PolicyName=policy["PolicyName"],
            PolicyType=policy["PolicyType"],
            ServiceNamespace=policy["ServiceNamespace"],
            ResourceId=policy["ResourceId"],
            ScalableDimension=policy["ScalableDimension"],
            **settings,
        )


def remove_autoscaling(autoscaling: Any, name: str) -> bool:
    """Delete the scaling policies and the scalable target of the endpoint's variant; whether
    there was anything to delete."""
    found = autoscaling_of(autoscaling, name)
    if found is None:
        return False
    target = scaling_target(name)
    for policy in found.policies:
        aws_call(
            "Application Auto Scaling DeleteScalingPolicy",
            autoscaling.delete_scaling_policy,
            PolicyName=policy["PolicyName"],
            **target,
        )
        log(f"Deleted scaling policy {policy['PolicyName']}")
    if found.target:
        aws_call(
            "Application Auto Scaling DeregisterScalableTarget",
            autoscaling.deregister_scalable_target,
            **target,
        )
        log(f"Deregistered scalable target {target['ResourceId']}")
    return True


def delete_endpoint(
    sagemaker: Any, name: str, wait: bool, timeout: float = 3600, poll: float = 15
) -> None:
    aws_call("SageMaker DeleteEndpoint", sagemaker.delete_endpoint, EndpointName=name)
    if not wait:
        return
    start = time.monotonic()
    while (found := describe_endpoint(sagemaker, name)) is not None:
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            raise StillWaiting(f"endpoint {name} is still {found['EndpointStatus']}")
        time.sleep(poll)


def listed(call: Callable[..., Any], what: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = aws_call(what, call, **kwargs, **({"NextToken": token} if token else {}))
        items.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return items


def undeploy(clients: Clients, name: str, wait: float, poll: float) -> int:
    """Delete the endpoint ``name`` and what deploy made for it; how many things were deleted."""
    sagemaker, s3 = clients.sagemaker, clients.s3
    pattern = made_name(name)
    existing = describe_endpoint(sagemaker, name)
    if existing is not None and not ours(sagemaker, existing["EndpointArn"], name):
        raise Failure(f"endpoint {name} was not made by deploy.py (no {TAG_KEY} tag): not deleted")
    configs = [
        found
        for found in listed(
            sagemaker.list_endpoint_configs,
            "SageMaker ListEndpointConfigs",
            "EndpointConfigs",
            NameContains=name,
        )
        if pattern.fullmatch(found["EndpointConfigName"])
        and ours(sagemaker, found["EndpointConfigArn"], name)
    ]
    models = [
        found
        for found in listed(
            sagemaker.list_models, "SageMaker ListModels", "Models", NameContains=name
        )
        if pattern.fullmatch(found["ModelName"])
    ]
    uploads = []
    for model in models[:]:
        tags = tags_of(sagemaker, model["ModelArn"])
        if tags.get(TAG_KEY) != name:
            models.remove(model)
        elif tags.get(UPLOAD_TAG_KEY, "").startswith("s3://"):
            uploads.append(tags[UPLOAD_TAG_KEY])
    deleted = 0
    if remove_autoscaling(clients.autoscaling, name):
        deleted += 1
    if existing is not None:
        log(f"Deleting endpoint {name} ({existing['EndpointStatus']})")
        started = time.monotonic()
        delete_endpoint(sagemaker, name, wait=True, timeout=wait, poll=poll)
        log(f"Deleted endpoint {name} ({time.monotonic() - started:.0f} s)")
        deleted += 1
    for config in configs:
        aws_call(
            "SageMaker DeleteEndpointConfig",
            sagemaker.delete_endpoint_config,
            EndpointConfigName=config["EndpointConfigName"],
        )
        log(f"Deleted endpoint config {config['EndpointConfigName']}")
        deleted += 1
    for model in models:
        aws_call("SageMaker DeleteModel", sagemaker.delete_model, ModelName=model["ModelName"])
        log(f"Deleted model {model['ModelName']}")
        deleted += 1
    for upload in uploads:
        found = _S3_URI.fullmatch(upload)
        if found is None or not found["key"].startswith(f"{UPLOAD_PREFIX}/{name}/"):
            continue  # not where deploy uploads: not ours to delete
        aws_call("S3 DeleteObject", s3.delete_object, Bucket=found["bucket"], Key=found["key"])
        log(f"Deleted {upload}")
        deleted += 1
    return deleted


def error(message: object) -> int:
    """``deploy.py: error: <message>``, one line on stderr (longer than fail()'s: SageMaker's
    failure reasons are long); returns 1."""
    print(f"{PROG}: error: {one_line(message, 2000)}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    deployment = None
    try:
        session = aws_session(args.profile, args.region, "sagemaker")
        clients = Clients.from_session(session)
        if args.delete:
            if not undeploy(clients, args.name, args.wait, args.poll):
                log(f"Nothing to delete: no endpoint {args.name}, nor anything deploy made for it")
            return 0
        deployment = Deployment(args, clients)
        deployment.run()
    except StillWaiting as exc:
        return error(f"{exc}; it goes on ({undeploy_command(args)} deletes it)")
    except KeyboardInterrupt:
        made = deployment.made.names() if deployment else []
        what = f": left {', '.join(made)} ({undeploy_command(args)} deletes them)"
        fail(PROG, "interrupted" + (what if made else ""))
        return 130
    except Failure as exc:
        if deployment is None:
            return error(exc)
        if not (args.keep_on_failure and deployment.made.endpoint):
            left = deployment.take_back()
        else:
            left = deployment.made.names()
        if left:
            return error(
                f"{one_line(exc, 2000)}; left behind: {', '.join(left)} "
                f"({undeploy_command(args)} deletes them)"
            )
        return error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
