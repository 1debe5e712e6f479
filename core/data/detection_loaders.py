"""Detection and instance-segmentation datasets over a dataset version, in torchvision's format.

Every image is decoded once (longer side bounded to ``max_size``, or to a tile's worth of it when the
images are tiled) and kept as a uint8 tensor; with ``tile_grid_size`` each training image is drawn
whole and as each of its tiles (`core.data.tiles`). Targets are built per draw: boxes in pixels (xyxy),
labels from 1 (0 is the background), masks rasterised from the polygons for segmentation. Training
draws go through the SPEC §5 augmentations; normalising and resizing are left to the model (torchvision's
GeneralizedRCNNTransform, with min_size/max_size), so they never happen twice.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from core.base.params import TrainingParams
from core.data.augment import IMAGENET_MEAN, TRAIN_AUGMENTATIONS
from core.data.balance import repeats
from core.data.loaders import decode
from core.data.tiles import MIN_VISIBLE, Window, image_and_tiles, source_side
from core.data.view import Item

Target = dict[str, torch.Tensor]
Sample = tuple[torch.Tensor, Target]
Transform = Callable[[tv_tensors.Image, dict[str, Any]], tuple[tv_tensors.Image, dict[str, Any]]]
MEAN_PIXEL = tuple(round(255 * m) for m in IMAGENET_MEAN)  # what "expand" fills the canvas with
CROP_P, EXPAND_P = 0.5, 0.5
# Zoom out up to 2x (SSD uses 4x): small datasets at small min_size would otherwise shrink
# objects below the smallest anchors.
EXPAND_RANGE = (1.0, 2.0)


def decode_bounded(item: Item, max_size: int) -> torch.Tensor:
    """The item's image as uint8 RGB CHW, its longer side reduced to ``max_size`` (never enlarged)."""
    short, long = min(item.width, item.height), max(item.width, item.height)
    return decode(item.path, max(1, math.floor(max_size * short / long)) if long > max_size else short)


class RandomCropAroundBoxes(v2.Transform):
    """With probability ``p``, crop a random window that contains every box, so no box is cut.

    The window's edges are drawn uniformly between the image's edges and the boxes' extent;
    an image without boxes keeps at least ``min_scale`` of each side.
    """

    def __init__(self, p: float = CROP_P, min_scale: float = 0.5) -> None:
        super().__init__()
        self.p, self.min_scale = p, min_scale

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        boxes = next(x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes))
        height, width = boxes.canvas_size
        if torch.rand(1).item() >= self.p:
            return {}
        if len(boxes):
            x0, y0 = (math.floor(float(v)) for v in boxes[:, :2].min(dim=0).values)
            x1, y1 = (math.ceil(float(v)) for v in boxes[:, 2:].max(dim=0).values)
        else:  # the extent a minimal window must cover, centred
            x0, x1 = round(width * (1 - self.min_scale) / 2), round(width * (1 + self.min_scale) / 2)
            y0, y1 = round(height * (1 - self.min_scale) / 2), round(height * (1 + self.min_scale) / 2)
        left, top = _uniform_int(0, max(x0, 0)), _uniform_int(0, max(y0, 0))
        right, bottom = _uniform_int(min(x1, width), width), _uniform_int(min(y1, height), height)
        if right - left < 2 or bottom - top < 2:
            return {}
        return {"top": top, "left": left, "height": bottom - top, "width": right - left}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.crop(inpt, **params) if params else inpt


def _uniform_int(low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,)).item()) if high > low else low


def train_transform(params: TrainingParams) -> Transform:
    """SPEC §5 for detection and segmentation: crop around boxes, expand, flip (switchable);
    boxes that end up under a pixel wide are always dropped."""
    steps: list[Any] = []
    if params.advanced(TRAIN_AUGMENTATIONS):
        steps += [
            RandomCropAroundBoxes(),
            v2.RandomZoomOut(fill={tv_tensors.Image: MEAN_PIXEL, "others": 0},
                             side_range=EXPAND_RANGE, p=EXPAND_P),
            v2.RandomHorizontalFlip(),
        ]
    return v2.Compose([*steps, v2.SanitizeBoundingBoxes(min_size=1.0)])


class DetectionImages(Dataset[Sample]):
    """(float image in 0..1, target) pairs over images decoded once at construction: each image whole,
    then each of its tiles when ``grid`` is given (``sources`` says which image a draw comes from).

    Crowd regions are left out of the targets: torchvision's detectors would learn them as
    ordinary objects (its reference training does the same).
    """

    def __init__(self, items: Sequence[Item], classes: Sequence[str], max_size: int, *,
                 masks: bool, transform: Transform | None = None, grid: tuple[int, int] | None = None,
                 overlap: float = 0.25) -> None:
        threads = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
        bound = source_side(max_size, grid)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            self.images = list(pool.map(lambda item: decode_bounded(item, bound), items))
        self.draws: list[tuple[int, Window | None]] = []
        for n, image in enumerate(self.images):
            tiles = image_and_tiles(image.shape[-1], image.shape[-2], grid, overlap)[1:]
            self.draws += [(n, None), *((n, window) for window in tiles)]
        index = {name: k + 1 for k, name in enumerate(classes)}
        self.instances = [[i for i in item.instances if not i.is_crowd] for item in items]
        self.labels = [torch.tensor([index[i.label] for i in kept], dtype=torch.int64)
                       for kept in self.instances]
        self.masks, self.transform = masks, transform

    @property
    def sources(self) -> list[int]:
        return [n for n, _ in self.draws]

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, draw: int) -> Sample:
        index, window = self.draws[draw]
        image = tv_tensors.Image(self.images[index])
        height, width = image.shape[-2:]
        kept = self.instances[index]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes = torch.tensor([[i.x0, i.y0, i.x1, i.y1] for i in kept], dtype=torch.float32)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes.reshape(-1, 4) * scale, format="XYXY",
                                              canvas_size=(height, width)),
            "labels": self.labels[index],
        }
        if self.masks:
            target["masks"] = tv_tensors.Mask(rasterise(kept, height, width))
        if window is not None:
            image, target = _crop(image, target, window)
        if self.transform is not None:
            image, target = self.transform(image, target)
        out = {k: v.as_subclass(torch.Tensor) for k, v in target.items()}
        out["iscrowd"] = torch.zeros(len(out["labels"]), dtype=torch.int64)
        return F.to_dtype(image, torch.float32, scale=True).as_subclass(torch.Tensor), out


def _crop(image: tv_tensors.Image, target: dict[str, Any], window: Window) -> tuple[tv_tensors.Image, dict]:
    """The tile ``window`` of an image and its target; boxes less than MIN_VISIBLE inside are dropped."""
    x0, y0, x1, y1 = window
    before = target["boxes"]
    crop = {"top": y0, "left": x0, "height": y1 - y0, "width": x1 - x0}
    image, target = F.crop(image, **crop), {k: F.crop(v, **crop) if k != "labels" else v for k, v in target.items()}
    after = target["boxes"]
    area = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
    shown = (after[:, 2] - after[:, 0]) * (after[:, 3] - after[:, 1])
    keep = (shown > 0) & (shown >= MIN_VISIBLE * area)
    # Indexing drops the tv_tensors type (and the boxes' canvas) the augmentations after this need.
    return image, {k: tv_tensors.wrap(v[keep], like=v) if isinstance(v, tv_tensors.TVTensor) else v[keep]
                   for k, v in target.items()}


def rasterise(instances: Sequence[Any], height: int, width: int) -> torch.Tensor:
    """uint8 masks [N, H, W]: each instance's polygons filled (its box when it has none)."""
    out = np.zeros((len(instances), height, width), dtype=np.uint8)
    scale = np.array([width, height], dtype=np.float64)
    for k, inst in enumerate(instances):
        polygons = [p for p in inst.polygons if len(p) >= 6] or \
            [(inst.x0, inst.y0, inst.x1, inst.y0, inst.x1, inst.y1, inst.x0, inst.y1)]
        for polygon in polygons:  # pixel centres sit at +0.5; eighth-pixel precision (shift=3)
            points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) * scale - 0.5
            cv2.fillPoly(out[k], [np.round(points * 8).astype(np.int32)], 1, cv2.LINE_8, shift=3)
    return torch.from_numpy(out)


def detection_datasets(train: Sequence[Item], validation: Sequence[Item], classes: Sequence[str],
                       params: TrainingParams, *, masks: bool
                       ) -> tuple[DetectionImages, DetectionImages]:
    """Train (augmented; each image and its tiles) and validation datasets (whole images: the evaluator
    predicts on their tiles as serving does), cached at the model's ``max_size`` for each tile."""
    grid, overlap = params.tile_grid_size, params.tile_overlap_ratio
    return (DetectionImages(train, classes, params.max_size, masks=masks, transform=train_transform(params),
                            grid=grid, overlap=overlap),
            DetectionImages(validation, classes, source_side(params.max_size, grid), masks=masks))


def collate(batch: Sequence[Sample]) -> tuple[list[torch.Tensor], list[Target]]:
    """Images and targets as two lists: torchvision's detectors take images of any size."""
    return [image for image, _ in batch], [target for _, target in batch]


def detection_loader(dataset: DetectionImages, batch_size: int, *, shuffle: bool, workers: int,
                     seed: int, pin_memory: bool = False, repeat: Sequence[float] | None = None) -> DataLoader:
    """A seeded loader of (images, targets) lists; with ``repeat`` (each image's repeat factor), an epoch
    shows each image that often (`RepeatFactorSampler`)."""
    sampler = RepeatFactorSampler(repeat, seed) if repeat is not None else None
    return DataLoader(dataset, batch_size=max(1, min(batch_size, len(dataset))),
                      shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=collate, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory)


class RepeatFactorSampler(Sampler[int]):
    """Repeat-factor sampling drawn afresh each epoch, in a shuffled order (detectron2's sampler of that
    name). Every epoch has the same length, the factors' sum, so the schedule's steps are known ahead."""

    def __init__(self, factors: Sequence[float], seed: int) -> None:
        self.factors, self.seed, self.epoch = list(factors), seed, 0

    def __len__(self) -> int:
        return max(1, round(sum(self.factors)))

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        order = [i for i, n in enumerate(repeats(self.factors, rng.randrange(2**31))) for _ in range(n)]
        rng.shuffle(order)
        # Rounding per image makes a draw a few images longer or shorter than the epoch's length: cut or
        # top it up from the draw itself.
        order += order[:max(0, len(self) - len(order))]
        return iter(order[:len(self)])
