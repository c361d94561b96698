"""Batch transform's records: CSV rows and JSON lines in one request, one answer line each.

In real time a bad record fails the request with a 400 that names its line; in batch transform
(SAGEMAKER_BATCH) with the default handlers it is answered in place, and the good records are
answered as each would be alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sagemaker_torch_serving.handler.build import build_pipeline
from sagemaker_torch_serving.handler.context import ServingContext
from sagemaker_torch_serving.handler.pipeline import Answer, Pipeline, Request
from sagemaker_torch_serving.settings import Settings

RECORDS = 1000
BAD = (1, 500, 1000)  # the bad records' lines


class RowWise(torch.nn.Module):
    """y = 2x + 1: each row's output depends on that row alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1


class Summed(torch.nn.Module):
    """One row for the whole batch: not a model of records."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=0, keepdim=True)


def model_dir(tmp_path: Path, module: torch.nn.Module, source: str | None = None) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    torch.jit.script(module).save(str(directory / "model.pt"))
    if source is not None:
        (directory / "code").mkdir()
        (directory / "code" / "inference.py").write_text(source)
    return directory


def pipeline_for(directory: Path, batch: bool) -> Pipeline:
    env = {"SERVING_MODEL_DIR": str(directory), "SAGEMAKER_BATCH": "true" if batch else "false"}
    return build_pipeline(Settings.from_env(env), {"gpu_id": None})


def ask(pipeline: Pipeline, body: bytes, content_type: str, accept: str) -> Answer:
    context = ServingContext(pipeline.system_properties, "id", {"accept": accept})
    (answer,) = pipeline.run([Request("id", body, content_type, accept, context)])
    return answer


def message(answer: Answer) -> str:
    return str(json.loads(answer.body)["message"])


@pytest.fixture
def row_wise(tmp_path: Path) -> Path:
    return model_dir(tmp_path, RowWise())


def csv_records() -> list[str]:
    rows = [f"{n},{n / 8},{-n}" for n in range(1, RECORDS + 1)]
    for line in BAD:
        rows[line - 1] = f"{line},abc,3"
    return rows


def jsonl_records() -> list[str]:
    rows = [json.dumps([n, n / 8, -n]) for n in range(1, RECORDS + 1)]
    rows[BAD[0] - 1] = "[1, 2"  # not JSON
    rows[BAD[1] - 1] = '["a", 2, 3]'  # not numbers
    rows[BAD[2] - 1] = "[1, null, 3]"  # a null
    return rows


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/csv", b"1,2\n3,4\nabc,5\n6,7\n", "line 3: could not convert 'abc' to a number"),
        ("text/csv", b"1,2\n3,4\n\n5,6,7\n", "line 4: has 3 values, line 1 has 2"),
        ("application/jsonlines", b"[1,2]\n[3,4\n", "line 2: not valid JSON"),
        ("application/jsonlines", b'[1,2]\n\n["x",4]\n', "line 3: not a number or an array"),
        ("application/jsonlines", b"[1,2]\n[3,null]\n", "line 2: null is not a number"),
        ("application/jsonlines", b"[1,2]\n[3]\n[4,5]\n", "line 2: has shape [1], line 1 has"),
    ],
)
def test_in_real_time_a_bad_record_is_a_400_naming_its_line(
    row_wise: Path, content_type: str, body: bytes, expected: str
) -> None:
    answer = ask(pipeline_for(row_wise, batch=False), body, content_type, content_type)
    assert answer.status == 400
    assert message(answer).startswith(f"could not decode the {content_type} body: ")
    assert expected in message(answer)


def test_in_real_time_good_records_are_answered_as_before(row_wise: Path) -> None:
    answer = ask(pipeline_for(row_wise, batch=False), b"1,2\n3,4\n", "text/csv", "text/csv")
    assert (answer.status, answer.body) == (200, b"3,5\n7,9\n")


@pytest.mark.parametrize(
    ("content_type", "records"),
    [("text/csv", csv_records), ("application/jsonlines", jsonl_records)],
)
@pytest.mark.parametrize("accept", ["text/csv", "application/jsonlines"])
def test_in_batch_transform_each_record_gets_its_own_line_in_order(
    row_wise: Path, content_type: str, records, accept: str
) -> None:
    rows = records()
    batch = pipeline_for(row_wise, batch=True)
    answer = ask(batch, "\n".join(rows).encode() + b"\n", content_type, accept)
    assert answer.status == 200
    assert answer.content_type == accept
    lines = answer.body.decode().splitlines()
    assert len(lines) == RECORDS
    alone = pipeline_for(row_wise, batch=False)
    for number, (row, line) in enumerate(zip(rows, lines, strict=True), 1):
        if number in BAD:
            if accept == "text/csv":
                assert line.startswith(f'"error: line {number}: ') and line.endswith('"')
            else:
                assert json.loads(line)["error"].startswith(f"line {number}: ")
            continue
        single = ask(alone, row.encode() + b"\n", content_type, accept)
        assert single.status == 200
        assert line.encode() + b"\n" == single.body, number


def test_in_batch_transform_errors_name_why(row_wise: Path) -> None:
    body = b'1,2\n3,"x"\n5,6\n'
    answer = ask(pipeline_for(row_wise, batch=True), body, "text/csv", "text/csv")
    assert answer.status == 200
    assert answer.body == b'3,5\n"error: line 2: could not convert \'""x""\' to a number"\n11,13'


def test_in_batch_transform_json_is_one_array_with_errors_in_place(row_wise: Path) -> None:
    body = b"[1,2]\n[1,\n[3,4]\n"
    answer = ask(
        pipeline_for(row_wise, batch=True), body, "application/jsonlines", "application/json"
    )
    assert answer.status == 200
    rows = json.loads(answer.body)
    assert rows[0] == [3.0, 5.0] and rows[2] == [7.0, 9.0]
    assert rows[1]["error"].startswith("line 2: not valid JSON")


def test_in_batch_transform_a_vector_output_is_one_line_per_record(tmp_path: Path) -> None:
    class Total(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(dim=1)

    pipeline = pipeline_for(model_dir(tmp_path, Total()), batch=True)
    answer = ask(pipeline, b"1,2\n3,4\n", "text/csv", "text/csv")
    assert answer.body == b"3\n7"  # AssembleWith=Line adds the newline after each answer
    answer = ask(pipeline, b"1,2\nx,4\n3,4\n", "text/csv", "text/csv")
    assert answer.body == b"3\n\"error: line 2: could not convert 'x' to a number\"\n7"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/csv", b"a,1\n\n2,b\n"), ("application/jsonlines", b"[1\nnull\n")],
)
def test_in_batch_transform_all_bad_records_are_a_400_naming_the_first(
    row_wise: Path, content_type: str, body: bytes
) -> None:
    answer = ask(pipeline_for(row_wise, batch=True), body, content_type, content_type)
    assert answer.status == 400
    assert "line 1: " in message(answer)


def test_in_batch_transform_ragged_good_records_are_a_400(row_wise: Path) -> None:
    body = b"1,2\n3,4\n5,6,7\nx,1\n8,9\n"
    answer = ask(pipeline_for(row_wise, batch=True), body, "text/csv", "text/csv")
    assert answer.status == 400
    assert "line 3: has 3 values, line 1 has 2" in message(answer)


def test_a_model_that_does_not_answer_per_record_is_answered_as_in_real_time(
    tmp_path: Path,
) -> None:
    pipeline = pipeline_for(model_dir(tmp_path, Summed()), batch=True)
    good = ask(pipeline, b"1,2\n3,4\n", "text/csv", "text/csv")
    assert (good.status, good.body) == (200, b"4,6")
    bad = ask(pipeline, b"1,2\nx,4\n3,4\n", "text/csv", "text/csv")
    assert bad.status == 400
    assert "line 2: could not convert 'x' to a number" in message(bad)


def test_an_accept_without_lines_answers_bad_records_with_a_400(row_wise: Path) -> None:
    body = b"1,2\nx,4\n"
    answer = ask(pipeline_for(row_wise, batch=True), body, "text/csv", "application/x-npy")
    assert answer.status == 400
    assert "line 2: " in message(answer)


def test_a_user_output_fn_keeps_control_in_batch_transform(tmp_path: Path) -> None:
    source = "def output_fn(prediction, accept):\n    return repr(prediction.shape), 'text/plain'\n"
    pipeline = pipeline_for(model_dir(tmp_path, RowWise(), source), batch=True)
    good = ask(pipeline, b"1,2\n3,4\n5,6\n", "text/csv", "text/csv")
    assert (good.status, good.body) == (200, b"torch.Size([3, 2])")
    bad = ask(pipeline, b"1,2\nx,4\n5,6\n", "text/csv", "text/csv")
    assert bad.status == 400
    assert "line 2: could not convert 'x' to a number" in message(bad)


def test_a_user_input_fn_keeps_control_in_batch_transform(tmp_path: Path) -> None:
    source = (
        "import torch\n"
        "def input_fn(body, content_type):\n"
        "    return torch.tensor([[float(len(body.splitlines()))]])\n"
    )
    pipeline = pipeline_for(model_dir(tmp_path, RowWise(), source), batch=True)
    answer = ask(pipeline, b"1,2\nx,4\n5,6\n", "text/csv", "text/csv")
    assert (answer.status, answer.body) == (200, b"7\n")


def test_records_count_against_the_decoded_limit(row_wise: Path) -> None:
    settings = Settings.from_env(
        {
            "SERVING_MODEL_DIR": str(row_wise),
            "SAGEMAKER_BATCH": "true",
            "SERVING_MAX_DECODED_MB": "1",
        }
    )
    pipeline = build_pipeline(settings, {"gpu_id": None})
    row = b",".join([b"1"] * 1000)
    body = b"x\n" + b"\n".join([row] * 300) + b"\n"  # 300 * 4000 bytes as float32: over 1 MiB
    answer = ask(pipeline, body, "text/csv", "text/csv")
    assert answer.status == 413
    assert "SERVING_MAX_DECODED_MB" in message(answer)
