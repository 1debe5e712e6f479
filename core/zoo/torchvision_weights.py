"""torchvision's published weights for the detectors of `core.zoo.torchvision_family`: which exist, whether
they are in torch's hub cache, and a person's copy put there under the name torchvision looks for."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision

from core.base.errors import ConfigError
from core.zoo import weights as hub
from core.zoo.weights import CACHED, DOWNLOADABLE, HOSTS, UNAVAILABLE, WeightsStatus, fitting, read_state

RESNET_FPN = re.compile(r"(fasterrcnn|maskrcnn|retinanet)_(resnet(?:18|34|50|101|152))_fpn")


def published_weights(architecture: str) -> list[tuple[str, str]]:
    """(url, part) of torchvision's weights for ``architecture``, best first: "model" (a COCO detector),
    then "backbone" (an ImageNet ResNet for the reference's resnet*_fpn names)."""
    names = torchvision.models.list_models()
    out: list[tuple[str, str]] = []
    if architecture in names:
        out += [(w.url, "model") for w in torchvision.models.get_model_weights(architecture)]
    if (match := RESNET_FPN.fullmatch(architecture)) and match[2] in names:
        out += [(w.url, "backbone") for w in torchvision.models.get_model_weights(match[2])]
    return out


def hub_folder() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_status(architecture: str) -> WeightsStatus:
    """Cached in torch's hub cache, downloadable from download.pytorch.org, or unavailable (and why)."""
    published, folder = published_weights(architecture), hub_folder()
    for url, _ in published:
        if (folder / Path(url).name).is_file():
            return WeightsStatus(CACHED, str(folder / Path(url).name))
    if not published:
        return WeightsStatus(UNAVAILABLE, f"torchvision publishes none for {architecture}")
    if why := hub.unreachable(HOSTS["torchvision"]):
        return WeightsStatus(UNAVAILABLE, f"none in torch's hub cache ({folder}) and {why}")
    return WeightsStatus(DOWNLOADABLE, published[0][0])


def import_weights(architecture: str, file: Path) -> tuple[Path, int]:
    """A user's copy of torchvision's weights for ``architecture``, checked and put in torch's hub cache
    under the name torchvision looks for. Returns the file and the tensors that fit."""
    published = published_weights(architecture)
    if not published:
        raise ConfigError("--model", f"torchvision publishes no weights for {architecture}; give the file to "
                          "a job as training_parameters.pretrained_weights instead")
    url, part = published[0]
    if part == "model":
        own = torchvision.models.get_model(architecture, weights=None, weights_backbone=None).state_dict()
    else:
        own = torchvision.models.get_model(RESNET_FPN.fullmatch(architecture)[2], weights=None).state_dict()  # type: ignore[index]
    state = read_state(file)
    usable = fitting(own, state, file, architecture)
    target = hub_folder() / Path(url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return target, usable
