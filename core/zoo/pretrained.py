"""Pretrained weights as a person sees them: for each zoo model, whether its weights are cached,
downloadable or unavailable, and a person's file put where its library looks (`kestrel weights`,
the studio's Weights page, the wizard's per-model line)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.base.errors import ConfigError
from core.base.params import resolve_params
from core.base.tasks import Task
from core.zoo.catalog import CANDIDATES, REFERENCE_NAMES
from core.zoo.families import resolve
from core.zoo.weights import WeightsStatus

TASK_ORDER = (Task.CLASSIFICATION, Task.DETECTION, Task.SEGMENTATION)  # multi-label shares classification's


@dataclass(frozen=True)
class ModelWeights:
    model: str
    task: Task
    family: str
    architecture: str
    status: WeightsStatus

    def as_dict(self) -> dict[str, str]:
        return {"model": self.model, "task": self.task.value, "family": self.family,
                "architecture": self.architecture, "state": self.status.state, "where": self.status.where,
                "sentence": self.status.sentence()}


def zoo_models() -> list[tuple[str, Task]]:
    """Every model the wizard offers and AutoMode tries, once each, by task."""
    seen: dict[str, Task] = {}
    for task in TASK_ORDER:
        for name in [*REFERENCE_NAMES[task], *(m for (t, _), ms in CANDIDATES.items() if t is task for m in ms)]:
            seen.setdefault(name, task)
    return list(seen.items())


def status(model: str, task: Task, job_params: Mapping[str, Any] | None = None) -> ModelWeights:
    """Where ``model``'s starting weights for ``task`` come from, given a job's training_parameters (a
    file it names wins)."""
    params = resolve_params(task, {**(job_params or {}), "model_name": model})
    family, spec = resolve(model, task, params)
    return ModelWeights(model, task, family.name, spec.architecture, family.weights(spec, params))


def zoo_status() -> list[ModelWeights]:
    return [status(model, task) for model, task in zoo_models()]


def import_file(file: Path, model: str, task: Task | None = None) -> tuple[ModelWeights, int]:
    """Check ``file`` against ``model`` and put it where the model's library looks; the model's new
    status and how many tensors fit. ``task`` picks among tasks when a name serves several."""
    if not file.is_file():
        raise ConfigError("FILE", f"{file} is not a file")
    tasks = [task] if task else [t for m, t in zoo_models() if m == model] or list(TASK_ORDER)
    for candidate in tasks:
        params = resolve_params(candidate, {"model_name": model})
        try:
            family, spec = resolve(model, candidate, params)
        except ConfigError:
            continue
        _, tensors = family.import_weights(spec, file)
        return status(model, candidate), tensors
    raise ConfigError("--model", f"{model!r} is no model of the zoo", [m for m, _ in zoo_models()])
