"""Where the model comes from: a directory, or a model.tar.gz that is unpacked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagemaker_torch_serving.archive import pack
from sagemaker_torch_serving.server.model_source import (
    ModelSourceError,
    archive_to_unpack,
    unpack_model,
)
from sagemaker_torch_serving.settings import Settings


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    model, code = tmp_path / "src-model", tmp_path / "src-code"
    model.mkdir()
    code.mkdir()
    (model / "model.pt").write_bytes(b"weights")
    (code / "inference.py").write_text("")
    out = tmp_path / "mounted" / "model.tar.gz"
    pack(out, model, code)
    return out


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def test_a_directory_is_served_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"")
    assert archive_to_unpack(settings(SERVING_MODEL_DIR=str(tmp_path))) is None


def test_a_lone_archive_in_the_model_directory_is_unpacked_with_its_code(
    tmp_path: Path, archive: Path
) -> None:
    found = archive_to_unpack(settings(SERVING_MODEL_DIR=str(archive.parent)))
    assert found == archive
    unpacked = unpack_model(settings(), found, tmp_path / "unpacked")
    assert unpacked.model_dir == tmp_path / "unpacked"
    assert (unpacked.model_dir / "model.pt").read_bytes() == b"weights"
    assert unpacked.code_dir == tmp_path / "unpacked" / "code"


def test_the_archive_variable_wins_and_must_name_a_file(tmp_path: Path, archive: Path) -> None:
    chosen = settings(SERVING_MODEL_DIR=str(tmp_path), SERVING_MODEL_ARCHIVE=str(archive))
    assert archive_to_unpack(chosen) == archive
    missing = settings(SERVING_MODEL_ARCHIVE=str(tmp_path / "nope.tar.gz"))
    with pytest.raises(ModelSourceError, match="not a file"):
        archive_to_unpack(missing)


def test_an_archive_without_code_falls_back_to_the_default_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pt").write_bytes(b"")
    out = tmp_path / "model.tar.gz"
    pack(out, model)
    monkeypatch.setenv("SERVING_DEFAULT_CODE_DIR", "/opt/program/code")
    unpacked = unpack_model(settings(), out, tmp_path / "unpacked")
    assert unpacked.code_dir == Path("/opt/program/code")


def test_a_broken_archive_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.tar.gz"
    broken.write_bytes(b"not a tar")
    with pytest.raises(ModelSourceError, match=r"model\.tar\.gz is not a tar archive"):
        unpack_model(settings(), broken, tmp_path / "unpacked")
