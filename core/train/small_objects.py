"""Are a detection dataset's objects too small for the size it would train at? (torch-free: the Datasets page
and the wizard ask before anything trains)

A detector sees an object at the training size, not at the photo's: a 40-pixel bottle in a 4000-pixel photo
is 6 pixels after YOLO's resize to 640, below what its stride-8 head finds well. COCO calls an object small
under 32² pixels; here an object is small when its side (the square root of its box's area) is under
:data:`SMALL_SIDE` pixels at the size the recipe would train at. When most are, the advice is the training
size at which half of them would reach it (capped: beyond it, tiles are the way — not offered yet).
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


@dataclass(frozen=True)
class Assessment:
    sides: list[float]  # every sampled box's side, in pixels at the recipe's YOLO size
    training_side: int  # that size (the longer image side YOLO trains at)
    fraction_small: float
    proposal: dict[str, int] = field(default_factory=dict)  # parameters to set; empty when none are needed
    why: str = ""

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
    yolo = min(YOLO_MAX, _up(images.long * factor))
    shorter = min(DETECTION_MAX, _up(images.short * factor))
    proposal = {"img_size": max(yolo, training), "min_size": shorter,
                "max_size": min(DETECTION_MAX * 2, max(shorter, _up(images.long * factor)))}
    at = proposal["img_size"] / images.long
    still = sum(side * at < SMALL_SIDE for side in native) / len(native)
    why = (f"{small:.0%} of the objects are smaller than {SMALL_SIDE} px at the {training} px a YOLO model would "
           f"train at (median {statistics.median(sides):.0f} px): detectors miss most of them. Training at "
           f"img_size {proposal['img_size']} (YOLO) or min_size {proposal['min_size']} (Faster/Mask R-CNN) "
           f"leaves {still:.0%} small, and each epoch takes about {(proposal['img_size'] / training) ** 2:.1f}× "
           "as long.")
    return Assessment(sides, training, small, proposal, why)


def _up(side: float) -> int:
    """``side`` rounded up to a multiple of the stride."""
    return max(STRIDE, math.ceil(side / STRIDE) * STRIDE)
