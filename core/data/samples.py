"""Small procedural sample datasets (circles, squares, triangles), one per task.

They let a person try the whole studio without data of their own, and give tests real,
learnable images. Everything derives from the seed, so a sample is identical byte for byte
wherever and whenever it is generated.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sqlalchemy import Engine

from core.base.tasks import LabelKind, Task, spec
from core.data.formats.jsonl import write_jsonl
from core.data.importer import ImportOptions, import_dataset
from core.data.records import ImageRecord, Instance
from storage.db import session_scope
from storage.repos.datasets import dataset_names
from storage.settings import Settings

CLASSES = ("circle", "square", "triangle")

SAMPLE_NAMES: dict[Task, str] = {
    Task.CLASSIFICATION: "sample-shapes-classification",
    Task.MULTILABEL: "sample-shapes-multilabel",
    Task.DETECTION: "sample-shapes-detection",
    Task.SEGMENTATION: "sample-shapes-segmentation",
}

# Saturated, bright colours on muted backgrounds: any shape may get any colour, so a model
# has to learn the outline, not the hue.
SHAPE_COLOURS = (
    (230, 40, 40), (250, 200, 30), (40, 200, 80), (40, 120, 240),
    (240, 110, 220), (250, 140, 20), (60, 220, 230), (245, 245, 245),
)
CIRCLE_SIDES = 24
# Coordinates are rounded so the JSONL stays short; boxes are computed from the rounded
# polygon so every polygon lies inside its box exactly.
DECIMALS = 5


@dataclass(frozen=True)
class Shape:
    label: str
    polygon: tuple[float, ...]  # normalised flat x, y pairs

    @property
    def box(self) -> tuple[float, float, float, float]:
        xs, ys = self.polygon[0::2], self.polygon[1::2]
        return min(xs), min(ys), max(xs), max(ys)


def _outline(label: str, cx: float, cy: float, r: float) -> tuple[float, ...]:
    """A shape's polygon around centre (cx, cy) with radius r, all normalised."""
    if label == "circle":
        angles = [2 * math.pi * k / CIRCLE_SIDES for k in range(CIRCLE_SIDES)]
    elif label == "square":
        # Corners a bit further out so a square's area is close to the circle's.
        angles, r = [math.pi / 4 + math.pi / 2 * k for k in range(4)], r * 1.2
    else:  # triangle, pointing up, enlarged for the same reason
        angles, r = [-math.pi / 2 + 2 * math.pi / 3 * k for k in range(3)], r * 1.15
    points: list[float] = []
    for a in angles:
        points += [round(cx + r * math.cos(a), DECIMALS), round(cy + r * math.sin(a), DECIMALS)]
    return tuple(points)


def _place(label: str, rng: random.Random, taken: list[tuple[float, ...]], r_range: tuple[float, float]
           ) -> Shape | None:
    """A shape of ``label`` at a random spot that overlaps none of the ``taken`` boxes."""
    for _ in range(30):
        r = rng.uniform(*r_range)
        margin = 1.2 * r + 0.01  # the enlarged square and triangle reach 1.2 r from the centre
        cx, cy = rng.uniform(margin, 1 - margin), rng.uniform(margin, 1 - margin)
        shape = Shape(label, _outline(label, cx, cy, r))
        x0, y0, x1, y1 = shape.box
        if all(x1 < b[0] or b[2] < x0 or y1 < b[1] or b[3] < y0 for b in taken):
            return shape
    return None


def _background(nrng: np.random.Generator, size: int) -> np.ndarray:
    """A muted texture: blotchy noise, stripes or a gradient, with fine grain on top."""
    kind = int(nrng.integers(3))
    base = nrng.uniform(30, 140, size=3)
    other = np.clip(base + nrng.uniform(-50, 50, size=3), 0, 160)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == 0:
        coarse = nrng.normal(0, 1, size=(size // 12 + 1, size // 12 + 1))
        t = np.kron(coarse, np.ones((12, 12)))[:size, :size]
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
    else:
        angle = nrng.uniform(0, math.pi)
        along = xx * math.cos(angle) + yy * math.sin(angle)
        t = 0.5 + 0.5 * np.sin(along * nrng.uniform(12, 40)) if kind == 1 else along - along.min()
        t = t / (t.max() + 1e-9)
    img = base + t[..., None] * (other - base) + nrng.normal(0, 8, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _render(shapes: list[Shape], nrng: np.random.Generator, rng: random.Random, size: int) -> Image.Image:
    image = Image.fromarray(_background(nrng, size), "RGB")
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        xy = [(v * size) for v in shape.polygon]
        draw.polygon(list(zip(xy[0::2], xy[1::2])), fill=rng.choice(SHAPE_COLOURS))
    return image


def _labels_for(task: Task, index: int, rng: random.Random) -> list[str]:
    """The classes of image ``index``: balanced single classes, or 1–3 per image."""
    if task is Task.CLASSIFICATION:
        return [CLASSES[index % len(CLASSES)]]
    count = rng.randint(1, 3)
    if task is Task.MULTILABEL:
        return rng.sample(CLASSES, count)
    return [rng.choice(CLASSES) for _ in range(count)]


def _shapes_for(task: Task, labels: list[str], rng: random.Random) -> list[Shape]:
    # One shape fills much of the image; several share it, still >= ~25% of the side each.
    r_range = (0.2, 0.34) if len(labels) == 1 else (0.14, 0.2)
    shapes: list[Shape] = []
    for label in labels:
        shape = _place(label, rng, [s.box for s in shapes], r_range)
        if shape is not None:
            shapes.append(shape)
    return shapes


def _record(task: Task, shapes: list[Shape], path: Path, name: str, size: int) -> ImageRecord:
    kind = spec(task).label_kind
    if kind in (LabelKind.TAG, LabelKind.TAGS):
        tags = tuple(sorted({s.label for s in shapes}))
        return ImageRecord(path, name, "annotations.jsonl", None, kind, tags=tags,
                           width=size, height=size)
    with_polygons = kind is LabelKind.POLYGONS
    instances = tuple(
        Instance(s.label, *s.box, polygons=(s.polygon,) if with_polygons else ())
        for s in shapes
    )
    return ImageRecord(path, name, "annotations.jsonl", None, kind, instances=instances,
                       width=size, height=size)


def write_sample(task: Task, out_dir: Path, *, count: int = 60, size: int = 96, seed: int = 0) -> Path:
    """Write ``count`` images and ``annotations.jsonl`` for ``task`` into ``out_dir``.

    Returns the JSONL path; the images go to ``out_dir/images`` and are named in it
    relative to the JSONL file.
    """
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    records: list[tuple[ImageRecord, str]] = []
    for index in range(count):
        labels = _labels_for(task, index, rng)
        shapes = _shapes_for(task, labels, rng)
        name = f"images/shape_{index:04d}.png"
        path = out_dir / name
        # No metadata chunks and fixed settings: the PNG bytes depend on the pixels only.
        _render(shapes, nrng, rng, size).save(path, format="PNG", optimize=False, compress_level=6)
        records.append((_record(task, shapes, path, name, size), name))
    jsonl = out_dir / "annotations.jsonl"
    write_jsonl(records, jsonl)
    return jsonl


def register_samples(*, settings: Settings, engine: Engine) -> list[str]:
    """Import each task's sample dataset that is not registered yet; returns the names imported."""
    with session_scope(engine) as session:
        existing = set(dataset_names(session=session))
    imported = []
    for seed, (task, name) in enumerate(SAMPLE_NAMES.items()):
        if name in existing:
            continue
        settings.staging_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=settings.staging_dir) as folder:
            # A seed per task, so the detection and segmentation samples differ.
            jsonl = write_sample(task, Path(folder), seed=seed)
            import_dataset(jsonl, ImportOptions(name, task, origin="Kestrel's built-in sample of drawn shapes"),
                           settings=settings, engine=engine)
        imported.append(name)
    return imported
