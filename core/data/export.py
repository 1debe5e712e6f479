"""Write a stored dataset version out as JSONL (with an MLTable) or COCO, images included."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from sqlmodel import Session

from core.base.errors import ConfigError
from core.base.tasks import LabelKind, Task, spec
from core.data.formats.coco import write_coco
from core.data.formats.jsonl import write_jsonl
from core.data.records import ImageRecord, Instance
from storage.artifacts import BlobStore
from storage.repos.datasets import annotations, images
from storage.tables import Annotation, DatasetVersion, ImageItem

EXPORT_FORMATS = ("jsonl", "coco")
MLTABLE = "paths:\n  - file: ./annotations.jsonl\ntransformations:\n  - read_json_lines:\n" \
          "      encoding: utf8\n      invalid_lines: error\n      include_path_column: false\n"
PAGE = 1000


def export_version(
    *, session: Session, blobs: BlobStore, version: DatasetVersion, fmt: str, out_dir: Path
) -> Path:
    """Write ``version`` into ``out_dir`` (images under ``images/``); returns the label file."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError("--format", f"cannot export to {fmt!r}", EXPORT_FORMATS)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = list(_records(session, blobs, version, out_dir))
    if fmt == "jsonl":
        target = out_dir / "annotations.jsonl"
        write_jsonl(pairs, target)
        (out_dir / "MLTable").write_text(MLTABLE, encoding="utf-8")
    else:
        target = out_dir / "annotations.json"
        write_coco(pairs, list(version.classes), target)
    return target


def _records(session: Session, blobs: BlobStore, version: DatasetVersion,
             out_dir: Path) -> Iterator[tuple[ImageRecord, str]]:
    kind = spec(Task(version.task)).label_kind
    used: set[str] = set()
    offset = 0
    while page := images(session=session, version_id=version.id, offset=offset, limit=PAGE):
        labels = annotations(session=session, image_ids=[i.id for i in page])
        for item in page:
            url = _unique_name(item, used)
            target = out_dir / url
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blobs.path(item.sha256), target)
            yield _record(item, labels[item.id], kind, target), url
        offset += len(page)


def _unique_name(item: ImageItem, used: set[str]) -> str:
    # Stored names are relative to the imported folder; keep them, but never let one climb out.
    parts = [p for p in PurePosixPath(item.file_name).parts if p not in ("..", "/", ".")]
    name = "images/" + "/".join(parts or [f"{item.position}{item.suffix}"])
    if name in used:
        name = f"images/{item.position}_{parts[-1] if parts else item.suffix}"
    used.add(name)
    return name


def _record(item: ImageItem, anns: list[Annotation], kind: LabelKind, image: Path) -> ImageRecord:
    tags = tuple(a.label for a in anns if a.x0 is None)
    instances = tuple(
        Instance(a.label, a.x0, a.y0, a.x1, a.y1,  # type: ignore[arg-type]
                 tuple(tuple(p) for p in a.polygon or ()), a.is_crowd)
        for a in anns if a.x0 is not None
    )
    return ImageRecord(image, item.file_name, "", None, kind, tags, instances, item.width, item.height)
