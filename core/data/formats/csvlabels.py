"""Classification CSV: ``filename,label`` with one class per row (multi-class), or ``filename,labels``
with several separated by spaces or commas (multi-label); a dataset with any row of several is
multi-label."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from core.base.errors import InputError
from core.base.tasks import LabelKind
from core.data.formats.base import files_with_suffix, formats, relative_name, text_lines
from core.data.records import ImageRecord, Problem

FILE_COLUMNS = ("filename", "file", "image", "image_url", "path")
LABEL_COLUMNS = ("labels", "label", "tags")


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def read_csv(file: Path) -> Iterator[ImageRecord | Problem]:
    origin = file.name
    rows = csv.reader(text_lines(file))
    header = next(rows, None) or []
    file_col, label_col = _column(header, FILE_COLUMNS), _column(header, LABEL_COLUMNS)
    if file_col is None or label_col is None:
        raise InputError(
            str(file), f"header {header!r} lacks a file or labels column",
            "start the CSV with the header 'filename,labels'", line=1,
        )
    for line_no, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(file_col, label_col):
            # An unquoted comma-separated label list spreads over the following cells.
            if len(row) <= file_col:
                yield Problem(origin, line_no, "the row has no file name", "write 'file,labels'")
                continue
        cells = row[label_col:] if label_col == len(header) - 1 else row[label_col:label_col + 1]
        labels = [t for cell in cells for t in cell.replace(",", " ").split() if t]
        image = (file.parent / row[file_col].strip()).resolve()
        name = relative_name(image, file.parent.resolve())
        tags = tuple(dict.fromkeys(labels))
        kind = LabelKind.TAG if len(tags) == 1 else LabelKind.TAGS if tags else None
        yield ImageRecord(image, name, origin, line_no, kind, tags)


@formats.register("csv")
class CsvFormat:
    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".csv"
        return bool(files_with_suffix(path, ".csv"))

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        for file in [path] if path.is_file() else files_with_suffix(path, ".csv"):
            yield from read_csv(file)
