"""The predict command (`python -m sagemaker_torch_serving predict`): a model run in-process on
files, through the workers' handler path, with the server's answers, messages and exit codes."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sagemaker_torch_serving import __main__ as entry
from sagemaker_torch_serving.archive import pack
from sagemaker_torch_serving.handler.build import build_pipeline
from sagemaker_torch_serving.handler.context import ServingContext
from sagemaker_torch_serving.handler.pipeline import Request, StageTimes
from sagemaker_torch_serving.predict.cli import main
from sagemaker_torch_serving.settings import Settings
from tests.conftest import REPO

COMMAND = [sys.executable, "-m", "sagemaker_torch_serving", "predict"]
MS = r"\d+\.\d\d ms"


def predict(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run the command in this process: its exit code, stdout and stderr."""
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content))
    return path


def png(width: int = 2, height: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def model_with_code(tmp_path: Path, scale_model: Path, source: str) -> Path:
    """The scale model in a folder of its own, with ``source`` as its code/inference.py."""
    model = tmp_path / "model"
    write(model / "model.pt", (scale_model / "model.pt").read_bytes())
    write(model / "code" / "inference.py", source)
    return model


def test_a_model_directory_answers_a_json_file_and_says_how_long_each_stage_took(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scale_model: Path
) -> None:
    body = write(tmp_path / "x.json", "[[1, 2]]")
    code, out, err = predict(capsys, "--model", scale_model, "--input", body)
    assert code == 0, err
    lines = out.splitlines()
    assert f"model: {scale_model}" in lines
    assert "code: no handler module: user none; the rest are defaults" in lines
    assert f"[0] {body} (application/json, 8 bytes): 200 application/json (15 bytes)" in lines
    assert "[[2.0,4.0,1.0]]" in lines  # y = 2x, and 1 row in the forward pass
    timings = [line for line in lines if line.startswith("time: ")]
    assert [re.sub(MS, "MS", line) for line in timings] == [
        "time: model load MS",
        "time: input MS",
        "time: predict MS (the default predict_fn, batch of 1)",
        "time: output MS",
    ]


def test_several_inputs_are_one_batch_each_answered_and_a_bad_one_fails_alone_as_on_the_server(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scale_model: Path
) -> None:
    inputs = [
        write(tmp_path / "a.json", "[[1, 2]]"),
        write(tmp_path / "bad.json", "[[1, 2"),
        write(tmp_path / "c.csv", "3,4\n"),
    ]
    arguments = [item for path in inputs for item in ("--input", path)]
    code, out, _ = predict(capsys, "--model", scale_model, *arguments)
    assert code == 1  # an input was answered 4xx
    lines = out.splitlines()
    # a.json and c.csv went through one forward pass: the model saw 2 rows.
    assert "[[2.0,4.0,2.0]]" in lines
    assert "[[6.0,8.0,2.0]]" in lines
    # bad.json: the status and the one-line message the worker's pipeline answers for it.
    settings = Settings.from_env({"SERVING_MODEL_DIR": str(scale_model)})
    pipeline = build_pipeline(settings, {"gpu_id": None})
    context = ServingContext(pipeline.system_properties, "id", {})
    (answer,) = pipeline.run([Request("id", b"[[1, 2", "application/json", None, context)])
    server_message = json.loads(answer.body)["message"]
    assert server_message.startswith("could not decode the application/json body")
    header = f"[1] {inputs[1]} (application/json, 6 bytes): 400 application/json"
    assert lines[lines.index(server_message) - 1].startswith(header)
    timing = {line.split()[1]: line for line in lines if line.startswith("time: ")}
    assert re.fullmatch(rf"time: input \[0\] {MS}, \[1\] {MS}, \[2\] {MS}", timing["input"])
    assert timing["predict"].endswith("(the default predict_fn, batch of 2)")  # 2 decoded
    assert re.fullmatch(rf"time: output \[0\] {MS}, \[2\] {MS}", timing["output"])  # not [1]


@pytest.mark.parametrize("given", ["archive", "folder holding only the archive"])
def test_a_model_tar_gz_runs_with_its_own_code_on_a_png_and_its_folder_is_removed(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    scale_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    given: str,
) -> None:
    code_dir = write(
        tmp_path / "src" / "inference.py",
        """
        import json

        def output_fn(prediction, accept):
            body = {"shape": list(prediction.shape), "first": float(prediction.flatten()[0])}
            return json.dumps(body), "application/json"
        """,
    ).parent
    archive = tmp_path / "mounted" / "model.tar.gz"
    pack(archive, scale_model, code_dir)
    model = archive if given == "archive" else archive.parent
    image = write(tmp_path / "red.png", png())
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    code, out, err = predict(capsys, "--model", model, "--input", image)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"model: {model} (unpacked into {temp}")
    assert lines[1].endswith("code/inference.py: user output_fn; the rest are defaults")
    # The default image decoder's [1, 3, 2, 2] in [0, 1] (red: 1.0 first), doubled by the model,
    # then the archive's output_fn.
    assert json.loads(lines[4]) == {"shape": [1, 4, 2, 2], "first": 2.0}
    assert re.fullmatch(rf"time: unpack {MS}", lines[5])
    assert list(temp.iterdir()) == []


def test_stdin_and_output_files_as_a_subprocess(tmp_path: Path, scale_model: Path) -> None:
    out = tmp_path / "answer.npy"
    result = subprocess.run(
        [
            *COMMAND,
            "--model",
            str(scale_model),
            "--input",
            "-",
            "--content-type",
            "application/json",
            "--accept",
            "application/x-npy",
            "--output",
            str(out),
        ],
        input=b"[[5]]",
        capture_output=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "[0] stdin (application/json, 5 bytes): 200 application/x-npy (136 bytes)" in lines
    assert f"wrote the body to {out}" in lines
    assert np.load(out, allow_pickle=False).tolist() == [[10.0, 1.0]]


def test_several_outputs_are_numbered_before_the_extension_and_binary_bodies_summarized(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scale_model: Path
) -> None:
    first, second = write(tmp_path / "1.json", "[[1]]"), write(tmp_path / "2.json", "[[2]]")
    code, out, _ = predict(
        capsys, "--model", scale_model, "--input", first, "--input", second,
        "--accept", "application/x-npy", "--output", tmp_path / "out.npy",
    )  # fmt: skip
    assert code == 0
    assert np.load(tmp_path / "out-0.npy").tolist() == [[2.0, 2.0]]
    assert np.load(tmp_path / "out-1.npy").tolist() == [[4.0, 2.0]]
    code, out, _ = predict(
        capsys, "--model", scale_model, "--input", first, "--accept", "application/x-npy"
    )
    assert "(136 bytes: a float32 array of shape [1, 2], not printed" in out


def test_a_model_fn_that_raises_exits_1_with_the_servers_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scale_model: Path
) -> None:
    model = model_with_code(
        tmp_path,
        scale_model,
        """
        def model_fn(model_dir):
            return os.path.join(model_dir, "model.pt")
        """,
    )
    body = write(tmp_path / "x.json", "[[1]]")
    code, out, err = predict(capsys, "--model", model, "--input", body)
    assert code == 1
    where = f"{model / 'code' / 'inference.py'}:3, in model_fn"
    assert err == (
        f"predict: the model failed to load: NameError: name 'os' is not defined (at {where})\n"
    )
    assert out == ""


def test_a_user_function_that_fails_is_the_servers_500_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scale_model: Path
) -> None:
    model = model_with_code(
        tmp_path,
        scale_model,
        """
        def predict_fn(data, model):
            return 1 / 0
        """,
    )
    code, out, _ = predict(capsys, "--model", model, "--input", write(tmp_path / "x.json", "[[1]]"))
    assert code == 1
    lines = out.splitlines()
    assert "predict_fn failed: ZeroDivisionError: division by zero" in lines
    assert any(line.endswith("(predict_fn on 1 input, one by one)") for line in lines)


def test_a_transform_fn_is_timed_per_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, scale_model: Path
) -> None:
    model = model_with_code(
        tmp_path,
        scale_model,
        """
        def transform_fn(model, body, content_type, accept):
            return body.upper(), "text/plain"
        """,
    )
    code, out, _ = predict(
        capsys, "--model", model, "--input", write(tmp_path / "x.csv", "abc"),
        "--input", write(tmp_path / "y.csv", "def"),
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert "ABC" in lines and "DEF" in lines
    assert [line.split()[1] for line in lines if line.startswith("time: ")] == [
        "model",
        "transform",
    ]


def test_missing_model_exits_2_with_one_line_before_importing_torch(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = subprocess.run(
        [*COMMAND, "--model", str(missing), "--input", "x.json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == f"predict: --model {missing}: no such file or directory\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "{json}"], "predict: the following arguments are required: --model"),
        (["--model", "{model}"], "predict: the following arguments are required: --input"),
        (["--model", "{model}", "--input", "{dir}"], "predict: --input {dir}: cannot read it"),
        (
            ["--model", "{model}", "--input", "{json}", "--content-type", "json"],
            "predict: --content-type 'json' is not a media type",
        ),
        (
            ["--model", "{model}", "--input", "{json}", "--accept", "text/csv, csv"],
            "predict: --accept 'text/csv, csv' is not a list of media types",
        ),
        (["--model", "{pt}", "--input", "{json}"], "predict: --model {pt} is neither a folder"),
        (
            ["--model", "{model}", "--input", "{json}", "--output", "{dir}/no/out.json"],
            "predict: --output {dir}/no/out.json: the folder {dir}/no does not exist",
        ),
        (["--model", "{model}", "--input", "-", "--input", "-"], "predict: --input - (stdin) may"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    scale_model: Path,
    arguments: list[str],
    message: str,
) -> None:
    names = {
        "model": str(scale_model),
        "pt": str(scale_model / "model.pt"),
        "json": str(write(tmp_path / "x.json", "[[1]]")),
        "dir": str(tmp_path),
    }
    code, out, err = predict(capsys, *(argument.format(**names) for argument in arguments))
    assert code == 2
    assert err.startswith(message.format(**names))
    assert err.count("\n") == 1
    assert out == ""


def test_a_bad_setting_exits_2_and_a_bad_archive_1_as_the_server_does(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    scale_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = write(tmp_path / "x.json", "[[1]]")
    monkeypatch.setenv("SERVING_DEVICE", "tpu")
    code, _, err = predict(capsys, "--model", scale_model, "--input", body)
    assert (code, err) == (
        2,
        "predict: invalid setting: SERVING_DEVICE must be auto, cpu or cuda, got 'tpu'\n",
    )
    monkeypatch.delenv("SERVING_DEVICE")
    junk = write(tmp_path / "model.tar.gz", b"not a tar")
    code, _, err = predict(capsys, "--model", junk, "--input", body)
    assert (code, err) == (1, f"predict: {junk} is not a tar archive (gzip-compressed or plain)\n")


def test_the_stage_times_are_filled_only_when_asked(tmp_path: Path, scale_model: Path) -> None:
    settings = Settings.from_env({"SERVING_MODEL_DIR": str(scale_model)})
    pipeline = build_pipeline(settings, {"gpu_id": None})
    context = ServingContext(pipeline.system_properties, "id", {})
    requests = [Request(str(n), b"[[1]]", "application/json", None, context) for n in range(2)]
    times = StageTimes()
    assert [answer.status for answer in pipeline.run(requests, times)] == [200, 200]
    assert sorted(times.input) == sorted(times.output) == [0, 1]
    assert times.predict is not None and times.predict > 0
    assert times.predicted == 2
    assert times.transform == {}
    assert [answer.body for answer in pipeline.run(requests)] == [b"[[2.0,2.0]]"] * 2


def test_the_package_command_serves_with_no_argument_or_serve_and_refuses_others(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker_torch_serving.server import supervisor

    served: list[bool] = []
    monkeypatch.setattr(supervisor, "main", lambda: served.append(True) or 0)
    assert entry.main([]) == 0
    assert entry.main(["serve"]) == 0
    assert served == [True, True]
    assert entry.main(["serve", "--port", "9"]) == 2
    assert entry.main(["bogus"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[1].startswith("sagemaker_torch_serving: unknown command 'bogus'; usage:")
    assert served == [True, True]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_predict_passes_its_variables_and_needs_an_input() -> None:
    variables = ["MODEL=m.tar.gz", "INPUT=a.png b.json", "ACCEPT=text/csv, */*", "OUTPUT=o.json"]
    dry = subprocess.run(
        ["make", "-n", "predict", *variables],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    command = " ".join(dry.stdout.replace("\\\n", " ").split())
    assert (
        "-m sagemaker_torch_serving predict --model m.tar.gz --input a.png --input b.json "
        "--accept 'text/csv, */*' --output o.json"
    ) in command
    missing = subprocess.run(
        ["make", "predict", "MODEL=m.tar.gz"], capture_output=True, text=True, cwd=REPO
    )
    assert missing.returncode != 0
    assert 'make predict needs INPUT="file ..."' in missing.stderr
