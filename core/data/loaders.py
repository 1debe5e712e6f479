"""Classification datasets and loaders over a dataset version: decode once, cache, transform.

Every image is decoded once, shrunk so its shorter side is no larger than the biggest size the
transforms ask for, and kept in memory as a uint8 tensor; each epoch only crops, flips and
normalises. Decoding (PIL releases the GIL) runs on a thread pool while the dataset is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from core.base.params import TrainingParams
from core.data.augment import eval_transform, train_transform
from core.data.view import Item, VersionData

Transform = Callable[[torch.Tensor], torch.Tensor]


def decode(path: Path, short_side: int) -> torch.Tensor:
    """The image at ``path`` as uint8 RGB CHW, shorter side reduced to ``short_side`` (never enlarged)."""
    with Image.open(path) as image:
        width, height = image.size
        scale = short_side / min(width, height)
        if scale < 1:
            # JPEG only: decode at a reduced DCT scale straight away (much faster for photos).
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    scale = short_side / min(rgb.size)
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


class CachedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(transformed image, target) pairs over images decoded once at construction."""

    def __init__(self, paths: Sequence[Path], targets: torch.Tensor, transform: Transform,
                 short_side: int) -> None:
        threads = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            self.images = list(pool.map(lambda p: decode(p, short_side), paths))
        self.targets, self.transform = targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.targets[index]


def targets_for(items: Sequence[Item], classes: Sequence[str], multilabel: bool) -> torch.Tensor:
    """Class indices (multi-class, int64) or multi-hot float rows (multi-label)."""
    index = {name: i for i, name in enumerate(classes)}
    if not multilabel:
        return torch.tensor([index[item.tags[0]] for item in items], dtype=torch.long)
    hot = torch.zeros(len(items), len(classes))
    for row, item in enumerate(items):
        hot[row, [index[t] for t in item.tags]] = 1.0
    return hot


def classification_datasets(data: VersionData, params: TrainingParams, multilabel: bool
                            ) -> tuple[CachedImages, CachedImages]:
    """Train and validation datasets of ``data`` with the SPEC §5 transforms of ``params``."""
    # Cache at the largest side any transform needs: random crops then only ever shrink.
    short_side = max(params.validation_resize_size, params.training_crop_size)
    train = CachedImages([i.path for i in data.train], targets_for(data.train, data.classes, multilabel),
                         train_transform(params), short_side)
    validation = CachedImages(
        [i.path for i in data.validation], targets_for(data.validation, data.classes, multilabel),
        eval_transform(params.validation_resize_size, params.validation_crop_size), short_side)
    return train, validation


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, workers: int, seed: int,
                pin_memory: bool = False) -> DataLoader:
    """A seeded loader; a training loader never ends on a single-image batch (BatchNorm fails)."""
    size = len(dataset)  # type: ignore[arg-type]
    batch_size = max(1, min(batch_size, size))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        drop_last=shuffle and size > 1 and size % batch_size == 1,
        generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )
