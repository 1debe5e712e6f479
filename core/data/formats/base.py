"""What a data format is, and the registry every format module adds itself to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from core.base.errors import InputError
from core.base.registry import Registry
from core.data.records import ImageRecord, Problem

BOM = b"\xef\xbb\xbf"
UTF8_FIX = "save the file as UTF-8 (most editors offer it under 'Save as… / Encoding')"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


class DataFormat(Protocol):
    def detect(self, path: Path) -> bool:
        """True when ``path`` (a file or folder) looks like this format."""
        ...

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        """Every image with its labels, or a Problem for each item that cannot be read."""
        ...


# Holds the format classes; they are stateless, so callers instantiate one per use.
formats: Registry[type[DataFormat]] = Registry("format")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def files_with_suffix(folder: Path, *suffixes: str) -> list[Path]:
    """Files directly in ``folder`` whose suffix is one of ``suffixes``, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def not_utf8(file: Path, exc: UnicodeDecodeError, line: int, line_start: int = 0) -> InputError:
    """The refusal of an annotation file that is not UTF-8, with where and what the bad byte is;
    a UTF-16 file (Excel's "Unicode text") is named as such, since its fix is the same."""
    head = exc.object[:2]
    if line == 1 and head in (b"\xff\xfe", b"\xfe\xff"):
        problem = "is UTF-16 text, not UTF-8"
    else:
        bad = exc.object[exc.start:exc.start + 1].hex()
        problem = (f"is not UTF-8 text: byte 0x{bad} at column {exc.start - line_start + 1} "
                   f"cannot be decoded ({exc.reason})")
    return InputError(str(file), problem, UTF8_FIX, line=line)


def text_lines(file: Path) -> Iterator[str]:
    """The file's lines as UTF-8 text (a leading BOM dropped), read one at a time; a line that is
    not UTF-8 refuses the file with its line number instead of a traceback mid-import."""
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise InputError(str(file), f"cannot open: {exc.strerror}", "check the path") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                yield (raw.removeprefix(BOM) if line_no == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise not_utf8(file, exc, line_no) from None


def read_text(file: Path) -> str:
    """The whole file as UTF-8 text (a leading BOM dropped); refused like ``text_lines``."""
    data = file.read_bytes()
    try:
        return data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + (len(BOM) if data.startswith(BOM) else 0)
        line_start = data.rfind(b"\n", 0, offset) + 1
        exc = UnicodeDecodeError("utf-8", data, offset, offset + 1, exc.reason)
        raise not_utf8(file, exc, data.count(b"\n", 0, offset) + 1, line_start) from None
