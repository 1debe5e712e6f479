"""Explanations of a classifier's predictions (SPEC §9): for each image the predicted class (multi-class)
or each label above the confidence threshold (multi-label), its attributions [3, crop, crop] and the 2×2
visualization, ready for the scoring answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.base.errors import ConfigError
from core.base.tasks import Task
from core.data.augment import IMAGENET_MEAN, IMAGENET_STD
from core.explain.attributions import attribute
from core.explain.params import XaiParams
from core.explain.visualize import explanation_grid, importance, png_bytes, to_base64
from core.zoo.timm_family import TimmPredictor


@dataclass(frozen=True)
class Explanation:
    """One image's explanations, one entry per explained class in the same order in each field."""

    labels: tuple[str, ...]
    probs: tuple[float, ...]
    attributions: tuple[np.ndarray, ...]  # float32 [3, valid_crop_size, valid_crop_size] each
    pngs: tuple[bytes, ...]  # the 2×2 visualizations; empty when they were not asked for
    multilabel: bool

    @property
    def visualizations(self) -> str | list[str] | None:
        """Base64 PNG as the reference answers it: one string (multi-class) or one per label (multi-label)."""
        encoded = [to_base64(png) for png in self.pngs]
        if self.multilabel:
            return encoded
        return encoded[0] if encoded else None

    def attributions_json(self) -> list[Any] | None:
        """Nested lists [3, crop, crop] (multi-class) or a list of them, one per label (multi-label)."""
        nested = [a.tolist() for a in self.attributions]
        if self.multilabel:
            return nested
        return nested[0] if nested else None

    def to_json(self, params: XaiParams) -> dict[str, Any]:
        """The keys SPEC §9 adds to this image's scoring answer, as ``params`` asks for them."""
        out: dict[str, Any] = {}
        if params.visualizations:
            out["visualizations"] = self.visualizations
        if params.attributions:
            out["attributions"] = self.attributions_json()
        return out


def explain(predictor: TimmPredictor, images: list[Image.Image], params: XaiParams) -> list[Explanation]:
    """One Explanation per image of what ``predictor`` predicts for it, computed by ``params.xai_algorithm``."""
    if not isinstance(predictor, TimmPredictor):
        raise ConfigError("model_explainability", f"explanations are for classification models, not "
                          f"{predictor.task.value}", [Task.CLASSIFICATION.value, Task.MULTILABEL.value])
    multilabel = predictor.task is Task.MULTILABEL
    predictions = predictor.predict(images)
    out = []
    for k, prediction in enumerate(predictions):
        # One image at a time: the algorithms batch their own integration steps.
        batch = predictor.preprocess(images[k:k + 1]).to(predictor.device)
        targets = explained_classes(prediction.probs, multilabel, params.confidence_score_threshold_multilabel)
        arrays = tuple(attribute(predictor.model, batch, target, params) for target in targets)
        pngs: tuple[bytes, ...] = ()
        if params.visualizations:
            crop = cropped_input(batch[0])
            signed = params.xai_algorithm == "xrai"
            pngs = tuple(png_bytes(explanation_grid(crop, importance(a, signed_regions=signed))) for a in arrays)
        out.append(Explanation(tuple(predictor.classes[t] for t in targets),
                               tuple(prediction.probs[t] for t in targets), arrays, pngs, multilabel))
    return out


def explained_classes(probs: list[float], multilabel: bool, threshold: float) -> list[int]:
    """The class indices to explain: the most probable class, or every label at or above ``threshold``."""
    if multilabel:
        return [k for k, p in enumerate(probs) if p >= threshold]
    return [int(np.argmax(probs))] if probs else []


def cropped_input(normalised: torch.Tensor) -> Image.Image:
    """The crop the model saw, as a picture: the normalisation of a [3, H, W] input undone."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = (normalised.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
