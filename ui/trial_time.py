"""The wizard's estimate of the time per trial on this machine (core.sweep.estimate, worded for the page), its
warning when an epoch will not fit the job's time limit, and what both need from the job file: its dataset
version's images and the models it will train."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.base.params import TrainingParams
from core.base.tasks import Task
from core.sweep import estimate
from core.sweep.jobspec import registered_dataset
from core.train.recipe import ImageSizes
from storage.db import session_scope
from storage.repos import datasets, workers
from ui import common as _ui

DEFAULT_EPOCHS = TrainingParams.model_fields["number_of_epochs"].default


@dataclass(frozen=True)
class Here:
    """What the time estimates depend on, read once per run: the worker's device and the training and
    validation images of the job's dataset version (None until a registered one is chosen)."""

    device: str
    train_images: int | None
    validation_images: int = 0
    image_sizes: ImageSizes | None = None  # the version's typical image, for the data-sized defaults

    @classmethod
    def read(cls, doc: dict[str, Any]) -> Here:
        name, version = dataset_ref(doc)
        with session_scope(_ui.engine()) as session:
            row = datasets.get_version(session=session, name=name,
                                       version=int(version) if version and version.isdigit() else None)
            device = _ui.device_of(workers.live(session=session, grace_s=30))
        if row is None:
            return cls(device, None)
        return cls(device, row.image_count - row.validation_count, row.validation_count,
                   ImageSizes.from_stats((row.stats or {}).get("image_sizes", {})))


def dataset_ref(doc: dict[str, Any]) -> tuple[str, str | None]:
    """The job's registered dataset as (name, version or None for the latest); ("", None) for a path."""
    return registered_dataset(str((doc.get("training_data") or {}).get("path", ""))) or ("", None)


def planned_models(doc: dict[str, Any], here: Here) -> list[str]:
    """The models the job will train: its sweep's, its one model, or AutoMode's candidates."""
    return estimate.planned_models(doc, gpu=estimate.on_gpu(here.device), train_images=here.train_images or 0)


def timeout_warnings(doc: dict[str, Any], here: Here) -> list[str]:
    """Each planned model whose epoch will not fit the job's time limit (or leaves room for only a few);
    none before a dataset is chosen."""
    if here.train_images is None or doc.get("task") not in {t.value for t in Task}:
        return []
    with session_scope(_ui.engine()) as session:
        return estimate.timeout_warnings(session=session, doc=doc, device=here.device,
                                         train_images=here.train_images, validation_images=here.validation_images,
                                         image_sizes=here.image_sizes)


def estimates(doc: dict[str, Any], models: list[str], here: Here) -> dict[str, estimate.Estimate | None] | None:
    """Each model's time per trial on this machine, from the trials that ran here; None before a dataset
    is chosen."""
    if here.train_images is None:
        return None
    epochs = int((doc.get("training_parameters") or {}).get("number_of_epochs", DEFAULT_EPOCHS))
    with session_scope(_ui.engine()) as session:
        return estimate.per_trial(session=session, models=models, device=here.device,
                                  train_images=here.train_images, epochs=epochs)


def time_per_trial(doc: dict[str, Any], here: Here) -> str:
    """The planned models' estimated time per trial, in words."""
    guesses = estimates(doc, planned_models(doc, here), here)
    if guesses is None:
        return "unknown until the dataset is chosen"
    said = [f"{model} {estimate.say(guess.seconds)} (from {guess.trials} earlier trial{'s' if guess.trials > 1 else ''}"
            " here)" for model, guess in guesses.items() if guess is not None]
    if unknown := [model for model, guess in guesses.items() if guess is None]:
        said.append(f"no estimate yet for {', '.join(unknown)}: the first trial of a model on this machine sets it")
    return "; ".join(said)
