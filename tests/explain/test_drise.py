"""D-RISE box explanations: model-agnostic (only ``predict`` is called), the map lies where the detector
looks, the same seed gives the same map, and a detection answer carries a map per box."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from core.base.errors import ConfigError
from core.base.prediction import Detection, Prediction
from core.base.tasks import Task
from core.explain.drise import explain_boxes, iou
from core.explain.params import DetectionXaiParams, parse_detection_xai_params
from core.inference.predict import answer_json

SPOT = (40, 8, 56, 24)  # x0, y0, x1, y1 in pixels of a 64 x 64 image: where the detector looks


class Spotter:
    """A detector of one thing: a box at SPOT scored by how much of SPOT's brightness it sees."""

    task, classes = Task.DETECTION, ["spot"]

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        self.calls += len(images)
        out = []
        for image in images:
            x0, y0, x1, y1 = SPOT
            seen = float(np.asarray(image, dtype=np.float32)[y0:y1, x0:x1].mean() / 255)
            found = [Detection("spot", round(seen, 4), x0 / 64, y0 / 64, x1 / 64, y1 / 64)] if seen > 0.05 else []
            out.append(Prediction(detections=found))
        return out


def _picture() -> Image.Image:
    pixels = np.full((64, 64, 3), 255, dtype=np.uint8)  # bright everywhere: only the detector decides
    return Image.fromarray(pixels, "RGB")


def test_the_map_lies_where_the_detector_looks_and_costs_one_prediction_per_mask() -> None:
    spotter, image = Spotter(), _picture()
    (detection,) = spotter.predict([image])[0].detections
    spotter.calls = 0
    (explained,) = explain_boxes(spotter, image, [detection], DetectionXaiParams(number_of_masks=120))
    assert spotter.calls == 120
    heat = explained.heatmap
    assert heat.shape == (64, 64) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() == 1
    x0, y0, x1, y1 = SPOT
    inside = heat[y0:y1, x0:x1].mean()
    outside = np.concatenate([heat[:, :x0 - 8].ravel(), heat[y1 + 8:, :].ravel()]).mean()
    assert inside > 4 * outside, (inside, outside)
    assert Image.open(io.BytesIO(explained.png)).size == (64, 64)
    grid = explained.attributions()
    assert len(grid) == 64 and len(grid[0]) == 64


def test_the_same_seed_gives_the_same_map_and_another_seed_another() -> None:
    spotter, image = Spotter(), _picture()
    detections = spotter.predict([image])[0].detections
    maps = [explain_boxes(spotter, image, detections, DetectionXaiParams(number_of_masks=16, seed=s))[0].heatmap
            for s in (3, 3, 4)]
    assert np.array_equal(maps[0], maps[1]) and not np.array_equal(maps[0], maps[2])


def test_a_detection_answer_carries_a_map_per_box_when_asked() -> None:
    spotter, image = Spotter(), _picture()
    plain, explained = answer_json(spotter, [image, image], ["a.png", "b.png"],
                                   [None, {"number_of_masks": 8, "attributions": True}])
    assert "visualizations" not in plain["boxes"][0]
    box = explained["boxes"][0]
    assert Image.open(io.BytesIO(base64.b64decode(box["visualizations"]))).size == (64, 64)
    assert np.asarray(box["attributions"]).shape == (64, 64)


def test_bad_detection_explanation_parameters_are_named() -> None:
    with pytest.raises(ConfigError, match="number_of_masks"):
        parse_detection_xai_params({"number_of_masks": 2})
    with pytest.raises(ConfigError, match="n_steps"):  # a classifier's parameter is not a detector's
        parse_detection_xai_params({"n_steps": 50})


def test_iou_of_boxes() -> None:
    a = Detection("x", 1.0, 0.0, 0.0, 0.5, 0.5)
    assert iou(a, a) == 1.0 and iou(a, Detection("x", 1.0, 0.5, 0.5, 1.0, 1.0)) == 0.0
    assert iou(a, Detection("x", 1.0, 0.25, 0.0, 0.75, 0.5)) == pytest.approx(1 / 3)
