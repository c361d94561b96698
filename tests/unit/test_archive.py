"""Unit tests for model.tar.gz: SageMaker's layout, reproducible packing, and safe unpacking."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
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


# Decompression bombs: refused from the members' headers, before their data is decompressed.


def _write_zeros_bomb(out: Path, size: int, name: str = "model.pt") -> None:
    """A .tar.gz holding one file of ``size`` zero bytes, written without ever holding or
    compressing ``size`` bytes: gzip allows a file of several members, so one compressed chunk
    of zeros is written again and again (16 MiB of zeros compress to 16 KB)."""
    chunk = 16 * 1024**2
    zeros = gzip.compress(b"\0" * chunk, compresslevel=9, mtime=0)
    info = tarfile.TarInfo(name)
    info.size = size
    with out.open("wb") as raw:
        raw.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT), mtime=0))
        for _ in range(size // chunk):
            raw.write(zeros)
        tail = size % chunk + (-size) % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE
        raw.write(gzip.compress(b"\0" * tail, mtime=0))


def test_unpack_refuses_a_gzip_bomb_before_writing_or_decompressing_it(tmp_path: Path) -> None:
    bomb = tmp_path / "model.tar.gz"
    _write_zeros_bomb(bomb, 5 * 1024**3)
    assert bomb.stat().st_size < 6 * 1024**2  # 5 GiB of zeros in about 5 MB, as in the issue
    with tarfile.open(bomb) as archive:  # a true archive: its one member says 5 GiB
        first = archive.next()
        assert first is not None and first.size == 5 * 1024**3
    dest = tmp_path / "dest"
    started = time.monotonic()
    with pytest.raises(ArchiveError) as raised:
        unpack(bomb, dest)
    elapsed = time.monotonic() - started
    assert str(raised.value) == (
        f"{bomb} unpacks to {5 * 1024**3} bytes or more, over 250 times its own "
        f"{bomb.stat().st_size} bytes: refused as a likely decompression bomb"
    )
    assert "\n" not in str(raised.value)
    # Decompressing 5 GiB takes 15 s; refusing from the header takes milliseconds.
    assert elapsed < 1.0, elapsed
    assert list(dest.iterdir()) == []


def test_unpack_refuses_a_bomb_spread_over_many_members(tmp_path: Path) -> None:
    out = tmp_path / "many.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        for index in range(8):
            _add_file(archive, f"part-{index}.bin", b"\0" * 1024**2)
    compressed = out.stat().st_size
    assert 8 * 1024**2 > 50 * compressed
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError, match="over 50 times its own"):
        unpack(out, dest, max_ratio=50, ratio_floor=1024**2)
    assert list(dest.iterdir()) == []
    # The same archive is fine when its size stays under the floor.
    unpack(out, tmp_path / "roomy", max_ratio=50, ratio_floor=8 * 1024**2)
    assert len(_files(tmp_path / "roomy")) == 8


def test_unpack_takes_small_archives_that_compress_very_well(tmp_path: Path) -> None:
    # Text (vocabularies, configs) compresses hundreds of times: fine under the 1 GiB floor.
    vocab = b"".join(b"token_%d\n" % (index % 10) for index in range(500_000))
    out = tmp_path / "model.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        _add_file(archive, "vocab.txt", vocab)
        _add_file(archive, "config.json", b"{}" * 100_000)
    assert len(vocab) > 250 * out.stat().st_size
    unpack(out, tmp_path / "dest")
    assert _files(tmp_path / "dest")["vocab.txt"] == vocab


# Modes: an archive's folder of mode 000 must not become a folder its unpacker cannot remove.


def _add_dir(archive: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    archive.addfile(info)


def _add_file_with_mode(archive: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = 4
    info.mode = mode
    info.uid = info.gid = 4242
    archive.addfile(info, io.BytesIO(b"data"))


HOSTILE_MODES = {  # member: (its mode in the archive, the mode it must have on disk)
    "locked": (0o000, 0o755),
    "locked/weights.bin": (0o000, 0o644),
    "locked/inner": (0o500, 0o755),
    "locked/inner/more.bin": (0o400, 0o644),
    "execute-only": (0o100, 0o755),
    "execute-only/run.sh": (0o4755, 0o755),  # set-uid dropped, exec kept
    "group-exec.txt": (0o070, 0o644),  # exec only where the owner may execute
    "tool": (0o700, 0o755),
    "secret.txt": (0o600, 0o644),
    "shared": (0o777, 0o755),
}


def _write_hostile_modes(out: Path) -> None:
    with tarfile.open(out, "w:gz") as archive:
        for name, (mode, _) in HOSTILE_MODES.items():
            if "." in name or name in ("tool",):
                _add_file_with_mode(archive, name, mode)
            else:
                _add_dir(archive, name, mode)


@pytest.fixture(params=["with data_filter", "without data_filter"])
def data_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both of unpack's ways: with tarfile's data filter, and as on Pythons before 3.11.4."""
    if request.param == "without data_filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


def test_unpack_writes_safe_modes_whatever_the_archive_says(
    tmp_path: Path, data_filter: str
) -> None:
    out = tmp_path / "model.tar.gz"
    _write_hostile_modes(out)
    dest = tmp_path / "dest"
    unpack(out, dest)
    found = {
        path.relative_to(dest).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in dest.rglob("*")
    }
    assert found == {name: expected for name, (_, expected) in HOSTILE_MODES.items()}
    for path in dest.rglob("*"):
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())


def _clean_up_in_this_process(how: str, archive_path: Path, dest: Path) -> str:
    if how == "tarfile as it is":
        trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}
        with tarfile.open(archive_path) as opened:
            opened.extractall(dest, **trusted)  # type: ignore[arg-type]
    else:
        if how == "unpack without data_filter":
            del tarfile.data_filter  # in the forked child only
        unpack(archive_path, dest)
    shutil.rmtree(dest, ignore_errors=True)  # as the supervisor removes its run directory
    return "left behind" if dest.exists() else "all removed"


def _unpack_and_clean_up_as_a_user(how: str) -> str:
    """Unpack the hostile archive and remove it, in a forked child that has no root powers:
    uid 1000 (as `docker run --user 1000`) when the tests run as root, else the tests' own user.
    A fork, not a new interpreter: this one lives under /root, which uid 1000 may not read."""
    workdir = Path(tempfile.mkdtemp(prefix="archive-modes-"))  # not tmp_path: root's, 0o700
    try:
        archive_path = workdir / "model.tar.gz"
        _write_hostile_modes(archive_path)
        if os.geteuid() == 0:
            os.chmod(workdir, 0o755)
            os.chown(workdir, 1000, 1000)
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(readable)
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(1000)
                    os.setuid(1000)
                answer = _clean_up_in_this_process(how, archive_path, workdir / "d")
                code = 0
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                answer = f"{type(error).__name__}: {error}"
            finally:
                os.write(writable, answer.encode())
                os._exit(code)
        os.close(writable)
        with os.fdopen(readable, "rb") as pipe:
            answer = pipe.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, answer
        return answer
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # root may remove anything


@pytest.mark.parametrize("how", ["unpack", "unpack without data_filter"])
def test_a_user_without_root_can_remove_everything_unpack_wrote(how: str) -> None:
    assert _unpack_and_clean_up_as_a_user(how) == "all removed"


def test_the_cleanup_check_sees_the_bug_that_unpack_prevents() -> None:
    # The same archive extracted with the archive's modes cannot be removed: the check above
    # would see the folder of mode 000 left behind.
    assert _unpack_and_clean_up_as_a_user("tarfile as it is") == "left behind"
