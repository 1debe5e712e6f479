"""What an import would find, read before anything is committed: format, task, classes, image
count, the first images with their labels, and the problems in the annotations.

Reads the annotations only (the images are checked by the import itself) and stops after a
bounded number of items, so the studio can show it at once, even for a large dataset; torch-free.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.base.errors import InputError
from core.base.tasks import LabelKind, Task
from core.data.formats import detect_format, get_format
from core.data.formats.base import relative_name
from core.data.formats.jsonl import using_datastores
from core.data.importer import extract_zip, is_zip, task_from_kinds
from core.data.records import ImageRecord, Problem
from storage.artifacts import remove_tree
from storage.settings import Settings

SAMPLES = 6  # first images shown with their labels
MAX_ITEMS = 20_000  # annotation items read; past this the counts are "at least"
# Mask images are the annotations of the masks format, decoded one by one: a smaller sample.
MAX_ITEMS_BY_FORMAT = {"masks": 500}
MAX_PROBLEMS = 200  # problems listed; all are counted
WHOLE = "(the data as a whole)"  # the file named by a problem with all of it, not with one file


@dataclass(frozen=True)
class ImportPreview:
    """What reading the annotations of ``root`` as ``format`` found."""

    root: Path
    format: str
    task: Task | None  # None: the labels do not tell; ``task_problem`` says why
    task_problem: str
    images_per_class: dict[str, int]
    image_count: int
    samples: tuple[ImageRecord, ...]
    problems: tuple[Problem, ...]  # the first MAX_PROBLEMS, with file names relative to root
    problem_count: int
    is_complete: bool  # False: reading stopped after ``MAX_ITEMS`` items
    resolved: dict[str, int]  # azureml:// image URLs found, per way (ImageRecord.resolved)

    @property
    def classes(self) -> list[str]:
        """The class list as the import will store it (sorted), which fixes each class's colour."""
        return sorted(self.images_per_class)


def unpack(source: Path, settings: Settings) -> Path:
    """The folder to read: ``source`` itself, or for a zip the folder it is extracted into.

    A zip staged under the settings' staging folder is extracted beside itself and then deleted
    (one copy is enough); any other zip goes to a new folder under the staging folder. Either way
    the result lies inside the staging folder, so the import job removes it when it ends.
    """
    if not is_zip(source):
        return source
    staging = settings.staging_dir.resolve()
    is_staged = source.resolve().is_relative_to(staging)
    folder = source.parent if is_staged else settings.staging_dir / uuid.uuid4().hex
    try:
        root = extract_zip(source, folder / "unpacked", settings)
    except InputError:
        if not is_staged:
            remove_tree(folder)
        raise
    if is_staged:
        source.unlink()
    return root


def preview_dataset(root: Path, *, fmt: str | None = None, samples: int = SAMPLES,
                    max_items: int | None = None, datastores: Mapping[str, Path] | None = None) -> ImportPreview:
    """Read the annotations under ``root`` (a folder or an annotation file) as the importer would.

    ``fmt`` names the format; detected when None. At most ``max_items`` items are read (by default
    MAX_ITEMS, fewer for masks); azureml:// URLs resolve through ``datastores`` (name -> folder).
    Raises InputError when no known format is found or an annotation file cannot be read at all,
    ConfigError for an unknown format name.
    """
    records: list[ImageRecord] = []
    problems: list[Problem] = []
    per_class: Counter[str] = Counter()
    resolved: Counter[str] = Counter()
    kinds: set[LabelKind] = set()
    images = problem_count = 0
    is_complete = True
    base = root if root.is_dir() else root.parent
    try:
        name = fmt or detect_format(root)
        limit = max_items if max_items is not None else MAX_ITEMS_BY_FORMAT.get(name, MAX_ITEMS)
        with using_datastores(datastores or {}):
            for item in get_format(name).read(root):
                if images + problem_count >= limit:
                    is_complete = False
                    break
                if isinstance(item, Problem):
                    problem_count += 1
                    if len(problems) < MAX_PROBLEMS:
                        problems.append(Problem(_shown(item.file, base), item.line, item.error, item.fix))
                    continue
                images += 1
                if item.resolved:
                    resolved[item.resolved] += 1
                if len(records) < samples:
                    records.append(item)
                if item.kind is not None:
                    kinds.add(item.kind)
                per_class.update(set(item.tags) | {i.label for i in item.instances})
    except InputError as exc:
        raise InputError(_shown(exc.file, base), exc.problem, exc.fix, exc.line) from exc
    task, task_problem = _task(frozenset(kinds))
    return ImportPreview(root, name, task, task_problem, dict(sorted(per_class.items())), images,
                         tuple(records), tuple(problems), problem_count, is_complete, dict(resolved))


def _task(kinds: frozenset[LabelKind]) -> tuple[Task | None, str]:
    try:
        return task_from_kinds(kinds, ""), ""
    except InputError as exc:
        return None, exc.problem


def _shown(file: str, base: Path) -> str:
    """A file name as a person knows it: relative to the data's folder where it lies inside."""
    path = Path(file)
    if not path.is_absolute():
        return file
    return WHOLE if path.resolve() == base.resolve() else relative_name(path, base)
