"""scripts/deploy.py without AWS: its argument checks (each a one-line error, exit 2, before any
remote call) and its wait on the endpoint's status, with SageMaker's answers scripted. The calls
to S3, SageMaker and Application Auto Scaling are tested against moto in
tests/integration/test_deploy.py."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagemaker_torch_serving.settings import Env
from tests.conftest import load_script

deploy = load_script("deploy")

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-torch-serving:latest"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.tar.gz"
    with gzip.open(path, "wb") as archive:
        archive.write(b"\0" * 1024)
    return path


def argv(model: Path, *extra: str) -> list[str]:
    return ["--image", IMAGE, "--model", str(model), "--role", ROLE, *extra]


def test_real_time_defaults(model: Path) -> None:
    args = deploy.parse_args(argv(model, "--instance-type", "ml.g5.xlarge"))
    assert (args.kind, args.instance_type, args.instance_count) == ("real-time", "ml.g5.xlarge", 1)
    assert args.inference_ami_version == deploy.GPU_AMI  # driver 550: the image runs
    assert args.env == {}
    assert args.content_type == "application/json"
    assert args.name == "sagemaker-torch-serving"
    cpu = deploy.parse_args(argv(model, "--instance-type", "ml.c7i.xlarge"))
    assert cpu.inference_ami_version is None
    mine = deploy.parse_args(
        argv(model, "--instance-type", "ml.g5.xlarge", "--inference-ami-version", "none")
    )
    assert mine.inference_ami_version is None


def test_serverless_and_autoscaling(model: Path) -> None:
    args = deploy.parse_args(argv(model, "--serverless-memory", "2048"))
    assert (args.kind, args.serverless_memory, args.serverless_concurrency) == (
        "serverless",
        2048,
        5,
    )
    scaled = deploy.parse_args(
        argv(
            model,
            *("--instance-type", "ml.m5.large", "--autoscale-min", "2"),
            *("--autoscale-max", "6", "--target-invocations", "250"),
        )
    )
    assert (scaled.autoscale_min, scaled.autoscale_max, scaled.instance_count) == (2, 6, 2)
    assert scaled.target_invocations == 250.0


def test_env_is_checked_by_the_runtimes_own_settings(model: Path) -> None:
    args = deploy.parse_args(
        argv(
            model,
            "--instance-type",
            "ml.m5.large",
            *("--env", f"{Env.TORCH_THREADS}=2", "--env", f"{Env.BATCH_SIZE}=8"),
            *("--env", "MY_OWN_SETTING=a=b"),  # the user's own code may read any other name
        )
    )
    assert args.env == {Env.TORCH_THREADS: "2", Env.BATCH_SIZE: "8", "MY_OWN_SETTING": "a=b"}
    known = deploy.known_variables()
    assert Env.WARMUP_SHAPE in known and Env.DEFAULT_ACCEPT in known
    assert Env.CUDA_VISIBLE_DEVICES not in known  # not ours: allowed, but not checked as ours
    assert all(name.startswith(("SAGEMAKER_", "SERVING_")) for name in known)


def test_delete_takes_only_a_name() -> None:
    args = deploy.parse_args(["--delete", "--name", "digits", "--region", "eu-west-1"])
    assert (args.delete, args.name, args.region) == (True, "digits", "eu-west-1")


BAD = {
    # case: (arguments after --image/--model/--role, or None for exactly `extra`; the error)
    "missing-model-file": (
        ["--image", IMAGE, "--role", ROLE, "--model", "/nonexistent/model.tar.gz"],
        "--model /nonexistent/model.tar.gz: no such file",
    ),
    "model-directory": (
        ["--image", IMAGE, "--role", ROLE, "--model", "{tmp}", "--instance-type", "ml.m5.large"],
        "is a directory: package it first",
    ),
    "model-not-gzip": (
        ["--image", IMAGE, "--role", ROLE, "--model", "{text}", "--instance-type", "ml.m5.large"],
        "not a model.tar.gz (not gzip)",
    ),
    "bad-s3-uri": (
        ["--image", IMAGE, "--role", ROLE, "--model", "s3://", "--instance-type", "ml.m5.large"],
        "not an S3 URI",
    ),
    "missing-arguments": (["--instance-type", "ml.m5.large"], "required: --image, --model, --role"),
    "malformed-image": (
        ["--image", "sagemaker-torch-serving:latest", "--role", ROLE, "--model", "{model}"],
        "is not an ECR image URI",
    ),
    "local-registry-image": (
        ["--image", "127.0.0.1:5000/serving-test:t1", "--role", ROLE, "--model", "{model}"],
        "is not an ECR image URI",
    ),
    "bad-role": (
        ["--image", IMAGE, "--role", "SageMakerRole", "--model", "{model}"],
        "not an IAM role ARN",
    ),
    "no-capacity": (None, "give --instance-type (a real-time endpoint"),
    "unknown-instance-type": (
        ["--instance-type", "ml.g5.xlarg"],
        "'ml.g5.xlarg': not a SageMaker endpoint instance type; did you mean ml.g5.xlarge",
    ),
    "not-ml-instance-type": (["--instance-type", "g5.xlarge"], "not a SageMaker endpoint"),
    "volta-gpu": (["--instance-type", "ml.p3.2xlarge"], "V100 (Volta), is older than"),
    "zero-instances": (
        ["--instance-type", "ml.m5.large", "--instance-count", "0"],
        "--instance-count: 1 or more",
    ),
    "serverless-memory-size": (
        ["--serverless-memory", "1000"],
        "--serverless-memory 1000: SageMaker's sizes are 1024, 2048, 3072, 4096, 5120, 6144",
    ),
    "serverless-memory-missing": (
        ["--serverless-concurrency", "3"],
        "a serverless endpoint takes --serverless-memory (1024, 2048,",
    ),
    "serverless-concurrency": (
        ["--serverless-memory", "2048", "--serverless-concurrency", "201"],
        "--serverless-concurrency: 1 to 200",
    ),
    "serverless-and-instance-type": (
        ["--serverless-memory", "2048", "--instance-type", "ml.m5.large"],
        "--instance-type: for real-time endpoints, not serverless",
    ),
    "serverless-and-autoscaling": (
        ["--serverless-memory", "2048", "--autoscale-max", "3"],
        "--autoscale-max: for real-time endpoints",
    ),
    "autoscale-without-target": (
        ["--instance-type", "ml.m5.large", "--autoscale-max", "3"],
        "autoscaling takes --autoscale-max and --target-invocations",
    ),
    "autoscale-min-above-max": (
        [
            *("--instance-type", "ml.m5.large", "--autoscale-min", "4", "--autoscale-max", "2"),
            *("--target-invocations", "100"),
        ],
        "1 <= --autoscale-min <= --autoscale-max",
    ),
    "count-outside-autoscaling": (
        [
            *("--instance-type", "ml.m5.large", "--instance-count", "5", "--autoscale-max", "2"),
            *("--target-invocations", "100"),
        ],
        "--instance-count 5 is outside",
    ),
    "env-unknown-ours": (
        ["--instance-type", "ml.m5.large", "--env", "SERVING_TORCH_THREAD=2"],
        "not a variable this image reads (sagemaker_torch_serving/settings.py lists them); "
        "did you mean SERVING_TORCH_THREADS?",
    ),
    "env-bad-value": (
        ["--instance-type", "ml.m5.large", "--env", "SERVING_DEVICE=gpu"],
        "--env SERVING_DEVICE must be auto, cpu or cuda, got 'gpu'",
    ),
    "env-not-a-pair": (["--instance-type", "ml.m5.large", "--env", "SERVING_DEVICE"], "NAME=VALUE"),
    "env-bad-name": (["--instance-type", "ml.m5.large", "--env", "1X=2"], "NAME=VALUE"),
    "env-twice": (
        ["--instance-type", "ml.m5.large", "--env", "A=1", "--env", "A=2"],
        "--env A is given twice",
    ),
    "env-host": (
        ["--instance-type", "ml.m5.large", "--env", "SERVING_HOST=127.0.0.1"],
        "--env SERVING_HOST: not for an endpoint",
    ),
    "bad-name": (["--instance-type", "ml.m5.large", "--name", "my_endpoint"], "--name"),
    "long-name": (["--instance-type", "ml.m5.large", "--name", "x" * 44], "at most 43"),
    "invoke-file-missing": (
        ["--instance-type", "ml.m5.large", "--invoke-file", "/nonexistent/digit.png"],
        "--invoke-file /nonexistent/digit.png: no such file",
    ),
    "invoke-file-type": (
        ["--instance-type", "ml.m5.large", "--invoke-file", "{model}"],
        "give --content-type (unknown extension)",
    ),
    "content-type-alone": (
        ["--instance-type", "ml.m5.large", "--content-type", "image/png"],
        "--content-type: goes with --invoke-file",
    ),
    "bucket-with-s3-model": (
        ["--image", IMAGE, "--role", ROLE, "--model", "s3://b-1/m.tar.gz", "--bucket", "b-2"],
        "--bucket: for uploading a local model",
    ),
    "delete-with-deploy-options": (
        ["--delete", "--image", IMAGE, "--serverless-memory", "2048"],
        "--image, --serverless-memory: for a deploy, not with --delete",
    ),
    "wait-zero": (["--instance-type", "ml.m5.large", "--wait", "0"], "--wait and --poll"),
}
NO_DEFAULTS = {
    "missing-model-file",
    "model-directory",
    "model-not-gzip",
    "bad-s3-uri",
    "missing-arguments",
    "malformed-image",
    "local-registry-image",
    "bad-role",
    "bucket-with-s3-model",
    "delete-with-deploy-options",
}


@pytest.mark.parametrize("case", BAD)
def test_bad_arguments_fail_in_one_line(
    case: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, expected = BAD[case]
    text = tmp_path / "model-text.tar.gz"
    text.write_text("not an archive")
    fill = {"tmp": str(tmp_path), "model": str(model), "text": str(text)}
    given = [part.format(**fill) for part in (extra or [])]
    arguments = given if case in NO_DEFAULTS else argv(model, *given)
    if case in ("malformed-image", "local-registry-image", "bad-role"):
        arguments += ["--instance-type", "ml.m5.large"]
    with pytest.raises(SystemExit) as exit_info:
        deploy.parse_args(arguments)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("deploy.py: error: ")
    assert expected in lines[0]
    assert lines[0].endswith("(--help for usage)")


def test_instance_types_and_ami_versions_come_from_botocore() -> None:
    types = deploy.instance_types()
    assert {"ml.g5.xlarge", "ml.m5.large", "ml.g4dn.xlarge"} <= set(types)
    assert all(name.startswith("ml.") for name in types)
    assert deploy.GPU_AMI in deploy.ami_versions()


def test_names() -> None:
    from datetime import datetime, timezone

    suffix = deploy.stamp(datetime(2025, 3, 4, 5, 6, 7, 891_000, tzinfo=timezone.utc))
    assert suffix == "20250304-050607-891"
    pattern = deploy.made_name("digits")
    assert pattern.fullmatch(f"digits-{suffix}")
    assert not pattern.fullmatch(f"digits-2-{suffix}")  # another endpoint's
    assert not pattern.fullmatch(f"digits-{suffix}-{suffix}")
    assert len(f"{'x' * deploy.MAX_NAME}-{suffix}") == 63  # SageMaker's limit on names


class Scripted:
    """SageMaker's DescribeEndpoint answers, one per poll (the last repeats), and a clock that
    each poll moves on by ``step`` seconds."""

    def __init__(self, answers: list[dict[str, Any] | None], step: float = 30) -> None:
        self.answers = answers
        self.now = 0.0
        self.step = step
        self.lines: list[str] = []

    def describe(self) -> dict[str, Any] | None:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def sleep(self, seconds: float) -> None:
        self.now += self.step

    def wait(self, config: str = "new", timeout: float = 3600, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = deploy.wait_for_endpoint(
            self.describe,
            "digits",
            config,
            timeout=timeout,
            poll=30,
            clock=lambda: self.now,
            sleep=self.sleep,
            out=self.lines.append,
            **kwargs,
        )
        return result


def status(name: str, config: str = "new", reason: str | None = None) -> dict[str, Any]:
    found = {"EndpointStatus": name, "EndpointConfigName": config}
    if reason:
        found["FailureReason"] = reason
    return found


def test_wait_prints_each_status_change_with_the_time() -> None:
    script = Scripted([*[status("Creating")] * 12, status("InService")])
    assert script.wait()["EndpointStatus"] == "InService"
    assert script.lines == [
        "Endpoint digits: Creating (0 s)",
        "Endpoint digits: still Creating (300 s)",
        "Endpoint digits: InService (360 s)",
    ]


def test_wait_gives_sagemakers_failure_reason() -> None:
    reason = "The primary container for production variant AllTraffic did not pass the ping"
    script = Scripted([status("Creating"), status("Failed", reason=reason)])
    with pytest.raises(deploy.EndpointFailed, match=f"is Failed after 30 s: {reason}"):
        script.wait()
    assert script.lines[-1] == "Endpoint digits: Failed (30 s)"


def test_wait_sees_an_update_rolled_back() -> None:
    old = "Cannot update: an earlier failure"
    reason = "Image does not exist"
    script = Scripted(
        [
            status("InService", "old", old),  # the update is not visible yet: wait on
            status("Updating", "old", old),
            status("InService", "old", reason),
        ]
    )
    with pytest.raises(deploy.EndpointFailed, match=f"rolled it back after 60 s .* {reason}"):
        script.wait(previous_reason=old)
    assert [line.split(": ")[1] for line in script.lines] == [
        "InService (0 s)",
        "Updating (30 s)",
        "InService (60 s)",
    ]
    done = Scripted([status("Updating", "old"), status("InService", "new")])
    assert done.wait()["EndpointConfigName"] == "new"


def test_wait_times_out_and_says_so() -> None:
    script = Scripted([status("Creating")])
    with pytest.raises(deploy.StillWaiting, match="still Creating after 90 s"):
        script.wait(timeout=90)


def test_wait_stops_when_the_endpoint_is_gone() -> None:
    script = Scripted([status("Creating"), None])
    with pytest.raises(deploy.EndpointFailed, match="is gone"):
        script.wait()


class Runtime:
    """SageMaker runtime's InvokeEndpoint, answering as SageMaker does when the container
    answers 4xx or 5xx: a ModelError carrying the container's status."""

    def __init__(self, status: int) -> None:
        self.status = status

    def invoke_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        import botocore.exceptions

        message = f'Received client error ({self.status}) from primary with message "..."'
        raise botocore.exceptions.ClientError(
            {
                "Error": {"Code": "ModelError", "Message": message},
                "OriginalStatusCode": self.status,
                "OriginalMessage": '{"code": 400, "message": "the input does not fit"}',
            },
            "InvokeEndpoint",
        )


def invoking(model: Path, status: int, *extra: str) -> Any:
    args = deploy.parse_args(argv(model, "--instance-type", "ml.m5.large", *extra))
    clients = deploy.Clients(None, Runtime(status), None, None, None, "us-east-1")
    return deploy.Deployment(args, clients)


def test_a_4xx_to_the_default_body_proves_the_endpoint_answers(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    invoking(model, 400).invoke()
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("Invoked sagemaker-torch-serving: the container answered 400 to the ")
    assert line.endswith("the endpoint answers (--invoke-file sends a body that fits the model)")
    with pytest.raises(deploy.Failure, match=r"InvokeEndpoint failed: ModelError: .*\(500\)"):
        invoking(model, 500).invoke()  # the container failed: the deploy did
    body = tmp_path / "body.json"
    body.write_text("[1, 2]")
    with pytest.raises(deploy.Failure, match=r"\(400\)"):  # the user's own body must fit
        invoking(model, 400, "--invoke-file", str(body)).invoke()


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing here may reach AWS: no credentials, and every endpoint a closed one."""
    for key in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield
