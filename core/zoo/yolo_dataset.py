"""A dataset version written as the YOLO folder ultralytics trains on: images, labels, data.yaml."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from core.base.tasks import Task
from core.data.tiles import clip, tile_windows
from core.data.view import Item, VersionData

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def write_yolo_dataset(data: VersionData, root: Path, notices: list[str], copies: Sequence[int] | None = None,
                       grid: tuple[int, int] | None = None, overlap: float = 0.25) -> Path:
    """Images (linked, with a suffix ultralytics reads) and labels for both splits, and data.yaml. ``copies``:
    how many times each training image is written (repeat-factor sampling; ultralytics takes no sampler).
    With a ``grid``, each image's tiles are written too, in both splits, as YOLO then trains and validates on
    them (`core.data.tiles`)."""
    validation = data.validation or data.train
    if not data.validation:
        notices.append("the dataset has no validation images: metrics are on the training images")
    segments = data.task is Task.SEGMENTATION
    for split, items in (("train", data.train), ("val", validation)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for n, item in enumerate(items):
            lines = [_label_line(inst, data.classes.index(inst.label), segments)
                     for inst in item.instances if not inst.is_crowd]  # ultralytics has no crowds
            for copy in range(copies[n] if copies is not None and split == "train" else 1):
                stem = f"{n:06d}" + (f"-{copy}" if copy else "")
                _place_image(item, root / "images" / split, stem)
                (root / "labels" / split / f"{stem}.txt").write_text("".join(lines))
                if grid:
                    _write_tiles(item, data.classes, root, split, stem, grid, overlap, segments)
    names = "".join(f"  {k}: {json.dumps(name)}\n" for k, name in enumerate(data.classes))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {json.dumps(str(root.resolve()))}\ntrain: images/train\n"
                         f"val: images/val\nnames:\n{names}")
    return data_yaml


def _write_tiles(item: Item, classes: list[str], root: Path, split: str, stem: str, grid: tuple[int, int],
                 overlap: float, segments: bool) -> None:
    with Image.open(item.path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    for k, window in enumerate(tile_windows(image.width, image.height, grid, overlap)):
        seen = (clip(inst, window, image.width, image.height) for inst in item.instances if not inst.is_crowd)
        lines = [_label_line(inst, classes.index(inst.label), segments) for inst in seen if inst is not None]
        image.crop(window).save(root / "images" / split / f"{stem}-t{k}.jpg", quality=95)
        (root / "labels" / split / f"{stem}-t{k}.txt").write_text("".join(lines))


def _place_image(item: Item, folder: Path, stem: str) -> None:
    """Blobs have no suffix, and ultralytics picks images by suffix: hard-link (or copy) with one."""
    suffix = Path(item.name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        with Image.open(item.path) as image:
            image.convert("RGB").save(folder / f"{stem}.png")
        return
    target = folder / f"{stem}{suffix}"
    target.unlink(missing_ok=True)
    try:
        os.link(item.path, target)
    except OSError:  # another file system, or no hard links
        shutil.copyfile(item.path, target)


def _label_line(inst: Any, cls: int, segments: bool) -> str:
    if segments:
        polygons = [p for p in inst.polygons if len(p) >= 6]
        if not polygons:
            points = [inst.x0, inst.y0, inst.x1, inst.y0, inst.x1, inst.y1, inst.x0, inst.y1]
        elif len(polygons) == 1:
            points = list(polygons[0])
        else:  # one instance in several parts: join them by thin seams, as ultralytics' converter does
            from core.zoo.ultralytics_env import offline_ultralytics

            offline_ultralytics()  # its offline switches must precede any ultralytics import
            from ultralytics.data.converter import merge_multi_segment

            points = [float(v) for part in merge_multi_segment([list(p) for p in polygons])
                      for v in part.reshape(-1)]
        return f"{cls} " + " ".join(f"{min(max(v, 0.0), 1.0):.6f}" for v in points) + "\n"
    xc, yc = (inst.x0 + inst.x1) / 2, (inst.y0 + inst.y1) / 2
    return f"{cls} {xc:.6f} {yc:.6f} {inst.x1 - inst.x0:.6f} {inst.y1 - inst.y0:.6f}\n"
