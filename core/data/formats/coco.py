"""COCO instances JSON (boxes, polygons, RLE masks); reader and writer."""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from core.base.errors import InputError
from core.base.tasks import LabelKind
from core.data.formats.base import files_with_suffix, formats, read_text, relative_name
from core.data.masks import mask_to_polygons, polygon_extent
from core.data.records import ImageRecord, Instance, Polygon, Problem

CHUNK = 1 << 20
ANNOTATION_DIRS = ("annotations", "Annotations")


class AnnotationError(ValueError):
    def __init__(self, error: str, fix: str) -> None:
        super().__init__(error)
        self.fix = fix


def looks_like_coco(file: Path) -> bool:
    """A JSON object mentioning both "images" and "annotations", found by streaming bytes.

    Scanning raw chunks costs little even for a huge file and never builds the object;
    read() still checks that they are top-level keys.
    """
    wanted, tail = {b'"images"', b'"annotations"'}, b""
    try:
        with file.open("rb") as handle:
            head = handle.read(CHUNK)
            if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
                return False
            chunk = head
            while chunk and wanted:
                window = tail + chunk
                wanted = {w for w in wanted if w not in window}
                tail, chunk = window[-16:], handle.read(CHUNK)
    except OSError:
        return False
    return not wanted


def coco_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    candidates = files_with_suffix(path, ".json")
    for sub in ANNOTATION_DIRS:
        candidates += files_with_suffix(path / sub, ".json")
    found = [f for f in candidates if looks_like_coco(f)]
    # The official annotations/ folder also holds captions_* and person_keypoints_* files in
    # the same shape; the instances_* files are the object labels.
    instances = [f for f in found if f.name.startswith("instances")]
    return instances or found


def data_root(file: Path) -> Path:
    """The folder image names are shown relative to: above an ``annotations/`` folder."""
    return file.parent.parent if file.parent.name in ANNOTATION_DIRS else file.parent


class ImageFinder:
    """Where ``file_name`` lies, trying the usual layouts around the JSON's folder."""

    def __init__(self, json_dir: Path) -> None:
        self.bases = [json_dir, json_dir / "images", json_dir.parent / "images"]
        if json_dir.name in ANNOTATION_DIRS:
            # coco128 style: annotations/instances_train2017.json beside train2017/*.jpg.
            self.bases += sorted(d for d in json_dir.parent.iterdir()
                                 if d.is_dir() and d != json_dir and not d.name.startswith("."))
        self.last = json_dir

    def find(self, file_name: str) -> Path:
        for base in [self.last, *self.bases]:
            if (base / file_name).is_file():
                self.last = base
                return (base / file_name).resolve()
        return (self.bases[0] / file_name).resolve()  # missing: the importer reports it


def load(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(file))
    except json.JSONDecodeError as exc:
        raise InputError(str(file), f"malformed JSON: {exc.msg}", "fix the JSON syntax",
                         line=exc.lineno) from exc
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise InputError(str(file), "not a COCO file: no top-level 'images' and 'annotations'",
                         "export the dataset as COCO instances JSON")
    return data


def rle_polygons(seg: dict[str, Any], ann_id: Any) -> list[Polygon]:
    from pycocotools import mask as mask_utils  # only RLE needs it

    size = seg.get("size")
    if not (isinstance(size, list) and len(size) == 2):
        raise AnnotationError(f"annotation id {ann_id}: RLE segmentation has no [height, width] "
                              "size", "give the RLE as {\"size\": [h, w], \"counts\": ...}")
    try:
        rle = mask_utils.frPyObjects(seg, size[0], size[1]) if isinstance(
            seg.get("counts"), list) else seg
        with warnings.catch_warnings():  # pycocotools' own numpy-2 copy= deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = mask_utils.decode(rle)
        return mask_to_polygons(mask)
    except Exception as exc:  # pycocotools raises bare errors for bad counts
        raise AnnotationError(f"annotation id {ann_id}: cannot decode RLE: {exc}",
                              "re-export the segmentation") from exc


def segmentation(seg: Any, ann_id: Any, width: int, height: int) -> list[Polygon]:
    if not seg:
        return []
    if isinstance(seg, dict):
        return rle_polygons(seg, ann_id)
    if not isinstance(seg, list):
        raise AnnotationError(f"annotation id {ann_id}: segmentation is {type(seg).__name__}",
                              "give a list of polygons or an RLE object")
    polygons = []
    for k, poly in enumerate(seg):
        if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                or not all(isinstance(v, int | float) for v in poly)):
            raise AnnotationError(
                f"annotation id {ann_id}: segmentation[{k}] is not a flat list of >= 3 x, y pairs",
                "write each polygon as [x1, y1, x2, y2, x3, y3, ...] in pixels")
        polygons.append(tuple(v / (width if i % 2 == 0 else height) for i, v in enumerate(poly)))
    return polygons


def instance(ann: dict[str, Any], categories: dict[Any, str], width: int, height: int) -> Instance:
    ann_id = ann.get("id")
    name = categories.get(ann.get("category_id"))
    if name is None:
        raise AnnotationError(f"annotation id {ann_id}: unknown category_id "
                              f"{ann.get('category_id')!r}", "add the category to 'categories' "
                              "or fix the annotation's category_id")
    polygons = segmentation(ann.get("segmentation"), ann_id, width, height)
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox):
        x, y, w, h = bbox
        box = (x / width, y / height, (x + w) / width, (y + h) / height)
    elif polygons:
        box = polygon_extent(polygons)
    else:
        raise AnnotationError(f"annotation id {ann_id}: no bbox [x, y, width, height]",
                              "add a bbox in pixels")
    return Instance(name, *box, tuple(polygons), bool(ann.get("iscrowd", 0)))


def image_record(image: dict[str, Any], anns: list[dict[str, Any]], categories: dict[Any, str],
                 finder: ImageFinder, root: Path, origin: str) -> ImageRecord | list[Problem]:
    """The image with all its annotations, or the problems that keep it out.

    One bad annotation rejects the whole image: importing it without that object would
    teach the model that the object is background.
    """
    file_name, width, height = image.get("file_name"), image.get("width"), image.get("height")
    where = f"image id {image.get('id')}"
    if not isinstance(file_name, str) or not file_name:
        return [Problem(origin, None, f"{where} has no file_name", "add the image's file_name")]
    if not (isinstance(width, int | float) and isinstance(height, int | float)
            and math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        return [Problem(origin, None, f"{where} ({file_name}) has no positive width/height",
                        "add the image's width and height in pixels")]
    instances, problems = [], []
    for ann in anns:
        try:
            instances.append(instance(ann, categories, width, height))
        except AnnotationError as exc:
            problems.append(Problem(origin, None, f"{exc} ({file_name})", exc.fix))
    if problems:
        return problems
    path = finder.find(file_name)
    kind = None if not instances else (
        LabelKind.POLYGONS if any(i.polygons for i in instances) else LabelKind.BOXES)
    return ImageRecord(path, relative_name(path, root.resolve()), origin, None, kind, (),
                       tuple(instances), int(width), int(height))


def read_coco(file: Path) -> Iterator[ImageRecord | Problem]:
    data, origin = load(file), file.name
    categories = {c.get("id"): str(c.get("name")) for c in data.get("categories") or []
                  if isinstance(c, dict)}
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        if isinstance(ann, dict):
            by_image[ann.get("image_id")].append(ann)
    finder, root = ImageFinder(file.parent), data_root(file)
    known = set()
    for image in data["images"]:
        if not isinstance(image, dict):
            continue
        known.add(image.get("id"))
        result = image_record(image, by_image.get(image.get("id"), []), categories, finder,
                              root, origin)
        yield from result if isinstance(result, list) else [result]
    for image_id in by_image.keys() - known:
        yield Problem(origin, None, f"{len(by_image[image_id])} annotation(s) name image_id "
                      f"{image_id!r}, which is not in 'images'", "add the image or drop them")


@formats.register("coco")
class CocoFormat:
    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".json" and looks_like_coco(path)
        return path.is_dir() and bool(coco_files(path))

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        for file in coco_files(path):
            yield from read_coco(file)


def write_coco(records: Iterable[tuple[ImageRecord, str]], classes: list[str], file: Path) -> None:
    """Write ``(record, file_name)`` pairs as COCO instances; category ids 1..n in ``classes``
    order. Coordinates stay unrounded floats so a round trip keeps boxes exact."""
    ids = {name: i for i, name in enumerate(classes, start=1)}
    images, annotations = [], []
    for image_id, (record, file_name) in enumerate(records, start=1):
        w, h = record.width, record.height
        if not w or not h:
            raise ValueError(f"{record.name}: width/height unknown; COCO needs them")
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for inst in record.instances:
            if inst.label not in ids:
                raise ValueError(f"{record.name}: class {inst.label!r} is not in classes")
            box = [inst.x0 * w, inst.y0 * h, (inst.x1 - inst.x0) * w, (inst.y1 - inst.y0) * h]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": ids[inst.label],
                "bbox": box, "area": box[2] * box[3], "iscrowd": int(inst.is_crowd),
                "segmentation": [[v * (w if i % 2 == 0 else h) for i, v in enumerate(p)]
                                 for p in inst.polygons],
            })
    categories = [{"id": i, "name": name, "supercategory": ""} for name, i in ids.items()]
    file.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}), encoding="utf-8")
