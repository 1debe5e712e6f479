"""Folder-per-class classification data: ``<root>/<class name>/<image>``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from core.base.tasks import LabelKind
from core.data.formats.base import formats, is_image
from core.data.records import ImageRecord, Problem


def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))


@formats.register("folder")
class FolderFormat:
    def detect(self, path: Path) -> bool:
        folders = class_folders(path)
        return bool(folders) and all(
            any(is_image(f) for f in d.iterdir() if f.is_file()) for d in folders
        )

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        for folder in class_folders(path):
            for file in sorted(folder.rglob("*")):
                if not file.is_file() or file.name.startswith("."):
                    continue
                name = file.relative_to(path).as_posix()
                if not is_image(file):
                    yield Problem(name, None, f"{file.suffix or 'no suffix'} is not an image type",
                                  "keep only images (jpg, png, bmp, gif, tif, webp) in class folders")
                    continue
                yield ImageRecord(file, name, name, None, LabelKind.TAG, (folder.name,))
