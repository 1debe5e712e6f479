"""Load any saved model by its settings.json and predict in the SPEC §8 schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from core.errors import InputError
from core.tasks import Task
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
    polygons = predictor.task is Task.SEGMENTATION
    out = []
    for name, prediction in zip(names, predictor.predict(images), strict=True):
        prediction.filename = name
        out.append(prediction.to_json(with_polygons=polygons))
    return out
