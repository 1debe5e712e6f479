"""How long a trial will take on this machine, judged by the trials that already ran here, and whether
one epoch fits the job's time limit.

A finished trial's duration over its epochs and training images is a speed (seconds per image per
epoch) that covers everything a trial does: loading, training, evaluating, saving. Its median over
recent trials of the same model on the same kind of device, times the new trial's images and epochs,
is the estimate. There is none before a model has run here once: a figure guessed from another
machine would mislead more than it helps in a time shown as a forecast.

The warning before a job starts is different: missing a timeout that ends every trial before its
first epoch costs the whole job, so for a model that never ran here it uses a rough a-priori figure
(`SPEEDS`, scaled by pixels and cores) and says it is one. The wizard's estimate of a whole job
(`per_model`, `job_time`) does the same, so a person sees a time from the first step; a rough figure
is always labelled as such where it is shown. Torch-free, for the studio's pages.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from core.base.params import TASK_DEFAULTS, TrainingParams
from core.base.tasks import Task
from core.sweep.jobspec import Limits
from core.sweep.summary import duration_s
from core.train import recipe
from core.train.recipe import ImageSizes
from core.zoo.catalog import automode_models
from storage.repos import trials, workers
from storage.tables import Trial

MIN_EPOCHS = 3  # a time limit with room for fewer epochs (and fewer than asked for) is warned about
REFERENCE_THREADS = 2  # the CPU figures below are for two threads (ENVIRONMENT.md's machine)
VALIDATION_COST = 1 / 3  # a validation image (forward only) costs about a third of a training one
# A rough trial's fixed cost beside its epochs: the process start, library imports, model build and
# saving (importing torch and timm and building a ResNet-18 alone took ~11 s on two busy cores).
TRIAL_START_S = 20
DEFAULT_TIMEOUT_MIN = Limits.model_fields["timeout_minutes"].default  # a job file that sets none


@dataclass(frozen=True)
class Estimate:
    seconds: float
    trials: int  # how many earlier trials it is drawn from; 0 for a rough a-priori guess (`SPEEDS`)


@dataclass(frozen=True)
class Speed:
    """Training images per second at ``side`` pixels for one kind of model, and the parameter that sets
    a trial's side."""

    cpu: float  # two CPU threads; measured for the models ENVIRONMENT.md names, scaled by FLOPs for the rest
    gpu: float  # one data-centre GPU with mixed precision: a guess (none was measured here)
    side: int
    size_key: str  # training_crop_size (timm), min_size (torchvision), img_size (ultralytics)


_CROP, _MIN, _IMG = "training_crop_size", "min_size", "img_size"
# First match of the model name wins. Classification at 224 px (resnet18 14, mobilenetv3 91, vit_tiny 18
# img/s measured); torchvision detectors from one step of 2 images at 320 px (fasterrcnn_mobilenet 1.6 s,
# fasterrcnn_resnet50 3.0 s, fasterrcnn_resnet18 2.5 s, retinanet 1.5 s, maskrcnn_resnet50 3.6 s); YOLO
# nano from ~0.5 s per epoch of 16 images at 128 px (segmentation 0.8 s), larger scales by FLOPs.
SPEEDS: tuple[tuple[str, Speed], ...] = (
    (r"yolo.*-seg", Speed(20, 1000, 128, _IMG)),
    (r"yolo", Speed(32, 1500, 128, _IMG)),
    (r"maskrcnn_resnet(18|34)", Speed(0.67, 60, 320, _MIN)),
    (r"maskrcnn_resnet50", Speed(0.56, 45, 320, _MIN)),
    (r"maskrcnn", Speed(0.35, 30, 320, _MIN)),
    (r"retinanet", Speed(1.33, 60, 320, _MIN)),
    (r"fasterrcnn_mobilenet", Speed(1.25, 120, 320, _MIN)),
    (r"fasterrcnn_resnet(18|34)", Speed(0.8, 80, 320, _MIN)),
    (r"fasterrcnn_resnet50", Speed(0.67, 60, 320, _MIN)),
    (r"fasterrcnn|fcos|ssd", Speed(0.4, 35, 320, _MIN)),
    (r"mobilenetv3|mobilenet_v3", Speed(91, 3000, 224, _CROP)),
    (r"mobilenet", Speed(45, 2500, 224, _CROP)),
    (r"vit_tiny", Speed(18, 2500, 224, _CROP)),
    (r"vits16|vit_small", Speed(6, 1200, 224, _CROP)),
    (r"vitl16|vit_large", Speed(0.5, 130, 224, _CROP)),
    (r"vit", Speed(1.6, 400, 224, _CROP)),  # vitb16r224, vit_base
    (r"resnet18(?!\d)", Speed(14, 2500, 224, _CROP)),
    (r"resnet34(?!\d)", Speed(7.5, 1500, 224, _CROP)),
    (r"resnest101|resnet152", Speed(2, 350, 224, _CROP)),
    (r"resnet101", Speed(3, 550, 224, _CROP)),
    (r"resnest|seresnext", Speed(3.5, 650, 224, _CROP)),
    (r"", Speed(5, 900, 224, _CROP)),  # resnet50 and any other timm classifier: a middle guess
)
YOLO_SCALES = {"n": 1.0, "s": 3.3, "m": 9.0, "l": 19.0, "x": 30.0}  # cost against nano (FLOPs)
SIZE_LETTERS = {"small": "s", "medium": "m", "large": "l", "xlarge": "x"}


@dataclass(frozen=True)
class Workload:
    """What one epoch of a job's trials works through, and where."""

    task: Task
    train_images: int
    validation_images: int
    device: str  # as the worker names it: "GPU: …" or "CPU, 2 cores"
    params: Mapping[str, Any]  # the job's training_parameters (sizes, model_size)
    concurrent: int = 1  # trials sharing the CPU cores
    image_sizes: ImageSizes | None = None  # the typical image: the sizes a trial picks when the job sets none


def planned_device(session: Session) -> str:
    """Where a job will train, as the worker names it: the live training worker's device, else this
    machine's cores (a GPU is known once a worker has run here)."""
    live = workers.serving(workers.live(session=session, grace_s=30), "automl")
    return next((w.device for w in live if w.device), f"CPU, {len(os.sched_getaffinity(0))} cores")


def on_gpu(device: str) -> bool:
    """Whether a device as the worker names it ("GPU: …", "CPU, 2 cores") or a trial does ("cuda:0 (…)",
    "cpu (2 threads)") is a GPU."""
    return device.lower().startswith(("gpu", "cuda"))


def per_trial(*, session: Session, models: Sequence[str], device: str, train_images: int, epochs: int,
              sample: int = 10) -> dict[str, Estimate | None]:
    """Each model's expected duration of one trial on ``train_images`` images for ``epochs``; None for a
    model with no finished trial on this kind of device."""
    speeds: dict[str, list[float]] = {model: [] for model in models}
    overheads: dict[str, list[float]] = {model: [] for model in models}
    for t in trials.trained(session=session):
        mine = speeds.get(t.model_name)
        if (mine is not None and len(mine) < sample and on_gpu(t.device) == on_gpu(device)
                and (speed := _seconds_per_image_epoch(t)) is not None):
            mine.append(speed)
            if (extra := _overhead_s(t)) is not None:
                overheads[t.model_name].append(extra)
    scale = max(1, train_images) * max(1, epochs)
    return {model: Estimate(statistics.median(s) * scale + (statistics.median(overheads[model]) if overheads[model]
                                                            else TRIAL_START_S), len(s)) if s else None
            for model, s in speeds.items()}


def per_epoch(*, session: Session, models: Sequence[str], work: Workload) -> dict[str, Estimate]:
    """Each model's expected time of one epoch (training and validation): from the trials that ran here
    when there are some, else a rough a-priori guess (``trials`` 0)."""
    measured = per_trial(session=session, models=models, device=work.device, train_images=work.train_images,
                         epochs=1)
    return {model: measured[model] or Estimate(guess_epoch_s(model, work), 0) for model in models}


def guess_epoch_s(model: str, work: Workload) -> float:
    """One epoch of ``model`` from `SPEEDS`, scaled by pixels (the trial's side against the figure's) and,
    on a CPU, by the threads a trial gets."""
    name = model.strip().lower()
    speed = next(s for pattern, s in SPEEDS if re.search(pattern, name))
    sized = recipe.sized(work.task, recipe.family_of(name, work.task), work.image_sizes, work.train_images)
    side = int(work.params.get(speed.size_key, sized.get(speed.size_key,
                                                         TrainingParams.model_fields[speed.size_key].default)))
    per_image = (side / speed.side) ** 2 * _yolo_scale(name, work.params) / (
        speed.gpu if on_gpu(work.device) else speed.cpu * _threads(work) / REFERENCE_THREADS)
    return per_image * (work.train_images + VALIDATION_COST * work.validation_images)


def _yolo_scale(name: str, params: Mapping[str, Any]) -> float:
    """A YOLO's cost against its nano scale: from its name (``yolo11s``), or model_size (``yolov5``)."""
    if not name.startswith("yolo"):
        return 1.0
    letter = re.search(r"yolo(?:v)?\d+([nslmx])", name)
    size = letter.group(1) if letter else SIZE_LETTERS.get(str(params.get("model_size", "medium")), "m")
    return YOLO_SCALES[size]


def _threads(work: Workload) -> int:
    """The CPU threads one trial gets: the cores the device names, shared by the concurrent trials."""
    cores = re.search(r"(\d+) cores?", work.device)
    return max(1, (int(cores.group(1)) if cores else REFERENCE_THREADS) // max(1, work.concurrent))


def planned_models(doc: Mapping[str, Any], *, gpu: bool, train_images: int) -> list[str]:
    """The models a job file (as YAML data) will train: its sweep's, its one model, or AutoMode's."""
    task = Task(doc["task"])
    params = doc.get("training_parameters") or {}
    default = str(params.get("model_name") or TASK_DEFAULTS[task]["model_name"])
    if doc.get("search_space"):
        names = [n for sub in doc["search_space"] for n in _choices(sub.get("model_name", default))]
        return list(dict.fromkeys(names))
    if params.get("model_name") or (doc.get("limits") or {}).get("max_trials", 1) == 1:
        return [default]
    return list(automode_models(task, gpu, train_images))


def _choices(entry: Any) -> list[str]:
    if isinstance(entry, Mapping):
        return [str(v) for v in entry.get("values", [])] if entry.get("type", "choice") == "choice" else []
    return [str(entry)] if entry else []


def workload(doc: Mapping[str, Any], *, device: str, train_images: int, validation_images: int,
             image_sizes: ImageSizes | None = None) -> Workload:
    """What one epoch of a job file's (as YAML data) trials works through on ``device``: with tiles, each
    image and each of its tiles (`core.data.tiles`)."""
    params, limits = doc.get("training_parameters") or {}, doc.get("limits") or {}
    concurrent = min(int(limits.get("max_concurrent_trials", 1)), int(limits.get("max_trials", 1)))
    grid = TrainingParams(tile_grid_size=params.get("tile_grid_size")).tile_grid_size
    draws = 1 + grid[0] * grid[1] if grid else 1
    return Workload(Task(doc["task"]), train_images * draws, validation_images * draws, device, params,
                    max(1, concurrent), image_sizes)


def _epochs(doc: Mapping[str, Any]) -> int:
    params = doc.get("training_parameters") or {}
    return int(params.get("number_of_epochs", TrainingParams.model_fields["number_of_epochs"].default))


def per_model(*, session: Session, doc: Mapping[str, Any], work: Workload) -> dict[str, Estimate]:
    """Each model a job file (as YAML data) will train: the time of one of its trials, from the trials that
    ran here when there are some, else a rough a-priori guess (``trials`` 0)."""
    epochs = _epochs(doc)
    models = planned_models(doc, gpu=on_gpu(work.device), train_images=work.train_images)
    measured = per_trial(session=session, models=models, device=work.device, train_images=work.train_images,
                         epochs=epochs)
    return {model: measured[model] or Estimate(guess_epoch_s(model, work) * epochs + TRIAL_START_S, 0)
            for model in models}


@dataclass(frozen=True)
class JobTime:
    """How long a job's trials take: ``trials`` of them, ``concurrent`` at a time."""

    trial_s: tuple[float, float]  # the quickest and the slowest planned model's trial
    job_s: float  # at most the job's timeout
    trials: int
    concurrent: int
    is_capped: bool  # the job's timeout ends it before its trials are done
    range_s: tuple[float, float] = (0.0, 0.0)  # where the job's time is expected to fall (`SPREAD`)


# How far a job's time may fall from its estimate: a quarter either way when every model has run here
# (bench/automl_budget.py checks that), a factor of two from the rough a-priori speeds.
SPREAD = {"measured": 0.25, "rough": 1.0}


def job_time(doc: Mapping[str, Any], models: Mapping[str, Estimate]) -> JobTime | None:
    """A job file's (as YAML data) duration from its models' trial times (`per_model`); None without models."""
    if not models:
        return None
    limits = doc.get("limits") or {}
    trial_cap = 60 * int(limits["trial_timeout_minutes"]) if limits.get("trial_timeout_minutes") else math.inf
    seconds = [min(guess.seconds, trial_cap) for guess in models.values()]
    trials = int(limits.get("max_trials", 1))
    concurrent = max(1, min(int(limits.get("max_concurrent_trials", 1)), trials))
    # The trials share out the planned models (AutoMode runs each at its defaults, then searches them all).
    total = statistics.fmean(seconds) * math.ceil(trials / concurrent)
    timeout = 60 * int(limits.get("timeout_minutes", DEFAULT_TIMEOUT_MIN))
    spread = SPREAD["measured"] if all(guess.trials for guess in models.values()) else SPREAD["rough"]
    low, high = total / (1 + spread), total * (1 + spread)
    return JobTime((min(seconds), max(seconds)), min(total, timeout), trials, concurrent, total > timeout,
                   (min(low, timeout), min(high, timeout)))


def timeout_warnings(*, session: Session, doc: Mapping[str, Any], device: str, train_images: int,
                     validation_images: int, image_sizes: ImageSizes | None = None) -> list[str]:
    """For a job file (as YAML data): each planned model whose estimated epoch does not fit the time a
    trial gets, or leaves room for fewer than `MIN_EPOCHS` of its epochs; one sentence each."""
    limits = doc.get("limits") or {}
    work = workload(doc, device=device, train_images=train_images, validation_images=validation_images,
                    image_sizes=image_sizes)
    minutes, key = int(limits.get("timeout_minutes", DEFAULT_TIMEOUT_MIN)), "timeout_minutes"
    if limits.get("trial_timeout_minutes") and int(limits["trial_timeout_minutes"]) < minutes:
        minutes, key = int(limits["trial_timeout_minutes"]), "trial_timeout_minutes"
    epochs = _epochs(doc)
    models = planned_models(doc, gpu=on_gpu(device), train_images=train_images)
    guesses = per_epoch(session=session, models=models, work=work)
    return [w for model, guess in guesses.items() if (w := _warning(model, guess, minutes, key, epochs))]


def _warning(model: str, guess: Estimate, minutes: int, key: str, epochs: int) -> str:
    room = int(minutes * 60 // guess.seconds) if guess.seconds > 0 else epochs
    if room >= min(MIN_EPOCHS, epochs):
        return ""
    limit = f"the {'job' if key == 'timeout_minutes' else 'trial'} timeout of {minutes} min"
    source = (f"from {guess.trials} earlier trial{'s' if guess.trials > 1 else ''} here" if guess.trials
              else "a rough guess: it has not run here yet")
    said = f"{model}: one epoch takes {say(guess.seconds)} on this machine ({source})"
    if room == 0:
        said += f", longer than {limit}: its trials would stop before their first epoch ends, with nothing to keep"
    else:
        said += f"; {limit} leaves room for {room} of its {epochs} epochs"
    return f"{said}. Raise limits.{key}, or pick a smaller model or image size."


def _seconds_per_image_epoch(trial: Trial) -> float | None:
    images = trial.metrics.get("train_images")
    took = duration_s(trial.started_at, trial.finished_at)
    if not isinstance(images, int) or images <= 0 or not took:
        return None
    return took / (images * trial.epoch)


def _overhead_s(trial: Trial) -> float | None:
    """What a job's trial took beside its epochs: its process's time (starting, loading, timing the model)
    less the trial's own."""
    process = (trial.metrics.get("process") or {}).get("seconds")
    took = duration_s(trial.started_at, trial.finished_at)
    return max(0.0, float(process) - took) if isinstance(process, int | float) and took else None


def say(seconds: float) -> str:
    """A duration as a person reads it: "about 40 s", "about 12 min", "about 2.5 h"."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
