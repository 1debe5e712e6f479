"""Pixel attributions of a classifier for one class (SPEC §9): integrated gradients, guided backprop and
guided Grad-CAM from captum, XRAI from Google PAIR's ``saliency`` package.

Each algorithm takes the model, one normalised input [1, 3, H, W] on the model's device and the index of
the class to explain, and answers a float32 array [3, H, W] on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from captum.attr import GuidedBackprop, GuidedGradCam, IntegratedGradients
from torch import nn

from core.base.errors import ConfigError
from core.base.registry import Registry
from core.data.augment import IMAGENET_MEAN, IMAGENET_STD
from core.explain.params import XaiParams

Attribute = Callable[[nn.Module, torch.Tensor, int, XaiParams], np.ndarray]
algorithms: Registry[Attribute] = Registry("xai_algorithm")

# Integration points per forward pass: measured on 2 cores, resnet18 at 224 px, 50 IG steps took
# 3.3 s in one pass and 2.4 s in passes of 10 (ENVIRONMENT.md), and memory stays bounded.
STEPS_PER_PASS = 10


@algorithms.register("integrated_gradients")
def integrated_gradients(model: nn.Module, image: torch.Tensor, target: int, params: XaiParams) -> np.ndarray:
    # A black image is the paper's baseline; captum's default zeros would be the ImageNet mean colour here,
    # since the input is normalised.
    attribution = IntegratedGradients(model).attribute(
        image, baselines=black_like(image), target=target, n_steps=params.n_steps,
        method=params.approximation_method, internal_batch_size=STEPS_PER_PASS)
    return _numpy(attribution)


@algorithms.register("guided_backprop")
def guided_backprop(model: nn.Module, image: torch.Tensor, target: int, params: XaiParams) -> np.ndarray:
    return _numpy(GuidedBackprop(model).attribute(image, target=target))


@algorithms.register("guided_gradcam")
def guided_gradcam(model: nn.Module, image: torch.Tensor, target: int, params: XaiParams) -> np.ndarray:
    layer = gradcam_layer(model, image)
    # Bilinear, as the Grad-CAM paper upsamples; captum's default is nearest.
    return _numpy(GuidedGradCam(model, layer).attribute(image, target=target, interpolate_mode="bilinear"))


@algorithms.register("xrai")
def xrai(model: nn.Module, image: torch.Tensor, target: int, params: XaiParams) -> np.ndarray:
    # Imported here: saliency pulls in scikit-image (~0.7 s), which only XRAI needs.
    import saliency.core as saliency

    def gradients(batch: np.ndarray, call_model_args: Any = None, expected_keys: Any = None) -> dict[str, Any]:
        # The package's model callback: d(class logit) / d(input) for a batch of HWC arrays.
        inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).permute(0, 3, 1, 2)
        inputs = inputs.to(image.device).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(inputs)[:, target].sum(), inputs)
        return {saliency.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).cpu().numpy()}

    settings = saliency.XRAIParameters(steps=params.n_steps, algorithm="fast" if params.xrai_fast else "full")
    hwc = image[0].permute(1, 2, 0).detach().cpu().numpy()
    mask = saliency.XRAI().GetMask(hwc, gradients, batch_size=STEPS_PER_PASS, extra_parameters=settings)
    # XRAI gives one value per pixel (its region's score); SPEC §9 answers [3, H, W] for every algorithm.
    return np.repeat(mask[None].astype(np.float32), 3, axis=0)


def attribute(model: nn.Module, image: torch.Tensor, target: int, params: XaiParams) -> np.ndarray:
    """The attributions [3, H, W] of ``image`` [1, 3, H, W] for class ``target`` by ``params.xai_algorithm``."""
    method = algorithms.get(params.xai_algorithm)
    model.eval()
    with torch.enable_grad():  # callers may sit inside no_grad
        # A leaf that asks for gradients, so captum need not switch it on (and warn each time).
        return method(model, image.detach().clone().requires_grad_(True), target, params)


def black_like(image: torch.Tensor) -> torch.Tensor:
    """A black image in the model's normalised input space."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(1, 3, 1, 1)
    return ((0 - mean) / std).expand_as(image).contiguous()


def gradcam_layer(model: nn.Module, image: torch.Tensor) -> nn.Module:
    """The layer Grad-CAM weighs: the model's last feature map in NCHW layout.

    timm names its last feature stage in ``feature_info`` (``layer4`` for a ResNet); when that stage's output
    is not an NCHW map (ViT tokens, Swin's NHWC) the last convolution is taken instead, which for a ViT is
    the patch embedding: a patch-level map rather than a semantic one.
    """
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[-1], dict) and "module" in info[-1]:
        stage = model.get_submodule(info[-1]["module"])
        shape = _output_shape(model, stage, image)
        if len(shape) == 4 and shape[1] == info[-1].get("num_chs"):
            return stage
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise ConfigError("xai_parameters.xai_algorithm", "guided_gradcam needs a model with convolutions",
                          [a for a in algorithms.names() if a != "guided_gradcam"])
    return convolutions[-1]


def _output_shape(model: nn.Module, layer: nn.Module, image: torch.Tensor) -> tuple[int, ...]:
    shapes: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(getattr(out, "shape", ()))))
    try:
        with torch.no_grad():
            model(image)
    finally:
        handle.remove()
    return shapes[-1] if shapes else ()


def _numpy(attribution: torch.Tensor) -> np.ndarray:
    return attribution[0].detach().float().cpu().numpy()
