"""Explanations as a user of the scoring endpoint gets them (SPEC §9): every algorithm gives attributions
[3, crop, crop] and a 2×2 PNG for the predicted class, one per predicted label for multi-label; parameters
are checked with the reference's names; detections get heat maps of the image's size. Tiny models trained
for one epoch on the procedural shapes samples."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from factories import trained_artifact
from PIL import Image, ImageDraw

from core.base.errors import ConfigError
from core.base.tasks import Task
from core.data.view import VersionData
from core.explain.classification import explain
from core.explain.detection import explain_detections
from core.explain.params import XaiParams, parse_xai_params
from core.explain.visualize import explanation_grid, heat_colours, top_pixels
from core.inference.predict import load_predictor

CROP = 32
CLASSIFIER = {"model_name": "test_resnet", "number_of_epochs": 1, "training_batch_size": 16,
              "validation_batch_size": 32, "training_crop_size": CROP, "validation_crop_size": CROP,
              "validation_resize_size": CROP, "early_stopping": False}
DETECTOR = {"model_name": "fasterrcnn_resnet18_fpn", "number_of_epochs": 1, "training_batch_size": 4,
            "validation_batch_size": 4, "min_size": 64, "max_size": 64, "early_stopping": False,
            "box_score_threshold": 0.001}  # a one-epoch detector scores low; the test needs boxes
FAST = {"n_steps": 4}  # the tests check shapes and plumbing, not the quality of the integral


pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")  # captum's, each call


def _trained(data: VersionData, out_dir: Path, overrides: dict[str, Any]) -> Any:
    """A one-epoch trial saved as core.runs.trial saves it, loaded back as the endpoint loads it."""
    return load_predictor(trained_artifact(data, out_dir, overrides), "cpu")


@pytest.fixture(scope="module")
def datasets(sample_versions: Any) -> dict[str, VersionData]:
    return sample_versions("explain", {"classes": (Task.CLASSIFICATION, 20, 40),
                                       "labels": (Task.MULTILABEL, 20, 40),
                                       "boxes": (Task.DETECTION, 10, 64)})


@pytest.fixture(scope="module")
def classifier(datasets: dict[str, VersionData], one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _trained(datasets["classes"], tmp_path_factory.mktemp("classifier") / "out", CLASSIFIER)


@pytest.fixture(scope="module")
def multilabel(datasets: dict[str, VersionData], one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _trained(datasets["labels"], tmp_path_factory.mktemp("multilabel") / "out", CLASSIFIER)


@pytest.fixture(scope="module")
def detector(datasets: dict[str, VersionData], one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _trained(datasets["boxes"], tmp_path_factory.mktemp("detector") / "out", DETECTOR)


def _shape(kind: str, colour: str, size: tuple[int, int] = (48, 40)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    box = (8, 6, 34, 32)
    (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=colour)
    return image


def _png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- classification ---------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["xrai", "integrated_gradients", "guided_backprop", "guided_gradcam"])
def test_each_algorithm_explains_the_predicted_class_with_a_2x2_picture(classifier: Any, algorithm: str) -> None:
    params = XaiParams(xai_algorithm=algorithm, attributions=True, **FAST)
    image = _shape("circle", "red")
    (explanation,) = explain(classifier, [image], params)
    (probs,) = [p.probs for p in classifier.predict([image])]
    assert explanation.labels == (classifier.classes[int(np.argmax(probs))],)
    (attribution,) = explanation.attributions
    assert attribution.shape == (3, CROP, CROP) and attribution.dtype == np.float32
    assert np.isfinite(attribution).all() and np.abs(attribution).sum() > 0
    (png,) = explanation.pngs
    picture = _png(png)
    assert picture.format == "PNG" and picture.size == (2 * CROP, 2 * CROP) and picture.mode == "RGB"
    answer = json.loads(json.dumps(explanation.to_json(params)))
    assert base64.b64decode(answer["visualizations"]) == png  # multi-class: one string, not a list
    assert np.array(answer["attributions"]).shape == (3, CROP, CROP)


def test_integrated_gradients_takes_either_approximation_and_xrai_its_full_version(classifier: Any) -> None:
    image = _shape("square", "blue")
    riemann, legendre, full = (
        explain(classifier, [image], XaiParams(visualizations=False, **FAST, **extra))[0].attributions[0]
        for extra in ({"xai_algorithm": "integrated_gradients"},
                      {"xai_algorithm": "integrated_gradients", "approximation_method": "gausslegendre"},
                      {"xai_algorithm": "xrai", "xrai_fast": False}))
    assert riemann.shape == legendre.shape == full.shape == (3, CROP, CROP)
    assert not np.allclose(riemann, legendre)  # the two rules sample the path at different points


def test_attributions_differ_between_two_images(classifier: Any) -> None:
    params = XaiParams(xai_algorithm="integrated_gradients", **FAST)
    first, second = explain(classifier, [_shape("circle", "red"), _shape("square", "green")], params)
    assert not np.allclose(first.attributions[0], second.attributions[0])
    assert first.pngs[0] != second.pngs[0]


def test_only_what_was_asked_for_is_answered(classifier: Any) -> None:
    params = XaiParams(xai_algorithm="guided_backprop", visualizations=False, attributions=True)
    (explanation,) = explain(classifier, [_shape("circle", "red")], params)
    assert explanation.pngs == () and set(explanation.to_json(params)) == {"attributions"}


def test_multilabel_explains_each_label_above_the_confidence_threshold(multilabel: Any) -> None:
    image = _shape("circle", "red")
    (probs,) = [p.probs for p in multilabel.predict([image])]
    for threshold in (0.0, float(np.median(probs)), 1.0):
        params = XaiParams(xai_algorithm="guided_gradcam", confidence_score_threshold_multilabel=threshold,
                           attributions=True)
        (explanation,) = explain(multilabel, [image], params)
        expected = [c for c, p in zip(multilabel.classes, probs) if p >= threshold]
        assert list(explanation.labels) == expected
        assert len(explanation.attributions) == len(explanation.pngs) == len(expected)
        assert all(a.shape == (3, CROP, CROP) for a in explanation.attributions)
        answer = explanation.to_json(params)  # multi-label: lists, one entry per label, even when empty
        assert isinstance(answer["visualizations"], list) and len(answer["attributions"]) == len(expected)
    assert len(explain(multilabel, [image], XaiParams(confidence_score_threshold_multilabel=0.0,
                                                      xai_algorithm="guided_backprop"))[0].labels) == 3


def test_explaining_leaves_the_served_model_as_it_was(classifier: Any) -> None:
    image = _shape("square", "blue")
    before = classifier.predict([image])[0].probs
    for algorithm in ("guided_backprop", "guided_gradcam"):
        explain(classifier, [image], XaiParams(xai_algorithm=algorithm))
    assert classifier.predict([image])[0].probs == before
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks
                   for m in classifier.model.modules())
    assert all(p.grad is None for p in classifier.model.parameters())


def test_the_parameters_import_without_torch() -> None:
    code = "import sys, core.explain.params; print(sorted({'torch', 'numpy', 'captum'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"  # the endpoint schema and the UI check requests with them


def test_parameters_have_the_reference_defaults_and_refuse_unknown_names() -> None:
    params = parse_xai_params({})
    assert (params.xai_algorithm, params.n_steps, params.xrai_fast, params.approximation_method,
            params.confidence_score_threshold_multilabel) == ("xrai", 50, True, "riemann_middle", 0.5)
    with pytest.raises(ConfigError, match="n_step") as unknown:
        parse_xai_params({"n_step": 10})
    assert unknown.value.hints == ["n_steps"]
    with pytest.raises(ConfigError) as bad:
        parse_xai_params({"approximation_method": "trapezoid"})
    assert bad.value.allowed == ["riemann_middle", "gausslegendre"]
    with pytest.raises(ConfigError, match="n_steps"):
        parse_xai_params({"n_steps": 1})


def test_the_grid_shows_input_heat_map_blend_and_top_30_percent() -> None:
    image = Image.new("RGB", (10, 10), (200, 100, 50))
    weights = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (10, 1))
    grid = np.asarray(explanation_grid(image, weights))
    assert grid.shape == (20, 20, 3)
    assert (grid[:10, :10] == (200, 100, 50)).all()
    assert tuple(grid[0, 19]) == (255, 255, 255) and grid[0, 10, 2] > grid[0, 10, 0]  # white top, blue bottom
    kept = (np.asarray(top_pixels(image, weights)).sum(axis=-1) > 0).mean()
    assert kept == pytest.approx(0.3) and (grid[10:, 17:] == (200, 100, 50)).all()
    assert tuple(heat_colours(np.array([0.0]))[0]) != tuple(heat_colours(np.array([0.5]))[0])


# --- detection ----------------------------------------------------------------------------------------

def test_each_detection_gets_a_heat_map_of_the_image_size(detector: Any) -> None:
    image = _shape("circle", "red", size=(80, 56))
    explanations = explain_detections(detector, image, max_detections=2)
    (prediction,) = detector.predict([image])
    assert len(explanations) == 2 and [e.detection for e in explanations] == prediction.detections[:2]
    for found in explanations:
        assert found.heatmap.shape == (56, 80) and found.heatmap.dtype == np.float32
        assert 0 <= found.heatmap.min() and found.heatmap.max() <= 1
        assert _png(found.png).size == (80, 56)


def test_classification_explanations_refuse_a_detector(detector: Any, classifier: Any) -> None:
    with pytest.raises(ConfigError, match="classification"):
        explain(detector, [_shape("circle", "red")], XaiParams())
    with pytest.raises(ConfigError, match="torchvision"):
        explain_detections(classifier, _shape("circle", "red"))
