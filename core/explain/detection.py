"""Grad-CAM heat maps for detections of torchvision's detectors (beyond the reference, which explains
classification only): for each detection, captum's LayerGradCam on the backbone's last stage with respect
to that detection's score, mapped back onto the image.

The map says which backbone features raised that detection's score. It is coarse (the last stage is 1/32
of the network's input size) and, on FPN detectors, leaves out what the earlier stages feed into the finer
pyramid levels that small objects are detected on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image, ImageOps
from torch import nn
from torch.nn import functional as nnf
from torchvision.transforms.v2 import functional as F

from core.base.errors import ConfigError
from core.base.prediction import Detection
from core.base.tasks import Task
from core.explain.visualize import box_overlay, png_bytes
from core.zoo.torchvision_family import TorchvisionPredictor

MAX_DETECTIONS = 5  # each map costs a forward and a backward pass of the whole detector


@dataclass(frozen=True)
class DetectionExplanation:
    detection: Detection  # as the predictor answers it: label, score, normalised box
    heatmap: np.ndarray  # float32 [height, width] of the (upright) image, in [0, 1]; 1 the most important
    png: bytes  # the heat map blended over the image, the detection's box outlined


def explain_detections(predictor: TorchvisionPredictor, image: Image.Image,
                       max_detections: int = MAX_DETECTIONS) -> list[DetectionExplanation]:
    """A heat map for each of the (at most ``max_detections``) best detections ``predictor`` makes on ``image``."""
    if not isinstance(predictor, TorchvisionPredictor):
        raise ConfigError("model_explainability", "detection heat maps are for torchvision's detectors "
                          "(Faster R-CNN, RetinaNet, Mask R-CNN); YOLO models are not supported")
    upright = ImageOps.exif_transpose(image).convert("RGB")
    pixels = _as_predicted(upright, predictor.settings.max_size)
    # The whole image, untiled: predict_tensors then keeps the model's order, so detection k is the k-th
    # score of one forward pass, which is what Grad-CAM differentiates.
    untiled = replace(predictor, settings=replace(predictor.settings, tile_grid_size=None))
    detections = untiled.predict_tensors([pixels])[0].detections[:max_detections]
    if not detections:
        return []
    model = predictor.model.eval()
    batch = F.to_dtype(pixels, torch.float32, scale=True).unsqueeze(0).to(predictor.device)
    with torch.no_grad():  # where the model's own transform puts the image: resized, padded to a stride
        resized = model.transform([batch[0]])[0]
    canvas, inside = tuple(resized.tensors.shape[-2:]), tuple(resized.image_sizes[0])
    cam = LayerGradCam(lambda b: _scores(model, b), last_backbone_stage(model, predictor.task))
    out = []
    for k, detection in enumerate(detections):
        with torch.enable_grad():
            maps = cam.attribute(batch, target=k, relu_attributions=True)
        heatmap = _onto_image(maps.detach(), canvas, inside, upright.size)
        box = (detection.x0, detection.y0, detection.x1, detection.y1)
        out.append(DetectionExplanation(detection, heatmap, png_bytes(box_overlay(upright, heatmap, box))))
    return out


def last_backbone_stage(model: nn.Module, task: Task) -> nn.Module:
    """The backbone's deepest stage (``layer4`` of a ResNet): its features are what the heads read."""
    body = getattr(getattr(model, "backbone", None), "body", None)
    stages = list(body.children()) if isinstance(body, nn.Module) else []
    if not stages:
        raise ConfigError("model_explainability", f"this {task.value} model has no backbone stages to explain")
    return stages[-1]


def _as_predicted(image: Image.Image, max_size: int) -> torch.Tensor:
    """uint8 CHW pixels bounded as TorchvisionPredictor.predict bounds them, so the detections are its own."""
    bounded = image.copy()
    bounded.thumbnail((max_size, max_size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return F.pil_to_tensor(bounded)


def _scores(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The detection scores of one image as a [1, detections] batch, the shape captum selects targets from.
    Scores stay differentiable through torchvision's post-processing (softmax or sigmoid, then indexing)."""
    return model(list(batch))[0]["scores"].unsqueeze(0)


def _onto_image(maps: torch.Tensor, canvas: tuple[int, ...], inside: tuple[int, ...],
                size: tuple[int, int]) -> np.ndarray:
    """A layer's [1, 1, h, w] map as [height, width] over the image: upsampled to the model's padded canvas,
    cut to the resized image within it, scaled to ``size`` (width, height) and to [0, 1]."""
    full = LayerAttribution.interpolate(maps.float(), canvas, "bilinear")[..., :inside[0], :inside[1]]
    heat = nnf.interpolate(full, size=(size[1], size[0]), mode="bilinear", align_corners=False)[0, 0]
    high = float(heat.max())
    return (heat / high if high > 0 else torch.zeros_like(heat)).clamp(0, 1).cpu().numpy().astype(np.float32)
