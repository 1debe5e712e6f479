"""Import a user's labelled images as a new dataset version: detect, read, validate, dedupe,
split, summarise, then store everything in one transaction (or nothing at all)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from core.base.errors import ConfigError, InputError
from core.base.tasks import LabelKind, Task
from core.data.formats import detect_format, get_format
from core.data.formats.jsonl import using_datastores
from core.data.records import ImageRecord, LabelledImage, Problem
from core.data.report import version_report
from core.data.splits import assign_splits
from core.data.stats import compute_stats, version_warnings
from core.data.validate import ItemError, check_image, clean_labels, read_image_file, upload_folder
from storage.artifacts import ArchiveRefused, BlobStore, remove_tree, safe_extract
from storage.db import session_scope
from storage.repos import datastores
from storage.repos.datasets import NewAnnotation, NewImage, NewVersion, create_version
from storage.settings import Settings

Progress = Callable[[int, int], None]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

TASK_BY_KIND = {
    frozenset({LabelKind.TAG}): Task.CLASSIFICATION,
    frozenset({LabelKind.TAGS}): Task.MULTILABEL,
    frozenset({LabelKind.TAG, LabelKind.TAGS}): Task.MULTILABEL,
    frozenset({LabelKind.BOXES}): Task.DETECTION,
    frozenset({LabelKind.POLYGONS}): Task.SEGMENTATION,
}


@dataclass(frozen=True)
class ImportOptions:
    name: str
    task: Task | None = None
    format: str | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    validation_source: Path | None = None  # a job's validation_data: these images form the validation split
    origin: str | None = None  # what the version says it came from, where the path read is a temporary copy


def import_dataset(
    source: Path, options: ImportOptions, *, settings: Settings, engine: Engine,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Import ``source`` (file, folder or zip) as the next version of ``options.name``.

    Returns the version's report. Raises InputError/ConfigError when nothing can be imported;
    then the database and the blob store are as they were.
    """
    _check_options(options)
    if not source.exists():
        raise InputError(str(source), "does not exist", "check the path")
    staging = None
    if is_zip(source):
        staging = settings.staging_dir / uuid.uuid4().hex
        root = extract_zip(source, staging, settings)
    else:
        root = source
    try:
        return _import(root, source, options, settings, engine, progress,
                       staging or upload_folder(source, settings.staging_dir))
    finally:
        if staging is not None:
            remove_tree(staging)


def _check_options(options: ImportOptions) -> None:
    if not NAME_PATTERN.match(options.name):
        raise ConfigError("name", f"{options.name!r} is not a valid dataset name; use letters, "
                          "digits, '.', '_' and '-' (up to 100, starting with a letter or digit)")
    if not 0 <= options.validation_fraction < 1:
        raise ConfigError("validation_data_size",
                          f"{options.validation_fraction} is outside [0, 1); 0.2 keeps 20% apart")


def is_zip(source: Path) -> bool:
    return source.is_file() and source.suffix.lower() == ".zip"


def extract_zip(archive: Path, dest: Path, settings: Settings) -> Path:
    """Extract ``archive`` into ``dest`` within the settings' limits; returns the data's folder.

    A refused archive leaves nothing behind and raises InputError naming the entry.
    """
    try:
        return _unwrap(safe_extract(archive, dest, max_members=settings.max_archive_members,
                                    max_bytes=settings.max_upload_bytes,
                                    max_ratio=settings.max_compression_ratio))
    except ArchiveRefused as exc:
        remove_tree(dest)
        raise InputError(archive.name, str(exc), "upload an archive without such entries") from exc


def _unwrap(folder: Path) -> Path:
    """Descend into the single top-level folder most zip tools wrap their content in."""
    entries = [p for p in folder.iterdir() if p.name != "__MACOSX"]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def _import(root: Path, source: Path, options: ImportOptions, settings: Settings,
            engine: Engine, progress: Progress | None, upload: Path | None) -> dict[str, Any]:
    fmt = options.format or detect_format(root)
    records: list[ImageRecord] = []
    problems: list[Problem] = []
    inside: dict[int, Path] = {}  # id(record) -> the folder its image must lie in: its upload or datastore
    with session_scope(engine) as session:
        mapped = datastores.mapping(session=session)
    with using_datastores(mapped):
        for item in get_format(fmt).read(root):
            (problems if isinstance(item, Problem) else records).append(item)
            if upload is not None and not isinstance(item, Problem):
                # A datastore the owner mapped is theirs to read from; nothing else outside the upload is.
                inside[id(item)] = next((r for r in mapped.values() if item.image.is_relative_to(r)), upload)
    held_out: set[int] = set()
    if options.validation_source is not None:
        where = options.validation_source
        where_upload = upload_folder(where, settings.staging_dir)
        for item in get_format(detect_format(where)).read(where):
            if not isinstance(item, Problem):
                held_out.add(id(item))
                if where_upload is not None:
                    inside[id(item)] = where_upload
            (problems if isinstance(item, Problem) else records).append(item)
    if not records:  # every line bad: name them, rather than "cannot tell the task"
        raise _nothing_imported(source, problems)
    task = options.task or infer_task(records, str(source))
    blobs = BlobStore(settings.blobs_dir)
    new_blobs: list[str] = []
    try:
        items = _validate(records, task, settings, blobs, new_blobs, problems, progress, inside)
        if not items:
            raise _nothing_imported(source, problems)
        if held_out:
            for item in items:
                item.split = "validation" if id(item.record) in held_out else "train"
        else:
            assign_splits(items, options.validation_fraction, options.seed)
        new = _new_version(items, problems, task, fmt, source, options)
        with session_scope(engine) as session:
            version = create_version(session=session, new=new)
            return version_report(session=session, version=version)
    except BaseException:
        for sha256 in new_blobs:
            blobs.remove(sha256)
        raise


def _nothing_imported(source: Path, problems: list[Problem]) -> InputError:
    """The refusal of an import that kept no image, naming its first problems with their lines."""
    if not problems:
        return InputError(str(source), "no images found", "check that the path holds a dataset")
    first = "; ".join(f"{p.file}:{p.line or '-'} {p.error}" for p in problems[:3])
    return InputError(str(source), f"no image could be imported ({len(problems)} problems: {first})",
                      f"fix the problems listed and retry (the first: {problems[0].fix})")


def infer_task(records: Sequence[ImageRecord], where: str) -> Task:
    return task_from_kinds(frozenset(r.kind for r in records if r.kind is not None), where)


def task_from_kinds(kinds: frozenset[LabelKind], where: str) -> Task:
    """The task the label kinds found in a dataset mean; InputError when they mean none."""
    if kinds in TASK_BY_KIND:
        return TASK_BY_KIND[kinds]
    found = ", ".join(sorted(k.value for k in kinds)) or "no labels at all"
    raise InputError(where, f"cannot tell the task from the labels ({found})",
                     "name it with --task " + " | ".join(t.value for t in Task))


def _validate(records: Sequence[ImageRecord], task: Task, settings: Settings, blobs: BlobStore,
              new_blobs: list[str], problems: list[Problem],
              progress: Progress | None, inside: dict[int, Path]) -> list[LabelledImage]:
    """Check each record, store its bytes, and return the valid, distinct images. ``inside``
    names the upload folder a record's image must lie in (records of a local folder are absent)."""
    items: list[LabelledImage] = []
    seen: dict[str, str] = {}
    for done, record in enumerate(records, start=1):
        try:
            data = read_image_file(record.image, settings.max_image_bytes, inside.get(id(record)))
            width, height, suffix = check_image(data, settings.max_image_pixels)
            tags, instances = clean_labels(record, task, width, height)
            sha256, is_new = blobs.put(data)
            if sha256 in seen:
                raise ItemError(f"duplicate image: same content as {seen[sha256]}",
                                "remove one of the two copies")
            if is_new:
                new_blobs.append(sha256)
            seen[sha256] = record.name
            items.append(LabelledImage(record, sha256, suffix, width, height, tags, instances))
        except ItemError as exc:
            problems.append(Problem(record.origin, record.line, f"{record.name}: {exc}", exc.fix))
        if progress:
            progress(done, len(records))
    return items


def _new_version(items: list[LabelledImage], problems: list[Problem], task: Task, fmt: str,
                 source: Path, options: ImportOptions) -> NewVersion:
    stats = compute_stats(items)
    classes = sorted(stats["images_per_class"])
    return NewVersion(
        name=options.name, task=task.value, format=fmt, source=options.origin or str(source), classes=classes,
        stats=stats, warnings=version_warnings(len(items), stats["images_per_class"]) + _size_warnings(items),
        validation_fraction=options.validation_fraction,
        images=[_new_image(item) for item in items],
        problems=[p.as_dict() for p in problems],
    )


def _size_warnings(items: list[LabelledImage]) -> list[str]:
    """Images whose annotation states another size (``image_details`` width/height) than the file has.
    The labels are normalised, so they are kept; a wrong stated size often means a file swapped for another."""
    differ = [i for i in items if i.record.width and i.record.height
              and {i.record.width, i.record.height} != {i.width, i.height}]  # either way round: EXIF rotation
    if not differ:
        return []
    first = differ[0]
    return [f"{len(differ)} image(s) differ from the size their annotation states (first: {first.record.origin}:"
            f"{first.record.line} {first.record.name}, stated {first.record.width}×{first.record.height}, the file "
            f"is {first.width}×{first.height}); the normalised labels were kept — check the files are the right ones"]


def _new_image(item: LabelledImage) -> NewImage:
    annotations = [NewAnnotation(tag) for tag in item.tags] + [
        NewAnnotation(i.label, (i.x0, i.y0, i.x1, i.y1),
                      [list(p) for p in i.polygons] or None, i.is_crowd)
        for i in item.instances
    ]
    return NewImage(item.sha256, item.record.name, item.suffix, item.width, item.height,
                    item.split, annotations)
