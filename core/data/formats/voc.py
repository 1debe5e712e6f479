"""Pascal VOC XML: one ``<annotation>`` file per image with pixel ``<bndbox>`` boxes."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from core.base.tasks import LabelKind
from core.data.formats.base import files_with_suffix, formats, relative_name
from core.data.records import ImageRecord, Instance, Problem

ANNOTATION_DIRS = ("annotations", "Annotations")
BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
# Expat expands internal entities, so a "billion laughs" file would exhaust memory; no VOC
# tool writes a DTD, so any declaration is refused before parsing (defusedxml's policy).
DECLARATION = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)
FIRST_TAG = re.compile(rb"<([A-Za-z_][\w.-]*)")
COMMENT = re.compile(rb"<!--.*?-->", re.DOTALL)


class VocError(ValueError):
    def __init__(self, error: str, fix: str, line: int | None = None) -> None:
        super().__init__(error)
        self.fix, self.line = fix, line


def is_voc_file(file: Path) -> bool:
    """The root element, from the file's first bytes, is ``<annotation>``."""
    try:
        with file.open("rb") as handle:
            head = COMMENT.sub(b"", handle.read(4096))
    except OSError:
        return False
    match = FIRST_TAG.search(head)
    return bool(match) and match.group(1) == b"annotation"


def xml_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = files_with_suffix(path, ".xml")
    for sub in ANNOTATION_DIRS:
        files += files_with_suffix(path / sub, ".xml")
    return files


def parse(file: Path) -> ET.Element:
    data = file.read_bytes()
    declaration = DECLARATION.search(data)
    if declaration:
        line = data.count(b"\n", 0, declaration.start()) + 1
        raise VocError("XML with <!DOCTYPE>/<!ENTITY> declarations is refused (entity "
                       "expansion can exhaust memory)", "remove the DOCTYPE block", line)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise VocError(f"malformed XML: {exc}", "fix the XML (every tag closed, one root "
                       "element)", exc.position[0]) from None
    if root.tag != "annotation":
        raise VocError(f"root element is <{root.tag}>, not <annotation>",
                       "give Pascal VOC XML files only")
    return root


def number(parent: ET.Element, tag: str, where: str) -> float:
    text = parent.findtext(tag)
    try:
        value = float((text or "").strip())
    except ValueError:
        raise VocError(f"{where}: <{tag}> is {text!r}, not a number",
                       f"give <{tag}> in pixels") from None
    if not math.isfinite(value):  # "nan" and "inf" parse as floats but are no pixel position
        raise VocError(f"{where}: <{tag}> is {text!r}, not a finite number", f"give <{tag}> in pixels")
    return value


def image_size(root: ET.Element) -> tuple[int, int]:
    size = root.find("size")
    fix = "add <size><width>W</width><height>H</height></size> with the image's pixel size"
    if size is None:
        raise VocError("no <size>: boxes cannot be normalised", fix)
    width, height = number(size, "width", "<size>"), number(size, "height", "<size>")
    if width <= 0 or height <= 0:
        raise VocError(f"<size> is {width:g}×{height:g}: boxes cannot be normalised", fix)
    return int(width), int(height)


def objects(root: ET.Element, width: int, height: int) -> tuple[Instance, ...]:
    instances = []
    for n, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise VocError(f"<object> #{n} has no <name>", "add the class name as <name>")
        box = obj.find("bndbox")
        if box is None:
            raise VocError(f"<object> #{n} ({name}) has no <bndbox>",
                           "add <bndbox> with xmin, ymin, xmax, ymax")
        x0, y0, x1, y1 = (number(box, f, f"<object> #{n} ({name})") for f in BOX_FIELDS)
        # <difficult> objects are kept: leaving them out would mark them as background.
        instances.append(Instance(name, x0 / width, y0 / height, x1 / width, y1 / height))
    return tuple(instances)


def find_image(root: ET.Element, xml_dir: Path, data_root: Path) -> Path:
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise VocError("no <filename>", "add <filename> naming the image file")
    folders = [xml_dir.parent / "images", xml_dir.parent / "JPEGImages", xml_dir,
               data_root / "images"]
    candidates = [folder / filename for folder in folders]
    stated = (root.findtext("path") or "").strip()
    if stated:
        candidates.append(xml_dir / stated)  # an absolute <path> stays absolute
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:  # missing: point where it most likely belongs; the importer reports it
        found = next((c for c in candidates if c.parent.is_dir()), candidates[0])
    return found.resolve()


def read_voc(file: Path, data_root: Path) -> ImageRecord | Problem:
    origin = relative_name(file, data_root)
    try:
        root = parse(file)
        width, height = image_size(root)
        instances = objects(root, width, height)
        image = find_image(root, file.parent, data_root)
    except VocError as exc:
        return Problem(origin, exc.line, str(exc), exc.fix)
    except OSError as exc:
        return Problem(origin, None, f"cannot read: {exc.strerror}", "check the file")
    kind = LabelKind.BOXES if instances else None
    return ImageRecord(image, relative_name(image, data_root.resolve()), origin, None, kind,
                       (), instances, width, height)


def voc_root(path: Path) -> Path:
    """The dataset folder: the one given, a lone XML's folder, or above ``Annotations/``."""
    folder = path if path.is_dir() else path.parent
    return folder.parent if folder.name in ANNOTATION_DIRS else folder


@formats.register("voc")
class VocFormat:
    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".xml" and is_voc_file(path)
        return any(is_voc_file(f) for f in xml_files(path)[:5])

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        root = voc_root(path)
        for file in xml_files(path):
            yield read_voc(file, root)
