"""The ultralytics family: YOLO detection and segmentation trained by ultralytics' own loop.

Every ultralytics detail lives here: offline switches, the YOLO dataset folder, the callbacks to our
TrialContext, weights as safetensors. ultralytics is imported lazily, after `offline_ultralytics()`."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from core.base.errors import ConfigError
from core.base.params import TrainingParams
from core.base.tasks import Task
from core.data.balance import repeat_factors
from core.data.view import VersionData
from core.train.context import TrialContext
from core.train.device import loader_workers
from core.train.loop import CHECKPOINT_FILE, RESUME_FILE, EarlyStopping
from core.zoo import weights as hub
from core.zoo.base import (
    SAMPLE_IMAGES,
    SETTINGS_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    TrainedModel,
    families,
    validation_samples,
)
from core.zoo.ultralytics_env import keep_threads, offline_ultralytics
from core.zoo.ultralytics_weights import (
    import_weights,
    read_checkpoint,
    release_name,
    weights_file,
    weights_status,
)
from core.zoo.weights import CACHED, DOWNLOADABLE, WeightsStatus, user_status
from core.zoo.yolo_dataset import write_yolo_dataset
from core.zoo.yolo_predictor import YOLO_TASKS, YoloPredictor, rgb, yolo_device
from storage.artifacts import write_atomic

log = logging.getLogger(__name__)

SIZE_LETTERS = {"small": "s", "medium": "m", "large": "l", "xlarge": "x"}
LETTER_SIZES = {"n": "nano", **{v: k for k, v in SIZE_LETTERS.items()}}
# Config variants for other tasks or other model classes, which share the cfg folder.
FOREIGN_VARIANTS = ("cls", "pose", "obb", "world", "yoloe", "sem", "depth", "rtdetr")
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
STATE_FILE = "ddp_state.json"  # rank 0's epochs, stop reason and notices, for the trial process
EXTENSION_FILE = "extension.pt"  # an extended trial's last.pt, its arguments rewritten for this trial


@functools.cache
def _config_names() -> frozenset[str]:
    """Stems of the model configs ultralytics ships (found without importing it)."""
    spec = importlib.util.find_spec("ultralytics")
    root = Path(spec.origin or "").parent / "cfg" / "models"  # type: ignore[union-attr]
    return frozenset(p.stem for p in root.rglob("*.yaml"))


def architecture_for(model_name: str, task: Task, model_size: str) -> str:
    """The config stem for a name (``yolov5`` + model_size -> ``yolov5m``; ``yolo11n`` for segmentation
    -> ``yolo11n-seg``); ConfigError when ultralytics ships no such config."""
    name = model_name.strip().lower().removesuffix(".yaml")
    base, is_seg = name.removesuffix("-seg"), name.endswith("-seg")
    field = "training_parameters.model_name"
    if task not in YOLO_TASKS:
        raise ConfigError(field, f"ultralytics models here do {sorted(YOLO_TASKS)}, not {task.value}")
    if is_seg and task is Task.DETECTION:
        raise ConfigError(field, f"{model_name!r} is a segmentation model", hints=[base])
    if any(v in base.split("-") or base.startswith(v) for v in FOREIGN_VARIANTS):
        raise ConfigError(field, f"{model_name!r} is not a detection or segmentation model")
    if re.fullmatch(r"yolo(v\d+|\d+)", base):  # a generation without a scale: model_size picks it
        base += SIZE_LETTERS[model_size]
    architecture = base + ("-seg" if task is Task.SEGMENTATION else "")
    # ultralytics reads yolo11n.yaml as yolo11.yaml at scale n; yolov5s is its anchor-free YOLOv5u.
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", architecture)
    if architecture not in _config_names() and unified not in _config_names():
        raise ConfigError(field, f"ultralytics has no config {architecture}.yaml for {task.value}",
                          hints=difflib.get_close_matches(architecture, sorted(_config_names()), n=3))
    return architecture


@families.register("ultralytics")
class UltralyticsFamily:
    name = "ultralytics"
    tasks = frozenset(YOLO_TASKS)

    def accepts(self, model_name: str, task: Task) -> bool:
        try:
            architecture_for(model_name, task, "medium")
        except ConfigError:
            return False
        return True

    def default_params(self, task: Task) -> dict[str, Any]:
        # The reference's yolov5 defaults (SPEC §7: box_score_thresh 0.1 for YOLO).
        return {"box_score_threshold": 0.1, "training_batch_size": 16, "validation_batch_size": 16,
                "learning_rate": 0.01, "number_of_epochs": 30}

    def resolve(self, model_name: str, params: TrainingParams, task: Task) -> ModelSpec:
        architecture = architecture_for(model_name, task, params.model_size)
        scale = re.search(r"yolo(?:v)?\d+([nslmx])", architecture)
        size = LETTER_SIZES.get(scale.group(1), "") if scale else ""
        return ModelSpec(self.name, architecture, task, size, display_name=architecture)

    def train(self, spec: ModelSpec, data: VersionData, params: TrainingParams,
              ctx: TrialContext) -> TrainedModel:
        from core.metrics.detection import score_predictor

        offline_ultralytics()
        notices: list[str] = []
        # One draw for the whole run (the folder is written once): rounded, not drawn at random, so that a
        # rare class's few images are not all left at one copy by chance.
        copies = [round(r) for r in repeat_factors(data.train)] if params.repeat_factor_sampling else None
        data_yaml = write_yolo_dataset(data, ctx.out_dir / "data", notices, copies, params.tile_grid_size,
                                       params.tile_overlap_ratio)
        args = _train_args(spec, params, ctx, data_yaml)
        extending = (ctx.out_dir / CHECKPOINT_FILE).is_file()  # another trial's resume state (an extension)
        initial = None if extending else _initial_weights(spec, params, notices)
        if extending:
            args["resume"] = str(_extension_checkpoint(ctx.out_dir / CHECKPOINT_FILE, args))
        stopper = (EarlyStopping(params.early_stopping_patience, params.early_stopping_delay)
                   if params.early_stopping else None)
        bridge = _Bridge(ctx, data.task, params.validation_metric_type, notices, stopper)
        with keep_threads():  # the trainer's constructor already changes them
            trainer = _trainer_class(data.task, initial, notices)(overrides=args)
            trainer.add_callback("on_train_epoch_start", bridge.on_epoch_start)
            trainer.add_callback("on_train_batch_end", bridge.on_batch_end)
            trainer.add_callback("on_fit_epoch_end", bridge.on_fit_epoch_end)
            trainer.train()
        if trainer.ddp:
            bridge.take_over()
        best = trainer.best if trainer.best.exists() else trainer.last
        weights = ctx.out_dir / WEIGHTS_FILE
        _save_safetensors(best, weights)
        shutil.rmtree(best.parent, ignore_errors=True)  # ultralytics' pickled copies; ours is enough
        for name in (CHECKPOINT_FILE, EXTENSION_FILE):  # what an extension started from; resume.pt is its end
            (ctx.out_dir / name).unlink(missing_ok=True)
        if bridge.stop_reason:
            notices.append(f"stopped after epoch {bridge.epochs_run}: {bridge.stop_reason}")
        settings = inference_settings(spec, params)
        predictor = YoloPredictor(spec.architecture, data.task, data.classes, weights, settings, ctx.device)
        items = data.validation or data.train
        metrics, evaluation = score_predictor(predictor, items, data.classes, params.validation_metric_type)
        sampled = predictor.predict([rgb(i.path) for i in items[:SAMPLE_IMAGES]])
        evaluation["samples"] = validation_samples(items, sampled)
        resumable = (ctx.out_dir / RESUME_FILE).is_file()
        return TrainedModel(weights, metrics, bridge.epochs_run, settings, evaluation, notices,
                            bridge.stop_reason, bridge.epochs_run if resumable else 0)

    def weights(self, spec: ModelSpec, params: TrainingParams) -> WeightsStatus:
        return user_status(params.checkpoint_path or params.pretrained_weights) or weights_status(spec.architecture)

    def import_weights(self, spec: ModelSpec, file: Path) -> tuple[Path, int]:
        return import_weights(spec.architecture, file)

    def load(self, artifact_dir: Path, device: str) -> YoloPredictor:
        settings = json.loads((artifact_dir / SETTINGS_FILE).read_text())
        return YoloPredictor(settings["architecture"], Task(settings["task"]),
                             list(settings["classes"]), artifact_dir / WEIGHTS_FILE, settings, device)


def inference_settings(spec: ModelSpec, params: TrainingParams) -> dict[str, Any]:
    """SPEC §7 settings for a YOLO model, as trained."""
    settings: dict[str, Any] = {
        "img_size": params.img_size, "model_size": spec.size,
        "box_score_thresh": params.box_score_threshold, "nms_iou_thresh": params.nms_iou_threshold,
        "box_detections_per_img": params.box_detections_per_image,
    }
    if params.tile_grid_size:
        settings |= {"tile_grid_size": list(params.tile_grid_size), "tile_overlap_ratio": params.tile_overlap_ratio,
                     "tile_predictions_nms_thresh": params.tile_predictions_nms_threshold}
    if spec.task is Task.SEGMENTATION:  # ultralytics itself cuts masks at 0.5, whatever is set here
        settings["mask_pixel_score_threshold"] = params.mask_pixel_score_threshold
        settings["max_number_of_polygon_points"] = params.max_number_of_polygon_points
    return settings


def _devices(device: str, count: int) -> str:
    """ultralytics' device argument: several GPUs train with its own DDP (it starts the processes)."""
    if count == 1:
        return yolo_device(device)
    if not device.startswith("cuda"):
        raise ConfigError("training_parameters.devices", f"YOLO trains on {count} devices with ultralytics' DDP, "
                          "which needs GPUs; this trial trains on the CPU", hints=["1"])
    return ",".join(str(k) for k in range(count))


def _train_args(spec: ModelSpec, params: TrainingParams, ctx: TrialContext, data_yaml: Path
                ) -> dict[str, Any]:
    on_cuda = ctx.device.startswith("cuda")
    args: dict[str, Any] = {
        "model": f"{spec.architecture}.yaml", "task": YOLO_TASKS[spec.task], "mode": "train",
        "data": str(data_yaml), "pretrained": False, "epochs": params.number_of_epochs,
        "batch": params.training_batch_size, "imgsz": params.img_size, "device": _devices(ctx.device, params.devices),
        "optimizer": OPTIMIZERS[params.optimizer], "lr0": params.learning_rate,
        "momentum": params.momentum, "weight_decay": params.weight_decay,
        "cos_lr": params.learning_rate_scheduler == "warmup_cosine",
        "warmup_epochs": params.warmup_cosine_lr_warmup_epochs,
        # nbs, ultralytics' nominal batch, accumulates gradients up to 64 images: on small data a
        # step every few batches and no learning (ENVIRONMENT.md). Accumulate only as asked.
        "nbs": params.training_batch_size * params.gradient_accumulation_step,
        "seed": params.seed, "deterministic": True, "amp": on_cuda,
        # On a GPU, loader workers keep it fed (`loader_workers`); on a CPU they would take cores from training.
        "workers": loader_workers(params.number_of_workers, ctx.device) if on_cuda else 0,
        "multi_scale": 0.5 if params.multi_scale else 0.0,  # YOLOv5's +-50% image sizes
        # 0: ultralytics never stops early itself; the bridge does, with the job's early_stopping_delay too.
        "patience": 0,
        "project": str(ctx.out_dir), "name": "ultralytics", "exist_ok": True,
        "plots": False, "verbose": False, "val": True, "save": True,
    }
    if not params.advanced("apply_mosaic_for_yolo"):
        args.update(mosaic=0.0, close_mosaic=0)
    if not params.advanced("apply_automl_train_augmentations"):
        args.update(degrees=0.0, translate=0.0, scale=0.0, shear=0.0, fliplr=0.0)
    return args


def _extension_checkpoint(resume: Path, args: dict[str, Any]) -> Path:
    """ultralytics' last.pt of the trial being extended, made to train on here: its run arguments name
    the other trial's folder and its number of epochs, and resuming takes them from the checkpoint."""
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    _, checkpoint = load_checkpoint(resume)  # the pickle ultralytics wrote in Kestrel's own trial, not user input
    checkpoint["train_args"] = {**checkpoint.get("train_args", {}),
                                **{k: args[k] for k in ("epochs", "data", "project", "name", "device", "workers")},
                                "save_dir": str(Path(args["project"]) / args["name"]), "exist_ok": True}
    target = resume.with_name(EXTENSION_FILE)
    torch.save(checkpoint, target)
    return target


def _initial_weights(spec: ModelSpec, params: TrainingParams, notices: list[str]) -> dict[str, Any] | None:
    """Tensors to start from: a Kestrel model (.safetensors) or a user's ultralytics .pt file, else the
    released weights from ultralytics' weights folder (downloaded there first when GitHub answers)."""
    source = params.checkpoint_path or params.pretrained_weights
    if source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError("training_parameters.pretrained_weights", f"{path} is not a file")
        return read_checkpoint(path)
    status = weights_status(spec.architecture)
    why = status.where
    if status.state == DOWNLOADABLE:
        try:
            hub.fetch_ultralytics(weights_file(spec.architecture))
            status = weights_status(spec.architecture)
        except Exception as exc:  # noqa: BLE001 — a failed download: train anyway, and say so
            why = f"downloading {release_name(spec.architecture)} failed ({type(exc).__name__}: {exc})"
    if status.state == CACHED:
        try:
            return read_checkpoint(Path(status.where))
        except Exception as exc:  # noqa: BLE001 — a corrupt file: train anyway, and say so
            why = f"loading {status.where} failed ({type(exc).__name__}: {exc})"
    notices.append(f"no pretrained weights for {spec.architecture}: {why}; training from scratch")
    return None


def _trainer_class(task: Task, initial: dict[str, Any] | None, notices: list[str]) -> type:
    """ultralytics' trainer for the task, starting the built model from ``initial`` tensors."""
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.models.yolo.segment import SegmentationTrainer

    base = SegmentationTrainer if task is Task.SEGMENTATION else DetectionTrainer

    def get_model(self: Any, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
        model = base.get_model(self, cfg=cfg, weights=weights, verbose=False)
        if initial is not None:
            own = model.state_dict()
            matching = {k: v for k, v in initial.items() if k in own and own[k].shape == v.shape}
            model.load_state_dict(matching, strict=False)
            notices.append(f"started from pretrained weights: {len(matching)} of {len(own)} tensors fit")
        return model

    return type(f"Kestrel{base.__name__}", (base,), {"get_model": get_model})


class _Bridge:
    """ultralytics callbacks -> TrialContext: metrics per epoch, and stopping when asked.

    With several GPUs, ultralytics trains in DDP processes of its own that unpickle these callbacks (and the
    context, which reconnects to the database): there rank 0 alone reports, and a stop waits for the epoch's
    end, where ultralytics hands rank 0's word to every rank (a rank leaving mid-epoch would hang the others).
    What the trial process needs afterwards comes back in STATE_FILE (`take_over`)."""

    def __init__(self, ctx: TrialContext, task: Task, metric_type: str, notices: list[str],
                 stopper: EarlyStopping | None = None) -> None:
        self.ctx, self.metric_type, self.notices, self.stopper = ctx, metric_type, notices, stopper
        self.resume = ctx.out_dir / RESUME_FILE
        self.suffix = "(M)" if task is Task.SEGMENTATION else "(B)"
        self.epochs_run, self.stop_reason, self.done = 0, "", False
        self.batches = 0  # of the running epoch

    @staticmethod
    def rank() -> int:
        return int(os.environ.get("RANK", -1))  # -1: one process; else a DDP rank (torchrun sets RANK)

    def on_epoch_start(self, trainer: Any) -> None:
        self.batches = 0

    def on_batch_end(self, trainer: Any) -> None:
        if self.rank() > 0:
            return
        self.batches += 1
        self.ctx.progress(trainer.epoch + min(1.0, self.batches / max(int(getattr(trainer, "nb", 1)), 1)))
        if not self.stop_reason and (reason := self.ctx.should_stop()):
            self.stop_reason = reason
            if self.rank() == -1:  # in DDP at the epoch's end (on_fit_epoch_end)
                trainer.stop = True

    def on_fit_epoch_end(self, trainer: Any) -> None:
        # ultralytics calls this once more after training, for best.pt: not an epoch
        if self.done or self.rank() > 0:
            return
        m = trainer.metrics
        map_50 = float(m.get(f"metrics/mAP50{self.suffix}", 0.0))
        map_50_95 = float(m.get(f"metrics/mAP50-95{self.suffix}", 0.0))
        self.epochs_run = trainer.epoch + 1
        primary = map_50_95 if self.metric_type == "coco" else map_50
        if not self.stop_reason and self.stopper and self.stopper.update(self.epochs_run, primary):
            log.info("early stopping after epoch %d: no mean_average_precision improvement in %d evaluations",
                     self.epochs_run, self.stopper.patience)
            self.stop_reason = "early_stopping"
        self.ctx.report(self.epochs_run, {
            "train_loss": _total(trainer.tloss),
            "val_loss": float(sum(v for k, v in m.items() if k.startswith("val/"))),
            "map_50": map_50, "map_50_95": map_50_95, "mean_average_precision": primary,
        })
        if not self.stop_reason and (reason := self.ctx.should_stop()):
            self.stop_reason = reason
        trainer.stop = bool(trainer.stop or self.stop_reason)
        self.done = trainer.stop
        # ultralytics strips the optimizer from last.pt once training ends: keep this epoch's whole state,
        # so that the trial can be extended (`kestrel trial extend`).
        if Path(trainer.last).is_file():
            copy = self.resume.with_name(self.resume.name + ".tmp")
            shutil.copyfile(trainer.last, copy)
            os.replace(copy, self.resume)
        if self.rank() == 0:
            write_atomic(self.ctx.out_dir / STATE_FILE, json.dumps(
                {"epochs_run": self.epochs_run, "stop_reason": self.stop_reason, "notices": self.notices}).encode())

    def take_over(self) -> None:
        """After ultralytics' DDP processes: what rank 0 recorded (STATE_FILE), as if this process had trained."""
        state = json.loads((self.ctx.out_dir / STATE_FILE).read_text())
        self.epochs_run, self.stop_reason = int(state["epochs_run"]), str(state["stop_reason"])
        self.notices[:] = state["notices"]


def _total(losses: Any) -> float:
    """The sum of a loss-items record (a dict of tensors in ultralytics 8.4, a tensor before)."""
    return float(sum(float(v) for v in (losses.values() if isinstance(losses, dict) else losses or ())))


def _save_safetensors(checkpoint: Path, target: Path) -> None:
    """The best EMA weights from ultralytics' checkpoint, as float32 safetensors."""
    from safetensors.torch import save_file
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(checkpoint)  # the pickle ultralytics wrote in this run, not user input
    save_file({k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()},
              target)
