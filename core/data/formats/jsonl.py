"""JSON Lines in the reference schema (SPEC §2), for all four tasks; reader and writer."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from core.base.tasks import LabelKind
from core.data.formats.base import files_with_suffix, formats, relative_name, text_lines
from core.data.records import ImageRecord, Instance, Problem

BOX_FIELDS = ("topX", "topY", "bottomX", "bottomY")
# The datastores the person mapped to folders (`kestrel datastore create`), for the read in progress:
# the importer and the preview set them, so every format that reads JSONL lines resolves alike.
_DATASTORES: ContextVar[Mapping[str, Path]] = ContextVar("datastores", default=MappingProxyType({}))
MAP_HINT = "or map the datastore to its folder: `kestrel datastore create NAME --path DIR`"


@contextmanager
def using_datastores(datastores: Mapping[str, Path]) -> Iterator[None]:
    token = _DATASTORES.set(MappingProxyType(dict(datastores)))
    try:
        yield
    finally:
        _DATASTORES.reset(token)


class LineError(ValueError):
    """A problem with one line, carrying the fix to suggest."""

    def __init__(self, error: str, fix: str) -> None:
        super().__init__(error)
        self.fix = fix


def resolve_image_url(url: str, jsonl_dir: Path, data_root: Path) -> tuple[Path, str, str]:
    """The local file an ``image_url`` names, the name to show for it, and how an azureml:// URL was
    resolved (ImageRecord.resolved).

    ``azureml://.../datastores/<store>/paths/<rel>`` is ``<rel>`` in the folder mapped to ``<store>``
    (`using_datastores`). Unmapped, it is resolved against the folder being imported: a local copy of a
    datastore keeps its layout, but people download only part of it (``train/buildings/1.jpg`` of
    ``LocalUpload/<hash>/train/buildings/1.jpg``), so the longest tail of ``<rel>`` that is a file
    there is taken.
    """
    if url.startswith("azureml://"):
        if "/paths/" not in url:
            raise LineError(
                f"image_url {url!r} has no '/paths/<relative path>' part",
                "use an azureml:// URL ending in /paths/<file>, or a relative path",
            )
        parts = PurePosixPath(url.split("/paths/", 1)[1].lstrip("/")).parts
        if ".." in parts or not parts:
            raise LineError(f"image_url {url!r} climbs out of its datastore with '..'",
                            "give the file's path below /paths/ without '..'")
        store = url.split("/paths/", 1)[0].rpartition("/datastores/")[2] if "/datastores/" in url else ""
        if store in _DATASTORES.get():
            root = _DATASTORES.get()[store]
            if not (root / "/".join(parts)).is_file():
                raise LineError(f"datastore {store} is mapped to {root}, which holds no {'/'.join(parts)}",
                                f"copy the file there, or map {store} to the folder that holds it")
            return root / "/".join(parts), f"{store}/{'/'.join(parts)}", f"datastore {store}"
        for start in range(len(parts)):
            rel = "/".join(parts[start:])
            if (data_root / rel).is_file():
                return data_root / rel, rel, "path tail"
        raise LineError(f"no file in the imported folder ends with {parts[-1]!r} of {url!r}",
                        "import the folder that holds the datastore's files (its layout below /paths/, "
                        f"or any tail of it such as train/<class>/<file>), {MAP_HINT}")
    path = Path(url)
    if not path.is_absolute():
        path = (jsonl_dir / path).resolve()
    return path, relative_name(path, data_root.resolve()), ""


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise LineError(f"{field} is {value!r}, not a number", f"give {field} as a number in 0..1")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LineError(
            f"{field} is {value!r}, not a number", f"give {field} as a number in 0..1"
        ) from None
    if not math.isfinite(number):  # JSON's NaN/Infinity, or "nan" as text: no box has them
        raise LineError(f"{field} is {value!r}, not a finite number", f"give {field} as a number in 0..1")
    return number


def _instance(obj: Any, index: int) -> Instance:
    where = f"label[{index}]"
    if not isinstance(obj, dict):
        raise LineError(f"{where} is not an object", 'give each box as {"label": ..., "topX": ...}')
    name = obj.get("label")
    if not isinstance(name, str) or not name.strip():
        raise LineError(f"{where} has no class name in 'label'", "add the class name as a string")
    missing = [f for f in BOX_FIELDS if f not in obj]
    if missing:
        raise LineError(f"{where} lacks {', '.join(missing)}", "give topX, topY, bottomX, bottomY")
    x0, y0, x1, y1 = (_number(obj[f], f"{where}.{f}") for f in BOX_FIELDS)
    polygons: list[tuple[float, ...]] = []
    for k, poly in enumerate(obj.get("polygon") or []):
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            raise LineError(
                f"{where}.polygon[{k}] is not a flat list of at least 3 x, y pairs",
                "write each polygon as [x1, y1, x2, y2, x3, y3, ...] normalised to 0..1",
            )
        polygons.append(tuple(_number(v, f"{where}.polygon[{k}]") for v in poly))
    crowd = obj.get("isCrowd", 0)
    return Instance(name.strip(), x0, y0, x1, y1, tuple(polygons), str(crowd) in ("1", "True", "true"))


def parse_label(label: Any) -> tuple[LabelKind | None, tuple[str, ...], tuple[Instance, ...]]:
    """The label kind and labels of one line's ``label`` value.

    An empty list fits every list kind (an image without objects or tags): kind None. Numbers may be
    given as strings and ``isCrowd`` as a bool, 0/1 or "true"/"false", as the reference's examples do.
    """
    if isinstance(label, str):
        if not label.strip():
            raise LineError("label is empty", "give the image's class name")
        return LabelKind.TAG, (label.strip(),), ()
    if isinstance(label, dict):  # the reference's examples also give a single box as one object
        label = [label]
    if not isinstance(label, list):
        raise LineError(
            f"label is {type(label).__name__}, not a class name or a list",
            'use "label": "cat", "label": ["cat", "dog"] or a list of boxes',
        )
    if not label:
        return None, (), ()
    if all(isinstance(v, str) for v in label):
        return LabelKind.TAGS, tuple(dict.fromkeys(v.strip() for v in label)), ()
    instances = tuple(_instance(obj, i) for i, obj in enumerate(label))
    kind = LabelKind.POLYGONS if any(inst.polygons for inst in instances) else LabelKind.BOXES
    return kind, (), instances


def _size(details: Any, key: str) -> int | None:
    if not isinstance(details, dict) or key not in details:
        return None
    try:
        return int(float(str(details[key]).removesuffix("px")))
    except (ValueError, OverflowError):  # "nanpx", "infpx": no stated size
        return None


def read_jsonl(file: Path, data_root: Path) -> Iterator[ImageRecord | Problem]:
    origin = file.name
    for line_no, text in enumerate(text_lines(file), start=1):
        if not text.strip():
            continue
        try:
            yield _record(text, file, data_root, line_no)
        except json.JSONDecodeError as exc:
            yield Problem(origin, line_no, f"malformed JSON: {exc.msg} at column {exc.colno}",
                          "make the line one complete JSON object")
        except LineError as exc:
            yield Problem(origin, line_no, str(exc), exc.fix)


def _record(text: str, file: Path, data_root: Path, line_no: int) -> ImageRecord:
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise LineError("the line is not a JSON object", "write one {...} object per line")
    url = obj.get("image_url")
    if not isinstance(url, str) or not url:
        raise LineError("no image_url", 'add "image_url": "<path of the image>"')
    if "label" not in obj:
        raise LineError("no label", 'add "label" with the image\'s class or boxes')
    image, name, resolved = resolve_image_url(url, file.parent, data_root)
    kind, tags, instances = parse_label(obj["label"])
    details = obj.get("image_details")
    return ImageRecord(image, name, file.name, line_no, kind, tags, instances,
                       _size(details, "width"), _size(details, "height"), resolved)


@formats.register("jsonl")
class JsonlFormat:
    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".jsonl"
        return bool(files_with_suffix(path, ".jsonl"))

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        if path.is_file():
            yield from read_jsonl(path, path.parent)
            return
        for file in files_with_suffix(path, ".jsonl"):
            yield from read_jsonl(file, path)


def record_line(record: ImageRecord, image_url: str) -> dict[str, Any]:
    """The reference-schema JSON object for one image."""
    label: Any
    if record.kind is LabelKind.TAG and record.tags:
        label = record.tags[0]
    elif record.kind in (LabelKind.TAG, LabelKind.TAGS):
        label = list(record.tags)
    else:
        label = []
        for inst in record.instances:
            box: dict[str, Any] = {"label": inst.label, "topX": inst.x0, "topY": inst.y0,
                                   "bottomX": inst.x1, "bottomY": inst.y1,
                                   "isCrowd": int(inst.is_crowd)}
            if record.kind is LabelKind.POLYGONS:
                box["polygon"] = [list(p) for p in inst.polygons]
            label.append(box)
    line: dict[str, Any] = {"image_url": image_url}
    if record.width and record.height:
        line["image_details"] = {"format": record.image.suffix.lstrip(".").lower(),
                                 "width": f"{record.width}px", "height": f"{record.height}px"}
    line["label"] = label
    return line


def write_jsonl(records: Iterable[tuple[ImageRecord, str]], file: Path) -> None:
    """Write ``(record, image_url)`` pairs as one JSON object per line."""
    with file.open("w", encoding="utf-8") as out:
        for record, url in records:
            out.write(json.dumps(record_line(record, url)) + "\n")
