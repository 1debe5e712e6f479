"""A stored dataset version as training code sees it: image files, labels and the split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from core.base.errors import NotFound
from core.base.tasks import Task
from core.data.records import Instance
from storage.artifacts import BlobStore
from storage.repos.datasets import annotations, get_version, images

PAGE = 2000


@dataclass(frozen=True)
class Item:
    path: Path  # the image's blob file
    name: str
    width: int
    height: int
    tags: tuple[str, ...]
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class VersionData:
    name: str
    version: int
    task: Task
    classes: list[str]
    train: list[Item]
    validation: list[Item]


def load_version(*, session: Session, blobs: BlobStore, name: str,
                 version: int | None = None) -> VersionData:
    """The version's items split into train and validation, in import order."""
    row = get_version(session=session, name=name, version=version)
    if row is None:
        raise NotFound(f"dataset {name}:{version or 'latest'} not found; `kestrel data list` shows "
                       "what exists")
    split: dict[str, list[Item]] = {"train": [], "validation": []}
    offset = 0
    while page := images(session=session, version_id=row.id, offset=offset, limit=PAGE):
        labels = annotations(session=session, image_ids=[i.id for i in page])
        for image in page:
            anns = labels[image.id]
            split[image.split].append(Item(
                blobs.path(image.sha256), image.file_name, image.width, image.height,
                tuple(a.label for a in anns if a.x0 is None),
                tuple(Instance(a.label, a.x0, a.y0, a.x1, a.y1,  # type: ignore[arg-type]
                               tuple(tuple(p) for p in a.polygon or ()), a.is_crowd)
                      for a in anns if a.x0 is not None),
            ))
        offset += len(page)
    return VersionData(name, row.version, Task(row.task), list(row.classes),
                       split["train"], split["validation"])
