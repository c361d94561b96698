"""scripts/push.py against real servers on 127.0.0.1: a CNCF distribution registry
(`docker-registry`), moto in server mode for the ECR and STS APIs, and the local Docker engine.

Nothing here talks to AWS or any host but 127.0.0.1: every environment has instance metadata
disabled, no AWS config files, and HTTP(S)_PROXY pointing at a closed port on 127.0.0.1, so a
call that tried to leave the machine would fail there instead. No docker login or push goes to
an ECR host: the ECR half is checked up to the login credentials and the URI.

Skipped when no Docker engine answers, unless CI=true (then those are failures).
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import boto3
import docker
import pytest
import requests

from tests.conftest import REPO, load_script
from tests.integration.aws import FAKE_AWS, PROXY_VARS, aws_free_env
from tests.ports import free_port

PUSH_SCRIPT = REPO / "scripts" / "push.py"
BASE_IMAGE = "local/bookworm:base"
DIGEST = r"sha256:[0-9a-f]{64}"

push = load_script("push")


def unavailable(reason: str) -> NoReturn:
    """Skip, except on CI, which must run these tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: these tests must run)")
    pytest.skip(reason)


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # straight to 127.0.0.1, whatever proxy the machine has
    return session


def wait_http(url: str, process: subprocess.Popen, log: Path, want: int | None = None) -> None:
    """Wait until url answers (with status `want`, if given), failing if the server exits."""
    deadline = time.monotonic() + 30
    with http() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"{url}: server exited {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                status = client.get(url, timeout=2).status_code
                if want is None or status == want:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer in 30 s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_push(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PUSH_SCRIPT), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module", autouse=True)
def client() -> Iterator[docker.DockerClient]:
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as exc:
        unavailable(f"no Docker engine answers: {exc}")
    yield engine
    engine.close()


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    id: str
    label: str


@pytest.fixture
def image(client: docker.DockerClient) -> Iterator[BuiltImage]:
    """A one-label image on the local base image, removed (with every tag) at teardown."""
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"no {BASE_IMAGE} image: run scripts/make_base_image.sh")
    label = uuid.uuid4().hex
    ref = f"serving-push-test:{label}"
    dockerfile = f"FROM {BASE_IMAGE}\nLABEL test={label}\n".encode()
    built, _ = client.images.build(
        fileobj=io.BytesIO(dockerfile), tag=ref, network_mode="host", rm=True
    )
    yield BuiltImage(ref, built.id, label)
    try:
        client.images.remove(built.id, force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A CNCF distribution registry on 127.0.0.1 (plain HTTP: 127.0.0.0/8 is an insecure
    registry for the engine by default); its HOST:PORT."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not os.access(binary, os.X_OK):
        unavailable("docker-registry is not installed (Debian package docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {json.dumps(str(root / 'data'))}}}, "
        "delete: {enabled: true}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    log = root / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", process, log, want=200)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)
        shutil.rmtree(root / "data", ignore_errors=True)


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto in server mode on 127.0.0.1: ECR and STS endpoints for --endpoint-url."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=aws_free_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, process, log)
        yield url
    finally:
        stop(process)


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for this process, as aws_free_env() does for a child."""
    for key in list(os.environ):
        if key.startswith("AWS_") or key.lower() in PROXY_VARS:
            monkeypatch.delenv(key)
    for key, value in aws_free_env(**FAKE_AWS).items():
        if key not in os.environ:
            monkeypatch.setenv(key, value)


def test_push_to_local_registry_pull_back_and_run(
    client: docker.DockerClient, image: BuiltImage, registry: str
) -> None:
    result = run_push(
        image.ref,
        "--registry",
        registry,
        "--repository",
        "serving-test",
        "--tag",
        "t1",
        env=aws_free_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[-1] == f"Image URI for CreateModel: {registry}/serving-test:t1"
    found = re.search(
        rf"^Image URI by digest: {registry}/serving-test@({DIGEST})$", result.stdout, re.M
    )
    assert found, result.stdout
    digest = found.group(1)
    assert f"Pushed digest: {digest}" in lines
    assert any(line.endswith(": Pushed") or ": Pushed (" in line for line in lines), lines

    # The registry serves that manifest under the tag.
    with http() as session:
        answer = session.get(
            f"http://{registry}/v2/serving-test/manifests/t1",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=10,
        )
    assert answer.status_code == 200
    assert answer.headers["Docker-Content-Digest"] == digest

    # Gone locally (every tag), then back from the registry by digest.
    client.images.remove(image.id, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image.id)
    by_digest = f"{registry}/serving-test@{digest}"
    pulled = client.images.pull(by_digest)
    assert pulled.id == image.id
    assert pulled.labels["test"] == image.label
    assert by_digest in pulled.attrs["RepoDigests"]
    output = client.containers.run(
        by_digest, ["python3", "-c", "print('ok')"], network_mode="host", remove=True
    )
    assert output == b"ok\n"


def test_ecr_api_half_against_moto(moto_url: str, fake_aws: None) -> None:
    session = boto3.Session()
    ecr = session.client("ecr", endpoint_url=moto_url)
    account = session.client("sts", endpoint_url=moto_url).get_caller_identity()["Account"]
    name = f"serving-test-{uuid.uuid4().hex[:8]}"
    with pytest.raises(push.PushError, match="ECR DescribeRepositories failed: Repository"):
        push.aws_call("ECR DescribeRepositories", ecr.describe_repositories, repositoryNames=[name])

    target = push.ecr_target(session, name, moto_url)
    repository = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    registry = f"{account}.dkr.ecr.us-east-1.amazonaws.com"
    assert repository["repositoryUri"] == f"{registry}/{name}"
    assert (target.registry, target.account, target.region) == (registry, account, "us-east-1")
    assert target.username == "AWS"
    assert target.password
    assert target.auth == {"username": "AWS", "password": target.password}
    assert target.password not in repr(target)

    # Idempotent: a second run finds the repository and changes nothing.
    assert push.ecr_target(session, name, moto_url) == target
    again, created = push.ensure_repository(ecr, name)
    assert not created
    assert again["repositoryArn"] == repository["repositoryArn"]
    other, created = push.ensure_repository(ecr, f"{name}-other")
    assert created
    assert other["imageScanningConfiguration"] == {"scanOnPush": True}
    names = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    assert names.count(name) == 1

    assert push.image_uri(target.registry, name, "t1") == f"{registry}/{name}:t1"
    digest = "sha256:" + "0" * 64
    assert push.image_uri(target.registry, name, digest=digest) == f"{registry}/{name}@{digest}"

    # An endpoint that does not answer: one line naming the call that failed.
    with pytest.raises(push.PushError, match=r"^ECR \w+ failed: EndpointConnection"):
        push.ecr_target(session, name, f"http://127.0.0.1:{free_port()}")


FAILURES = {
    # case: (arguments, extra environment, what stderr says)
    "no-docker": (
        ["{image}", "--registry", "127.0.0.1:{closed}"],
        {"DOCKER_HOST": "unix:///nonexistent.sock"},
        "cannot reach the Docker daemon",
    ),
    "missing-image": (
        ["serving-push-test:missing-{closed}", "--registry", "127.0.0.1:{closed}"],
        {},
        "image serving-push-test:missing-{closed} not found locally",
    ),
    "no-credentials": (
        ["{image}", "--region", "us-east-1", "--endpoint-url", "http://127.0.0.1:{closed}"],
        {},
        "no AWS credentials found",
    ),
    "unknown-region": (
        ["{image}", "--region", "mars-north-1", "--endpoint-url", "http://127.0.0.1:{closed}"],
        FAKE_AWS,
        "unknown AWS region 'mars-north-1'",
    ),
    "registry-down": (
        ["{image}", "--registry", "127.0.0.1:{closed}", "--repository", "serving-test"],
        {},
        "push failed: ",
    ),
}


@pytest.mark.parametrize("case", FAILURES)
def test_friendly_failures(client: docker.DockerClient, image: BuiltImage, case: str) -> None:
    arguments, extra, expected = FAILURES[case]
    closed = str(free_port())  # nothing listens there

    def fill(text: str) -> str:
        return text.format(image=image.ref, closed=closed)

    result = run_push(*map(fill, arguments), env=aws_free_env(**extra))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("push.py: error: ")
    assert fill(expected) in lines[0]
    if case == "registry-down":
        assert f"127.0.0.1:{closed}" in lines[0]
        # The tag made for the push is taken back.
        assert client.images.get(image.id).tags == [image.ref]


class Screen:
    """Enough of a terminal to replay what Progress writes: lines, cursor up/down, erase."""

    def __init__(self) -> None:
        self.lines = [""]
        self.row = 0

    def feed(self, text: str) -> list[str]:
        for token in re.findall(r"\x1b\[\d*[ABK]|\r|\n|[^\x1b\r\n]+", text):
            if token == "\n":
                self.row += 1
                if self.row == len(self.lines):
                    self.lines.append("")
            elif token == "\r":
                pass  # every write here starts at column 0 or appends a whole line
            elif token.startswith("\x1b"):
                count, command = int(token[2:-1] or 1), token[-1]
                if command == "A":
                    self.row -= count
                elif command == "B":
                    self.row += count
                else:  # K: erase the line
                    self.lines[self.row] = ""
            else:
                self.lines[self.row] += token
        return [line for line in self.lines if line]


EVENTS = [
    {"status": "The push refers to repository [127.0.0.1:5000/serving-test]"},
    {"status": "Preparing", "progressDetail": {}, "id": "aaa"},
    {"status": "Preparing", "progressDetail": {}, "id": "bbb"},
    {"status": "Waiting", "progressDetail": {}, "id": "bbb"},
    *(
        {
            "status": "Pushing",
            "progressDetail": {"current": n, "total": 4_000_000},
            "progress": f"[{'=' * n}>] {n}MB/4MB",
            "id": "aaa",
        }
        for n in range(1, 5)
    ),
    {"status": "Layer already exists", "progressDetail": {}, "id": "bbb"},
    {"status": "Pushed", "progressDetail": {}, "id": "aaa"},
    {"status": f"t1: digest: sha256:{'1' * 64} size: 529"},
    {"progressDetail": {}, "aux": {"Tag": "t1", "Digest": f"sha256:{'1' * 64}", "Size": 529}},
]


def test_progress_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # lines are cut to the terminal's width
    plain = io.StringIO()
    progress = push.Progress(plain, tty=False)
    for event in EVENTS:
        progress.update(event)
    assert plain.getvalue().splitlines() == [
        "The push refers to repository [127.0.0.1:5000/serving-test]",
        "aaa: Preparing",
        "bbb: Preparing",
        "bbb: Waiting",
        "aaa: Pushing",  # once, however many progress events
        "bbb: Layer already exists",
        "aaa: Pushed (4.0 MB)",
        f"t1: digest: sha256:{'1' * 64} size: 529",
    ]

    terminal = io.StringIO()
    progress = push.Progress(terminal, tty=True)
    screen = Screen()
    for event in EVENTS[:6]:
        progress.update(event)
    assert screen.feed(terminal.getvalue()) == [
        "The push refers to repository [127.0.0.1:5000/serving-test]",
        "aaa: Pushing [==>] 2MB/4MB",
        "bbb: Waiting",
    ]
    terminal.truncate(0)
    terminal.seek(0)
    for event in EVENTS[6:]:
        progress.update(event)
    assert screen.feed(terminal.getvalue())[1:3] == [
        "aaa: Pushed (4.0 MB)",
        "bbb: Layer already exists",
    ]
    assert screen.lines[-2].startswith("t1: digest: sha256:")


@pytest.mark.parametrize(
    ("argv", "repository", "tag"),
    [
        (["sagemaker-torch-serving:cpu"], "sagemaker-torch-serving", "cpu"),
        (["127.0.0.1:5000/team/my-model"], "my-model", "latest"),
        (["registry.example:5000/team/my-model:v3"], "my-model", "v3"),
        ([f"my-model@sha256:{'2' * 64}"], "my-model", "latest"),
        (["my-model:v3", "--repository", "team/other", "--tag", "t9"], "team/other", "t9"),
    ],
)
def test_repository_and_tag_defaults(argv: list[str], repository: str, tag: str) -> None:
    args = push.parse_args(argv)
    assert (args.repository, args.tag) == (repository, tag)
