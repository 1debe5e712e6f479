"""Edited labels saved as a new dataset version: same images (same blobs, names and splits),
new tags or boxes. The edited version is never touched; torch-free, so the studio calls it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlmodel import Session

from core.data.records import ImageRecord, Instance, LabelledImage
from core.data.stats import compute_stats, version_warnings
from core.errors import InputError, NotFound
from core.tasks import LabelKind, Task, spec
from storage.repos.datasets import NewAnnotation, NewImage, NewVersion, annotations, create_version, images
from storage.tables import Dataset, DatasetVersion

# The importer's thresholds (core.data.importer): kept equal so a relabelled version warns as an
# imported one would, without pulling the format readers (and OpenCV) into the studio.
MIN_BOX_SIDE = 1e-3  # a box thinner than this is a stray click, not an object

Edits = Mapping[int, Sequence[NewAnnotation]]  # image id -> that image's complete new label list


def relabel_version(*, session: Session, version_id: int, edits: Edits) -> DatasetVersion:
    """Store the next version of the dataset of ``version_id`` with ``edits`` in place of the
    labels of the images they name; every other image keeps its labels.

    Raises NotFound for an unknown version and InputError (naming the image) for labels the
    task cannot hold: a multi-class image needs exactly one tag, a box must lie inside 0..1
    with positive width and height, and polygons (segmentation) cannot be edited here.
    """
    version = session.get(DatasetVersion, version_id)
    if version is None:
        raise NotFound(f"dataset version {version_id} does not exist")
    task = Task(version.task)
    kind = spec(task).label_kind
    if kind == LabelKind.POLYGONS and edits:
        raise InputError(f"version {version.version}", "polygons cannot be edited in the studio",
                         "edit the polygons in a labelling tool and import the result")
    items = images(session=session, version_id=version_id)
    known = {i.id for i in items}
    if unknown := sorted(set(edits) - known):
        raise NotFound(f"images {unknown} are not in version {version.version}")
    stored = annotations(session=session, image_ids=[i.id for i in items if i.id not in edits])
    new_images = []
    for item in items:
        if item.id in edits:
            labels = [_checked(a, kind, item.file_name) for a in edits[item.id]]
            if kind == LabelKind.TAG and len(labels) != 1:
                raise InputError(item.file_name, f"has {len(labels)} tags; a multi-class image has exactly one",
                                 "choose one class for it")
        else:
            labels = [NewAnnotation(a.label, None if a.x0 is None else (a.x0, a.y0, a.x1, a.y1),  # type: ignore[arg-type]
                                    a.polygon, a.is_crowd) for a in stored[item.id]]
        new_images.append(NewImage(item.sha256, item.file_name, item.suffix, item.width, item.height,
                                   item.split, labels))
    stats = compute_stats([_labelled(i) for i in new_images])
    dataset = session.get(Dataset, version.dataset_id)
    name = dataset.name if dataset else ""
    return create_version(session=session, new=NewVersion(
        name=name, task=version.task, format=version.format,
        source=f"{name}:{version.version}, relabelled in the studio",
        classes=sorted(stats["images_per_class"]), stats=stats,
        warnings=version_warnings(len(new_images), stats["images_per_class"]),
        validation_fraction=version.validation_fraction, images=new_images, problems=[]))


def _checked(label: NewAnnotation, kind: LabelKind, file_name: str) -> NewAnnotation:
    name = label.label.strip()
    if not name:
        raise InputError(file_name, "a label has no class name", "choose a class for every label")
    if kind in (LabelKind.TAG, LabelKind.TAGS):
        return NewAnnotation(name)
    if label.box is None:
        raise InputError(file_name, f"the {name!r} label has no box", "draw a box for it")
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in label.box)
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        raise InputError(file_name, f"a {name!r} box has no area inside the image",
                         "draw it larger or delete it")
    return NewAnnotation(name, (x0, y0, x1, y1), None, label.is_crowd)


def _labelled(image: NewImage) -> LabelledImage:
    # compute_stats reads labels, sizes and split only; the record is a stand-in.
    record = ImageRecord(Path(image.file_name), image.file_name, "", None, None)
    tags = tuple(a.label for a in image.annotations if a.box is None)
    instances = tuple(Instance(a.label, *a.box) for a in image.annotations if a.box is not None)
    return LabelledImage(record, image.sha256, image.suffix, image.width, image.height, tags, instances,
                         image.split)
