"""Edited labels saved as a new dataset version: same images (same blobs, names and splits),
new tags, boxes or polygons. The edited version is never touched; torch-free, so the studio calls it.

Also the studio's drawing canvas (Fabric.js objects) to and from polygon labels, as pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlmodel import Session

from core.base.errors import InputError, NotFound
from core.base.tasks import LabelKind, Task, spec
from core.data.draw import PALETTE, colour_for
from core.data.records import ImageRecord, Instance, LabelledImage, Polygon
from core.data.stats import compute_stats, version_warnings
from storage.repos.datasets import NewAnnotation, NewImage, NewVersion, annotations, create_version, images
from storage.tables import Annotation, Dataset, DatasetVersion

# The importer's thresholds (core.data.importer): kept equal so a relabelled version warns as an
# imported one would, without pulling the format readers (and OpenCV) into the studio.
MIN_BOX_SIDE = 1e-3  # a box thinner than this is a stray click, not an object
DECIMALS = 4  # of a normalised coordinate: finer than a pixel of any image we accept
POLYGON_FILL_ALPHA = 0.25  # polygons on the canvas are filled at low opacity, as in every picture

Box = tuple[float, float, float, float]
Edits = Mapping[int, Sequence[NewAnnotation]]  # image id -> that image's complete new label list


@dataclass(frozen=True)
class EditedLabel:
    """One label as the studio edits it: a tag (no box), a box, or polygons with the box around them."""

    label: str
    box: Box | None = None
    polygons: tuple[Polygon, ...] = ()

    def annotation(self) -> NewAnnotation:
        return NewAnnotation(self.label, self.box, [list(p) for p in self.polygons] or None)

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "box": list(self.box) if self.box else None,
                "polygons": [list(p) for p in self.polygons]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EditedLabel:
        """Read back what ``as_json`` wrote; ValueError/TypeError/KeyError for anything else."""
        box = data.get("box")
        if box is not None and len(box) != 4:
            raise ValueError(f"a box has {len(box)} numbers, not 4")
        return cls(str(data["label"]), None if box is None else _rounded(box),
                   tuple(tuple(float(v) for v in p) for p in data.get("polygons") or ()))


def stored_labels(rows: Sequence[Annotation], kind: LabelKind) -> tuple[EditedLabel, ...]:
    """Stored annotations as the studio edits them for a task of label ``kind``: tags, boxes, or (for
    polygons) one label per polygon with the box around it, the form the canvas gives back, so an
    untouched image compares equal."""
    labels = []
    for row in rows:
        if row.polygon and kind == LabelKind.POLYGONS:
            for polygon in row.polygon:
                if len(polygon) >= 6:
                    flat = tuple(round(min(1.0, max(0.0, float(v))), DECIMALS) for v in polygon)
                    labels.append(EditedLabel(row.label, _rounded(polygon_extent([flat])), (flat,)))
        elif None in (row.x0, row.y0, row.x1, row.y1):
            labels.append(EditedLabel(row.label))
        else:
            labels.append(EditedLabel(row.label, _rounded((row.x0, row.y0, row.x1, row.y1))))  # type: ignore[arg-type]
    return tuple(labels)


def relabel_version(*, session: Session, version_id: int, edits: Edits, added: Sequence[NewImage] = (),
                    source: str = "relabelled in the studio") -> DatasetVersion:
    """Store the next version of the dataset of ``version_id`` with ``edits`` in place of the
    labels of the images they name, and the ``added`` images (checked the same way) after them;
    every other image keeps its labels.

    Raises NotFound for an unknown version and InputError (naming the image) for labels the
    task cannot hold: a multi-class image needs exactly one tag, a box must lie inside 0..1
    with positive width and height, and so must the box around a polygon of at least three points.
    """
    version = session.get(DatasetVersion, version_id)
    if version is None:
        raise NotFound(f"dataset version {version_id} does not exist")
    task = Task(version.task)
    kind = spec(task).label_kind
    items = images(session=session, version_id=version_id)
    known = {i.id for i in items}
    if unknown := sorted(set(edits) - known):
        raise NotFound(f"images {unknown} are not in version {version.version}")
    stored = annotations(session=session, image_ids=[i.id for i in items if i.id not in edits])
    new_images = []
    for item in items:
        if item.id in edits:
            labels = _checked_all(edits[item.id], kind, item.file_name)
        else:
            labels = [NewAnnotation(a.label, None if a.x0 is None else (a.x0, a.y0, a.x1, a.y1),  # type: ignore[arg-type]
                                    a.polygon, a.is_crowd) for a in stored[item.id]]
        new_images.append(NewImage(item.sha256, item.file_name, item.suffix, item.width, item.height,
                                   item.split, labels))
    new_images += [replace(image, annotations=_checked_all(image.annotations, kind, image.file_name))
                   for image in added]
    stats = compute_stats([_labelled(i) for i in new_images])
    dataset = session.get(Dataset, version.dataset_id)
    name = dataset.name if dataset else ""
    return create_version(session=session, new=NewVersion(
        name=name, task=version.task, format=version.format,
        source=f"{name}:{version.version}, {source}",
        classes=sorted(stats["images_per_class"]), stats=stats,
        warnings=version_warnings(len(new_images), stats["images_per_class"]),
        validation_fraction=version.validation_fraction, images=new_images, problems=[]))


def _checked_all(labels: Sequence[NewAnnotation], kind: LabelKind, file_name: str) -> list[NewAnnotation]:
    checked = [_checked(a, kind, file_name) for a in labels]
    if kind == LabelKind.TAG and len(checked) != 1:
        raise InputError(file_name, f"has {len(checked)} tags; a multi-class image has exactly one",
                         "choose one class for it")
    return checked


def _checked(label: NewAnnotation, kind: LabelKind, file_name: str) -> NewAnnotation:
    name = label.label.strip()
    if not name:
        raise InputError(file_name, "a label has no class name", "choose a class for every label")
    if kind in (LabelKind.TAG, LabelKind.TAGS):
        return NewAnnotation(name)
    polygons = None
    if kind == LabelKind.POLYGONS:
        polygons = [[min(1.0, max(0.0, float(v))) for v in p] for p in label.polygon or ()
                    if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            raise InputError(file_name, f"the {name!r} label has no polygon", "draw its outline")
        box: Sequence[float] = polygon_extent(polygons)
    elif label.box is None:
        raise InputError(file_name, f"the {name!r} label has no box", "draw a box for it")
    else:
        box = label.box
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in box)
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        raise InputError(file_name, f"a {name!r} {'polygon' if polygons else 'box'} has no area inside the image",
                         "draw it larger or delete it")
    return NewAnnotation(name, (x0, y0, x1, y1), polygons, label.is_crowd)


def _labelled(image: NewImage) -> LabelledImage:
    # compute_stats reads labels, sizes and split only; the record is a stand-in.
    record = ImageRecord(Path(image.file_name), image.file_name, "", None, None)
    tags = tuple(a.label for a in image.annotations if a.box is None)
    instances = tuple(Instance(a.label, *a.box, polygons=tuple(tuple(p) for p in a.polygon or ()))
                      for a in image.annotations if a.box is not None)
    return LabelledImage(record, image.sha256, image.suffix, image.width, image.height, tags, instances,
                         image.split)


def polygon_extent(polygons: Sequence[Sequence[float]]) -> Box:
    """The box (x0, y0, x1, y1) around every point of ``polygons`` (flat x, y lists)."""
    xs = [float(v) for p in polygons for v in p[0::2]]
    ys = [float(v) for p in polygons for v in p[1::2]]
    return min(xs), min(ys), max(xs), max(ys)


def _rounded(box: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (round(min(1.0, max(0.0, float(v))), DECIMALS) for v in box)
    return x0, y0, x1, y1


# The canvas (streamlit-drawable-canvas, Fabric.js 6): a polygon is {"type": "Polygon", "points":
# [{x, y}, ...], left, top, origin, scale, angle, skew, flip, ...}. Moving or resizing it changes
# only the transform, so its points are placed on the canvas as Fabric does: centre, then rotation,
# scale and skew around it. Fabric keeps no custom fields for polygons, so the class travels in
# the stroke colour: each class's palette colour, made unique per class.

def canvas_colour(label: str, classes: Sequence[str]) -> str:
    """``"#rrggbb"`` of ``label`` on the canvas: its class colour, the blue channel nudged by one per
    lap of the palette (which repeats after 20 classes), so no two classes share a stroke."""
    r, g, b = colour_for(label, classes)
    lap = classes.index(label) // len(PALETTE) if label in classes else 0
    return f"#{r:02x}{g:02x}{b - lap if b >= lap else b + lap:02x}"


def canvas_fill(label: str, classes: Sequence[str]) -> str:
    r, g, b = colour_for(label, classes)
    return f"rgba({r}, {g}, {b}, {POLYGON_FILL_ALPHA})"


def polygon_drawing(labels: Sequence[EditedLabel], classes: Sequence[str], width: int, height: int
                    ) -> dict[str, Any]:
    """The canvas's initial drawing: one Fabric polygon per polygon of ``labels``, in canvas pixels
    (``width`` × ``height``), stroked in its class's canvas colour."""
    objects = []
    for item in labels:
        for polygon in item.polygons:
            points = [{"x": x * width, "y": y * height} for x, y in zip(polygon[0::2], polygon[1::2])]
            x0, y0, x1, y1 = polygon_extent([[v for p in points for v in (p["x"], p["y"])]])
            objects.append({
                "type": "Polygon", "points": points, "left": (x0 + x1) / 2, "top": (y0 + y1) / 2,
                "originX": "center", "originY": "center", "scaleX": 1, "scaleY": 1, "angle": 0,
                "stroke": canvas_colour(item.label, classes), "strokeWidth": 2, "strokeUniform": True,
                "fill": canvas_fill(item.label, classes), "objectCaching": False})
    return {"objects": objects}


def polygons_from_drawing(objects: Sequence[Mapping[str, Any]], classes: Sequence[str], width: int, height: int,
                          *, new_label: str) -> list[EditedLabel]:
    """The canvas's polygons as labels, normalised to the image; a polygon whose stroke is no class's
    canvas colour (one just drawn) is ``new_label``. Other shapes and polygons under 3 points are left out."""
    by_colour = {canvas_colour(c, classes): c for c in classes}
    labels = []
    for obj in objects:
        if str(obj.get("type", "")).lower() != "polygon":
            continue
        points = _canvas_points(obj)
        flat = tuple(round(min(1.0, max(0.0, v / side)), DECIMALS)
                     for x, y in points for v, side in ((x, width), (y, height)))
        if len(set(zip(flat[0::2], flat[1::2]))) < 3:
            continue
        label = by_colour.get(str(obj.get("stroke", "")).lower(), new_label)
        labels.append(EditedLabel(label, _rounded(polygon_extent([flat])), (flat,)))
    return labels


def _canvas_points(obj: Mapping[str, Any]) -> list[tuple[float, float]]:
    """Where Fabric draws ``obj``'s points: centre + rotation · scale · skew · (point − bounding-box centre)."""
    points = [(float(p["x"]), float(p["y"])) for p in obj.get("points") or ()]
    if not points:
        return []
    xs, ys = [x for x, _ in points], [y for _, y in points]
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    offset = ((max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2)
    scale_x, scale_y = float(obj.get("scaleX", 1)), float(obj.get("scaleY", 1))
    tan_x, tan_y = (math.tan(math.radians(float(obj.get(k, 0)))) for k in ("skewX", "skewY"))
    # scale · skewX · skewY as [[a, c], [b, d]] (Fabric's calcDimensionsMatrix, flips included)
    sx, sy = (-scale_x if obj.get("flipX") else scale_x), (-scale_y if obj.get("flipY") else scale_y)
    a, c = sx * (1 + tan_x * tan_y), sx * tan_x
    b, d = sy * tan_y, sy
    # The object's size with its stroke, as Fabric measures it to place the origin.
    stroke = float(obj.get("strokeWidth", 1) or 0)
    pre, post = (0.0, stroke) if obj.get("strokeUniform") else (stroke, 0.0)
    half_w, half_h = (width + pre) / 2, (height + pre) / 2
    corners = [(a * u + c * v, b * u + d * v) for u in (-half_w, half_w) for v in (-half_h, half_h)]
    size_x = (max(x for x, _ in corners) - min(x for x, _ in corners) if tan_x or tan_y
              else (width + pre) * scale_x) + post
    size_y = (max(y for _, y in corners) - min(y for _, y in corners) if tan_x or tan_y
              else (height + pre) * scale_y) + post
    angle = math.radians(float(obj.get("angle", 0)))
    cos, sin = math.cos(angle), math.sin(angle)
    left, top = float(obj.get("left", 0)), float(obj.get("top", 0))
    shift_x = -_origin(obj.get("originX", "left")) * size_x
    shift_y = -_origin(obj.get("originY", "top")) * size_y
    centre = (left + shift_x * cos - shift_y * sin, top + shift_x * sin + shift_y * cos)
    out = []
    for x, y in points:
        u, v = x - offset[0], y - offset[1]
        u, v = a * u + c * v, b * u + d * v
        out.append((centre[0] + u * cos - v * sin, centre[1] + u * sin + v * cos))
    return out


def _origin(value: Any) -> float:
    """Fabric's resolveOrigin: where an origin lies from the centre, in object sizes."""
    named = {"left": -0.5, "top": -0.5, "center": 0.0, "right": 0.5, "bottom": 0.5}
    return named[value] if isinstance(value, str) and value in named else float(value) - 0.5
