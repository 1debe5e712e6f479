"""Torch-free facts about the models the wizard offers: size, speed on a CPU and what each is good for.

Parameter counts are the libraries' published ones for the ImageNet/COCO heads (the trained model's
head differs a little); ``None`` where the size depends on a setting or no published count exists.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def size_text(name: str) -> str:
    """``"11.7 M"`` for a known size, ``""`` otherwise."""
    info = CATALOG.get(name)
    return f"{info.params_m:.1f} M" if info and info.params_m is not None else ""
