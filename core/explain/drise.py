"""D-RISE heat maps for detections of any detector (Petsiuk et al., "Black-box explanation of object
detectors via saliency maps", CVPR 2021): the image is shown to the model through random masks; a mask
counts for a detection as much as the model, looking through it, still finds that detection (the best
overlap of a box of the same class, times its score). The weighted sum of the masks is the map.

Model-agnostic: it needs only ``predict``, so it explains YOLO and torchvision detectors (and segmenters'
boxes) alike, at the cost of one prediction per mask — the person sets that budget (``number_of_masks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.nn import functional as nnf

from core.base.prediction import Detection
from core.explain.params import DetectionXaiParams
from core.explain.visualize import box_overlay, png_bytes
from core.zoo.base import Predictor

CHUNK = 16  # masked images predicted at a time: the predictors batch them
EXPLAIN_SIDE = 640  # the image is explained at most this large: the detectors look at it no larger
ATTRIBUTION_SIDE = 64  # the longer side of the ``attributions`` grid a response carries


@dataclass(frozen=True)
class BoxExplanation:
    detection: Detection
    heatmap: np.ndarray  # float32 [height, width] of the (upright) image in [0, 1]; 1 the most important
    png: bytes  # the heat map blended over the image, the detection's box outlined

    def attributions(self) -> list[list[float]]:
        """The map on a grid of at most :data:`ATTRIBUTION_SIDE` cells a side, rounded: small enough for JSON."""
        height, width = self.heatmap.shape
        scale = ATTRIBUTION_SIDE / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        small = nnf.interpolate(torch.from_numpy(self.heatmap)[None, None], size=size, mode="area")[0, 0]
        return [[round(float(v), 4) for v in row] for row in small]


def explain_boxes(predictor: Predictor, image: Image.Image, detections: Sequence[Detection],
                  params: DetectionXaiParams) -> list[BoxExplanation]:
    """A map for each of ``detections`` (the predictor's own answer on ``image``, best first; at most
    ``params.max_boxes`` of them)."""
    targets = list(detections)[:params.max_boxes]
    if not targets:
        return []
    upright = ImageOps.exif_transpose(image).convert("RGB")
    upright.thumbnail((EXPLAIN_SIDE, EXPLAIN_SIDE), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(upright, dtype=np.float32))  # [height, width, 3]
    size = (upright.height, upright.width)
    masks = RandomMasks(params.number_of_masks, params.mask_grid_size, params.mask_probability, size, params.seed)
    total, shown_sum = torch.zeros(len(targets), *size), torch.zeros(size)
    weight_sum = torch.zeros(len(targets))
    for start in range(0, params.number_of_masks, CHUNK):
        chunk = masks.make(start, min(start + CHUNK, params.number_of_masks))
        shown = [Image.fromarray((pixels * m[..., None]).round().clamp(0, 255).byte().numpy(), "RGB")
                 for m in chunk]
        weights = torch.stack([similarity(targets, p.detections) for p in predictor.predict(shown)])
        total += torch.einsum("nt,nhw->thw", weights, chunk)
        shown_sum += chunk.sum(0)
        weight_sum += weights.sum(0)
    # The weighted mean of the masks, less what an average mask gives: regions that never mattered stay
    # at zero whatever the budget, instead of every map being the masks' own unevenness.
    n = params.number_of_masks
    maps = total / n - (weight_sum / n)[:, None, None] * (shown_sum / n)[None]
    out = []
    for detection, saliency in zip(targets, maps, strict=True):
        heat = saliency.clamp(min=0)
        high = float(heat.max())
        heat = (heat / high if high > 0 else heat).numpy().astype(np.float32)
        box = (detection.x0, detection.y0, detection.x1, detection.y1)
        out.append(BoxExplanation(detection, heat, png_bytes(box_overlay(upright, heat, box))))
    return out


class RandomMasks:
    """RISE's masks: a ``grid``×``grid`` of cells each kept with ``probability``, upsampled smoothly to one
    cell more than the image and shifted by a random part of a cell, so that the cells' edges fall
    anywhere. Drawn up front from ``seed`` (the same masks for the same seed), made a chunk at a time."""

    def __init__(self, count: int, grid: int, probability: float, size: tuple[int, int], seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.grid, self.size = grid, size
        self.cells = (torch.rand(count, 1, grid, grid, generator=generator) < probability).float()
        self.cell = (-(-size[0] // grid), -(-size[1] // grid))
        self.shifts = torch.randint(0, max(self.cell), (count, 2), generator=generator).tolist()

    def make(self, start: int, stop: int) -> torch.Tensor:
        """Masks ``start`` to ``stop`` as float [n, height, width] in [0, 1]."""
        (cell_h, cell_w), (height, width) = self.cell, self.size
        up = nnf.interpolate(self.cells[start:stop], size=((self.grid + 1) * cell_h, (self.grid + 1) * cell_w),
                             mode="bilinear", align_corners=False)[:, 0]
        return torch.stack([m[dy % cell_h:dy % cell_h + height, dx % cell_w:dx % cell_w + width]
                            for m, (dy, dx) in zip(up, self.shifts[start:stop], strict=True)])


def similarity(targets: Sequence[Detection], found: Sequence[Detection]) -> torch.Tensor:
    """For each target, the best match among ``found``: intersection over union with a box of the same
    class, times that box's score (D-RISE's similarity, with the class vector reduced to the label)."""
    out = torch.zeros(len(targets))
    for t, target in enumerate(targets):
        for other in found:
            if other.label == target.label:
                out[t] = max(float(out[t]), iou(target, other) * other.score)
    return out


def iou(a: Detection, b: Detection) -> float:
    width = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    height = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = width * height
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0
