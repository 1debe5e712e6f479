"""Datasets and their immutable versions: create atomically, list, page through images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from storage.tables import Annotation, Dataset, DatasetVersion, ImageItem, ImportProblem


@dataclass
class NewAnnotation:
    label: str
    box: tuple[float, float, float, float] | None = None
    polygon: list[list[float]] | None = None
    is_crowd: bool = False


@dataclass
class NewImage:
    sha256: str
    file_name: str
    suffix: str
    width: int
    height: int
    split: str
    annotations: list[NewAnnotation] = field(default_factory=list)


@dataclass
class NewVersion:
    name: str
    task: str
    format: str
    source: str
    classes: list[str]
    stats: dict[str, Any]
    warnings: list[str]
    validation_fraction: float
    images: list[NewImage]
    problems: list[dict[str, Any]]


def create_version(*, session: Session, new: NewVersion) -> DatasetVersion:
    """Add the next version of ``new.name`` (creating the dataset) with all its rows.

    Runs inside the caller's transaction: on any error nothing of it is kept.
    """
    dataset = session.exec(select(Dataset).where(Dataset.name == new.name)).first()
    if dataset is None:
        dataset = Dataset(name=new.name)
        session.add(dataset)
        session.flush()
    latest = session.exec(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
    ).one()
    version = DatasetVersion(
        dataset_id=dataset.id, version=(latest or 0) + 1, task=new.task, format=new.format,
        source=new.source, classes=new.classes, stats=new.stats, warnings=new.warnings,
        validation_fraction=new.validation_fraction, image_count=len(new.images),
        annotation_count=sum(len(i.annotations) for i in new.images),
        validation_count=sum(i.split == "validation" for i in new.images),
    )
    session.add(version)
    session.flush()
    items = [
        ImageItem(version_id=version.id, position=pos, sha256=img.sha256, file_name=img.file_name,
                  suffix=img.suffix, width=img.width, height=img.height, split=img.split)
        for pos, img in enumerate(new.images)
    ]
    session.add_all(items)
    session.flush()
    session.add_all(
        Annotation(image_id=item.id, label=a.label, polygon=a.polygon, is_crowd=a.is_crowd,
                   **dict(zip(("x0", "y0", "x1", "y1"), a.box or (None,) * 4)))
        for item, img in zip(items, new.images)
        for a in img.annotations
    )
    session.add_all(ImportProblem(version_id=version.id, **p) for p in new.problems)
    session.flush()
    return version


@dataclass
class DatasetRow:
    name: str
    task: str
    latest_version: int
    images: int
    classes: int
    created_at: Any


def list_datasets(*, session: Session) -> list[DatasetRow]:
    rows = []
    for dataset in session.exec(select(Dataset).order_by(Dataset.name)):
        latest = latest_version(session=session, dataset_id=dataset.id)
        if latest is not None:
            rows.append(DatasetRow(dataset.name, latest.task, latest.version, latest.image_count,
                                   len(latest.classes), dataset.created_at))
    return rows


def latest_version(*, session: Session, dataset_id: int | None) -> DatasetVersion | None:
    return session.exec(
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
        .order_by(col(DatasetVersion.version).desc())
    ).first()


def get_version(*, session: Session, name: str, version: int | None = None) -> DatasetVersion | None:
    """The given version of dataset ``name``, or its latest when ``version`` is None."""
    dataset = session.exec(select(Dataset).where(Dataset.name == name)).first()
    if dataset is None:
        return None
    if version is None:
        return latest_version(session=session, dataset_id=dataset.id)
    return session.exec(
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id,
                                     DatasetVersion.version == version)
    ).first()


def version_from_source(*, session: Session, name: str, source: str) -> DatasetVersion | None:
    """The latest version of ``name`` imported from ``source``: an upload's staging path is unique,
    so this finds the version an import job made without parsing the job's message."""
    return session.exec(
        select(DatasetVersion).join(Dataset).where(Dataset.name == name, DatasetVersion.source == source)
        .order_by(col(DatasetVersion.version).desc())
    ).first()


def versions(*, session: Session, name: str) -> list[DatasetVersion]:
    return list(session.exec(
        select(DatasetVersion).join(Dataset).where(Dataset.name == name)
        .order_by(col(DatasetVersion.version))
    ))


def referenced_blobs(*, session: Session) -> set[str]:
    """The sha256 of every image some dataset version holds: the blobs that must stay."""
    return set(session.exec(select(ImageItem.sha256).distinct()).all())


def dataset_names(*, session: Session) -> list[str]:
    return list(session.exec(select(Dataset.name).order_by(Dataset.name)))


def images(
    *, session: Session, version_id: int, offset: int = 0, limit: int | None = None,
    label: str | None = None, split: str | None = None,
) -> list[ImageItem]:
    """Images of a version in import order, optionally only those with ``label`` or in ``split``."""
    query = select(ImageItem).where(ImageItem.version_id == version_id)
    if split:
        query = query.where(ImageItem.split == split)
    if label:
        query = query.where(col(ImageItem.id).in_(
            select(Annotation.image_id).where(Annotation.label == label)))
    query = query.order_by(col(ImageItem.position)).offset(offset)
    return list(session.exec(query.limit(limit) if limit else query))


def count_images(*, session: Session, version_id: int, label: str | None = None,
                 split: str | None = None) -> int:
    query = select(func.count()).select_from(ImageItem).where(ImageItem.version_id == version_id)
    if split:
        query = query.where(ImageItem.split == split)
    if label:
        query = query.where(col(ImageItem.id).in_(
            select(Annotation.image_id).where(Annotation.label == label)))
    return session.exec(query).one()


def annotations(*, session: Session, image_ids: Sequence[int]) -> dict[int, list[Annotation]]:
    """Annotations of the given images, grouped by image id, in insertion order."""
    out: dict[int, list[Annotation]] = {i: [] for i in image_ids}
    for chunk_start in range(0, len(image_ids), 500):
        chunk = list(image_ids[chunk_start:chunk_start + 500])
        query = select(Annotation).where(col(Annotation.image_id).in_(chunk)).order_by(col(Annotation.id))
        for ann in session.exec(query):
            out[ann.image_id].append(ann)
    return out


def problems(*, session: Session, version_id: int) -> list[ImportProblem]:
    return list(session.exec(
        select(ImportProblem).where(ImportProblem.version_id == version_id).order_by(col(ImportProblem.id))
    ))
