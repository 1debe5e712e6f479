"""The wizard's estimates of the time per trial and per job on this machine (core.sweep.estimate, worded for
the page), its warning when an epoch will not fit the job's time limit, and what they need from the job file:
its dataset version's images and the models it will train."""

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


def per_model(doc: dict[str, Any], here: Here) -> dict[str, estimate.Estimate] | None:
    """Each planned model's time per trial of this job: from the trials that ran here, else a rough guess;
    None before a dataset is chosen."""
    if here.train_images is None:
        return None
    work = estimate.workload(doc, device=here.device, train_images=here.train_images,
                             validation_images=here.validation_images, image_sizes=here.image_sizes)
    with session_scope(_ui.engine()) as session:
        return estimate.per_model(session=session, doc=doc, work=work)


def time_per_trial(doc: dict[str, Any], here: Here) -> str:
    """The planned models' estimated time per trial, in words, each saying where its figure comes from."""
    guesses = per_model(doc, here)
    if guesses is None:
        return "unknown until the dataset is chosen"
    return "; ".join(f"{model} {estimate.say(guess.seconds)} ({_source(guess)})" for model, guess in guesses.items())


def _source(guess: estimate.Estimate) -> str:
    if guess.trials:
        return f"from {guess.trials} earlier trial{'s' if guess.trials > 1 else ''} here"
    return "a rough guess: not run here yet"


def estimate_line(doc: dict[str, Any], here: Here) -> str:
    """The job's time on this machine in one line ("Estimated on this machine: ~5 min per trial, ~50 min
    for the job …"), or why there is none yet."""
    if doc.get("task") not in {t.value for t in Task}:
        return "No time estimate: the job file's task is not one Kestrel knows."
    if here.train_images is None:
        return f"No time estimate yet: {_no_data(doc)}."
    try:
        guesses = per_model(doc, here) or {}
        timing = estimate.job_time(doc, guesses)
    except (KeyError, TypeError, ValueError):  # a value typed into an uploaded job file, refused on its step
        return "No time estimate: the job file has a value this estimate cannot read."
    if timing is None:
        return "No time estimate yet: the sweep names no model."
    low, high = (_short(s) for s in timing.trial_s)
    runs = "one trial" if timing.trials == 1 else (
        f"{timing.trials} trials, {'one' if timing.concurrent == 1 else timing.concurrent} at a time")
    line = (f"Estimated on this machine: {low if low == high else f'{low} to {high}'} per trial, "
            f"{_short(timing.job_s)} for the job ({runs}; likely between {_short(timing.range_s[0])} and "
            f"{_short(timing.range_s[1])})")
    if timing.is_capped:
        line += "; the job's timeout ends it before all its trials are done"
    if rough := [model for model, guess in guesses.items() if not guess.trials]:
        line += f". A rough guess for {', '.join(rough)}: not run here yet"
    return line + "."


def _no_data(doc: dict[str, Any]) -> str:
    if not (doc.get("training_data") or {}).get("path"):
        return "choose a dataset"
    name, version = dataset_ref(doc)
    if not name:
        return "the training data is a folder; its images are counted when the job is submitted"
    return f"no dataset {name}{f' version {version}' if version else ''} here"


def _short(seconds: float) -> str:
    """"~40 s", "~12 min", "~2.5 h"."""
    return "~" + estimate.say(seconds).removeprefix("about ")
