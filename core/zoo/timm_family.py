"""Multi-class and multi-label image classification with timm models (SPEC §4).

The reference's model names map to timm architectures; any other timm name is accepted as is.
Training runs in `core.train.loop`; weights are saved as safetensors (state dict only), and
`load` rebuilds the model from settings.json and predicts with the validation transforms.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_model, save_model
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as F

from core.base.errors import ConfigError
from core.base.params import TrainingParams
from core.base.prediction import Prediction
from core.base.tasks import Task
from core.base.tasks import spec as task_spec
from core.data.augment import eval_transform
from core.data.loaders import classification_datasets, make_loader
from core.data.view import Item, VersionData
from core.metrics.classification import classification_metrics
from core.train.context import TrialContext
from core.train.device import loader_workers
from core.train.loop import (
    Evaluation,
    FitSetup,
    child_layers,
    fit,
    freeze_layers,
    keep_resume_state,
    seed_everything,
)
from core.zoo.base import (
    SAMPLE_IMAGES,
    SETTINGS_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    TrainedModel,
    confusion_cells,
    families,
    validation_samples,
)
from core.zoo.weights import (
    WeightsStatus,
    fitting,
    load_weights_file,
    pretrained_source,
    read_state,
    timm_status,
    user_status,
)

log = logging.getLogger(__name__)

# SPEC §4 names → timm architectures (the reference's weights are ImageNet ones of these).
AZURE_NAMES = {
    "mobilenetv2": "mobilenetv2_100",
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50",
    "resnet101": "resnet101", "resnet152": "resnet152",
    "resnest50": "resnest50d", "resnest101": "resnest101e",
    "seresnext": "seresnext50_32x4d",
    "vits16r224": "vit_small_patch16_224", "vitb16r224": "vit_base_patch16_224",
    "vitl16r224": "vit_large_patch16_224",
}
PREDICT_BATCH = 32
IMPORTED_REVISION = "kestrel-import"  # the Hugging Face cache "revision" of a user's imported file


@families.register("timm")
class TimmFamily:
    name = "timm"
    tasks = frozenset({Task.CLASSIFICATION, Task.MULTILABEL})

    def accepts(self, model_name: str, task: Task) -> bool:
        return task in self.tasks and (model_name in AZURE_NAMES or timm.is_model(model_name))

    def default_params(self, task: Task) -> dict[str, Any]:
        return {}

    def resolve(self, model_name: str, params: TrainingParams, task: Task) -> ModelSpec:
        return ModelSpec("timm", AZURE_NAMES.get(model_name, model_name), task,
                         display_name=model_name)

    def train(self, spec: ModelSpec, data: VersionData, params: TrainingParams,
              ctx: TrialContext) -> TrainedModel:
        multilabel = spec.task is Task.MULTILABEL
        if not data.validation:
            raise ConfigError("validation_data", f"dataset {data.name}:{data.version} has no validation "
                              "images; import it with a validation_data_size above 0")
        seed_everything(params.seed)
        train_set, val_set = classification_datasets(data, params, multilabel)
        model, notices = build_model(spec.architecture, len(data.classes), params)
        # layers_to_freeze counts as the reference for resnet/resnest (conv1, bn1, layer1-4) and
        # ViT (patch_embed, blocks.N). seresnext's "layer0" is conv1 + bn1 here (one more to
        # count); mobilenetv2 counts timm's 7 stages, not torchvision's 19 features.
        frozen = freeze_layers(model, child_layers(model, head=model.get_classifier()),
                               params.layers_to_freeze)
        if frozen:
            log.info("frozen layers: %s", ", ".join(frozen))
        criterion = make_criterion(train_set.targets, len(data.classes), multilabel,
                                   params.weighted_loss, params.label_smoothing).to(ctx.device)
        pin, workers = ctx.device.startswith("cuda"), loader_workers(params.number_of_workers, ctx.device)
        train_loader = make_loader(train_set, params.training_batch_size, shuffle=True,
                                   workers=workers, seed=params.seed, pin_memory=pin)
        val_loader = make_loader(val_set, params.validation_batch_size, shuffle=False,
                                 workers=workers, seed=params.seed, pin_memory=pin)
        evaluator = Evaluator(val_loader, criterion, data.classes, multilabel,
                              params.multilabel_threshold, ctx.device, data.validation)
        setup = FitSetup(model, train_loader, lambda m, batch: criterion(m(batch[0]), batch[1]),
                         evaluator, task_spec(spec.task).primary_metric)
        result = fit(setup, params, ctx)
        weights = ctx.out_dir / WEIGHTS_FILE
        save_model(model, str(weights), force_contiguous=True)
        keep_resume_state(ctx.out_dir)
        settings: dict[str, float | int] = {"valid_resize_size": params.validation_resize_size,
                                            "valid_crop_size": params.validation_crop_size}
        if multilabel:
            settings["multilabel_threshold"] = params.multilabel_threshold
        return TrainedModel(weights, result.metrics, result.epochs_run, settings, result.details,
                            notices, result.stop_reason, result.checkpoint_epoch)

    def weights(self, spec: ModelSpec, params: TrainingParams) -> WeightsStatus:
        return user_status(params.checkpoint_path or params.pretrained_weights) or timm_status(spec.architecture)

    def import_weights(self, spec: ModelSpec, file: Path) -> tuple[Path, int]:
        """Put a user's ImageNet weights where timm looks: the Hugging Face cache (as safetensors) for
        a hub model, torch's hub cache for one published by URL. Returns the file and the tensors that fit."""
        from huggingface_hub import constants
        from safetensors.torch import save_file

        state = read_state(file)
        usable = fitting(create_model(spec.architecture, 1000).state_dict(), state, file, spec.architecture)
        cfg = timm.get_pretrained_cfg(spec.architecture)
        if cfg is None or not (cfg.hf_hub_id or cfg.url):
            raise ConfigError("--model", f"timm publishes no weights for {spec.architecture}; give the file "
                              "to a job as training_parameters.pretrained_weights instead")
        if cfg.hf_hub_id:
            repo = Path(constants.HF_HUB_CACHE) / f"models--{cfg.hf_hub_id.split('@')[0].replace('/', '--')}"
            target = repo / "snapshots" / IMPORTED_REVISION / "model.safetensors"
            target.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in state.items()}, str(target))
            (repo / "refs").mkdir(exist_ok=True)
            (repo / "refs" / "main").write_text(IMPORTED_REVISION)
        else:
            target = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, target)
        return target, usable

    def load(self, artifact_dir: Path, device: str) -> TimmPredictor:
        settings = json.loads((artifact_dir / SETTINGS_FILE).read_text())
        classes = list(settings["classes"])
        model = create_model(settings["architecture"], len(classes))
        load_model(model, str(artifact_dir / WEIGHTS_FILE), device="cpu")
        task = Task(settings["task"])
        return TimmPredictor(task, classes, model.to(device).eval(), device,
                             settings.get("valid_resize_size", 256), settings.get("valid_crop_size", 224),
                             float(settings.get("multilabel_threshold", 0.5)))


def create_model(architecture: str, num_classes: int, pretrained: str | None = None) -> nn.Module:
    """A timm model, from ``pretrained`` (a weights file, or "hub") or randomly initialised.

    ViT-like models are made to take any input size, since crop sizes are parameters.
    """
    kwargs: dict[str, object] = {"num_classes": num_classes}
    if pretrained:  # timm loads the weights and leaves out the 1000-class classifier
        kwargs["pretrained"] = True
        if pretrained != "hub":
            kwargs["pretrained_cfg_overlay"] = {"file": pretrained}
    try:
        return timm.create_model(architecture, dynamic_img_size=True, **kwargs)
    except TypeError:  # only token-based models (the ViT family) know dynamic_img_size
        return timm.create_model(architecture, **kwargs)


def build_model(architecture: str, num_classes: int, params: TrainingParams
                ) -> tuple[nn.Module, list[str]]:
    """The model with the best starting weights to be had, and notices about them.

    A user's file (``checkpoint_path`` for incremental training, else ``pretrained_weights``)
    wins; otherwise timm's ImageNet weights from the local cache (or the hub, when reachable);
    otherwise random initialisation, which the notice says.
    """
    user_file = params.checkpoint_path or params.pretrained_weights
    if user_file:
        model = create_model(architecture, num_classes)
        notice = load_weights_file(model, Path(user_file))
        return model, [notice] if notice else []
    source, why = pretrained_source(architecture)
    if source is not None:
        try:
            model = create_model(architecture, num_classes, source)
            log.info("starting from timm's pretrained weights for %s (%s)", architecture, source)
            return model, []
        except Exception as exc:  # noqa: BLE001 — a corrupt cache or failed download: train anyway
            why = f"loading them failed ({type(exc).__name__}: {exc})"
    notice = f"no pretrained weights for {architecture}: {why}; training from scratch"
    log.warning(notice)
    return create_model(architecture, num_classes), [notice]


def make_criterion(targets: torch.Tensor, num_classes: int, multilabel: bool, weighted_loss: int,
                   label_smoothing: float = 0.0) -> nn.Module:
    """Cross-entropy (multi-class) or BCE-with-logits (multi-label), optionally class-weighted.

    ``weighted_loss`` as the reference: 1 = sqrt of the class weights, 2 = the class weights,
    where a class's weight is its inverse frequency (scaled to average 1; for multi-label the
    weight of a label's positives is negatives / positives). ``label_smoothing`` moves multi-label
    targets from 0/1 towards 1/2 by that fraction, as cross-entropy's own smoothing does.
    """
    if multilabel:
        positives = targets.sum(dim=0)
        weights = (len(targets) - positives) / positives.clamp(min=1)
    else:
        counts = torch.bincount(targets, minlength=num_classes).float()
        weights = len(targets) / (num_classes * counts.clamp(min=1))
    weights = weights.sqrt() if weighted_loss == 1 else weights
    if multilabel:
        return SmoothedBCE(label_smoothing, pos_weight=weights if weighted_loss else None)
    return nn.CrossEntropyLoss(weight=weights if weighted_loss else None, label_smoothing=label_smoothing)


class SmoothedBCE(nn.BCEWithLogitsLoss):
    """BCE-with-logits on targets smoothed towards 1/2 by ``smoothing``."""

    def __init__(self, smoothing: float, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__(pos_weight=pos_weight)
        self.smoothing = smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002
        return super().forward(input, target * (1 - self.smoothing) + self.smoothing / 2)


@dataclass
class Evaluator:
    """Scores a model on the validation loader: val_loss plus the classification metrics."""

    loader: DataLoader
    criterion: nn.Module
    classes: list[str]
    multilabel: bool
    threshold: float
    device: str
    items: Sequence[Item] = ()  # the loader's images, in its order: their predictions become samples

    def __call__(self, model: nn.Module) -> Evaluation:
        model.eval()
        logits, targets, loss_sum = [], [], 0.0
        with torch.inference_mode(), torch.autocast(self.device.split(":")[0],
                                                    enabled=self.device.startswith("cuda")):
            for images, target in self.loader:
                out = model(images.to(self.device)).float()
                loss_sum += float(self.criterion(out, target.to(self.device))) * len(target)
                logits.append(out.cpu())
                targets.append(target)
        scores, truth = torch.cat(logits), torch.cat(targets)
        probs = scores.sigmoid() if self.multilabel else scores.softmax(dim=1)
        flat, details = classification_metrics(probs, truth, self.classes, self.multilabel,
                                               self.threshold)
        val_loss = loss_sum / len(truth) if len(truth) else math.nan
        details["samples"] = validation_samples(
            self.items, [Prediction(labels=self.classes, probs=row) for row in probs[:SAMPLE_IMAGES].tolist()],
            self.threshold if self.multilabel else None)
        if not self.multilabel and len(self.items) == len(truth):
            details["confusion_matrix"]["cells"] = confusion_cells(self.items, truth.tolist(),
                                                                   probs.argmax(dim=1).tolist())
        return Evaluation({"val_loss": val_loss, **flat}, details)


@dataclass
class TimmPredictor:
    task: Task
    classes: list[str]
    model: nn.Module
    device: str
    resize_size: int
    crop_size: int
    threshold: float  # multi-label: a label is predicted when its prob ≥ threshold

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        """One Prediction per image: every class with its probability (softmax or sigmoid)."""
        out: list[Prediction] = []
        for start in range(0, len(images), PREDICT_BATCH):
            batch = self.preprocess(images[start:start + PREDICT_BATCH])
            with torch.inference_mode():
                scores = self.model(batch.to(self.device)).float().cpu()
            probs = scores.sigmoid() if self.task is Task.MULTILABEL else scores.softmax(dim=1)
            out += [Prediction(labels=list(self.classes), probs=[float(p) for p in row])
                    for row in probs.tolist()]
        return out

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """The batch the model sees (on the CPU): resized, centre-cropped and normalised."""
        transform = eval_transform(self.resize_size, self.crop_size)
        # Upright as in training (the loaders apply EXIF orientation when decoding).
        return torch.stack([transform(F.pil_to_tensor(ImageOps.exif_transpose(i).convert("RGB")))
                            for i in images])
