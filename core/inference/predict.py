"""Load any saved model by its settings.json and predict in the SPEC §8 schema (with SPEC §9
explanations where asked for, and D-RISE maps for a detector's boxes): the one way endpoints and the
worker's scoring jobs answer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from core.base.errors import InputError
from core.base.prediction import Prediction
from core.base.tasks import Task
from core.train.device import choose_device
from core.zoo.base import SETTINGS_FILE, Predictor
from core.zoo.families import family_named


def load_predictor(artifact_dir: Path, device: str = "auto") -> Predictor:
    """The predictor of the model saved in ``artifact_dir`` (a trial's or a model version's)."""
    settings_file = artifact_dir / SETTINGS_FILE
    if not settings_file.is_file():
        raise InputError(str(artifact_dir), f"has no {SETTINGS_FILE}",
                         "point at a trial's artifact folder or a registered model version")
    settings = json.loads(settings_file.read_text())
    return family_named(settings["family"]).load(artifact_dir, choose_device(device))


def predict_json(predictor: Predictor, images: list[Image.Image], names: list[str]) -> list[dict[str, Any]]:
    """SPEC §8 answers, one per image, with polygons for instance segmentation."""
    return _as_json(predictor, predictor.predict(images), names)


def _as_json(predictor: Predictor, predictions: list[Prediction], names: list[str]) -> list[dict[str, Any]]:
    polygons = predictor.task is Task.SEGMENTATION
    out = []
    for name, prediction in zip(names, predictions, strict=True):
        prediction.filename = name
        out.append(prediction.to_json(with_polygons=polygons))
    return out


def answer_json(predictor: Predictor, images: list[Image.Image], names: list[str],
                xai: Sequence[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """SPEC §8 answers, one per image; where ``xai[k]`` is not None (the request's ``xai_parameters``),
    image k's answer is explained too: a classifier's with the SPEC §9 keys, a detector's boxes each with
    their D-RISE map (``visualizations``, ``attributions``). A bad ``xai`` is a ConfigError."""
    predictions = predictor.predict(images)
    answers = _as_json(predictor, predictions, names)
    for image, prediction, answer, asked in zip(images, predictions, answers, xai, strict=True):
        if asked is None:
            continue
        if predictor.task in (Task.DETECTION, Task.SEGMENTATION):
            _explain_boxes(predictor, image, prediction, answer, asked)
        else:
            answer.update(explanation_json(predictor, image, asked))
    return answers


def _explain_boxes(predictor: Predictor, image: Image.Image, prediction: Prediction, answer: dict[str, Any],
                   xai: Mapping[str, Any]) -> None:
    from core.explain.drise import explain_boxes
    from core.explain.params import parse_detection_xai_params
    from core.explain.visualize import to_base64

    params = parse_detection_xai_params(xai)
    for box, explained in zip(answer["boxes"], explain_boxes(predictor, image, prediction.detections, params),
                              strict=False):
        if params.visualizations:
            box["visualizations"] = to_base64(explained.png)
        if params.attributions:
            box["attributions"] = explained.attributions()


def explanation_json(predictor: Predictor, image: Image.Image, xai: Mapping[str, Any]) -> dict[str, Any]:
    """The keys SPEC §9 adds to one classification answer, computed as ``xai`` asks."""
    from core.explain.classification import explain
    from core.explain.params import parse_xai_params

    params = parse_xai_params(xai)
    return explain(predictor, [image], params)[0].to_json(params)  # type: ignore[arg-type]
