"""YOLO / YOLO-seg txt labels with a data YAML (``names``, ``path``, ``train``, ``val``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.base.errors import InputError
from core.base.tasks import LabelKind
from core.data.formats.base import formats, is_image, relative_name, text_lines
from core.data.masks import polygon_extent
from core.data.records import ImageRecord, Instance, Problem

SPLITS = ("train", "val")  # a "test" split is held out by its authors, so it is not imported
MAX_YAML_BYTES = 1 << 20


class LineError(ValueError):
    def __init__(self, error: str, fix: str) -> None:
        super().__init__(error)
        self.fix = fix


@dataclass(frozen=True)
class Split:
    images: Path  # folder of images (searched recursively)
    labels: Path  # folder mirroring it with one .txt per image
    root: Path  # names are shown relative to this


def load_yaml(file: Path) -> dict[str, Any] | None:
    """The YAML's mapping when it has a ``names`` key; None for any other file."""
    try:
        if file.stat().st_size > MAX_YAML_BYTES:
            return None
        spec = yaml.safe_load(file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return spec if isinstance(spec, dict) and "names" in spec else None


def find_yaml(path: Path) -> tuple[Path, dict[str, Any]] | None:
    if path.is_file():
        candidates = [path] if path.suffix.lower() in (".yaml", ".yml") else []
    else:
        others = sorted(path.glob("*.y*ml")) if path.is_dir() else []
        candidates = [path / "data.yaml", *(p for p in others if p.name != "data.yaml")]
    for file in candidates:
        spec = load_yaml(file) if file.is_file() else None
        if spec is not None:
            return file, spec
    return None


def class_names(spec: dict[str, Any], file: Path) -> dict[int, str]:
    names = spec["names"]
    try:
        if isinstance(names, list):
            return {i: str(n) for i, n in enumerate(names)}
        if isinstance(names, dict):
            return {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        pass
    raise InputError(str(file), "'names' is neither a list nor an {id: name} mapping",
                     "write names: [cat, dog] or names: {0: cat, 1: dog}")


def labels_dir(images: Path) -> Path:
    """Ultralytics' rule: the last ``images`` component becomes ``labels``; without one the
    labels lie beside the images."""
    parts = list(images.parts)
    if "images" not in parts:
        return images
    i = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:i], "labels", *parts[i + 1:])


def image_folder_near(start: Path, name: str) -> Path | None:
    """A folder called ``name`` (or ``images/name``) at ``start`` or up to 3 levels above.

    Exported label sets (e.g. Lightly's coco128_yolo: ``labels/train2017/*.txt`` beside
    ``config.yaml``) often ship without the images, which the user keeps in the original
    dataset folder a few levels up (``coco128/train2017/``).
    """
    for folder in [start, *start.parents][:4]:
        for candidate in (folder / name, folder / "images" / name):
            if candidate.is_dir():
                return candidate
    return None


def splits(file: Path, spec: dict[str, Any]) -> list[Split]:
    base = file.parent / str(spec.get("path") or ".")
    if not base.is_dir():  # a 'path' meant for the author's machine; use the YAML's folder
        base = file.parent
    found: dict[Path, Split] = {}
    for key in SPLITS:
        entries = spec.get(key) or []
        for entry in [entries] if isinstance(entries, str) else entries:
            images = (base / str(entry)).resolve()
            if images.is_dir():
                split = Split(images, labels_dir(images), base.resolve())
            elif (file.parent / "labels" / images.name).is_dir():
                labels = (file.parent / "labels" / images.name).resolve()
                folder = image_folder_near(file.parent.resolve(), images.name)
                if folder is None:
                    raise InputError(str(file), f"no images for labels/{images.name}: neither "
                                     f"{entry} nor a folder {images.name}/ up to 3 levels up",
                                     f"put the images in {images}")
                split = Split(folder, labels, folder.parent)
            else:
                continue
            found.setdefault(split.images, split)
    if not found:
        raise InputError(str(file), "no image folder found for 'train' or 'val'",
                         "point train/val at folders of images, relative to 'path'")
    return list(found.values())


def parse_line(text: str, names: dict[int, str]) -> Instance:
    parts = text.split()
    if len(parts) != 5 and (len(parts) < 7 or len(parts) % 2 == 0):
        raise LineError(f"{len(parts)} values; a box has 5, a polygon 1 + an even number >= 6",
                        "write 'class xc yc w h' or 'class x1 y1 x2 y2 x3 y3 ...'")
    try:
        cls, values = float(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        raise LineError("a value is not a number", "use numbers only, normalised to 0..1") from None
    if not cls.is_integer() or int(cls) not in names:
        raise LineError(f"class id {parts[0]} is not in the YAML's names",
                        "use an id listed under 'names', or add it there")
    name = names[int(cls)]
    if len(values) == 4:
        xc, yc, w, h = values
        return Instance(name, xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2)
    polygon = tuple(values)
    return Instance(name, *polygon_extent([polygon]), polygons=(polygon,))


def read_labels(label: Path, names: dict[int, str],
                origin: str) -> tuple[Instance, ...] | list[Problem]:
    """The instances of one label file, or a Problem per bad line (the image is then
    skipped: dropping only the bad object would mark it as background)."""
    instances, problems = [], []
    try:
        for line_no, text in enumerate(text_lines(label), start=1):
            if not text.strip():
                continue
            try:
                instances.append(parse_line(text, names))
            except LineError as exc:
                problems.append(Problem(origin, line_no, str(exc), exc.fix))
    except InputError as exc:  # not UTF-8: this image is skipped, like one with a bad line
        return [Problem(origin, exc.line, exc.problem, exc.fix)]
    return problems or tuple(instances)


def read_split(split: Split, names: dict[int, str], yaml_dir: Path, skip_unlabelled: bool,
               seen: set[Path]) -> Iterator[ImageRecord | Problem]:
    expected = set()
    for image in sorted(p for p in split.images.rglob("*") if p.is_file() and is_image(p)):
        if image in seen:  # nested or repeated split folders: each image once
            continue
        seen.add(image)
        label = split.labels / image.relative_to(split.images).with_suffix(".txt")
        expected.add(label)
        name = relative_name(image, split.root)
        if not label.is_file():
            if not skip_unlabelled:  # a background image: no objects
                yield ImageRecord(image, name, name, None, None)
            continue
        origin = relative_name(label, yaml_dir)
        result = read_labels(label, names, origin)
        if isinstance(result, list):
            yield from result
            continue
        kind = None if not result else (
            LabelKind.POLYGONS if any(i.polygons for i in result) else LabelKind.BOXES)
        yield ImageRecord(image, name, origin, None, kind, (), result)
    for label in sorted(split.labels.rglob("*.txt")) if split.labels.is_dir() else []:
        if label not in expected and not label.name.startswith("."):
            yield Problem(relative_name(label, yaml_dir), None, "label file has no image",
                          f"add the image {label.stem}.<jpg|png> to {split.images} or delete "
                          "the label file")


@formats.register("yolo")
class YoloFormat:
    def detect(self, path: Path) -> bool:
        found = find_yaml(path)
        if found is None:
            return False
        file, spec = found
        return any(k in spec for k in SPLITS) or (file.parent / "labels").is_dir()

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        found = find_yaml(path)
        if found is None:
            raise InputError(str(path), "no YOLO data YAML with 'names' here",
                             "add data.yaml with names, path, train and val")
        file, spec = found
        names = class_names(spec, file)
        # Lightly's coco128_yolo sets this: images without a label file are not annotated
        # (rather than annotated as empty), so they must not become background images.
        skip, seen = bool(spec.get("skip_if_label_file_missing")), set()
        for split in splits(file, spec):
            yield from read_split(split, names, file.parent.resolve(), skip, seen)
