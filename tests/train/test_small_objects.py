"""The small-object advisor: objects measured at the size a detector would train at, and the training size
that would show most of them large enough."""

from __future__ import annotations

import pytest

from core.base.tasks import Task
from core.train.small_objects import SMALL_SIDE, assess


def _stats(side: float, image: str = "4000x3000", boxes: int = 10) -> dict:
    return {"image_sizes": {image: 20}, "box_sizes": {"width": [side] * boxes, "height": [side] * boxes}}


def test_objects_small_at_the_training_size_get_a_larger_size_proposed():
    seen = assess(_stats(0.01), Task.DETECTION)
    assert seen is not None and seen.dominated and seen.training_side == 640
    # a side of 1% of the image's area's side: ~35 px in the photo, ~5.5 px at 640
    assert seen.sides[0] == pytest.approx(0.01 * (4000 * 3000) ** 0.5 * 640 / 4000)
    assert seen.fraction_small == 1.0
    assert seen.proposal == {"img_size": 1280, "min_size": 2048, "max_size": 3712}
    assert seen.why.startswith(f"100% of the objects are smaller than {SMALL_SIDE} px at the 640 px")
    assert "each epoch takes about 4.0× as long" in seen.why


def test_large_objects_and_classification_need_no_advice():
    large = assess(_stats(0.3), Task.DETECTION)
    assert large is not None and not large.dominated and large.proposal == {} and large.why == ""
    assert assess(_stats(0.01), Task.CLASSIFICATION) is None
    assert assess({"image_sizes": {"640x480": 3}}, Task.DETECTION) is None  # no boxes
    small_photo = assess(_stats(0.02, image="320x240"), Task.SEGMENTATION)  # ~5 px: small even at its own size
    assert small_photo is not None and small_photo.training_side == 320
    assert small_photo.proposal["img_size"] > 320  # upsampled: tiles would not help an image this small
