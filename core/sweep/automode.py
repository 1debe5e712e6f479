"""AutoMode: what a job tries when it has ``max_trials`` > 1 and no search space.

The policy is fixed, documented and seeded, so two runs of one job try the same things:

1. **Candidates** come from the task and the device. On a GPU they are the reference's strong
   defaults (ViT-B/16, SE-ResNeXt, ResNet-50; YOLOv5 medium, Faster R-CNN R50; Mask R-CNN R50).
   On a CPU they are models that train in minutes (ResNet-18, MobileNetV3; YOLO11n, Faster R-CNN
   on MobileNetV3; YOLO11n-seg, Mask R-CNN R18); the lists live in ``core.zoo.catalog``, where the
   wizard names them. A dataset under ``SMALL_DATA`` training images puts the lightest candidate first:
   big models overfit it and cost most.
2. **First trials: each candidate at its defaults**, in that order. Known-good configurations go
   first, so with any budget AutoMode has at least what one default trial would have had.
3. **Then model-based search** (optuna TPE, seeded) over one sub-space per candidate: the learning
   rate log-uniform within ``LR_SPAN``× of its recipe's rate either way (`core.train.recipe`: the
   reference's when fine-tuning, the from-scratch optimizer's otherwise), the optimizer for the timm
   and torchvision families when fine-tuning, and the model size for YOLO on a GPU.
4. Parameters the job fixes in ``training_parameters`` are never searched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.base.params import resolve_params
from core.base.tasks import Task
from core.sweep.distributions import Choice, Uniform
from core.train import recipe as recipes
from core.zoo.catalog import AUTOMODE_SAMPLING, automode_models
from core.zoo.families import resolve

LR_SPAN = 4.0
SEED = 20261125


@dataclass(frozen=True)
class Plan:
    space: list[dict[str, Any]]  # one sub-space per model, as a manual sweep's search_space
    first: list[dict[str, Any]]  # the configurations tried first, in order
    seed: int = SEED
    algorithm: str = AUTOMODE_SAMPLING


def plan(task: Task, train_images: int, gpu: bool, fixed: Mapping[str, Any], classes: int = 2) -> Plan:
    """AutoMode's search for a task on ``train_images`` images of ``classes`` classes; ``fixed`` = the job's
    training_parameters."""
    models = (str(fixed["model_name"]),) if "model_name" in fixed else automode_models(task, gpu, train_images)
    space, first = [], []
    for model in models:
        family, spec = resolve(model, task, resolve_params(task, {"model_name": model}))
        defaults = resolve_params(task, family.default_params(task), fixed, {"model_name": model})
        pretrained = recipes.choose(defaults.recipe, family.weights(spec, defaults).pretrained)
        # The recipe's rate is the one its optimizer trains with (AdamW from scratch, the reference's
        # SGD when fine-tuning): the first trial takes it, the search centres on it.
        chosen = recipes.recipe(task=task, family=family.name, pretrained=pretrained, images=None,
                                train_images=train_images, classes=classes,
                                epochs=defaults.number_of_epochs).values
        rate = float(chosen.get("learning_rate", defaults.learning_rate))
        sub: dict[str, Any] = {"model_name": model}
        start: dict[str, Any] = {"model_name": model}
        if "learning_rate" not in fixed:
            centre = math.log(rate)
            sub["learning_rate"] = Uniform(type="loguniform", min_value=centre - math.log(LR_SPAN),
                                           max_value=min(centre + math.log(LR_SPAN), 0.0))
            start["learning_rate"] = rate
        if family.name != "ultralytics" and pretrained and "optimizer" not in fixed:
            sub["optimizer"] = Choice(values=tuple(sorted({"sgd", "adamw", defaults.optimizer})))
            start["optimizer"] = defaults.optimizer
        if model == "yolov5" and gpu and "model_size" not in fixed:
            sub["model_size"] = Choice(values=("small", "medium", "large"))
            start["model_size"] = defaults.model_size
        space.append(sub)
        first.append(start)
    return Plan(space, first)
