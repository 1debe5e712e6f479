"""Files under KESTREL_HOME: content-addressed image blobs, atomic writes, safe archive extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath


class ArchiveRefused(ValueError):
    """An uploaded archive that would be unsafe to extract; the message names the entry."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BlobStore:
    """Image bytes stored once by their sha256, whatever dataset version uses them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; returns its sha256 and whether the blob is new."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path(sha256)
        if target.exists():
            return sha256, False
        write_atomic(target, data)
        return sha256, True

    def remove(self, sha256: str) -> None:
        path = self.path(sha256)
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:  # other blobs share the folder
            pass

    def sweep(self, *, keep: set[str], older_than_s: float) -> list[str]:
        """Remove the blobs (and half-written temporary files) none of ``keep`` names, untouched for
        ``older_than_s`` seconds: what an import killed before its commit left. The age spares the
        blobs of an import still running. Returns the names removed."""
        if not self.root.is_dir():
            return []
        cutoff, removed = time.time() - older_than_s, []
        for file in self.root.glob("*/*"):
            if file.name not in keep and file.is_file() and file.stat().st_mtime < cutoff:
                self.remove(file.name) if len(file.name) == 64 else file.unlink(missing_ok=True)
                removed.append(file.name)
        return removed


def safe_extract(
    archive: Path, dest: Path, *, max_members: int, max_bytes: int, max_ratio: int
) -> Path:
    """Extract a zip into ``dest``, refusing anything that could escape it or exhaust the disk.

    Refused: absolute names, ``..`` parts, links, more than ``max_members`` entries, more than
    ``max_bytes`` uncompressed, or an entry inflating more than ``max_ratio`` times (a bomb).
    Checks run on the whole listing before a single byte is written.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ArchiveRefused(f"not a readable zip archive ({exc})") from exc
    with zf:
        members = zf.infolist()
        if len(members) > max_members:
            raise ArchiveRefused(
                f"{len(members)} entries, more than the limit of {max_members}"
            )
        total = 0
        for info in members:
            name = PurePosixPath(info.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts or ":" in info.filename.split("/")[0]:
                raise ArchiveRefused(
                    f"entry {info.filename!r} would write outside the upload folder"
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArchiveRefused(f"entry {info.filename!r} is a link")
            total += info.file_size
            if info.compress_size and info.file_size / info.compress_size > max_ratio:
                raise ArchiveRefused(
                    f"entry {info.filename!r} inflates "
                    f"{info.file_size // info.compress_size}× (a decompression bomb)"
                )
        if total > max_bytes:
            raise ArchiveRefused(
                f"{total} bytes uncompressed, more than the limit of {max_bytes}"
            )
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info in members:
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(root):
                raise ArchiveRefused(
                    f"entry {info.filename!r} would write outside the upload folder"
                )
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                # The header's sizes can lie; copy in bounded chunks and stop at the stated size.
                written = 0
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > info.file_size:
                        raise ArchiveRefused(f"entry {info.filename!r} is larger than stated")
                    out.write(chunk)
    return dest


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_staged(path: Path, staging_dir: Path) -> bool:
    """Remove the upload folder under ``staging_dir`` that holds ``path`` (``staging_dir/<id>``).

    Anything outside ``staging_dir`` is a user's own data and is never touched; returns whether
    something was removed.
    """
    staging = staging_dir.resolve()
    try:
        rel = path.resolve().relative_to(staging)
    except ValueError:
        return False
    if not rel.parts or not (staging / rel.parts[0]).exists():
        return False
    remove_tree(staging / rel.parts[0])
    return True


def sweep_staging(staging_dir: Path, *, keep: Iterable[Path], older_than_s: float) -> list[Path]:
    """Remove the upload folders (``staging_dir/<id>``) left alone for ``older_than_s`` seconds that hold
    none of ``keep`` (the paths pending jobs still read): previews abandoned by a browser reload, uploads
    left by a crash. Returns the folders removed."""
    if not staging_dir.is_dir():
        return []
    staging = staging_dir.resolve()
    held = set()
    for path in keep:
        try:
            held.add(Path(path).resolve().relative_to(staging).parts[0])
        except (ValueError, IndexError):
            continue  # outside the staging folder: a user's own data
    cutoff = time.time() - older_than_s
    removed = []
    for folder in staging.iterdir():
        if folder.name not in held and folder.stat().st_mtime < cutoff:
            if folder.is_dir():
                remove_tree(folder)
            else:
                folder.unlink(missing_ok=True)
            removed.append(folder)
    return removed
