"""The model families (importing a family's module is its registration) and name resolution."""

from __future__ import annotations

import difflib

from core.base.errors import ConfigError
from core.base.params import TrainingParams
from core.base.tasks import Task
from core.zoo import timm_family, torchvision_family, ultralytics_family  # noqa: F401
from core.zoo.base import ModelFamily, ModelSpec, families
from core.zoo.catalog import REFERENCE_NAMES

# Most specific first: timm accepts any timm name, so it is asked last.
RESOLUTION_ORDER = ("ultralytics", "torchvision", "timm")


def resolve(model_name: str, task: Task, params: TrainingParams) -> tuple[ModelFamily, ModelSpec]:
    """The family that trains ``model_name`` for ``task``, and the resolved model."""
    for name in RESOLUTION_ORDER:
        if name not in families.names():
            continue
        family = families.get(name)()
        if task in family.tasks and family.accepts(model_name, task):
            return family, family.resolve(model_name, params, task)
    known = REFERENCE_NAMES[task]
    raise ConfigError("training_parameters.model_name",
                      f"{model_name!r} is not a model for {task.value}", known,
                      difflib.get_close_matches(model_name, known, n=3))


def family_named(name: str) -> ModelFamily:
    return families.get(name)()
