"""scripts/deploy.py (make deploy, make undeploy) against moto in server mode on 127.0.0.1: S3,
STS, SageMaker, SageMaker runtime and Application Auto Scaling. The script runs as a process,
as `make deploy` runs it, with AWS_ENDPOINT_URL pointing at moto (boto3 honours it for every
client: nothing in the script is there for the tests).

Nothing here talks to AWS or any host but 127.0.0.1: the script's environment has fake
credentials, instance metadata disabled, no AWS config files, and HTTP(S)_PROXY pointing at a
closed port on 127.0.0.1, so a call that tried to leave the machine would fail there instead
(test_a_call_that_would_leave_the_machine_fails shows it does).

What moto 5.2.5 does not model, and this module adds to the server it starts (MotoAdditions),
everything else being moto's own:
- UpdateEndpoint: moto has no such call. The addition switches the endpoint to the new config,
  as SageMaker does when an update completes, or, for an endpoint a test names, fails the update
  as SageMaker does: the endpoint stays on its config, with a FailureReason.
- Status changes: moto's endpoints are InService the moment they are created. A test may script
  the statuses DescribeEndpoint answers next for one endpoint (Creating, Creating, Failed with a
  reason), as moto's own /moto-api/static/sagemaker/endpoint-results scripts what InvokeEndpoint
  answers; once the script is used up, moto's own state shows.
moto's InvokeEndpoint answers whatever endpoint name it is given with a canned body ("body",
content type "content_type"); the tests set a realistic answer through that moto API.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.conftest import REPO
from tests.integration.aws import FAKE_AWS, PROXY_VARS, aws_free_env
from tests.ports import free_port

DEPLOY_SCRIPT = REPO / "scripts" / "deploy.py"
ACCOUNT = "123456789012"  # moto's
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-torch-serving:test"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
TAG = "sagemaker-torch-serving:endpoint"
STAMP = r"\d{8}-\d{6}-\d{3}"


@dataclass
class MotoAdditions:
    """What this module adds to moto's SageMaker (see the module's docstring)."""

    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rollbacks: dict[str, str] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)

    def install(self, patch: pytest.MonkeyPatch) -> None:
        from moto.core.responses import ActionResult
        from moto.sagemaker.exceptions import ValidationError
        from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        additions = self
        describe = SageMakerModelBackend.describe_endpoint

        def describe_endpoint(backend: SageMakerModelBackend, name: str) -> dict[str, Any]:
            found = describe(backend, name)
            script = additions.statuses.get(name)
            return {**found, **script.pop(0)} if script else found

        def update_endpoint(response: SageMakerResponse) -> ActionResult:
            backend, params = response.sagemaker_backend, response._get_params()
            additions.updates.append(params)
            name = params["EndpointName"]
            endpoint = backend.endpoints.get(name)
            if endpoint is None:
                arn = FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)
                raise ValidationError(message=f'Could not find endpoint "{arn}".')
            config = backend.describe_endpoint_config(params["EndpointConfigName"])
            if name in additions.rollbacks:
                endpoint.failure_reason = additions.rollbacks[name]
            else:
                endpoint.endpoint_config_name = config["EndpointConfigName"]
                endpoint.production_variants = endpoint._process_production_variants(
                    config["ProductionVariants"]
                )
            return ActionResult({"EndpointArn": endpoint.arn})

        patch.setattr(SageMakerModelBackend, "describe_endpoint", describe_endpoint)
        patch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)

    def clear(self) -> None:
        self.statuses.clear()
        self.rollbacks.clear()
        self.updates.clear()


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # straight to 127.0.0.1, whatever proxy the machine has
    return session


@dataclass
class Moto:
    url: str
    additions: MotoAdditions


@pytest.fixture(scope="module")
def moto_server() -> Iterator[Moto]:
    """moto in server mode on 127.0.0.1, in a thread of this process, with MotoAdditions."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    additions = MotoAdditions()
    with pytest.MonkeyPatch.context() as patch:
        additions.install(patch)
        # Not a line per request (werkzeug's log): a failing test's output stays readable.
        patch.setattr(logging.getLogger("werkzeug"), "level", logging.WARNING)
        server.start()
        try:
            yield Moto(f"http://127.0.0.1:{port}", additions)
        finally:
            server.stop()


@dataclass
class Aws:
    """Clients of the moto server for the tests' own checks, and the script's environment."""

    moto: Moto
    region: str = "us-east-1"

    def client(self, name: str, region: str | None = None) -> Any:
        session = boto3.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=region or self.region,
        )
        return session.client(name, endpoint_url=self.moto.url)

    @property
    def sagemaker(self) -> Any:
        return self.client("sagemaker")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def autoscaling(self) -> Any:
        return self.client("application-autoscaling")

    def env(self, **extra: str) -> dict[str, str]:
        return aws_free_env(**FAKE_AWS, AWS_ENDPOINT_URL=self.moto.url, **extra)

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(DEPLOY_SCRIPT), "--poll", "0.05", *args],
            env=self.env() if env is None else env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def deploy(self, *args: str) -> list[str]:
        """A deploy that must succeed: its output lines."""
        result = self.run(*args)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert result.stderr == ""
        return result.stdout.splitlines()

    def answer_invocations_with(self, body: str, content_type: str = "application/json") -> None:
        result = {
            "Body": body,
            "ContentType": content_type,
            "InvokedProductionVariant": "AllTraffic",
        }
        with http() as session:
            session.post(
                f"{self.moto.url}/moto-api/static/sagemaker/endpoint-results",
                json={"account_id": ACCOUNT, "region": self.region, "results": [result]},
                timeout=10,
            ).raise_for_status()

    def everything(self, region: str | None = None) -> dict[str, list[str]]:
        """What exists: endpoints, configs, models, scalable targets, policies (by name)."""
        sagemaker = self.client("sagemaker", region)
        autoscaling = self.client("application-autoscaling", region)
        return {
            "endpoints": [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]],
            "configs": [
                c["EndpointConfigName"]
                for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]
            ],
            "models": [m["ModelName"] for m in sagemaker.list_models()["Models"]],
            "targets": [
                t["ResourceId"]
                for t in autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
                    "ScalableTargets"
                ]
            ],
            "policies": [
                p["PolicyName"]
                for p in autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
                    "ScalingPolicies"
                ]
            ],
        }

    def objects(self, bucket: str, region: str | None = None) -> list[str]:
        listing = self.client("s3", region).list_objects_v2(Bucket=bucket)
        return [found["Key"] for found in listing.get("Contents", [])]

    def buckets(self) -> list[str]:
        return [bucket["Name"] for bucket in self.s3.list_buckets()["Buckets"]]


NOTHING: dict[str, list[str]] = {
    "endpoints": [],
    "configs": [],
    "models": [],
    "targets": [],
    "policies": [],
}


@pytest.fixture
def aws(moto_server: Moto, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """A moto server with nothing in it, and this process without AWS settings or proxies."""
    for key in list(os.environ):
        if key.startswith("AWS_") or key.lower() in PROXY_VARS:
            monkeypatch.delenv(key)
    for key, value in aws_free_env().items():
        if key.startswith(("AWS_", "BOTO_")):
            monkeypatch.setenv(key, value)
    with http() as session:
        session.post(f"{moto_server.url}/moto-api/reset", timeout=10).raise_for_status()
    moto_server.additions.clear()
    yield Aws(moto_server)
    moto_server.additions.clear()


@pytest.fixture(scope="module")
def model_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model.tar.gz (what SageMaker unpacks into /opt/ml/model)."""
    path = tmp_path_factory.mktemp("deploy") / "model.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        data = b"not a real model: SageMaker here is moto"
        info = tarfile.TarInfo("model.pt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def deploy_args(model: Path | str, name: str, *extra: str) -> list[str]:
    return ["--image", IMAGE, "--role", ROLE, "--model", str(model), "--name", name, *extra]


def matching(lines: list[str], pattern: str) -> re.Match[str]:
    for line in lines:
        if found := re.fullmatch(pattern, line):
            return found
    raise AssertionError(f"no line matches {pattern!r}:\n" + "\n".join(lines))


def test_create_update_in_place_and_undeploy(aws: Aws, model_archive: Path) -> None:
    aws.answer_invocations_with('{"predicted_class": 2}')
    bucket = f"sagemaker-us-east-1-{ACCOUNT}"
    lines = aws.deploy(
        *deploy_args(model_archive, "digits", "--instance-type", "ml.g4dn.xlarge"),
        *("--env", "SERVING_TORCH_THREADS=2", "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=1"),
    )
    assert lines[0] == f"Created S3 bucket {bucket}"
    key = matching(
        lines,
        rf"Uploading {re.escape(str(model_archive))} \(0\.0 MB\) to s3://{bucket}/"
        rf"(sagemaker-torch-serving/digits/{STAMP}/model\.tar\.gz)",
    )[1]
    first = matching(lines, rf"Created model (digits-{STAMP})")[1]
    assert (
        f"Created endpoint config {first} (real-time, 1 x ml.g4dn.xlarge, AMI "
        "al2-ami-sagemaker-inference-gpu-3-1)"
    ) in lines
    assert "Creating endpoint digits" in lines
    assert "Endpoint digits: InService (0 s)" in lines  # moto's endpoints start InService
    matching(
        lines, r'Invoked digits: application/json, 22 bytes in [\d.]+ s: \{"predicted_class": 2\}'
    )
    assert lines[-2:] == [
        f"Endpoint digits created: {first} (real-time, 1 x ml.g4dn.xlarge, AMI "
        "al2-ami-sagemaker-inference-gpu-3-1)",
        "Delete it with: make undeploy ENDPOINT=digits",
    ]

    sagemaker = aws.sagemaker
    model = sagemaker.describe_model(ModelName=first)
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{bucket}/{key}"
    assert model["PrimaryContainer"]["Environment"] == {
        "SERVING_TORCH_THREADS": "2",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    }
    assert model["ExecutionRoleArn"] == ROLE
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=first)["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["ModelName"] == first
    assert variant["InstanceType"] == "ml.g4dn.xlarge"
    assert variant["InitialInstanceCount"] == 1
    assert variant["InferenceAmiVersion"] == "al2-ami-sagemaker-inference-gpu-3-1"
    endpoint = sagemaker.describe_endpoint(EndpointName="digits")
    assert endpoint["EndpointConfigName"] == first
    tags = sagemaker.list_tags(ResourceArn=endpoint["EndpointArn"])["Tags"]
    assert {"Key": TAG, "Value": "digits"} in tags
    assert aws.objects(bucket) == [key]
    with gzip.open(aws.s3.get_object(Bucket=bucket, Key=key)["Body"]) as archive:
        assert archive.read() == gzip.open(model_archive).read()

    # The same again, two instances: a new model and config, the same endpoint, updated.
    lines = aws.deploy(
        *deploy_args(model_archive, "digits", "--instance-type", "ml.g4dn.xlarge"),
        *("--instance-count", "2", "--no-invoke"),
    )
    assert lines[0] == f"Endpoint digits exists ({first}): updating it"
    second = matching(lines, rf"Created model (digits-{STAMP})")[1]
    assert second != first
    assert f"Updating endpoint digits to {second}" in lines
    assert "Endpoint digits: InService (0 s)" in lines
    assert not any(line.startswith(("Invoked", "Created S3 bucket")) for line in lines)
    assert lines[-3:] == [
        f"Endpoint digits updated: {second} (real-time, 2 x ml.g4dn.xlarge, AMI "
        "al2-ami-sagemaker-inference-gpu-3-1)",
        f"Previous config {first} kept, to go back to; make undeploy deletes all",
        "Delete it with: make undeploy ENDPOINT=digits",
    ]
    assert aws.moto.additions.updates == [{"EndpointName": "digits", "EndpointConfigName": second}]
    endpoint = sagemaker.describe_endpoint(EndpointName="digits")
    assert endpoint["EndpointConfigName"] == second
    assert endpoint["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    assert sorted(aws.everything()["configs"]) == sorted([first, second])
    assert sorted(aws.everything()["models"]) == sorted([first, second])
    uploads = aws.objects(bucket)
    assert len(uploads) == 2

    # SageMaker cannot turn a real-time endpoint into a serverless one: said before anything.
    refused = aws.run(*deploy_args(model_archive, "digits", "--serverless-memory", "2048"))
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "deploy.py: error: endpoint digits is a real-time endpoint (ml.g4dn.xlarge), which "
        "SageMaker cannot turn into a serverless one: give another --name, or make undeploy "
        "ENDPOINT=digits first"
    ]
    assert sorted(aws.everything()["models"]) == sorted([first, second])
    assert aws.objects(bucket) == uploads

    # Undeploy: all of it, one line each; the default bucket stays (SageMaker's, shared).
    result = aws.run("--delete", "--name", "digits")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[:2] == ["Deleting endpoint digits (InService)", "Deleted endpoint digits (0 s)"]
    assert sorted(lines[2:]) == sorted(
        [
            f"Deleted endpoint config {first}",
            f"Deleted endpoint config {second}",
            f"Deleted model {first}",
            f"Deleted model {second}",
            *(f"Deleted s3://{bucket}/{key}" for key in uploads),
        ]
    )
    assert aws.everything() == NOTHING
    assert aws.objects(bucket) == []
    assert aws.buckets() == [bucket]

    # Again: nothing to do, and it says so.
    again = aws.run("--delete", "--name", "digits")
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout.splitlines() == [
        "Nothing to delete: no endpoint digits, nor anything deploy made for it"
    ]


def test_serverless_in_another_region(aws: Aws, model_archive: Path) -> None:
    region = "eu-west-1"
    bucket = f"sagemaker-{region}-{ACCOUNT}"
    lines = aws.deploy(
        *deploy_args(model_archive, "tiny", "--region", region),
        *("--serverless-memory", "2048", "--serverless-concurrency", "3"),
    )
    config = matching(lines, rf"Created endpoint config (tiny-{STAMP}) \(.*\)")[1]
    assert (
        f"Created endpoint config {config} (serverless, 2048 MB, at most 3 concurrent invocations)"
    ) in lines
    # moto's canned answer to any invocation (moto does not run the container).
    assert "Invoked tiny: content_type, 4 bytes in" in "\n".join(lines)
    assert aws.client("s3", region).get_bucket_location(Bucket=bucket)["LocationConstraint"] == (
        region
    )
    variant = aws.client("sagemaker", region).describe_endpoint_config(EndpointConfigName=config)[
        "ProductionVariants"
    ][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    assert aws.everything() == NOTHING  # all of it in eu-west-1, none in us-east-1

    result = aws.run("--delete", "--name", "tiny", "--region", region)
    assert result.returncode == 0, result.stderr
    assert aws.everything(region) == NOTHING
    assert aws.objects(bucket, region) == []


def test_autoscaling_registered_kept_through_updates_and_removed(
    aws: Aws, model_archive: Path
) -> None:
    resource = "endpoint/scaled/variant/AllTraffic"
    autoscale = ("--autoscale-min", "1", "--autoscale-max", "4", "--target-invocations", "120")
    lines = aws.deploy(
        *deploy_args(model_archive, "scaled", "--instance-type", "ml.m5.large", "--no-invoke"),
        *autoscale,
    )
    assert "Autoscaling of scaled: 1 to 4 instances, 120 invocations per instance per minute" in (
        lines
    )
    autoscaling = aws.autoscaling
    (target,) = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"
    ]
    assert (target["ResourceId"], target["ScalableDimension"]) == (
        resource,
        "sagemaker:variant:DesiredInstanceCount",
    )
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    (policy,) = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
        "ScalingPolicies"
    ]
    assert (policy["PolicyName"], policy["PolicyType"], policy["ResourceId"]) == (
        "scaled-invocations",
        "TargetTrackingScaling",
        resource,
    )
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 120.0,
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
        },
        "ScaleInCooldown": 300,
        "ScaleOutCooldown": 60,
    }

    # Same instance type: autoscaling stays on, the update keeps the instance count it reached.
    lines = aws.deploy(
        *deploy_args(model_archive, "scaled", "--instance-type", "ml.m5.large", "--no-invoke"),
        *("--autoscale-max", "6", "--target-invocations", "150"),
    )
    assert "Autoscaling of scaled: on; the update keeps the instance count" in lines
    assert aws.moto.additions.updates[-1]["RetainAllVariantProperties"] is True
    (target,) = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 6)
    (policy,) = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
        "ScalingPolicies"
    ]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 150.0

    # Another instance type: off for the update (Application Auto Scaling would refuse it), on
    # again after it.
    lines = aws.deploy(
        *deploy_args(model_archive, "scaled", "--instance-type", "ml.m5.xlarge", "--no-invoke"),
        *autoscale,
    )
    assert lines.index("Autoscaling of scaled: off for the update") < lines.index(
        next(line for line in lines if line.startswith("Updating endpoint scaled"))
    )
    assert "RetainAllVariantProperties" not in aws.moto.additions.updates[-1]
    assert lines[-4] == (
        "Autoscaling of scaled: 1 to 4 instances, 120 invocations per instance per minute"
    )
    assert aws.everything()["targets"] == [resource]

    # Without autoscaling arguments: the endpoint has none after the update.
    lines = aws.deploy(
        *deploy_args(model_archive, "scaled", "--instance-type", "ml.m5.xlarge", "--no-invoke")
    )
    assert "Deregistered scalable target endpoint/scaled/variant/AllTraffic" in lines
    assert "Autoscaling of scaled: off (this deploy has no --autoscale-max)" in lines
    assert aws.everything()["targets"] == aws.everything()["policies"] == []

    # Undeploy removes autoscaling too.
    aws.deploy(
        *deploy_args(model_archive, "scaled", "--instance-type", "ml.m5.xlarge", "--no-invoke"),
        *autoscale,
    )
    result = aws.run("--delete", "--name", "scaled")
    assert result.returncode == 0, result.stderr
    assert "Deleted scaling policy scaled-invocations" in result.stdout.splitlines()
    assert aws.everything() == NOTHING


def test_an_s3_model_is_used_as_given_and_kept(aws: Aws, model_archive: Path) -> None:
    aws.s3.create_bucket(Bucket="my-models")
    aws.s3.upload_file(str(model_archive), "my-models", "digits/model.tar.gz")
    uri = "s3://my-models/digits/model.tar.gz"
    lines = aws.deploy(*deploy_args(uri, "from-s3", "--serverless-memory", "1024"))
    assert not any(line.startswith(("Uploading", "Created S3 bucket")) for line in lines)
    (model,) = aws.everything()["models"]
    assert aws.sagemaker.describe_model(ModelName=model)["PrimaryContainer"]["ModelDataUrl"] == uri

    result = aws.run("--delete", "--name", "from-s3")
    assert result.returncode == 0, result.stderr
    assert aws.everything() == NOTHING
    assert aws.buckets() == ["my-models"]
    assert aws.objects("my-models") == ["digits/model.tar.gz"]  # the user's: not deleted

    # An object that is not there: one line, before anything is made.
    missing = aws.run(
        *deploy_args("s3://my-models/nothing.tar.gz", "nothing", "--serverless-memory", "1024")
    )
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "deploy.py: error: --model s3://my-models/nothing.tar.gz: no such object"
    ]
    assert aws.everything() == NOTHING


def test_a_failed_endpoint_is_taken_back_with_sagemakers_reason(
    aws: Aws, model_archive: Path
) -> None:
    reason = (
        "The primary container for production variant AllTraffic did not pass the ping health "
        "check. Please check CloudWatch logs for this endpoint."
    )
    aws.moto.additions.statuses["broken"] = [
        {"EndpointStatus": "Creating"},
        {"EndpointStatus": "Creating"},
        {"EndpointStatus": "Failed", "FailureReason": reason},
    ]
    result = aws.run(*deploy_args(model_archive, "broken", "--instance-type", "ml.m5.large"))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert matching(lines, r"Endpoint broken: Creating \(0 s\)")
    assert matching(lines, r"Endpoint broken: Failed \(\d+ s\)")
    assert not any(line.startswith("Invoked") for line in lines)
    deleted = [line for line in lines if line.startswith("Deleted")]
    assert [line.split(" (")[0].rsplit(" ", 1)[0] for line in deleted] == [
        "Deleted endpoint",
        "Deleted endpoint config",
        "Deleted model",
        "Deleted",  # the upload
        "Deleted S3 bucket",  # created by this deploy, empty again
    ]
    (error,) = result.stderr.splitlines()
    assert re.fullmatch(
        rf"deploy\.py: error: endpoint broken is Failed after \d+ s: {reason}", error
    )
    assert aws.everything() == NOTHING
    assert aws.buckets() == []


def test_a_failure_mid_deploy_leaves_nothing(aws: Aws, model_archive: Path) -> None:
    # ml.g5.xlarge is an instance type SageMaker has; moto's list of them lacks it, so moto
    # refuses CreateEndpointConfig after the upload and CreateModel have been made.
    result = aws.run(*deploy_args(model_archive, "midway", "--instance-type", "ml.g5.xlarge"))
    assert result.returncode == 1
    (error,) = result.stderr.splitlines()
    assert error.startswith(
        "deploy.py: error: SageMaker CreateEndpointConfig failed: ValidationException: "
        "Value 'ml.g5.xlarge' at 'instanceType' failed to satisfy constraint"
    )
    assert "left behind" not in error
    assert matching(
        result.stdout.splitlines(), rf"Deleted model midway-{STAMP} \(this deploy failed\)"
    )
    assert aws.everything() == NOTHING
    assert aws.buckets() == []


def test_a_failed_update_leaves_the_endpoint_as_it_was(aws: Aws, model_archive: Path) -> None:
    autoscale = ("--autoscale-max", "3", "--target-invocations", "100", "--no-invoke")
    lines = aws.deploy(
        *deploy_args(model_archive, "steady", "--instance-type", "ml.m5.large"), *autoscale
    )
    first = matching(lines, rf"Created model (steady-{STAMP})")[1]
    bucket = f"sagemaker-us-east-1-{ACCOUNT}"
    (upload,) = aws.objects(bucket)

    # Refused before the update (moto has no ml.g5.xlarge): the new model and upload go.
    result = aws.run(*deploy_args(model_archive, "steady", "--instance-type", "ml.g5.xlarge"))
    assert result.returncode == 1
    assert "CreateEndpointConfig failed" in result.stderr
    assert aws.everything()["models"] == aws.everything()["configs"] == [first]
    assert aws.objects(bucket) == [upload]

    # Rolled back by SageMaker: the endpoint serves its config still; autoscaling, turned off
    # for the change of instance type, is on again as it was.
    reason = "Failed to download model data for the model in production variant AllTraffic"
    aws.moto.additions.rollbacks["steady"] = reason
    # (the first answer is to the check before the deploy, the second the update's first)
    aws.moto.additions.statuses["steady"] = [{}, {"EndpointStatus": "Updating"}]
    result = aws.run(
        *deploy_args(model_archive, "steady", "--instance-type", "ml.m5.xlarge"), *autoscale
    )
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert "Autoscaling of steady: off for the update" in lines
    assert matching(lines, r"Endpoint steady: Updating \(0 s\)")
    assert "Autoscaling of steady: on again, as before" in lines
    (error,) = result.stderr.splitlines()
    assert re.fullmatch(
        rf"deploy\.py: error: endpoint steady: the update failed and SageMaker rolled it back "
        rf"after \d+ s \(it serves {first} still\): {reason}",
        error,
    )
    assert aws.sagemaker.describe_endpoint(EndpointName="steady")["EndpointConfigName"] == first
    found = aws.everything()
    assert found["models"] == found["configs"] == [first]
    assert found["targets"] == ["endpoint/steady/variant/AllTraffic"]
    assert found["policies"] == ["steady-invocations"]
    assert aws.objects(bucket) == [upload]

    # A Failed endpoint cannot be updated: said before anything is made.
    aws.moto.additions.statuses["steady"] = [{"EndpointStatus": "Failed", "FailureReason": "x"}]
    result = aws.run(*deploy_args(model_archive, "steady", "--instance-type", "ml.m5.large"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "deploy.py: error: endpoint steady is Failed (x); SageMaker cannot update it: "
        "make undeploy ENDPOINT=steady, then deploy again"
    ]
    assert aws.everything()["models"] == [first]


def test_an_endpoint_deploy_did_not_make_is_left_alone(aws: Aws, model_archive: Path) -> None:
    sagemaker = aws.sagemaker
    sagemaker.create_model(
        ModelName="theirs", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE}
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="theirs",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "theirs",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName="theirs", EndpointConfigName="theirs")
    before = aws.everything()
    result = aws.run(*deploy_args(model_archive, "theirs", "--instance-type", "ml.m5.large"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "deploy.py: error: endpoint theirs exists and was not made by deploy.py (no "
        f"{TAG} tag): give another --name"
    ]
    result = aws.run("--delete", "--name", "theirs")
    assert result.returncode == 1
    assert "was not made by deploy.py" in result.stderr
    assert aws.everything() == before
    assert aws.buckets() == []


BAD_INPUT = {
    # case: (arguments, environment without AWS_ENDPOINT_URL, exit status, the error)
    "missing-model": (
        deploy_args("/nonexistent/model.tar.gz", "x", "--instance-type", "ml.m5.large"),
        FAKE_AWS,
        2,
        "--model /nonexistent/model.tar.gz: no such file",
    ),
    "malformed-image-uri": (
        ["--image", "sagemaker-torch-serving:latest", "--role", ROLE, "--model", "{model}"],
        FAKE_AWS,
        2,
        "--image 'sagemaker-torch-serving:latest' is not an ECR image URI",
    ),
    "unknown-instance-type": (
        deploy_args("{model}", "x", "--instance-type", "ml.m5.huge"),
        FAKE_AWS,
        2,
        "--instance-type 'ml.m5.huge': not a SageMaker endpoint instance type",
    ),
    "serverless-memory": (
        deploy_args("{model}", "x", "--serverless-memory", "1500"),
        FAKE_AWS,
        2,
        "--serverless-memory 1500: SageMaker's sizes are 1024, 2048, 3072, 4096, 5120, 6144 (MB)",
    ),
    "unknown-setting": (
        deploy_args("{model}", "x", "--instance-type", "ml.m5.large", "--env", "SERVING_WORKERS=2"),
        FAKE_AWS,
        2,
        "--env SERVING_WORKERS: not a variable this image reads",
    ),
    "no-credentials": (
        deploy_args("{model}", "x", "--instance-type", "ml.m5.large"),
        {"AWS_DEFAULT_REGION": "us-east-1"},
        1,
        "no AWS credentials found",
    ),
    "no-region": (
        deploy_args("{model}", "x", "--instance-type", "ml.m5.large"),
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        1,
        "no AWS region: pass --region",
    ),
    "unknown-region": (
        deploy_args("{model}", "x", "--instance-type", "ml.m5.large", "--region", "mars-north-1"),
        FAKE_AWS,
        1,
        "unknown AWS region 'mars-north-1'",
    ),
    "undeploy-no-credentials": (
        ["--delete", "--name", "x"],
        {"AWS_DEFAULT_REGION": "us-east-1"},
        1,
        "no AWS credentials found",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_fails_in_one_line_before_any_remote_call(
    case: str, aws: Aws, model_archive: Path
) -> None:
    arguments, extra, status, expected = BAD_INPUT[case]
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a call would fail
    arguments = [part.format(model=model_archive) for part in arguments]
    for endpoint in (closed, aws.moto.url):
        result = aws.run(*arguments, env=aws_free_env(**extra, AWS_ENDPOINT_URL=endpoint))
        assert result.returncode == status, (result.stdout, result.stderr)
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("deploy.py: error: ")
        assert expected in line
    assert aws.everything() == NOTHING  # moto saw none of it either
    assert aws.buckets() == []


def test_a_call_that_would_leave_the_machine_fails(aws: Aws, model_archive: Path) -> None:
    """Without AWS_ENDPOINT_URL, boto3 calls AWS, which here means the dead proxy: the fence
    that keeps every other test on 127.0.0.1 holds."""
    env = aws_free_env(**FAKE_AWS, AWS_MAX_ATTEMPTS="1")
    result = aws.run(*deploy_args(model_archive, "x", "--instance-type", "ml.m5.large"), env=env)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("deploy.py: error: SageMaker DescribeEndpoint failed: ")
    assert "127.0.0.1:9" in line  # the proxy, not AWS
