"""The four tasks of the SPEC and what each needs from its labels."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.base.errors import ConfigError


class Task(StrEnum):
    CLASSIFICATION = "image_classification"
    MULTILABEL = "image_classification_multilabel"
    DETECTION = "image_object_detection"
    SEGMENTATION = "image_instance_segmentation"


class LabelKind(StrEnum):
    TAG = "tag"  # exactly one class name per image
    TAGS = "tags"  # any number of class names per image
    BOXES = "boxes"  # instances with boxes
    POLYGONS = "polygons"  # instances with boxes and polygons


@dataclass(frozen=True)
class TaskSpec:
    task: Task
    label_kind: LabelKind
    primary_metric: str
    display_name: str

    @property
    def has_instances(self) -> bool:
        return self.label_kind in (LabelKind.BOXES, LabelKind.POLYGONS)


TASK_SPECS: dict[Task, TaskSpec] = {
    Task.CLASSIFICATION: TaskSpec(
        Task.CLASSIFICATION, LabelKind.TAG, "accuracy", "Image classification (multi-class)"
    ),
    Task.MULTILABEL: TaskSpec(
        Task.MULTILABEL, LabelKind.TAGS, "iou", "Image classification (multi-label)"
    ),
    Task.DETECTION: TaskSpec(
        Task.DETECTION, LabelKind.BOXES, "mean_average_precision", "Object detection"
    ),
    Task.SEGMENTATION: TaskSpec(
        Task.SEGMENTATION, LabelKind.POLYGONS, "mean_average_precision", "Instance segmentation"
    ),
}


def parse_task(value: str, field: str = "task") -> Task:
    try:
        return Task(value)
    except ValueError:
        import difflib

        names = [t.value for t in Task]
        raise ConfigError(
            field, f"unknown task {value!r}", names, difflib.get_close_matches(value, names)
        ) from None


def spec(task: Task) -> TaskSpec:
    return TASK_SPECS[task]
