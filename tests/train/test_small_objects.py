"""The small-object advisor: objects measured at the size a detector would train at, and the training size
that would show most of them large enough."""

from __future__ import annotations

import pytest

from core.base.tasks import Task
from core.train.small_objects import SMALL_SIDE, assess


def _stats(side: float, image: str = "4000x3000", boxes: int = 10) -> dict:
    return {"image_sizes": {image: 20}, "box_sizes": {"width": [side] * boxes, "height": [side] * boxes}}


def test_objects_small_at_the_training_size_get_a_larger_size_proposed():
    seen = assess(_stats(0.04, image="1280x960"), Task.DETECTION)
    assert seen is not None and seen.dominated and seen.training_side == 640
    # a side of 4% of the image's area's side: ~44 px in the photo, ~22 px at 640; 32 px at 928
    assert seen.sides[0] == pytest.approx(0.04 * (1280 * 960) ** 0.5 * 640 / 1280)
    assert seen.fraction_small == 1.0
    assert seen.proposal == {"img_size": 928, "min_size": 704, "max_size": 928}
    assert seen.why.startswith(f"100% of the objects are smaller than {SMALL_SIDE} px at the 640 px")
    assert "Training at img_size 928 (YOLO) or min_size 704 (Faster/Mask R-CNN) leaves 0% small" in seen.why
    assert "each epoch takes about 2.1× as long" in seen.why


def test_past_the_largest_size_worth_training_tiles_are_proposed_along_the_images_long_side():
    # ~22 px objects in 1280 x 960 photos: 11 px at 640; lifting them takes 2900 px, past YOLO_MAX.
    seen = assess(_stats(0.02, image="1280x960"), Task.DETECTION)
    assert seen is not None and seen.proposal == {"tile_grid_size": "4x3"}  # four across, three down
    assert "Tiles of a 4x3 grid (each image trained whole and as its 12 tiles, at 640 px) leaves 0% small" in seen.why
    assert "each epoch takes about 13.0× as long" in seen.why and seen.cost == 13.0
    portrait = assess(_stats(0.02, image="960x1280"), Task.DETECTION)
    assert portrait is not None and portrait.proposal == {"tile_grid_size": "3x4"}
    # ~35 px objects in 12-megapixel photos: a 4x4 grid is the most offered, and the tiles grow for the rest.
    huge = assess(_stats(0.01), Task.DETECTION)
    assert huge is not None and huge.proposal == {"tile_grid_size": "4x4", "img_size": 1152}
    assert "leaves 0% small, and each epoch takes about 55.1× as long" in huge.why


def test_large_objects_and_classification_need_no_advice():
    large = assess(_stats(0.3), Task.DETECTION)
    assert large is not None and not large.dominated and large.proposal == {} and large.why == ""
    assert assess(_stats(0.01), Task.CLASSIFICATION) is None
    assert assess({"image_sizes": {"640x480": 3}}, Task.DETECTION) is None  # no boxes
    small_photo = assess(_stats(0.02, image="320x240"), Task.SEGMENTATION)  # ~5 px: small even at its own size
    assert small_photo is not None and small_photo.training_side == 320
    assert small_photo.proposal["img_size"] > 320  # upsampled: its objects need more pixels than it has
