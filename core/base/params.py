"""Training parameters of SPEC §3 under their reference names, with defaults, ranges and the
single precedence merge: SPEC defaults < task defaults < job < sampled < command line."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.base.errors import ConfigError
from core.base.tasks import Task


class TrainingParams(BaseModel):
    """Every parameter a trial understands. Unknown names are refused, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    # common
    model_name: str | None = None
    number_of_epochs: int = Field(15, ge=1, le=1000)
    training_batch_size: int = Field(16, ge=1, le=4096)
    validation_batch_size: int = Field(16, ge=1, le=4096)
    learning_rate: float = Field(0.01, gt=0, le=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, le=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    nesterov: bool = True
    beta1: float = Field(0.9, ge=0, le=1)
    beta2: float = Field(0.999, ge=0, le=1)
    learning_rate_scheduler: Literal["warmup_cosine", "step"] = "warmup_cosine"
    warmup_cosine_lr_warmup_epochs: int = Field(2, ge=0)
    warmup_cosine_lr_cycles: float = Field(0.45, ge=0, le=1)
    step_lr_gamma: float = Field(0.5, gt=0, le=1)
    step_lr_step_size: int = Field(5, ge=1)
    early_stopping: bool = True
    early_stopping_patience: int = Field(5, ge=1)
    early_stopping_delay: int = Field(5, ge=0)
    evaluation_frequency: int = Field(1, ge=1)
    layers_to_freeze: int = Field(0, ge=0)
    gradient_accumulation_step: int = Field(1, ge=1, le=1024)
    validation_metric_type: Literal["voc", "coco", "coco_voc", "none"] = "voc"
    advanced_settings: str | None = None
    checkpoint_run_id: str | None = None
    checkpoint_path: str | None = None
    pretrained_weights: str | None = None
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # Kestrel's: processes one trial trains on with DDP: a GPU each where there are GPUs, else CPU processes
    # sharing the cores (core.train.distributed); YOLO uses ultralytics' own DDP, on GPUs.
    devices: int = Field(1, ge=1, le=64)
    # 0: none on a CPU, up to 8 of the trial's threads on a GPU (core.train.device.loader_workers)
    number_of_workers: int = Field(0, ge=0, le=64)
    # Kestrel's: which defaults fill what the job leaves unset (core.train.recipe); "auto" picks
    # fine_tune when pretrained weights are to be had, else from_scratch. Trials record the choice.
    recipe: Literal["auto", "fine_tune", "from_scratch"] = "auto"
    # classification
    training_crop_size: int = Field(224, ge=16, le=2048)
    validation_crop_size: int = Field(224, ge=16, le=2048)
    validation_resize_size: int = Field(256, ge=16, le=2048)
    weighted_loss: Literal[0, 1, 2] = 0
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # Kestrel's; multi-label smooths 0/1 targets
    random_crop_min_scale: float = Field(0.08, gt=0, le=1)  # Kestrel's: RandomResizedCrop's least area
    multilabel_threshold: float = Field(0.5, gt=0, lt=1)
    # detection and segmentation
    min_size: int = Field(600, ge=32, le=4096)
    max_size: int = Field(1333, ge=32, le=8192)
    box_score_threshold: float = Field(0.3, ge=0, le=1)
    nms_iou_threshold: float = Field(0.5, ge=0, le=1)
    box_detections_per_image: int = Field(100, ge=1, le=10000)
    tile_grid_size: tuple[int, int] | None = None
    tile_overlap_ratio: float = Field(0.25, ge=0, lt=1)
    tile_predictions_nms_threshold: float = Field(0.25, ge=0, le=1)
    mask_pixel_score_threshold: float = Field(0.5, ge=0, le=1)
    max_number_of_polygon_points: int = Field(100, ge=3, le=10000)
    # Kestrel's: images of rare classes shown more often (LVIS repeat-factor sampling, core.data.balance);
    # the recipe turns it on for imbalanced data.
    repeat_factor_sampling: bool = False
    # yolo
    img_size: int = Field(640, ge=32, le=4096)
    model_size: Literal["small", "medium", "large", "xlarge"] = "medium"
    multi_scale: bool = False

    @field_validator("tile_grid_size", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        # The reference writes it as a string "(3, 2)"; accept that, a list, or "3x2".
        if isinstance(value, str):
            parts = value.strip("()[] ").replace("x", ",").split(",")
            return tuple(int(p) for p in parts if p.strip())
        return value

    @field_validator("checkpoint_run_id", mode="before")
    @classmethod
    def _run_id(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("advanced_settings", mode="before")
    @classmethod
    def _advanced(cls, value: Any) -> str | None:
        if isinstance(value, dict):  # YAML (or --set) may give the object itself
            value = json.dumps(value)
        if value is not None:
            settings = json.loads(value)
            if not isinstance(settings, dict):
                raise ValueError("must be a JSON object, e.g. '{\"apply_mosaic_for_yolo\": false}'")
            unknown = set(settings) - ADVANCED_FLAGS
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}; allowed: {sorted(ADVANCED_FLAGS)}")
        return value

    def advanced(self, flag: str) -> bool:
        """An ``advanced_settings`` flag; both default to true (augmentations on)."""
        return bool(json.loads(self.advanced_settings or "{}").get(flag, True))


# stream_image_files is the reference's switch for reading images lazily from a datastore; it is
# accepted so its job files run, and changes nothing: Kestrel reads images from its local store.
ADVANCED_FLAGS = {"apply_mosaic_for_yolo", "apply_automl_train_augmentations", "stream_image_files"}
PARAM_NAMES = sorted(TrainingParams.model_fields)

# Reference defaults that differ per task (the Azure hyperparameter tables).
TASK_DEFAULTS: dict[Task, dict[str, Any]] = {
    Task.CLASSIFICATION: {"model_name": "vitb16r224", "training_batch_size": 78,
                          "validation_batch_size": 78, "learning_rate": 0.01},
    Task.MULTILABEL: {"model_name": "vitb16r224", "training_batch_size": 78,
                      "validation_batch_size": 78, "learning_rate": 0.035},
    Task.DETECTION: {"model_name": "yolov5", "training_batch_size": 2, "validation_batch_size": 1,
                     "learning_rate": 0.005},
    Task.SEGMENTATION: {"model_name": "maskrcnn_resnet50_fpn", "training_batch_size": 2,
                        "validation_batch_size": 1, "learning_rate": 0.005},
}


def resolve_params(task: Task, *layers: Mapping[str, Any]) -> TrainingParams:
    """Merge ``layers`` over the task's defaults, later layers winning; refuse bad names/values."""
    merged: dict[str, Any] = dict(TASK_DEFAULTS[task])
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    check_names(merged)
    try:
        return TrainingParams(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"training_parameters.{field}",
                          f"{first['input']!r} is not valid: {first['msg']}") from None


def check_names(values: Mapping[str, Any], path: str = "training_parameters") -> None:
    for name in values:
        if name not in TrainingParams.model_fields:
            raise ConfigError(f"{path}.{name}", f"unknown parameter {name!r}", PARAM_NAMES,
                              difflib.get_close_matches(name, PARAM_NAMES, n=3))


def parse_set_options(pairs: list[str]) -> dict[str, Any]:
    """Training parameters as ``KEY=VALUE`` strings from the command line, names checked."""
    out = parse_pairs(pairs)
    check_names(out, "--set")
    return out


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings from the command line; values are read as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"{pair!r} is not KEY=VALUE", hints=["number_of_epochs=5"])
        out[key.strip()] = yaml.safe_load(value)
    return out
