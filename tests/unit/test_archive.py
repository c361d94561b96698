"""Unit tests for model.tar.gz: SageMaker's layout, reproducible packing, and safe unpacking."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from sagemaker_torch_serving.archive import ArchiveError, pack, unpack


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def model_and_code(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "src" / "model"
    code = tmp_path / "src" / "code"
    (model / "assets").mkdir(parents=True)
    (model / "model.pt").write_bytes(b"\x00weights\xff" * 100)
    (model / "assets" / "labels.json").write_text('["cat", "dog"]')
    (model / ".DS_Store").write_bytes(b"junk")
    (model / "__pycache__").mkdir()
    (model / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (code / "lib").mkdir(parents=True)
    (code / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    (code / "requirements.txt").write_text("numpy\n")
    (code / "lib" / "helpers.py").write_text("X = 1\n")
    (code / "lib" / "__pycache__").mkdir()
    (code / "lib" / "__pycache__" / "helpers.cpython-311.pyc").write_bytes(b"junk")
    (code / ".git").mkdir()
    (code / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return model, code


EXPECTED = {
    "model.pt": b"\x00weights\xff" * 100,
    "assets/labels.json": b'["cat", "dog"]',
    "code/inference.py": b"def model_fn(model_dir):\n    return None\n",
    "code/requirements.txt": b"numpy\n",
    "code/lib/helpers.py": b"X = 1\n",
}


def test_pack_then_unpack_round_trips_the_sagemaker_layout(
    tmp_path: Path, model_and_code: tuple[Path, Path]
) -> None:
    model, code = model_and_code
    out = tmp_path / "out" / "model.tar.gz"
    pack(out, model, code)
    dest = tmp_path / "dest"
    unpack(out, dest)
    assert _files(dest) == EXPECTED


def test_pack_skips_hidden_files_and_pycache(
    tmp_path: Path, model_and_code: tuple[Path, Path]
) -> None:
    model, code = model_and_code
    out = tmp_path / "model.tar.gz"
    pack(out, model, code)
    with tarfile.open(out) as archive:
        names = archive.getnames()
        members = archive.getmembers()
    assert not [name for name in names if "__pycache__" in name or "/." in f"/{name}"]
    assert {member.name for member in members if member.isfile()} == set(EXPECTED)
    assert names == sorted(names)
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            0,
            0,
            0,
            "",
            "",
        )


def test_pack_without_code_dir_keeps_the_model_dir_as_it_is(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "model.onnx").write_bytes(b"onnx")
    (model / "code" / "inference.py").write_text("pass\n")
    out = tmp_path / "model.tar.gz"
    pack(out, model)
    unpack(out, tmp_path / "dest")
    assert _files(tmp_path / "dest") == {"model.onnx": b"onnx", "code/inference.py": b"pass\n"}


def test_packed_content_is_reproducible(tmp_path: Path, model_and_code: tuple[Path, Path]) -> None:
    model, code = model_and_code
    pack(tmp_path / "a" / "model.tar.gz", model, code)
    (model / "model.pt").touch()  # a newer mtime must not matter
    pack(tmp_path / "b" / "model.tar.gz", model, code)
    first = gzip.decompress((tmp_path / "a" / "model.tar.gz").read_bytes())
    second = gzip.decompress((tmp_path / "b" / "model.tar.gz").read_bytes())
    assert first == second


def test_packing_is_byte_for_byte_reproducible(
    tmp_path: Path, model_and_code: tuple[Path, Path]
) -> None:
    model, code = model_and_code
    pack(tmp_path / "a" / "model.tar.gz", model, code)
    time.sleep(1.1)  # the gzip header's time is in whole seconds
    pack(tmp_path / "b" / "model.tar.gz", model, code)
    first = (tmp_path / "a" / "model.tar.gz").read_bytes()
    assert first == (tmp_path / "b" / "model.tar.gz").read_bytes()


def test_pack_refuses_a_symlink(tmp_path: Path, model_and_code: tuple[Path, Path]) -> None:
    model, code = model_and_code
    (model / "linked.pt").symlink_to(model / "model.pt")
    with pytest.raises(ArchiveError, match=r"linked\.pt"):
        pack(tmp_path / "model.tar.gz", model, code)


def test_pack_refuses_two_code_folders(tmp_path: Path, model_and_code: tuple[Path, Path]) -> None:
    model, code = model_and_code
    (model / "code").mkdir()
    with pytest.raises(ArchiveError, match="code/"):
        pack(tmp_path / "model.tar.gz", model, code)


def test_pack_refuses_a_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a directory"):
        pack(tmp_path / "model.tar.gz", tmp_path / "missing")


# Unpacking hostile archives, built by hand.


def _add_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _add_symlink(archive: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    archive.addfile(info)


def _nothing_but(root: Path, allowed: set[str]) -> bool:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")} <= allowed


def test_unpack_refuses_parent_directory_members(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    dest = sandbox / "dest"
    out = tmp_path / "evil.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        _add_file(archive, "../evil", b"owned")
        _add_file(archive, "sub/../../evil2", b"owned")
    with pytest.raises(ArchiveError):
        unpack(out, dest)
    assert not (sandbox / "evil").exists()
    assert not (sandbox / "evil2").exists()
    assert _nothing_but(sandbox, {"dest"})


def test_unpack_never_writes_an_absolute_member_outside(tmp_path: Path) -> None:
    outside = Path("/tmp") / f"evil-{uuid.uuid4().hex}"
    dest = tmp_path / "dest"
    out = tmp_path / "evil.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        _add_file(archive, str(outside), b"owned")
    try:
        try:
            unpack(out, dest)
        except ArchiveError:
            pass  # refusing is fine; so is extracting it below dest (the "data" filter's way)
        assert not outside.exists()
        assert _nothing_but(dest, {"tmp", f"tmp/{outside.name}"})
    finally:
        outside.unlink(missing_ok=True)


def test_unpack_refuses_a_symlink_out_and_a_write_through_it(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    target = sandbox / "target"
    target.mkdir(parents=True)
    dest = sandbox / "dest"
    out = tmp_path / "evil.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        _add_symlink(archive, "escape", str(target))
        _add_file(archive, "escape/planted", b"owned")
        _add_symlink(archive, "up", "../target")
        _add_file(archive, "up/planted2", b"owned")
    with pytest.raises(ArchiveError):
        unpack(out, dest)
    assert list(target.iterdir()) == []
    assert not (dest / "escape").is_symlink()
    assert not (dest / "up").is_symlink()


def test_unpack_refuses_more_than_max_bytes(tmp_path: Path) -> None:
    out = tmp_path / "big.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        _add_file(archive, "a.bin", b"\0" * 600)
        _add_file(archive, "b.bin", b"\0" * 600)
    assert out.stat().st_size < 1000
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError, match="1200"):
        unpack(out, dest, max_bytes=1000)
    assert list(dest.iterdir()) == []
    unpack(out, tmp_path / "roomy", max_bytes=1200)
    assert _files(tmp_path / "roomy") == {"a.bin": b"\0" * 600, "b.bin": b"\0" * 600}


def test_unpack_of_something_that_is_not_an_archive_says_what_it_is(tmp_path: Path) -> None:
    out = tmp_path / "model.tar.gz"
    cases = {
        b"not a tar file at all": "is not a tar archive (gzip-compressed or plain)",
        b"\x1f\x8b" + b"\0" * 30: "is not a tar archive (gzip-compressed or plain)",
        b"": "is empty",
    }
    for content, reason in cases.items():
        out.write_bytes(content)
        with pytest.raises(ArchiveError) as raised:
            unpack(out, tmp_path / "dest")
        assert str(raised.value) == f"{out} {reason}"
    with pytest.raises(ArchiveError, match=r"missing\.tar\.gz"):
        unpack(tmp_path / "missing.tar.gz", tmp_path / "dest")


def test_unpack_of_a_truncated_archive_says_so(
    tmp_path: Path, model_and_code: tuple[Path, Path]
) -> None:
    whole = tmp_path / "whole.tar.gz"
    model_dir, _ = model_and_code
    (model_dir / "weights.bin").write_bytes(uuid.uuid4().bytes * 4096)  # incompressible enough
    pack(whole, model_dir)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"cut.tar.gz is truncated or corrupt: EOFError"):
        unpack(cut, tmp_path / "dest")


def test_unpack_refuses_more_than_the_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        _add_file(archive, "model.bin", b"\0" * 5000)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=4000))
    with pytest.raises(ArchiveError, match="unpacks to 5000 bytes, more than the 4000 bytes free"):
        unpack(out, tmp_path / "dest")
