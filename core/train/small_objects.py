"""Are a detection dataset's objects too small for the size it would train at? (torch-free: the Datasets page
and the wizard ask before anything trains)

A detector sees an object at the training size, not at the photo's: a 40-pixel bottle in a 4000-pixel photo
is 6 pixels after YOLO's resize to 640, below what its stride-8 head finds well. COCO calls an object small
under 32² pixels; here an object is small when its side (the square root of its box's area) is under
:data:`SMALL_SIDE` pixels at the size the recipe would train at. When most are, the advice is the training
size at which half of them would reach it; where that size is past what a machine trains in reasonable time,
it is tiles instead (``tile_grid_size``: each image and its tiles are trained, validated and predicted on,
each tile at the training size, `core.data.tiles`), with a larger size only for what tiles cannot make up.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.base.tasks import Task
from core.train.recipe import STRIDE, ImageSizes, sized

SMALL_SIDE = 32  # pixels at the training size
DOMINATE = 0.5  # the fraction of small objects from which the advice is given
YOLO_MAX, DETECTION_MAX = 1280, 2048  # the largest sizes proposed: beyond them a CPU epoch takes too long
MAX_GRID = 4  # tiles per side: a 4x4 grid already makes each epoch 17 passes over the images
OVERLAP = 0.25  # tile_overlap_ratio's default


@dataclass(frozen=True)
class Assessment:
    sides: list[float]  # every sampled box's side, in pixels at the recipe's YOLO size
    training_side: int  # that size (the longer image side YOLO trains at)
    fraction_small: float
    proposal: dict[str, Any] = field(default_factory=dict)  # parameters to set; empty when none are needed
    why: str = ""
    cost: float = 1.0  # an epoch's time with the proposal, against one without

    @property
    def dominated(self) -> bool:
        return self.fraction_small >= DOMINATE


def assess(stats: Mapping[str, Any], task: Task) -> Assessment | None:
    """From a version's statistics (box sizes as fractions of their images, the image sizes); None for
    classification or without boxes or image sizes."""
    boxes = stats.get("box_sizes") or {}
    widths, heights = list(boxes.get("width") or []), list(boxes.get("height") or [])
    images = ImageSizes.from_stats(stats.get("image_sizes") or {})
    if task not in (Task.DETECTION, Task.SEGMENTATION) or not widths or images is None:
        return None
    training = int(sized(task, "ultralytics", images, 0)["img_size"])
    scale = training / images.long
    # The boxes' image sizes are not kept with them: the typical image stands for each (long side across).
    native = [math.sqrt(w * h) * math.sqrt(images.long * images.short) for w, h in zip(widths, heights, strict=False)]
    sides = [side * scale for side in native]
    small = sum(side < SMALL_SIDE for side in sides) / len(sides)
    if small < DOMINATE:
        return Assessment(sides, training, small)
    factor = SMALL_SIDE / max(statistics.median(native), 1e-6)  # native-to-training scale that lifts half
    if images.long * factor <= YOLO_MAX:
        proposal, at, cost = _larger(images, factor, training)
        how = (f"Training at img_size {proposal['img_size']} (YOLO) or min_size {proposal['min_size']} "
               "(Faster/Mask R-CNN)")
    else:
        proposal, at, cost = _tiled(images, factor, training, _wide(stats.get("image_sizes") or {}))
        columns, _, rows = proposal["tile_grid_size"].partition("x")
        how = (f"Tiles of a {proposal['tile_grid_size']} grid (each image trained whole and as its "
               f"{int(columns) * int(rows)} tiles, at {proposal.get('img_size', training)} px)")
    still = sum(side * at < SMALL_SIDE for side in native) / len(native)
    why = (f"{small:.0%} of the objects are smaller than {SMALL_SIDE} px at the {training} px a YOLO model would "
           f"train at (median {statistics.median(sides):.0f} px), where detectors find objects less well. {how} "
           f"leaves {still:.0%} small, and each epoch takes about {cost:.1f}× as long: worth it when the job "
           f"can train {cost:.0f}× as long (in the same time, that many fewer epochs can cost more than the "
           "larger objects gain).")
    return Assessment(sides, training, small, proposal, why, cost)


def _larger(images: ImageSizes, factor: float, training: int) -> tuple[dict[str, Any], float, float]:
    """Larger training sizes: the proposal, its native-to-training scale and its cost per epoch."""
    yolo = max(_up(images.long * factor), training)
    shorter = min(DETECTION_MAX, _up(images.short * factor))
    proposal = {"img_size": yolo, "min_size": shorter,
                "max_size": min(DETECTION_MAX * 2, max(shorter, _up(images.long * factor)))}
    return proposal, yolo / images.long, (yolo / training) ** 2


def _tiled(images: ImageSizes, factor: float, training: int, wide: bool) -> tuple[dict[str, Any], float, float]:
    """Tiles at the training size, and a larger size for what :data:`MAX_GRID` tiles cannot make up."""
    def count(side: int) -> int:  # tiles across ``side`` for each to be at most a training side's worth
        return min(MAX_GRID, max(1, math.ceil((side * factor / training - OVERLAP) / (1 - OVERLAP))))

    along, across = count(images.long), count(images.short)
    columns, rows = (along, across) if wide else (across, along)
    # A tile across the long side spans long / (n - (n - 1) * overlap) pixels, resized to the training size.
    at = training * (along - (along - 1) * OVERLAP) / images.long
    proposal: dict[str, Any] = {"tile_grid_size": f"{columns}x{rows}"}
    if at < factor:  # tiles alone fall short: the tile's training size grows too
        proposal["img_size"] = min(YOLO_MAX, _up(training * factor / at))
        at *= proposal["img_size"] / training
    return proposal, at, (1 + columns * rows) * (proposal.get("img_size", training) / training) ** 2


def _wide(image_sizes: Mapping[str, int]) -> bool:
    """Whether most images are landscape (their long side across: the grid's columns)."""
    counts = [(int(w) >= int(h), int(n)) for text, n in image_sizes.items()
              for w, _, h in [text.partition("x")] if w.isdigit() and h.isdigit()]
    return sum(n for wide, n in counts if wide) >= sum(n for wide, n in counts if not wide)


def _up(side: float) -> int:
    """``side`` rounded up to a multiple of the stride."""
    return max(STRIDE, math.ceil(side / STRIDE) * STRIDE)
