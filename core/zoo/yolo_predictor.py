"""A trained YOLO network predicting in Kestrel's shape (`core.base.prediction`), on whole images or, with
``tile_grid_size`` in its settings, on each image and its tiles merged (`core.zoo.tiling`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from core.base.prediction import Detection, Prediction
from core.base.tasks import Task
from core.data.masks import limit_points
from core.data.tiles import image_and_tiles
from core.zoo.tiling import merge_predictions
from core.zoo.ultralytics_env import keep_threads, offline_ultralytics

YOLO_TASKS = {Task.DETECTION: "detect", Task.SEGMENTATION: "segment"}
PREDICT_CHUNK = 8  # images per forward pass when predicting


def yolo_device(device: str) -> str:
    """Our device names in ultralytics' spelling: "cuda:1" -> "1"."""
    return (device.partition(":")[2] or "0") if device.startswith("cuda") else device


class YoloPredictor:
    """A YOLO network rebuilt from its config and safetensors, predicting in our shape."""

    def __init__(self, architecture: str, task: Task, classes: list[str], weights: Path,
                 settings: dict[str, Any], device: str) -> None:
        offline_ultralytics()
        from safetensors.torch import load_file
        from ultralytics.models.yolo.detect import DetectionPredictor
        from ultralytics.models.yolo.segment import SegmentationPredictor
        from ultralytics.nn import tasks as nets

        self.task, self.classes, self.settings = task, classes, settings
        segments = task is Task.SEGMENTATION
        net = (nets.SegmentationModel if segments else nets.DetectionModel)(
            nets.yaml_model_load(f"{architecture}.yaml"), nc=len(classes), verbose=False)
        net.load_state_dict(load_file(weights))
        net.names = dict(enumerate(classes))
        net.eval()
        self.model = net  # public, for export (core.inference.export)
        overrides = {"task": YOLO_TASKS[task], "mode": "predict", "imgsz": settings["img_size"],
                     "conf": settings["box_score_thresh"], "iou": settings["nms_iou_thresh"],
                     "max_det": settings["box_detections_per_img"], "device": yolo_device(device),
                     "verbose": False, "save": False, "batch": PREDICT_CHUNK}
        with keep_threads():
            kind = SegmentationPredictor if segments else DetectionPredictor
            self._predictor = kind(overrides=overrides)
            self._predictor.setup_model(net, verbose=False)

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        s = self.settings
        if not s.get("tile_grid_size"):
            return self._predict(images)
        out = []
        for image in images:
            windows = image_and_tiles(image.width, image.height, tuple(s["tile_grid_size"]),
                                      s["tile_overlap_ratio"])
            parts = self._predict([image.crop(window) for window in windows])
            merged = merge_predictions(parts, windows, image.width, image.height,
                                       s["tile_predictions_nms_thresh"], s["box_detections_per_img"])
            merged.filename = _name(image)
            out.append(merged)
        return out

    def _predict(self, images: list[Image.Image]) -> list[Prediction]:
        out: list[Prediction] = []
        with keep_threads():
            for start in range(0, len(images), PREDICT_CHUNK):
                chunk = [im if im.mode == "RGB" else im.convert("RGB")
                         for im in images[start:start + PREDICT_CHUNK]]
                for image, result in zip(chunk, self._predictor(source=chunk), strict=True):
                    out.append(Prediction(filename=_name(image), detections=self._detections(result)))
        return out

    def _detections(self, result: Any) -> list[Detection]:
        boxes = result.boxes
        polygons = result.masks.xyn if result.masks is not None else [()] * len(boxes)
        max_points = int(self.settings.get("max_number_of_polygon_points", 100))
        labels = [self.classes[c] for c in boxes.cls.int().tolist()]
        return [Detection(c, round(s, 6), *(round(min(max(v, 0.0), 1.0), 6) for v in box),
                          polygons=_one(limit_points(p, max_points)))
                for box, s, c, p in zip(boxes.xyxyn.tolist(), boxes.conf.tolist(), labels, polygons)]


def _name(image: Image.Image) -> str:
    return Path(getattr(image, "filename", "") or "").name


def _one(polygon: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    return (polygon,) if polygon else ()


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")
