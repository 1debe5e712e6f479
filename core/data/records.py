"""The in-memory vocabulary of labelled data, shared by every format, the importer and export.

Coordinates are normalised xyxy floats (0..1 of width/height) everywhere; formats convert
at their edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.base.tasks import LabelKind

Polygon = tuple[float, ...]  # flat x1, y1, x2, y2, ... normalised


@dataclass(frozen=True)
class Instance:
    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    polygons: tuple[Polygon, ...] = ()
    is_crowd: bool = False


@dataclass(frozen=True)
class ImageRecord:
    """One image and its labels, as a format read them (not yet validated)."""

    image: Path  # where the image bytes are
    name: str  # relative name shown to people and used on export
    origin: str  # the annotation file (or image) that described it, for problem reports
    line: int | None
    kind: LabelKind | None  # None: an empty label list, which fits every list kind
    tags: tuple[str, ...] = ()
    instances: tuple[Instance, ...] = ()
    width: int | None = None  # as stated by the annotation file, when it states it
    height: int | None = None
    resolved: str = ""  # how an azureml:// URL found its file ("datastore NAME", "path tail"); "" otherwise


@dataclass(frozen=True)
class Problem:
    """An item that cannot be imported: where it is, what is wrong, what to do."""

    file: str
    line: int | None
    error: str
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "error": self.error, "fix": self.fix}


@dataclass
class LabelledImage:
    """A validated image ready to store: content hash, real size and clean labels."""

    record: ImageRecord
    sha256: str
    suffix: str
    width: int
    height: int
    tags: tuple[str, ...] = ()
    instances: tuple[Instance, ...] = ()
    split: str = "train"
    extra: dict[str, object] = field(default_factory=dict)
