"""model.tar.gz, packed and unpacked safely.

Unpacking takes regular files and folders only: no absolute paths, no ``..``, no links (which
could lead out of the destination), no devices, no owners from the archive, and no modes from it
either beyond a file's exec bit: folders are written 0o755 and files 0o644 (0o755 where the
archive lets the owner execute them), so whoever unpacked them can always remove them (a folder
of mode 000 could not be removed by a non-root user). The members' total size is bounded, so a
small archive cannot fill the disk: by ``max_bytes``, by the free space, and, past
``RATIO_FLOOR_BYTES``, by ``MAX_RATIO`` times the archive's own size (a gzip bomb, such as 5 GiB
of zeros in 5 MB). The sizes are checked from the members' headers as they are read, before
anything is written, so a bomb is refused without decompressing it. All this is done here rather
than left to tarfile's ``data`` filter, which Pythons before 3.11.4 (such as Debian bookworm's)
lack; where it exists it is applied as well.

Packing writes SageMaker's layout (model files at the root, the handler code under ``code/``),
reproducibly (sorted names, zero times and owners).
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")  # what is taken for a model.tar.gz
MAX_UNPACKED_BYTES = 64 * 1024**3
# Unpacked bytes per byte of archive. Model weights compress about 1.1 times, a checkpoint padded
# with zeros 10 to 50 times; 5 GiB of zeros compresses 1000 times. Archives that unpack to no
# more than RATIO_FLOOR_BYTES may compress as well as they like (small text files do).
MAX_RATIO = 250
RATIO_FLOOR_BYTES = 1024**3
DIR_MODE = 0o755
FILE_MODE = 0o644  # 0o755 where the archive lets the owner execute the file


class ArchiveError(Exception):
    """The archive cannot be packed or unpacked safely; the message says why."""


def lone_archive(directory: Path) -> Path | None:
    """The model.tar.gz that ``directory`` holds and nothing else (hidden files aside), which is
    served as that archive; None when there is none, or more than it, or no such directory."""
    if not directory.is_dir():
        return None
    entries = [entry for entry in directory.iterdir() if not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_file() and entries[0].name.endswith(ARCHIVE_SUFFIXES):
        return entries[0]
    return None


def pack(out: Path, model_dir: Path, code_dir: Path | None = None) -> None:
    """Write ``out`` (.tar.gz) with ``model_dir``'s files at the root and ``code_dir`` as code/."""
    members = list(_walk(model_dir, ""))
    if code_dir is not None:
        if (model_dir / "code").exists():
            raise ArchiveError(f"{model_dir} has a code/ folder already; pass no code_dir")
        members += list(_walk(code_dir, "code"))
    out.parent.mkdir(parents=True, exist_ok=True)
    # gzip's own header would hold the time and the file name: zero them, for reproducibility.
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name, path in sorted(members):
            info = archive.gettarinfo(str(path), arcname=name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)


def unpack(
    archive_path: Path,
    dest: Path,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_ratio: int = MAX_RATIO,
    ratio_floor: int = RATIO_FLOOR_BYTES,
) -> None:
    """Extract ``archive_path`` into ``dest``, refusing anything that would escape it, and
    anything that would not fit: over ``max_bytes``, over the free space where it goes, or, once
    over ``ratio_floor`` bytes, over ``max_ratio`` times the archive's size."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        compressed = archive_path.stat().st_size
        if compressed == 0:
            raise ArchiveError(f"{archive_path} is empty")
        bomb_bytes = max(ratio_floor, max_ratio * compressed)
        with tarfile.open(archive_path, "r:*") as archive:
            # Member by member, so that the sizes are checked as each header is read: the data
            # of a member that is over a limit is never decompressed.
            members = []
            total = 0
            for member in archive:
                members.append(_checked(member))
                total += member.size
                if total > max_bytes:
                    raise ArchiveError(
                        f"{archive_path} unpacks to {total} bytes or more, over {max_bytes}"
                    )
                if total > bomb_bytes:
                    raise ArchiveError(
                        f"{archive_path} unpacks to {total} bytes or more, over {max_ratio} times "
                        f"its own {compressed} bytes: refused as a likely decompression bomb"
                    )
            free = shutil.disk_usage(dest).free
            if total > free:
                raise ArchiveError(
                    f"{archive_path} unpacks to {total} bytes, more than the {free} bytes free "
                    f"in {dest}"
                )
            if hasattr(tarfile, "data_filter"):
                archive.extractall(dest, members=members, filter=_data_filter)
            else:
                archive.extractall(dest, members=members)
    except tarfile.ReadError as error:
        # tarfile's own message only lists the compressions it tried.
        raise ArchiveError(
            f"{archive_path} is not a tar archive (gzip-compressed or plain)"
        ) from error
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ArchiveError(f"{archive_path} is truncated or corrupt: {_reason(error)}") from error
    except (tarfile.TarError, OSError) as error:
        raise ArchiveError(f"cannot unpack {archive_path}: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _checked(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """The member if it is a plain file or folder with a safe relative name; else an error."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        raise ArchiveError(f"{member.name!r} would be written outside the destination")
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(
            f"{member.name!r} is a link or special file; archives may hold files only"
        )
    member.mode = _mode(member)
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def _mode(member: tarfile.TarInfo) -> int:
    """The mode to write: the archive's says at most whether a file is executable."""
    if member.isdir():
        return DIR_MODE
    return FILE_MODE | 0o111 if member.mode & 0o100 else FILE_MODE


def _data_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter, then our modes (it leaves a folder's to the umask)."""
    return tarfile.data_filter(member, dest_path).replace(mode=_mode(member), deep=False)


def _walk(root: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    if not root.is_dir():
        raise ArchiveError(f"{root} is not a directory")
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") or part == "__pycache__" for part in relative.split("/")):
            continue
        if path.is_symlink():
            raise ArchiveError(f"{path} is a link: copy the file it points to instead")
        yield (f"{prefix}/{relative}" if prefix else relative), path
