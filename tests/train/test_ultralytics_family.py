"""YOLO through the ultralytics family: trains offline, reports each epoch, stops when asked, saves,
reloads and predicts in the scoring schema; learning is real. Plus the COCO-style metrics that
score every detection family, on hand-made cases."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from factories import check_scoring_answers
from PIL import Image

from core.base.errors import ConfigError
from core.base.params import TrainingParams, resolve_params
from core.base.prediction import Detection, Prediction
from core.base.tasks import Task
from core.data.records import Instance
from core.data.view import Item, VersionData
from core.metrics.detection import detection_metrics
from core.train.context import MemoryContext
from core.train.loop import EarlyStopping
from core.zoo.base import SETTINGS_FILE, ModelSpec, TrainedModel, families
from core.zoo.ultralytics_family import UltralyticsFamily, _Bridge, write_yolo_dataset

SQUARE = (0.1, 0.1, 0.5, 0.1, 0.5, 0.5, 0.1, 0.5)
SLIVER = (0.1, 0.5, 0.2, 0.1, 0.3, 0.5)  # a quarter of SQUARE's area, inside it
# Measured on the 2-core CPU, one torch thread: after 40 epochs (~56 s) mAP@0.5 on the
# validation split was 0.92; an untrained YOLO (and the same run's first 16 epochs) scores 0.0.
LEARNING_BAR = 0.5


# --- metrics on hand-made cases -----------------------------------------------------------------

def _image(*instances: Instance, size: tuple[int, int] = (100, 80)) -> SimpleNamespace:
    return SimpleNamespace(width=size[0], height=size[1], instances=instances)


def _found(*detections: Detection) -> Prediction:
    return Prediction(detections=list(detections))


def test_perfect_predictions_score_map_1() -> None:
    truth = [_image(Instance("a", 0.1, 0.1, 0.5, 0.5), Instance("b", 0.6, 0.6, 0.9, 0.9)), _image()]
    found = [_found(Detection("a", 0.9, 0.1, 0.1, 0.5, 0.5), Detection("b", 0.8, 0.6, 0.6, 0.9, 0.9)),
             _found()]
    flat, evaluation = detection_metrics(truth, found, ["a", "b"], "voc")
    assert flat == {"mean_average_precision": 1.0, "map_50": 1.0, "map_50_95": 1.0,
                    "precision": 1.0, "recall": 1.0}
    assert [row["average_precision"] for row in evaluation["per_class"]] == [1.0, 1.0]
    assert evaluation["pr_curves"]["a"]["precision"][-1] == 1.0
    json.dumps(evaluation)


def test_a_missed_object_lowers_recall_and_map() -> None:
    truth = [_image(Instance("a", 0.1, 0.1, 0.4, 0.4), Instance("a", 0.6, 0.6, 0.9, 0.9))]
    found = [_found(Detection("a", 0.9, 0.1, 0.1, 0.4, 0.4))]
    flat, evaluation = detection_metrics(truth, found, ["a"])
    assert flat["recall"] == 0.5 and flat["precision"] == 1.0
    assert 0.4 < flat["mean_average_precision"] < 0.6
    assert evaluation["per_class"][0]["ground_truth"] == 2


def test_a_wrong_class_scores_zero_and_classes_without_truth_leave_the_mean() -> None:
    truth = [_image(Instance("a", 0.1, 0.1, 0.5, 0.5)), _image(Instance("b", 0.5, 0.5, 0.9, 0.9))]
    found = [_found(Detection("a", 0.9, 0.1, 0.1, 0.5, 0.5)),
             _found(Detection("c", 0.9, 0.5, 0.5, 0.9, 0.9))]
    flat, evaluation = detection_metrics(truth, found, ["a", "b", "c"], "coco")
    rows = {row["class"]: row for row in evaluation["per_class"]}
    assert rows["a"]["average_precision"] == 1.0 and rows["b"]["average_precision"] == 0.0
    assert rows["c"]["average_precision"] is None and rows["c"]["false_positives"] == 1
    assert evaluation["pr_curves"]["c"] is None
    assert flat["mean_average_precision"] == pytest.approx(0.5)  # (1 + 0) / 2: "c" has no truth
    assert flat["precision"] == 0.5 and flat["recall"] == 0.5


def test_coco_metric_type_asks_for_tight_boxes_where_voc_does_not() -> None:
    truth = [_image(Instance("a", 0.1, 0.1, 0.5, 0.5))]
    loose = [_found(Detection("a", 0.9, 0.1, 0.1, 0.5, 0.61))]  # IoU 0.4 / 0.51 = 0.78
    voc, _ = detection_metrics(truth, loose, ["a"], "voc")
    coco, _ = detection_metrics(truth, loose, ["a"], "coco")
    assert voc["mean_average_precision"] == 1.0
    assert coco["mean_average_precision"] == pytest.approx(0.6)  # a hit at IoU .50 to .75: 6 of 10
    assert voc["map_50_95"] == coco["map_50_95"]


def test_masks_are_scored_by_polygon_overlap_and_boxes_kept_apart() -> None:
    truth = [_image(Instance("a", 0.1, 0.1, 0.5, 0.5, polygons=(SQUARE,)))]
    right_box_wrong_shape = [_found(Detection("a", 0.9, 0.1, 0.1, 0.5, 0.5, polygons=(SLIVER,)))]
    flat, evaluation = detection_metrics(truth, right_box_wrong_shape, ["a"], "voc", masks=True)
    assert flat["box_mean_average_precision"] == 1.0 and flat["box_recall"] == 1.0
    assert flat["mean_average_precision"] == 0.0 and flat["recall"] == 0.0  # mask IoU 0.25
    assert evaluation["iou_type"] == "segm" and evaluation["box"]["per_class"][0]["ap_50"] == 1.0
    exact = [_found(Detection("a", 0.9, 0.1, 0.1, 0.5, 0.5, polygons=(SQUARE,)))]
    assert detection_metrics(truth, exact, ["a"], masks=True)[0]["mean_average_precision"] == 1.0


def test_no_truth_and_no_predictions_anywhere_scores_zero_without_failing() -> None:
    flat, evaluation = detection_metrics([_image(), _image()], [_found(), _found()], ["a"], masks=True)
    assert flat["mean_average_precision"] == 0.0 and flat["recall"] == 0.0
    assert evaluation["per_class"][0]["average_precision"] is None
    json.dumps(evaluation)


def test_crowd_regions_neither_count_as_missed_nor_make_false_positives() -> None:
    truth = [_image(Instance("a", 0.1, 0.1, 0.4, 0.4),
                    Instance("a", 0.5, 0.5, 0.9, 0.9, is_crowd=True))]
    found = [_found(Detection("a", 0.9, 0.1, 0.1, 0.4, 0.4),
                    Detection("a", 0.8, 0.55, 0.55, 0.85, 0.85))]
    flat, _ = detection_metrics(truth, found, ["a"])
    assert flat == {"mean_average_precision": 1.0, "map_50": 1.0, "map_50_95": 1.0,
                    "precision": 1.0, "recall": 1.0}


# --- model names ----------------------------------------------------------------------------------

def _spec(name: str, task: Task = Task.DETECTION, **params: Any) -> ModelSpec:
    return UltralyticsFamily().resolve(name, resolve_params(task, {"model_name": name, **params}), task)


def test_family_is_registered_for_detection_and_segmentation() -> None:
    assert families.get("ultralytics") is UltralyticsFamily
    assert UltralyticsFamily.tasks == {Task.DETECTION, Task.SEGMENTATION}


@pytest.mark.parametrize(("size", "architecture"), [("small", "yolov5s"), ("medium", "yolov5m"),
                                                    ("large", "yolov5l"), ("xlarge", "yolov5x")])
def test_yolov5_model_size_picks_the_scale(size: str, architecture: str) -> None:
    spec = _spec("yolov5", model_size=size)
    assert (spec.family, spec.architecture, spec.size) == ("ultralytics", architecture, size)


@pytest.mark.parametrize(("name", "task", "architecture"), [
    ("yolov8n", Task.DETECTION, "yolov8n"), ("yolo11s", Task.DETECTION, "yolo11s"),
    ("yolo11n-seg", Task.SEGMENTATION, "yolo11n-seg"), ("yolov8n", Task.SEGMENTATION, "yolov8n-seg"),
    ("yolo11", Task.SEGMENTATION, "yolo11m-seg"), ("yolov9c", Task.DETECTION, "yolov9c"),
])
def test_current_generations_resolve_to_a_shipped_config(name: str, task: Task,
                                                          architecture: str) -> None:
    assert _spec(name, task).architecture == architecture


@pytest.mark.parametrize(("name", "task"), [
    ("yolov8n-seg", Task.DETECTION), ("yolov5", Task.SEGMENTATION), ("yolo11n-cls", Task.DETECTION),
    ("yolo11n-pose", Task.DETECTION), ("yolov99n", Task.DETECTION), ("yolov10n", Task.SEGMENTATION),
    ("fasterrcnn_resnet50_fpn", Task.DETECTION), ("yolov8n", Task.CLASSIFICATION),
])
def test_other_names_are_not_accepted(name: str, task: Task) -> None:
    assert not UltralyticsFamily().accepts(name, task)
    with pytest.raises(ConfigError):
        UltralyticsFamily().resolve(name, TrainingParams(), task)


# --- the YOLO dataset folder ----------------------------------------------------------------------

def test_the_yolo_folder_has_suffixed_images_and_labels_per_task(tmp_path: Path) -> None:
    blob = tmp_path / "blobs" / "abc123"  # blobs are named by hash, without a suffix
    blob.parent.mkdir()
    Image.new("RGB", (40, 20), "red").save(blob, format="GIF")
    two_parts = ((0.1, 0.1, 0.2, 0.1, 0.2, 0.2), (0.5, 0.5, 0.6, 0.5, 0.6, 0.6))
    item = Item(blob, "pics/one.gif", 40, 20, (), (
        Instance("b", 0.1, 0.1, 0.6, 0.6, polygons=two_parts),
        Instance("a", 0.2, 0.2, 0.4, 0.6),  # no polygon: its box is its outline
        Instance("a", 0.0, 0.0, 1.0, 1.0, is_crowd=True),  # ultralytics has no crowds: left out
    ))
    data = VersionData("d", 1, Task.SEGMENTATION, ["a", "b"], [item], [])
    notices: list[str] = []
    data_yaml = write_yolo_dataset(data, tmp_path / "yolo", notices)
    assert (tmp_path / "yolo" / "images" / "train" / "000000.png").is_file()  # GIF converted
    assert (tmp_path / "yolo" / "images" / "val" / "000000.png").is_file()  # no validation: train
    assert any("no validation images" in n for n in notices)
    lines = (tmp_path / "yolo" / "labels" / "train" / "000000.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "0"]
    assert len(lines[0].split()) > 1 + 12  # both parts, joined by seams
    assert lines[1].split()[1:] == ["0.200000", "0.200000", "0.400000", "0.200000", "0.400000",
                                    "0.600000", "0.200000", "0.600000"]
    assert "names:\n  0: \"a\"\n  1: \"b\"" in data_yaml.read_text()
    boxes = write_yolo_dataset(VersionData("d", 1, Task.DETECTION, ["a", "b"], [item], [item]),
                               tmp_path / "boxes", [])
    first = (boxes.parent / "labels" / "val" / "000000.txt").read_text().splitlines()[0]
    assert first == "1 0.350000 0.350000 0.500000 0.500000"


# --- training, saving, predicting -----------------------------------------------------------------

@dataclass
class Run:
    data: VersionData
    spec: ModelSpec
    ctx: MemoryContext
    trained: TrainedModel
    connects: list[Any]
    threads_after: int
    seconds: float


class StopAfterFirstBatch(MemoryContext):
    def should_stop(self) -> str | None:
        return "cancelled"


@pytest.fixture(scope="module")
def datasets(sample_versions: Any) -> dict[str, VersionData]:
    return sample_versions("yolo", {"detection": (Task.DETECTION, 20, 96),
                                   "segmentation": (Task.SEGMENTATION, 20, 96),
                                   "learning": (Task.DETECTION, 40, 128),
                                   "learning-seg": (Task.SEGMENTATION, 40, 128)})


def _train(data: VersionData, out_dir: Path, context: type[MemoryContext] = MemoryContext,
           **overrides: Any) -> Run:
    """One trial as core.runs.trial runs it, with every socket connection recorded and refused."""
    params = resolve_params(data.task, {"early_stopping": False, "training_batch_size": 8, **overrides})
    family = UltralyticsFamily()
    spec = family.resolve(params.model_name or "", params, data.task)
    out_dir.mkdir(parents=True)
    ctx = context(out_dir)
    connects: list[Any] = []

    def refuse(*args: Any) -> None:
        connects.append(args[-1] if len(args) == 2 else args)
        raise OSError("network is off in tests")

    started = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)  # DNS, as ultralytics' online check uses
        trained = family.train(spec, data, params, ctx)
    seconds = time.monotonic() - started
    settings = {**trained.settings, "task": data.task.value, "classes": data.classes,
                "family": spec.family, "architecture": spec.architecture, "size": spec.size}
    (out_dir / SETTINGS_FILE).write_text(json.dumps(settings))
    return Run(data, spec, ctx, trained, connects, torch.get_num_threads(), seconds)


@pytest.fixture(scope="module")
def short_runs(datasets: dict[str, VersionData], one_thread: None,
               tmp_path_factory: pytest.TempPathFactory) -> dict[Task, Run]:
    """Two-epoch trials at 64 px: too short to learn, long enough to exercise every path.
    A very low score threshold makes even these models return boxes."""
    root = tmp_path_factory.mktemp("runs")
    common = {"number_of_epochs": 2, "img_size": 64, "box_score_threshold": 0.001}
    return {
        Task.DETECTION: _train(datasets["detection"], root / "detect", model_name="yolov8n", **common),
        Task.SEGMENTATION: _train(datasets["segmentation"], root / "segment", model_name="yolo11n-seg",
                                  max_number_of_polygon_points=12, **common),
    }


@pytest.mark.parametrize("task", [Task.DETECTION, Task.SEGMENTATION])
def test_a_trial_reports_each_epoch_and_final_metrics(short_runs: dict[Task, Run], task: Task) -> None:
    run = short_runs[task]
    assert [step for step, _ in run.ctx.reports] == [1, 2]
    assert run.ctx.positions == sorted(run.ctx.positions) and run.ctx.positions[-1] == 2.0
    for _, point in run.ctx.reports:
        assert {"train_loss", "map_50", "map_50_95", "mean_average_precision"} <= point.keys()
        assert point["train_loss"] > 0
    assert run.trained.epochs_run == 2
    assert {"mean_average_precision", "map_50", "map_50_95", "precision",
            "recall"} <= run.trained.metrics.keys()
    if task is Task.SEGMENTATION:
        assert "box_mean_average_precision" in run.trained.metrics
        assert run.trained.evaluation["iou_type"] == "segm"
    assert [row["class"] for row in run.trained.evaluation["per_class"]] == run.data.classes
    assert any("from scratch" in notice for notice in run.trained.notices)


@pytest.mark.parametrize("task", [Task.DETECTION, Task.SEGMENTATION])
def test_training_only_asks_whether_the_weights_host_answers_and_keeps_the_callers_threads(
        short_runs: dict[Task, Run], task: Task) -> None:
    # One look at GitHub (whether ultralytics' weights can be downloaded); refused, it trains from scratch.
    assert {c[0] for c in short_runs[task].connects} <= {"github.com"} and len(short_runs[task].connects) <= 1
    assert short_runs[task].threads_after == 1


def test_the_model_is_saved_as_safetensors_with_its_inference_settings(
        short_runs: dict[Task, Run]) -> None:
    run = short_runs[Task.SEGMENTATION]
    assert run.trained.weights == run.ctx.out_dir / "model.safetensors"
    assert run.trained.weights.is_file()
    # No pickles left behind but the trial's last state, kept to extend it (never registered with the model).
    assert [p.name for p in run.ctx.out_dir.rglob("*.pt")] == ["resume.pt"]
    assert run.trained.settings == {
        "img_size": 64, "model_size": "nano", "box_score_thresh": 0.001, "nms_iou_thresh": 0.5,
        "box_detections_per_img": 100, "mask_pixel_score_threshold": 0.5,
        "max_number_of_polygon_points": 12}
    json.dumps(run.trained.evaluation)


def _predict(run: Run, count: int = 3) -> list[dict[str, Any]]:
    predictor = UltralyticsFamily().load(run.ctx.out_dir, "cpu")
    assert predictor.task is run.data.task and predictor.classes == run.data.classes
    images = [Image.open(item.path) for item in run.data.validation[:count]]
    predictions = predictor.predict(images)
    assert len(predictions) == len(images)
    return [p.to_json(with_polygons=run.data.task is Task.SEGMENTATION) for p in predictions]


def test_a_reloaded_detector_answers_in_the_scoring_schema(short_runs: dict[Task, Run]) -> None:
    run = short_runs[Task.DETECTION]
    answers = _predict(run)
    check_scoring_answers(answers, run.data.classes, polygons=False)


def test_a_yolo_answer_explains_each_best_box_with_a_d_rise_map(short_runs: dict[Task, Run]) -> None:
    """The endpoint's one path (answer_json) on a real YOLO model: the best boxes each carry a heat map of
    the image's size; the rest of the answer is what it is without explanations."""
    from core.inference.predict import answer_json

    run = short_runs[Task.DETECTION]
    predictor = UltralyticsFamily().load(run.ctx.out_dir, "cpu")
    image = Image.open(run.data.validation[0].path)
    plain, explained = answer_json(predictor, [image, image], ["a", "b"],
                                   [None, {"number_of_masks": 16, "max_boxes": 2, "attributions": True}])
    assert [b["box"] for b in plain["boxes"]] == [b["box"] for b in explained["boxes"]]
    boxes = explained["boxes"]
    assert len(boxes) > 2  # a threshold of 0.001: several boxes, the two best explained
    assert all("visualizations" in b for b in boxes[:2]) and not any("visualizations" in b for b in boxes[2:])
    for box in boxes[:2]:
        picture = Image.open(io.BytesIO(base64.b64decode(box["visualizations"])))
        assert picture.size == image.size
        grid = np.asarray(box["attributions"])
        assert grid.shape == (64, 64) and 0 <= grid.min() and grid.max() <= 1


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def test_a_yolo_trial_keeps_its_whole_last_state_and_an_extension_trains_on_from_it(
        short_runs: dict[Task, Run], one_thread: None, tmp_path: Path) -> None:
    """After two epochs the trial keeps last.pt with the optimizer (ultralytics strips its own copy); a trial
    seeded with it as its checkpoint and planned for three epochs trains only epoch 3, in its own folder."""
    from ultralytics.nn.tasks import load_checkpoint

    from core.train.loop import CHECKPOINT_FILE, RESUME_FILE

    first = short_runs[Task.DETECTION]
    assert first.trained.resume_epoch == 2
    _, kept = load_checkpoint(first.ctx.out_dir / RESUME_FILE)
    assert kept["optimizer"] is not None and kept["epoch"] == 1  # ultralytics counts epochs from 0
    before = _files(first.ctx.out_dir)
    out = tmp_path / "extension"
    out.mkdir()
    shutil.copyfile(first.ctx.out_dir / RESUME_FILE, out / CHECKPOINT_FILE)
    params = resolve_params(Task.DETECTION, {"early_stopping": False, "training_batch_size": 8, "model_name": "yolov8n",
                                             "number_of_epochs": 3, "img_size": 64, "box_score_threshold": 0.001})
    family = UltralyticsFamily()
    ctx = MemoryContext(out)
    trained = family.train(family.resolve("yolov8n", params, Task.DETECTION), first.data, params, ctx)
    assert [step for step, _ in ctx.reports] == [3] and trained.epochs_run == 3 and trained.resume_epoch == 3
    assert _files(first.ctx.out_dir) == before  # nothing written into the first trial's folder
    assert (out / RESUME_FILE).is_file() and not (out / CHECKPOINT_FILE).exists()  # what it started from is gone


def test_a_reloaded_segmenter_answers_with_polygons(short_runs: dict[Task, Run]) -> None:
    run = short_runs[Task.SEGMENTATION]
    check_scoring_answers(_predict(run), run.data.classes, polygons=True)


def _fitting_tensors(run: Run) -> tuple[int, int]:
    notice = next(n for n in run.trained.notices if n.startswith("started from pretrained weights"))
    found = re.search(r"(\d+) of (\d+) tensors", notice)
    assert found, notice
    return int(found[1]), int(found[2])


def test_training_starts_from_a_saved_model_or_a_users_ultralytics_checkpoint(
        short_runs: dict[Task, Run], one_thread: None, tmp_path: Path) -> None:
    earlier = short_runs[Task.DETECTION]
    again = _train(earlier.data, tmp_path / "again", model_name="yolov8n", number_of_epochs=1,
                   img_size=64, checkpoint_path=str(earlier.trained.weights))
    fit, total = _fitting_tensors(again)
    assert fit == total and not any("from scratch" in n for n in again.trained.notices)

    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    user_file = tmp_path / "user.pt"  # what ultralytics saves: a pickled model, here for 80 classes
    torch.save({"model": DetectionModel(yaml_model_load("yolov8n.yaml"), verbose=False)}, user_file)
    transferred = _train(earlier.data, tmp_path / "user", model_name="yolov8n", number_of_epochs=1,
                         img_size=64, pretrained_weights=str(user_file))
    fit, total = _fitting_tensors(transferred)
    assert 0.85 * total < fit < total  # all but the class branch, whose width follows the classes


def test_a_stop_request_ends_training_after_the_current_batch(
        datasets: dict[str, VersionData], one_thread: None, tmp_path: Path) -> None:
    run = _train(datasets["detection"], tmp_path / "stopped", StopAfterFirstBatch, model_name="yolov8n",
                 number_of_epochs=5, img_size=64)
    assert run.trained.epochs_run == 1 and len(run.ctx.reports) == 1
    assert any("cancelled" in notice for notice in run.trained.notices)
    assert run.trained.weights.is_file()


def test_early_stopping_waits_out_the_delay_before_patience_counts(tmp_path: Path) -> None:
    """From scratch, YOLO's mAP stays near 0 for many epochs before it climbs; ultralytics' own early
    stopping knows no delay and ended such a trial after 6 of 40 epochs. The bridge stops with the job's
    early_stopping_patience and early_stopping_delay, as the other families do."""
    def epoch_end(bridge: _Bridge, epoch: int, map_50: float) -> bool:
        trainer = SimpleNamespace(epoch=epoch, nb=1, stop=False, tloss=[0.5], last="missing.pt",
                                  metrics={"metrics/mAP50(B)": map_50, "metrics/mAP50-95(B)": map_50 / 2})
        bridge.on_fit_epoch_end(trainer)
        return bool(trainer.stop)

    flat = _Bridge(MemoryContext(tmp_path), Task.DETECTION, "voc", [], EarlyStopping(patience=2, delay=4))
    stops = [epoch_end(flat, epoch, 0.0) for epoch in range(6)]
    assert stops == [False] * 5 + [True] and flat.stop_reason == "early_stopping"  # 4 waited, then 2 stale
    assert [step for step, _ in flat.ctx.reports] == [1, 2, 3, 4, 5, 6]

    climbing = _Bridge(MemoryContext(tmp_path), Task.DETECTION, "voc", [], EarlyStopping(patience=2, delay=4))
    assert not any(epoch_end(climbing, epoch, value) for epoch, value in enumerate([0, 0, 0, 0, 0.2, 0.2, 0.3]))
    assert climbing.stop_reason == ""


def test_learning_is_real(datasets: dict[str, VersionData], one_thread: None, tmp_path: Path) -> None:
    """yolov8n from scratch on the shapes sample (32 train / 8 validation images, 128 px)."""
    run = _train(datasets["learning"], tmp_path / "learn", model_name="yolov8n", number_of_epochs=40,
                 img_size=128, learning_rate=0.01, box_score_threshold=0.1)
    assert run.ctx.reports[0][1]["map_50"] < 0.05  # where an untrained model is
    assert run.trained.metrics["map_50"] >= LEARNING_BAR, (run.trained.metrics, run.seconds)


def test_segmentation_learning_is_real(datasets: dict[str, VersionData], one_thread: None,
                                       tmp_path: Path) -> None:
    """yolov8n-seg from scratch on the shapes sample: mask mAP@0.5 (the primary metric)."""
    run = _train(datasets["learning-seg"], tmp_path / "learn-seg", model_name="yolov8n-seg",
                 number_of_epochs=40, img_size=128, learning_rate=0.01, box_score_threshold=0.1)
    assert run.ctx.reports[0][1]["mean_average_precision"] < 0.05  # where an untrained model is
    assert run.trained.metrics["mean_average_precision"] >= LEARNING_BAR, (run.trained.metrics, run.seconds)


def test_a_tiled_yolo_trial_trains_validates_and_predicts_on_each_image_and_its_tiles(
        datasets: dict[str, VersionData], one_thread: None, tmp_path: Path) -> None:
    run = _train(datasets["detection"], tmp_path / "tiled", model_name="yolov8n", number_of_epochs=1, img_size=64,
                 box_score_threshold=0.001, tile_grid_size="2x2")
    for split, count in (("train", len(run.data.train)), ("val", len(run.data.validation))):
        written = [p.name for p in (run.ctx.out_dir / "data" / "images" / split).iterdir()]
        assert len(written) == 5 * count and sum("-t" in name for name in written) == 4 * count
    assert run.trained.settings["tile_grid_size"] == [2, 2]
    assert run.trained.settings["tile_overlap_ratio"] == 0.25
    predictor = UltralyticsFamily().load(run.ctx.out_dir, "cpu")
    seen: list[tuple[int, int]] = []
    forward = predictor._predict
    predictor._predict = lambda images: seen.extend(i.size for i in images) or forward(images)  # type: ignore[method-assign]
    image = Image.open(run.data.validation[0].path)
    answers = [p.to_json() for p in predictor.predict([image])]
    check_scoring_answers(answers, run.data.classes, polygons=False)
    assert answers[0]["filename"] == Path(run.data.validation[0].path).name
    assert len(seen) == 5 and seen[0] == image.size and all(w < image.width for w, _ in seen[1:])


def test_ultralytics_experiment_trackers_are_off_for_kestrels_runs_and_the_users_settings_stay() -> None:
    """With mlflow installed, ultralytics' callback would write ./mlruns into the working folder of every run
    (its trackers are skipped under pytest, so the settings are what is checked)."""
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    from core.zoo.ultralytics_env import INTEGRATIONS, offline_ultralytics

    saved = (USER_CONFIG_DIR / "settings.json").read_text()
    offline_ultralytics()
    assert not any(SETTINGS.get(tracker) for tracker in INTEGRATIONS)
    assert (USER_CONFIG_DIR / "settings.json").read_text() == saved
