"""SPEC §5 classification transforms, on uint8 CHW tensors (torchvision transforms v2).

Training: random resized crop, horizontal flip, colour jitter, ImageNet normalisation — the
first three switched off by ``advanced_settings`` ``apply_automl_train_augmentations: false``.
Validation and prediction: resize, centre crop, normalisation (the same function both ways,
so a deployed model sees exactly what it was validated on).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from core.base.params import TrainingParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_AUGMENTATIONS = "apply_automl_train_augmentations"
# Moderate jitter; hue is left out: it is the slowest of the four on CPU and shape or texture,
# not hue shifts, is what most image classes differ by.
JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3}


def train_transform(params: TrainingParams) -> v2.Compose:
    """What a training image goes through each time it is drawn."""
    size = params.training_crop_size
    if not params.advanced(TRAIN_AUGMENTATIONS):
        # Resizing always applies: the same framing as validation, at the training size.
        return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size), *_normalise()])
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(params.random_crop_min_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(**JITTER),  # after the crop: jitter costs per pixel, the crop is small
        *_normalise(),
    ])


def eval_transform(resize_size: int, crop_size: int) -> v2.Compose:
    """Validation and inference: shorter side to ``resize_size``, centre ``crop_size`` square."""
    return v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size),
                       *_normalise()])


def _normalise() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
