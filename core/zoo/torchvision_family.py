"""Detection and instance segmentation with torchvision's detectors (SPEC §4): Faster R-CNN, Mask R-CNN and
RetinaNet on any ResNet-FPN (the reference's names) and torchvision's own detectors by name, trained in
`core.train.loop`, scored by `core.metrics.detection`, saved as safetensors; with ``tile_grid_size`` it trains,
validates and predicts on each image and its tiles (`core.data.tiles`, `core.zoo.tiling`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_model
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.v2 import functional as F

from core.base.errors import ConfigError
from core.base.params import TrainingParams
from core.base.prediction import Detection, Prediction
from core.base.tasks import Task
from core.base.tasks import spec as task_spec
from core.data.balance import repeat_factors
from core.data.detection_loaders import DetectionImages, collate, detection_datasets, detection_loader
from core.data.masks import limit_points, mask_to_polygons
from core.data.tiles import source_side
from core.data.view import Item, VersionData
from core.metrics.detection import detection_metrics
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
    to_device,
)
from core.zoo import weights as hub
from core.zoo.base import SETTINGS_FILE, WEIGHTS_FILE, ModelSpec, TrainedModel, families, validation_samples
from core.zoo.tiling import detect_tiled
from core.zoo.torchvision_weights import (
    RESNET_FPN,
    hub_folder,
    import_weights,
    published_weights,
    weights_status,
)
from core.zoo.weights import CACHED, DOWNLOADABLE, WeightsStatus, load_weights_file, user_status

log = logging.getLogger(__name__)

BUILDER_HEADS = ("fasterrcnn_", "maskrcnn_", "retinanet_", "fcos_")  # torchvision's own names
PREDICT_BATCH = 4
# Region proposals sampled per image to train the box head: torchvision's 512 is made for COCO's
# crowded scenes; with a few objects per image most are background either way, and 128 (what
# Detectron2 advises for small datasets) made a CPU training step 3.5x faster here.
BOX_SAMPLES_PER_IMAGE = 128


@functools.cache
def builder_names() -> frozenset[str]:
    """torchvision's detection model names this family takes as they are (besides RESNET_FPN)."""
    return frozenset(n for n in torchvision.models.list_models(module=torchvision.models.detection)
                     if n.startswith(BUILDER_HEADS) and not RESNET_FPN.fullmatch(n))


@dataclass(frozen=True)
class InferenceSettings:
    """SPEC §7 settings of a detector, under the reference's names."""

    min_size: int = 600
    max_size: int = 1333
    box_score_thresh: float = 0.3
    nms_iou_thresh: float = 0.5
    box_detections_per_img: int = 100
    tile_grid_size: tuple[int, int] | None = None  # (columns, rows)
    tile_overlap_ratio: float = 0.25
    tile_predictions_nms_thresh: float = 0.25
    mask_pixel_score_threshold: float = 0.5
    max_number_of_polygon_points: int = 100

    @classmethod
    def from_params(cls, p: TrainingParams) -> InferenceSettings:
        if p.tile_grid_size is not None and min(p.tile_grid_size) < 1:
            raise ConfigError("training_parameters.tile_grid_size",
                              f"{p.tile_grid_size} needs at least one column and one row", hints=["3x2"])
        return cls(p.min_size, p.max_size, p.box_score_threshold, p.nms_iou_threshold, p.box_detections_per_image,
                   p.tile_grid_size, p.tile_overlap_ratio, p.tile_predictions_nms_threshold,
                   p.mask_pixel_score_threshold, p.max_number_of_polygon_points)

    @classmethod
    def from_json(cls, settings: dict[str, Any]) -> InferenceSettings:
        values = {f.name: settings[f.name] for f in fields(cls) if settings.get(f.name) is not None}
        if "tile_grid_size" in values:
            values["tile_grid_size"] = tuple(values["tile_grid_size"])
        return cls(**values)

    def to_json(self, task: Task) -> dict[str, Any]:
        out = asdict(self) | {"tile_grid_size": list(self.tile_grid_size) if self.tile_grid_size else None}
        if task is Task.SEGMENTATION:
            return out | {"export_as_image": False, "image_type": "JPG"}
        return {k: v for k, v in out.items() if k not in ("mask_pixel_score_threshold", "max_number_of_polygon_points")}


@families.register("torchvision")
class TorchvisionFamily:
    name = "torchvision"
    tasks = frozenset({Task.DETECTION, Task.SEGMENTATION})

    def default_params(self, task: Task) -> dict[str, Any]:
        return {}  # the task defaults are the reference's Faster/Mask R-CNN defaults

    def accepts(self, model_name: str, task: Task) -> bool:
        name = model_name.strip().lower()
        kind = Task.SEGMENTATION if name.startswith("maskrcnn") else Task.DETECTION
        return (bool(RESNET_FPN.fullmatch(name)) or name in builder_names()) and kind is task

    def resolve(self, model_name: str, params: TrainingParams, task: Task) -> ModelSpec:
        if not self.accepts(model_name, task):
            raise ConfigError("training_parameters.model_name",
                              f"{model_name!r} is not a torchvision model for {task.value}")
        name = model_name.strip().lower()
        return ModelSpec(self.name, name, task, display_name=name)

    def train(self, spec: ModelSpec, data: VersionData, params: TrainingParams,
              ctx: TrialContext) -> TrainedModel:
        masks = spec.task is Task.SEGMENTATION
        seed_everything(params.seed)
        settings = InferenceSettings.from_params(params)
        notices: list[str] = []
        validation = data.validation or data.train
        if not data.validation:
            notices.append("the dataset has no validation images: metrics are on the training images")
        train_set, val_set = detection_datasets(data.train, validation, data.classes, params, masks=masks)
        model, weight_notices = build_model(spec.architecture, len(data.classes), settings, params)
        pin = ctx.device.startswith("cuda")
        predictor = TorchvisionPredictor(spec.task, list(data.classes), model, ctx.device, settings)
        evaluator = DetectionEvaluator(predictor, val_set, validation, params.validation_metric_type,
                                       params.validation_batch_size)
        factors = repeat_factors(data.train) if params.repeat_factor_sampling else None  # per image, tiles too
        loader = detection_loader(train_set, params.training_batch_size, shuffle=True,
                                  workers=loader_workers(params.number_of_workers, ctx.device), seed=params.seed,
                                  pin_memory=pin,
                                  repeat=[factors[n] for n in train_set.sources] if factors else None)
        result = fit(FitSetup(model, loader, detection_loss, evaluator, task_spec(spec.task).primary_metric,
                              partial_gradients=True), params, ctx)
        weights = ctx.out_dir / WEIGHTS_FILE
        save_model(model, str(weights), force_contiguous=True)
        keep_resume_state(ctx.out_dir)
        if result.stop_reason:
            notices.append(f"stopped after epoch {result.epochs_run}: {result.stop_reason}")
        return TrainedModel(weights, result.metrics, result.epochs_run, settings.to_json(spec.task),
                            result.details, weight_notices + notices, result.stop_reason, result.checkpoint_epoch)

    def weights(self, spec: ModelSpec, params: TrainingParams) -> WeightsStatus:
        return user_status(params.checkpoint_path or params.pretrained_weights) or weights_status(spec.architecture)

    def import_weights(self, spec: ModelSpec, file: Path) -> tuple[Path, int]:
        return import_weights(spec.architecture, file)

    def load(self, artifact_dir: Path, device: str) -> TorchvisionPredictor:
        saved = json.loads((artifact_dir / SETTINGS_FILE).read_text())
        settings, classes = InferenceSettings.from_json(saved), list(saved["classes"])
        # Frozen batch norm computes what batch norm does in eval mode, whichever was trained.
        model = freeze_batch_norm(build_detector(saved["architecture"], len(classes), settings))
        model.load_state_dict(load_file(artifact_dir / WEIGHTS_FILE))
        return TorchvisionPredictor(Task(saved["task"]), classes, model.to(device).eval(), device, settings)


def build_detector(architecture: str, num_classes: int, settings: InferenceSettings,
                   layers_to_freeze: int = 0) -> nn.Module:
    """The network, randomly initialised with trainable batch norm; ``num_classes`` excludes
    the background. The first ``layers_to_freeze`` backbone layers (stem first) stop training."""
    s = settings
    rcnn = {"box_score_thresh": s.box_score_thresh, "box_nms_thresh": s.nms_iou_thresh,
            "box_detections_per_img": s.box_detections_per_img,
            "box_batch_size_per_image": BOX_SAMPLES_PER_IMAGE}
    dense = {"score_thresh": s.box_score_thresh, "nms_thresh": s.nms_iou_thresh,
             "detections_per_img": s.box_detections_per_img}
    kwargs = {"min_size": s.min_size, "max_size": s.max_size,
              **(dense if architecture.startswith(("retinanet", "fcos")) else rcnn)}
    if match := RESNET_FPN.fullmatch(architecture):
        head, backbone_name = match.groups()
        # RetinaNet skips P2 and adds P6, P7, as torchvision's retinanet_resnet50_fpn does.
        extra = {"returned_layers": [2, 3, 4], "extra_blocks": LastLevelP6P7(256, 256)} if head == "retinanet" else {}
        backbone = resnet_fpn_backbone(backbone_name=backbone_name, weights=None, norm_layer=nn.BatchNorm2d,
                                       trainable_layers=max(0, 5 - layers_to_freeze), **extra)
        kind = {"fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN, "retinanet": RetinaNet}[head]
        return kind(backbone, num_classes + 1, **kwargs)
    if architecture not in builder_names():
        raise ConfigError("training_parameters.model_name", f"torchvision has no detector {architecture!r}",
                          hints=sorted(builder_names()))
    model = torchvision.models.get_model(architecture, weights=None, weights_backbone=None,
                                         num_classes=num_classes + 1, **kwargs)
    prefix = "backbone.body" if hasattr(model.backbone, "body") else "backbone"
    freeze_layers(model, [f"{prefix}.{n}" for n in child_layers(model.get_submodule(prefix))], layers_to_freeze)
    return model


def build_model(architecture: str, num_classes: int, settings: InferenceSettings,
                params: TrainingParams) -> tuple[nn.Module, list[str]]:
    """The network with the best starting weights to be had, and notices about them: a user's file
    (``checkpoint_path``, else ``pretrained_weights``), else torchvision's COCO or ImageNet weights from
    torch's hub cache (downloaded there first when the host answers), with batch norm frozen as
    torchvision trains; else from scratch, batch norm trained."""
    build = functools.partial(build_detector, architecture, num_classes, settings, params.layers_to_freeze)
    if user_file := params.checkpoint_path or params.pretrained_weights:
        model = freeze_batch_norm(build())
        notice = load_weights_file(model, Path(user_file).expanduser())
        return model, [notice] if notice else []
    status, parts = weights_status(architecture), dict(published_weights(architecture))
    why = status.where
    if status.state == DOWNLOADABLE:
        try:
            hub.fetch_url(status.where, hub_folder())
            status = weights_status(architecture)
        except Exception as exc:  # noqa: BLE001 — a failed download: train anyway, and say so
            why = f"downloading {status.where} failed ({type(exc).__name__}: {exc})"
    if status.state == CACHED:
        path = Path(status.where)
        part = next((p for url, p in parts.items() if Path(url).name == path.name), "model")
        model = freeze_batch_norm(build())
        try:  # heads for another class count are skipped, as expected with COCO weights
            load_weights_file(model if part == "model" else model.backbone.body, path)
            log.info("starting %s from torchvision's %s weights %s", architecture, part, path)
            return model, []
        except Exception as exc:  # noqa: BLE001 — a corrupt or foreign file: train anyway
            why = f"loading {path.name} failed ({type(exc).__name__}: {exc})"
    notice = f"no pretrained weights for {architecture}: {why}; training from scratch"
    log.warning(notice)
    return build(), [notice]


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced, in place, by a FrozenBatchNorm2d of its values."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(child, key)
                if value is not None:
                    getattr(frozen, key).copy_(value.detach())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def detection_loss(model: nn.Module, batch: tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]
                   ) -> torch.Tensor:
    """torchvision's detectors return a dict of losses in train mode: their sum is the loss."""
    images, targets = batch
    return sum(model(images, targets).values())  # type: ignore[return-value]


@dataclass
class DetectionEvaluator:
    """val_loss plus the detection metrics (box mAP, or mask mAP for segmentation)."""

    predictor: TorchvisionPredictor  # holds the model being trained
    dataset: DetectionImages  # validation images, unaugmented
    items: Sequence[Item]
    metric_type: str
    batch_size: int

    def __call__(self, model: nn.Module) -> Evaluation:
        val_loss = self._loss(model)
        images, predictions = self.dataset.images, []
        for start in range(0, len(images), self.batch_size):
            predictions += self.predictor.predict_tensors(images[start:start + self.batch_size])
        flat, details = detection_metrics(self.items, predictions, self.predictor.classes, self.metric_type,
                                          masks=self.predictor.task is Task.SEGMENTATION)
        details["samples"] = validation_samples(self.items, predictions)
        return Evaluation({"val_loss": val_loss, **flat}, details)

    def _loss(self, model: nn.Module) -> float:
        """The training losses on the validation set; batch norm statistics stay as they are."""
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        total, count = 0.0, len(self.dataset)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the sampling inside draws numbers
            for start in range(0, count, self.batch_size):
                batch = collate([self.dataset[i] for i in range(start, min(start + self.batch_size, count))])
                total += float(detection_loss(model, to_device(batch, self.predictor.device))) * len(batch[0])
        model.eval()
        return total / max(1, count)


@dataclass
class TorchvisionPredictor:
    task: Task
    classes: list[str]
    model: nn.Module
    device: str
    settings: InferenceSettings

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        """One Prediction per image: normalised boxes, labels, scores (and polygons)."""
        bound = source_side(self.settings.max_size, self.settings.tile_grid_size)  # as in training
        tensors = []
        for image in images:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
            rgb.thumbnail((bound, bound), Image.Resampling.BILINEAR, reducing_gap=3.0)
            tensors.append(F.pil_to_tensor(rgb))
        predictions = self.predict_tensors(tensors)
        for prediction, image in zip(predictions, images, strict=True):
            prediction.filename = Path(getattr(image, "filename", "") or "").name
        return predictions

    def predict_tensors(self, images: Sequence[torch.Tensor]) -> list[Prediction]:
        """Predictions for uint8 CHW images; tiled when the settings ask for it."""
        s, outputs = self.settings, []
        self.model.eval()
        with torch.inference_mode():
            if s.tile_grid_size:
                outputs = [detect_tiled(self._detect, image, s.tile_grid_size, s.tile_overlap_ratio,
                                        s.tile_predictions_nms_thresh, s.box_detections_per_img)
                           for image in images]
            else:
                for start in range(0, len(images), PREDICT_BATCH):
                    outputs += self._detect(list(images[start:start + PREDICT_BATCH]))
        return [self._prediction(out, image.shape[-1], image.shape[-2]) for out, image in zip(outputs, images)]

    def _detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        batch = [F.to_dtype(image, torch.float32, scale=True).to(self.device) for image in images]
        return [{k: v.cpu() for k, v in out.items()} for out in self.model(batch)]

    def _prediction(self, out: dict[str, torch.Tensor], width: int, height: int) -> Prediction:
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes = (out["boxes"].float() / scale).clamp(0, 1).tolist()
        masks = out.get("masks") if self.task is Task.SEGMENTATION else None
        return Prediction(detections=[
            Detection(self.classes[label - 1], round(score, 6), *(round(v, 6) for v in box),
                      polygons=self._polygons(masks[k, 0]) if masks is not None else ())
            for k, (box, score, label) in enumerate(zip(boxes, out["scores"].tolist(), out["labels"].tolist()))])

    def _polygons(self, probabilities: torch.Tensor) -> tuple[tuple[float, ...], ...]:
        binary = (probabilities > self.settings.mask_pixel_score_threshold).numpy()
        limited = (limit_points(p, self.settings.max_number_of_polygon_points) for p in mask_to_polygons(binary))
        return tuple(p for p in limited if p)
