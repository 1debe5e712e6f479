"""The model families (importing a family's module is its registration) and name resolution."""

from __future__ import annotations

import difflib

from core.base.errors import ConfigError
from core.base.params import TrainingParams
from core.base.tasks import Task
from core.zoo import timm_family, torchvision_family, ultralytics_family  # noqa: F401
from core.zoo.base import ModelFamily, ModelSpec, families

# Most specific first: timm accepts any timm name, so it is asked last.
RESOLUTION_ORDER = ("ultralytics", "torchvision", "timm")

# The reference's names per task (SPEC §4), offered when a name is not recognised.
REFERENCE_NAMES: dict[Task, list[str]] = {
    Task.CLASSIFICATION: ["mobilenetv2", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                          "resnest50", "resnest101", "seresnext", "vits16r224", "vitb16r224",
                          "vitl16r224"],
    Task.DETECTION: ["yolov5", "fasterrcnn_resnet18_fpn", "fasterrcnn_resnet34_fpn",
                     "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet101_fpn", "fasterrcnn_resnet152_fpn",
                     "retinanet_resnet50_fpn", "yolov8n", "yolo11n"],
    Task.SEGMENTATION: ["maskrcnn_resnet18_fpn", "maskrcnn_resnet34_fpn", "maskrcnn_resnet50_fpn",
                        "maskrcnn_resnet101_fpn", "maskrcnn_resnet152_fpn", "yolov8n-seg", "yolo11n-seg"],
}
REFERENCE_NAMES[Task.MULTILABEL] = REFERENCE_NAMES[Task.CLASSIFICATION]


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
