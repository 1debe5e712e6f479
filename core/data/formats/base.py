"""What a data format is, and the registry every format module adds itself to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from core.base.registry import Registry
from core.data.records import ImageRecord, Problem

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
