"""Defaults that depend on the data and on where a trial's weights start (torch-free, so the wizard
can show them before anything trains).

Precedence (`core.base.params.resolve_params` layers): task defaults < family defaults < **recipe** <
the job's parameters < sampled < command line. A recipe only fills what the person left unset.

- **Sizes follow the images.** Crop sizes, ``min_size``/``max_size`` and YOLO's ``img_size`` come
  from the typical image (the median shorter and longer side), rounded down to a multiple of 32 (what
  strided CNNs, ViT patches and YOLO need) and capped at the reference's defaults: a 32-pixel image
  is trained at 32, never upsampled to 224 or 640; a photo is trained at the reference's size.
- **Fine-tuning** (pretrained weights): the reference's defaults stay.
- **From scratch**: what small-data training from random weights needs. For classification the
  recipe of a plain timm script that learns: AdamW at 2e-3 with weight decay 0.05, a short warmup
  then a cosine to zero, label smoothing 0.1, and batches small enough for ~20 steps per epoch.
  For YOLO, ultralytics' own choice for short runs (AdamW, lr 0.002·5/(4+classes)). For the
  torchvision detectors, AdamW at 1e-4 (SGD at 0.005 from random weights mostly diverges).
- **Imbalanced classes are compensated**: from a ratio of 5 between the largest and the smallest class,
  a class-weighted loss (classifiers) or repeat-factor sampling (detectors).
- **Crops keep the objects**: RandomResizedCrop keeps at least half the image for multi-label
  (the labelled objects must stay in view) and tiny images, and a third on small data, not
  torchvision's 8 %.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.base.tasks import Task
from core.data.balance import IMBALANCE_RATIO

FINE_TUNE, FROM_SCRATCH = "fine_tune", "from_scratch"
STRIDE = 32
CLASSIFICATION_CROP = 224  # the reference's crop; its resize is 256
DETECTION_MIN_SIZE, DETECTION_MAX_SIZE = 600, 1333  # the reference's Faster/Mask R-CNN sizes
YOLO_IMG_SIZE = 640
SMALL_DATA = 1000  # training images below which crops stay large
STEPS_PER_EPOCH = 20  # from scratch: batches sized so an epoch has about this many steps


@dataclass(frozen=True)
class ImageSizes:
    """The typical image of a dataset: median shorter and longer side, in pixels."""

    short: int
    long: int

    @classmethod
    def from_stats(cls, image_sizes: Mapping[str, int]) -> ImageSizes | None:
        """From a version's statistics: ``{"640x480": count, …}``."""
        pairs = []
        for text, count in image_sizes.items():
            width, _, height = text.partition("x")
            if width.isdigit() and height.isdigit():
                pairs += [(int(width), int(height))] * int(count)
        return cls.of(pairs)

    @classmethod
    def of(cls, sizes: Iterable[tuple[int, int]]) -> ImageSizes | None:
        pairs = [(w, h) for w, h in sizes if w > 0 and h > 0]
        if not pairs:
            return None
        return cls(int(statistics.median(min(p) for p in pairs)), int(statistics.median(max(p) for p in pairs)))


@dataclass(frozen=True)
class Recipe:
    name: str  # FINE_TUNE or FROM_SCRATCH
    values: dict[str, Any]  # defaults it sets, below the job's own parameters


def recipe(*, task: Task, family: str, pretrained: bool, images: ImageSizes | None, train_images: int,
           classes: int, epochs: int, crop: int | None = None, imbalance: float = 1.0) -> Recipe:
    """The defaults for a trial of ``family`` on this data; ``pretrained`` when weights are to be had;
    ``crop`` a validation crop size the person set; ``imbalance`` the training images' largest class over
    their smallest (`core.data.balance`)."""
    values = sized(task, family, images, train_images, crop) | balanced(task, imbalance)
    if pretrained:
        return Recipe(FINE_TUNE, values)
    # From scratch the metric stays flat or noisy for many epochs before it climbs (YOLO on the fridge
    # objects: mAP50 0 for 13 of 40 epochs, then 0.86): early stopping waits half the run.
    values["early_stopping_delay"] = max(5, epochs // 2)
    if task in (Task.CLASSIFICATION, Task.MULTILABEL):
        batch = _power_of_two(train_images / STEPS_PER_EPOCH, low=8, high=64)
        values |= {"optimizer": "adamw", "learning_rate": 2e-3, "weight_decay": 0.05,
                   "learning_rate_scheduler": "warmup_cosine", "warmup_cosine_lr_cycles": 0.5,
                   "warmup_cosine_lr_warmup_epochs": max(1, round(epochs * 0.1)),
                   "training_batch_size": batch, "validation_batch_size": max(batch, 32)}
        if task is Task.CLASSIFICATION:
            values["label_smoothing"] = 0.1
    elif family == "ultralytics":
        values |= {"optimizer": "adamw", "learning_rate": round(0.002 * 5 / (4 + classes), 6),
                   "warmup_cosine_lr_warmup_epochs": min(3, max(1, epochs // 10))}
    else:
        values |= {"optimizer": "adamw", "learning_rate": 1e-4, "weight_decay": 1e-4}
    return Recipe(FROM_SCRATCH, values)


def balanced(task: Task, imbalance: float) -> dict[str, Any]:
    """The remedy for imbalanced classes: for classifiers, a loss weighted by the inverse class frequency (on
    the fridge photos with 4 images of one class against ~24, bench/imbalance.py, it finds the rare class
    where the square root of the weights, weighted_loss 1, still never does); repeat-factor sampling for
    detectors."""
    if imbalance < IMBALANCE_RATIO:
        return {}
    return {"weighted_loss": 2} if task in (Task.CLASSIFICATION, Task.MULTILABEL) else {"repeat_factor_sampling": True}


def sized(task: Task, family: str, images: ImageSizes | None, train_images: int,
          crop: int | None = None) -> dict[str, Any]:
    """Sizes and crop scale for the typical image; nothing when the sizes are unknown. ``crop``: a
    validation crop the person chose, which the resize then frames."""
    values: dict[str, Any] = {}
    if task in (Task.CLASSIFICATION, Task.MULTILABEL):
        # A crop of 8 % of a 32-pixel image is a 9-pixel patch: nothing is left to recognise.
        tiny = images is not None and images.short <= 2 * STRIDE
        values["random_crop_min_scale"] = (0.5 if task is Task.MULTILABEL or tiny
                                           else 0.35 if train_images < SMALL_DATA else 0.08)
        if images is not None:
            chosen = _multiple(images.short, high=CLASSIFICATION_CROP)
            crop = crop or chosen
            # Native-size images are only resized (no border cut off); larger ones get the
            # reference's 256/224 margin before the centre crop.
            resize = crop if images.short <= crop * 1.15 else round(crop * 256 / 224)
            values |= {"training_crop_size": chosen, "validation_crop_size": chosen,
                       "validation_resize_size": resize}
    elif images is not None and family == "ultralytics":
        values["img_size"] = _multiple(images.long, high=YOLO_IMG_SIZE)
    elif images is not None:
        min_size = _multiple(images.short, high=DETECTION_MIN_SIZE)
        values |= {"min_size": min_size,
                   "max_size": max(min_size, _multiple(images.long, high=DETECTION_MAX_SIZE))}
    return values


def family_of(model: str, task: Task) -> str:
    """The family that trains a zoo model, told from its name without loading a library (for pages)."""
    if model.strip().lower().startswith("yolo"):
        return "ultralytics"
    return "timm" if task in (Task.CLASSIFICATION, Task.MULTILABEL) else "torchvision"


def choose(requested: str, pretrained: bool) -> bool:
    """Whether the fine-tuning recipe applies: ``recipe`` as the person set it, else by the weights."""
    return requested == FINE_TUNE or (requested != FROM_SCRATCH and pretrained)


def describe(name: str, values: Mapping[str, Any]) -> str:
    """One line for a log or a page: the recipe and what it set."""
    said = ", ".join(f"{k} {v}" for k, v in sorted(values.items()))
    return f"{name.replace('_', ' ')} recipe" + (f": {said}" if said else "")


def _multiple(side: int, *, high: int) -> int:
    """``side`` rounded down to a multiple of STRIDE (never upsampled), at least STRIDE, at most ``high``."""
    return max(STRIDE, min(high, side // STRIDE * STRIDE))


def _power_of_two(value: float, *, low: int, high: int) -> int:
    size = low
    while size * 2 <= min(value, high):
        size *= 2
    return size
