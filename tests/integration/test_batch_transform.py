"""Batch transform through the SageMaker SDK's local mode (Transformer, MultiRecord, SplitType
and AssembleWith Line) with the real image: examples/sdk_local_mode/batch_transform.py over a few
thousand records in several files, every output line compared with the answer to its record
alone (the model is row-wise: 2x + 1)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from sagemaker_torch_serving.archive import pack
from tests.conftest import REPO
from tests.integration.test_sdk_local_mode import Recorder, run_sdk, served_containers

SCRIPT = REPO / "examples" / "sdk_local_mode" / "batch_transform.py"
FILES = {"a": 1200, "b": 1000, "c": 800}  # records per file


@pytest.fixture
def recorder():
    proxy = Recorder()
    yield proxy
    proxy.close()


class RowWise(torch.nn.Module):
    """y = 2x + 1, row by row: a record's answer is the same alone or in a batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1


def default_handlers_archive(tmp_path: Path) -> Path:
    model_dir = tmp_path / "row-wise"
    model_dir.mkdir()
    torch.jit.script(RowWise()).save(str(model_dir / "model.pt"))
    archive = tmp_path / "model" / "model.tar.gz"
    code = tmp_path / "code"  # no handler defined: every one is a default
    code.mkdir()
    (code / "inference.py").write_text("# the default handlers serve this model\n")
    pack(archive, model_dir, code)
    return archive


def transform(tmp_path, recorder, image, archive, records, content_type, strategy) -> tuple:
    output = tmp_path / f"out-{strategy}-{content_type.replace('/', '-')}"
    log, _ = run_sdk(
        tmp_path,
        recorder,
        image,
        SCRIPT,
        *("--model", str(archive), "--input", str(records), "--output", str(output)),
        *("--content-type", content_type, "--strategy", strategy),
    )
    took = float(re.search(r"transform \(\w+\) took ([\d.]+) s", log).group(1))
    lines = {path.name: path.read_text().split("\n") for path in sorted(output.glob("*.out"))}
    return lines, took


def numbers(line: str) -> list[float]:
    return [float(cell) for cell in re.findall(r"-?[\d.]+(?:e-?\d+)?", line)]


def test_a_multi_record_transform_answers_every_record_as_if_sent_alone(tmp_path, recorder, image):
    archive = default_handlers_archive(tmp_path)
    rng = random.Random(13)
    csv_records, jsonl_records = tmp_path / "csv", tmp_path / "jsonl"
    csv_records.mkdir()
    jsonl_records.mkdir()
    values = {name: [round(rng.uniform(-50, 50), 3) for _ in range(n)] for name, n in FILES.items()}
    for name, column in values.items():
        (csv_records / f"{name}.csv").write_text("".join(f"{value}\n" for value in column))
        (jsonl_records / f"{name}.jsonl").write_text(
            "".join(json.dumps([value]) + "\n" for value in column)
        )
    total = sum(FILES.values())

    multi, multi_took = transform(
        tmp_path, recorder, image, archive, csv_records, "text/csv", "MultiRecord"
    )
    jsonl, jsonl_took = transform(
        tmp_path, recorder, image, archive, jsonl_records, "application/jsonlines", "MultiRecord"
    )
    print(
        f"\nbatch transform of {total} records in {len(FILES)} files: MultiRecord "
        f"{multi_took:.1f} s ({total / multi_took:.0f} records/s), JSON Lines MultiRecord "
        f"{jsonl_took:.1f} s"
    )
    for name, column in values.items():
        expected = [[2 * value + 1] for value in column]
        for answers in (multi[f"{name}.csv.out"], jsonl[f"{name}.jsonl.out"]):
            assert answers[-1] == ""  # the file ends with the line AssembleWith=Line adds
            assert len(answers) == len(column) + 1  # one line per record, no blank line between
            for line, want in zip(answers, expected, strict=False):
                assert numbers(line) == pytest.approx(want)  # = the record's answer alone
    assert recorder.requests == []
    assert served_containers(image) == []
