"""Torch-free facts about the models the wizard offers (size, speed on a CPU and what each is good for)
and the candidates AutoMode tries, so the studio's pages can name them without loading a model library.

Parameter counts are the libraries' published ones for the ImageNet/COCO heads (the trained model's
head differs a little); ``None`` where the size depends on a setting or no published count exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.base.tasks import Task

SMALL_DATA = 500  # AutoMode puts the lightest candidate first below this many training images
# How AutoMode samples after its default trials, whatever a job file's sweep.sampling_algorithm says:
# optuna's TPE (`core.sweep.samplers`). Kept here so the wizard can name it without loading the zoo.
AUTOMODE_SAMPLING = "bayesian"


@dataclass(frozen=True)
class ModelInfo:
    params_m: float | None  # millions of parameters
    cpu_speed: str  # "fast", "medium" or "slow" to train on a CPU; "" when it depends on a setting
    good_for: str


CATALOG: dict[str, ModelInfo] = {
    "resnet18": ModelInfo(11.7, "fast", "a quick, solid baseline"),
    "resnet50": ModelInfo(25.6, "medium", "a stronger all-round classifier"),
    "mobilenetv2": ModelInfo(3.5, "fast", "the smallest; phones and edge devices"),
    "seresnext": ModelInfo(27.6, "medium", "more accurate than ResNet-50 at a similar cost"),
    "vits16r224": ModelInfo(22.1, "medium", "a small vision transformer; likes more data"),
    "vitb16r224": ModelInfo(86.6, "slow", "best accuracy on large datasets; a GPU helps"),
    "yolov5": ModelInfo(None, "", "the reference's default detector; size set by model_size"),
    "yolo11n": ModelInfo(2.6, "fast", "fast detection, even on a CPU"),
    "fasterrcnn_resnet50_fpn": ModelInfo(41.8, "slow", "accurate boxes, small objects"),
    "fasterrcnn_resnet18_fpn": ModelInfo(None, "slow", "a lighter Faster R-CNN"),
    "retinanet_resnet50_fpn": ModelInfo(34.0, "slow", "crowded scenes with many small objects"),
    "maskrcnn_resnet50_fpn": ModelInfo(44.4, "slow", "accurate instance masks"),
    "maskrcnn_resnet18_fpn": ModelInfo(None, "slow", "a lighter Mask R-CNN"),
    "yolo11n-seg": ModelInfo(2.9, "fast", "fast instance masks, even on a CPU"),
}


# The reference's names per task (the reference's documentation), offered when a name is not recognised.
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


def known_model(name: str, task: Task) -> bool:
    """A name the reference or AutoMode uses for ``task``: valid without asking the model libraries."""
    return name in REFERENCE_NAMES[task] or any(name in models for (t, _), models in CANDIDATES.items() if t is task)


def size_text(name: str) -> str:
    """``"11.7 M"`` for a known size, ``""`` otherwise."""
    info = CATALOG.get(name)
    return f"{info.params_m:.1f} M" if info and info.params_m is not None else ""


CANDIDATES: dict[tuple[Task, bool], tuple[str, ...]] = {  # AutoMode's, by (task, on a GPU); heaviest first
    (Task.CLASSIFICATION, True): ("vitb16r224", "seresnext", "resnet50"),
    (Task.CLASSIFICATION, False): ("mobilenetv3_large_100", "resnet18"),
    (Task.DETECTION, True): ("yolov5", "fasterrcnn_resnet50_fpn"),
    (Task.DETECTION, False): ("fasterrcnn_mobilenet_v3_large_fpn", "yolo11n"),
    (Task.SEGMENTATION, True): ("maskrcnn_resnet50_fpn", "yolo11m-seg"),
    (Task.SEGMENTATION, False): ("maskrcnn_resnet18_fpn", "yolo11n-seg"),
}
CANDIDATES |= {(Task.MULTILABEL, gpu): models for (task, gpu), models in list(CANDIDATES.items())
               if task is Task.CLASSIFICATION}


def automode_models(task: Task, gpu: bool, train_images: int) -> tuple[str, ...]:
    """The models AutoMode tries for ``task``, in the order their default trials run."""
    models = CANDIDATES[(task, gpu)]
    return models[::-1] if train_images < SMALL_DATA else models  # lightest first on small data
