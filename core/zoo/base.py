"""What a model family is: it trains a model for a task, saves it, and loads it to predict.

Families are registered in `core.zoo.families`; trials and serving only see this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from core.base.params import TrainingParams
from core.base.prediction import Prediction
from core.base.registry import Registry
from core.base.tasks import Task
from core.data.view import Item, VersionData
from core.train.context import TrialContext

if TYPE_CHECKING:
    from core.zoo.weights import WeightsStatus

WEIGHTS_FILE = "model.safetensors"  # families that own their format may use another name
SETTINGS_FILE = "settings.json"
PARAMS_FILE = "params.json"
SAMPLE_IMAGES = 8  # validation images whose predictions the trial page shows beside ground truth
CELL_IMAGES = 24  # per confusion-matrix cell: a page of thumbnails
SAMPLE_DETECTIONS = 30  # per image: enough for a picture, small enough for evaluation.json


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model name: which family builds it, from which architecture, at which size."""

    family: str
    architecture: str
    task: Task
    size: str = ""
    display_name: str = ""


@dataclass
class TrainedModel:
    """What a family hands back after training; the trial stores it."""

    weights: Path  # inside ctx.out_dir
    metrics: dict[str, float]  # final validation metrics, keyed by metric name
    epochs_run: int
    settings: dict[str, Any]  # SPEC §7 inference settings as trained (written to settings.json)
    evaluation: dict[str, Any] = field(default_factory=dict)  # confusion matrix, PR curves, per class
    notices: list[str] = field(default_factory=list)  # e.g. "no pretrained weights: from scratch"
    stop_reason: str | None = None  # why training ended before number_of_epochs, if it did
    resume_epoch: int = 0  # the epoch its kept resume state ends with; 0: none kept, it cannot be extended


class Predictor(Protocol):
    task: Task
    classes: list[str]

    def predict(self, images: list[Image.Image]) -> list[Prediction]: ...


class ModelFamily(Protocol):
    name: str
    tasks: frozenset[Task]

    def accepts(self, model_name: str, task: Task) -> bool: ...

    def default_params(self, task: Task) -> dict[str, Any]:
        """The family's own defaults, between the task's defaults and the job's parameters."""
        ...

    def resolve(self, model_name: str, params: TrainingParams, task: Task) -> ModelSpec: ...

    def train(self, spec: ModelSpec, data: VersionData, params: TrainingParams,
              ctx: TrialContext) -> TrainedModel: ...

    def load(self, artifact_dir: Path, device: str) -> Predictor: ...

    def weights(self, spec: ModelSpec, params: TrainingParams) -> WeightsStatus:
        """Where the starting weights will come from, known before training (fast, even offline)."""
        ...

    def import_weights(self, spec: ModelSpec, file: Path) -> tuple[Path, int]:
        """Check a person's weights file for ``spec`` and put it where the library looks; the file
        written and the number of tensors that fit. ConfigError for a file that does not fit."""
        ...


# Holds family classes (stateless); `core.zoo.families` instantiates them.
families: Registry[type[ModelFamily]] = Registry("model family")


def validation_samples(items: Sequence[Item], predictions: Sequence[Prediction],
                       threshold: float | None = None) -> list[dict[str, Any]]:
    """The first validation images with ground truth and prediction, as JSON for evaluation.json.

    Classification keeps the top class, or with ``threshold`` (multi-label) every class at or
    above it; detection keeps the highest-scoring detections. ``blob`` is the image's sha256.
    """
    out = []
    for item, prediction in zip(items[:SAMPLE_IMAGES], predictions, strict=False):
        if prediction.probs:
            ranked = sorted(zip(prediction.labels, prediction.probs, strict=True), key=lambda lp: -lp[1])
            picked = ranked[:1] if threshold is None else [lp for lp in ranked if lp[1] >= threshold]
            predicted = [{"label": label, "score": round(score, 4)} for label, score in picked]
        else:
            best = sorted(prediction.detections, key=lambda d: -d.score)[:SAMPLE_DETECTIONS]
            predicted = [{"label": d.label, "score": round(d.score, 4), **_shape((d.x0, d.y0, d.x1, d.y1), d.polygons)}
                         for d in best]
        out.append({"image": item.name, "blob": item.path.name, "predicted": predicted,
                    "truth": [{"label": tag} for tag in item.tags]
                    + [{"label": i.label, **_shape((i.x0, i.y0, i.x1, i.y1), i.polygons)} for i in item.instances]})
    return out


def confusion_cells(items: Sequence[Item], truth: Sequence[int], predicted: Sequence[int]
                    ) -> list[dict[str, Any]]:
    """The validation images of each non-empty cell of a multi-class confusion matrix (class indices,
    at most CELL_IMAGES each), so the trial page can show the images behind a count."""
    cells: dict[tuple[int, int], list[dict[str, str]]] = {}
    for item, t, p in zip(items, truth, predicted, strict=True):
        images = cells.setdefault((t, p), [])
        if len(images) < CELL_IMAGES:
            images.append({"image": item.name, "blob": item.path.name})
    return [{"true": t, "predicted": p, "images": images} for (t, p), images in sorted(cells.items())]


def _shape(box: tuple[float, ...], polygons: Sequence[Sequence[float]]) -> dict[str, Any]:
    return {"box": [round(v, 4) for v in box], "polygons": [[round(v, 4) for v in p] for p in polygons]}
