"""Detection and instance-segmentation metrics for every family, computed by pycocotools' COCOeval.

One function turns ground-truth items and predictions (both normalised xyxy, as everywhere in the
engine) into the flat metrics a trial reports and an evaluation document (per-class AP, PR curves).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from core.base.prediction import Detection, Prediction
from core.base.tasks import Task
from core.data.records import Instance

PR_CURVE_POINTS = 21  # COCOeval samples recall at 101 points; every 5th is plenty for a chart
METRIC_NAMES = ("mean_average_precision", "map_50", "map_50_95", "precision", "recall")


class Scorable(Protocol):
    task: Task

    def predict(self, images: list[Image.Image]) -> list[Prediction]: ...


class GroundTruth(Protocol):
    """What the metrics need of an image: its size and its labelled instances (``Item`` fits)."""

    width: int
    height: int
    instances: tuple[Instance, ...]


def detection_metrics(ground_truth: Sequence[GroundTruth], predictions: Sequence[Prediction],
                      classes: Sequence[str], metric_type: str = "voc", masks: bool = False,
                      ) -> tuple[dict[str, float], dict[str, Any]]:
    """Flat metrics and an evaluation document for ``predictions[i]`` against ``ground_truth[i]``.

    ``mean_average_precision`` follows the reference: mAP@0.5 for ``voc`` (and ``coco_voc``,
    ``none``), mAP@[.5:.95] for ``coco``; ``map_50`` and ``map_50_95`` are always given. As in
    COCO, a class without ground truth is left out of the means. ``precision`` and ``recall``
    count matches at IoU 0.5 over every prediction given, i.e. at the score threshold the
    predictor used (its ``box_score_thresh``). With ``masks`` the unprefixed values are the
    mask (segm) ones and the box values are repeated under ``box_*`` names.
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(predictions)} predictions")
    index = {name: k for k, name in enumerate(classes)}
    gt = _coco(_images(ground_truth), classes, _gt_annotations(ground_truth, index, masks))
    dt = _coco(_images(ground_truth), classes, _dt_annotations(ground_truth, predictions, index, masks))
    flat, evaluation = _evaluate(gt, dt, "segm" if masks else "bbox", classes, metric_type)
    evaluation = {"metric_type": metric_type, "iou_type": "segm" if masks else "bbox", **evaluation}
    if masks:
        box_flat, box_evaluation = _evaluate(gt, dt, "bbox", classes, metric_type)
        flat.update({f"box_{k}": v for k, v in box_flat.items()})
        evaluation["box"] = box_evaluation
    return flat, evaluation


def score_predictor(predictor: Scorable, items: Sequence[Any], classes: Sequence[str],
                    metric_type: str = "voc", batch_size: int = 8
                    ) -> tuple[dict[str, float], dict[str, Any]]:
    """``detection_metrics`` of a predictor on dataset items (``Item``: image ``path`` and labels)."""
    predictions: list[Prediction] = []
    for start in range(0, len(items), batch_size):
        images = []
        for item in items[start:start + batch_size]:
            with Image.open(item.path) as image:
                images.append(image.convert("RGB"))
        predictions += predictor.predict(images)
    return detection_metrics(items, predictions, classes, metric_type,
                             masks=predictor.task is Task.SEGMENTATION)


def _images(ground_truth: Sequence[GroundTruth]) -> list[dict[str, int]]:
    return [{"id": i + 1, "width": g.width, "height": g.height} for i, g in enumerate(ground_truth)]


def _coco(images: list[dict[str, int]], classes: Sequence[str], annotations: list[dict[str, Any]]
          ) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": k + 1, "name": name} for k, name in enumerate(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _category(label: str, index: dict[str, int]) -> int:
    if label not in index:
        raise ValueError(f"label {label!r} is not one of the classes {sorted(index)}")
    return index[label] + 1


def _pixel_box(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> list[float]:
    return [x0 * w, y0 * h, max(x1 - x0, 0.0) * w, max(y1 - y0, 0.0) * h]


def _rle(polygons: Sequence[Sequence[float]], box: list[float], w: int, h: int) -> dict[str, Any]:
    """One RLE mask for an instance: its polygons merged, or its box when it has none."""
    pixel = [[v * (w if k % 2 == 0 else h) for k, v in enumerate(p)] for p in polygons if len(p) >= 6]
    if not pixel:
        x, y, bw, bh = box
        pixel = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    return mask_utils.merge(mask_utils.frPyObjects(pixel, h, w))


def _annotation(image_id: int, category: int, box: list[float], segmentation: dict[str, Any] | None,
                **extra: Any) -> dict[str, Any]:
    ann = {"image_id": image_id, "category_id": category, "bbox": box, **extra}
    if segmentation is not None:
        ann["segmentation"] = segmentation
        ann["area"] = float(mask_utils.area(segmentation))
    else:
        ann["area"] = box[2] * box[3]
    return ann


def _gt_annotations(ground_truth: Sequence[GroundTruth], index: dict[str, int], masks: bool
                    ) -> list[dict[str, Any]]:
    anns = []
    for i, item in enumerate(ground_truth):
        for inst in item.instances:
            box = _pixel_box(inst.x0, inst.y0, inst.x1, inst.y1, item.width, item.height)
            seg = _rle(inst.polygons, box, item.width, item.height) if masks else None
            anns.append(_annotation(i + 1, _category(inst.label, index), box, seg,
                                    iscrowd=int(inst.is_crowd), id=len(anns) + 1))
    return anns


def _dt_annotations(ground_truth: Sequence[GroundTruth], predictions: Sequence[Prediction],
                    index: dict[str, int], masks: bool) -> list[dict[str, Any]]:
    anns = []
    for i, (item, prediction) in enumerate(zip(ground_truth, predictions, strict=True)):
        for d in prediction.detections:
            anns.append(_detection(i + 1, d, item, index, masks, len(anns) + 1))
    return anns


def _detection(image_id: int, d: Detection, item: GroundTruth, index: dict[str, int], masks: bool,
               ann_id: int) -> dict[str, Any]:
    box = _pixel_box(d.x0, d.y0, d.x1, d.y1, item.width, item.height)
    seg = _rle(d.polygons, box, item.width, item.height) if masks else None
    return _annotation(image_id, _category(d.label, index), box, seg, score=float(d.score), iscrowd=0,
                       id=ann_id)


def _evaluate(gt: COCO, dt: COCO, iou_type: str, classes: Sequence[str], metric_type: str
              ) -> tuple[dict[str, float], dict[str, Any]]:
    coco_eval = COCOeval(gt, dt, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress
        coco_eval.evaluate()
        coco_eval.accumulate()
    # precision[T, R, K, A, M]: IoU thresholds x 101 recall points x classes x area ranges x maxDets;
    # -1 marks a class without ground truth. Area "all" and the largest maxDets, as COCO's AP.
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]
    counts = _match_counts(coco_eval, len(classes))
    map_50, map_50_95 = _mean(precision[0]), _mean(precision)
    tp, fp, npos = counts.sum(axis=0)
    flat = {
        "mean_average_precision": map_50_95 if metric_type == "coco" else map_50,
        "map_50": map_50, "map_50_95": map_50_95,
        "precision": round(float(tp / (tp + fp)), 6) if tp + fp else 0.0,
        "recall": round(float(tp / npos), 6) if npos else 0.0,
    }
    per_class, curves = [], {}
    for k, name in enumerate(classes):
        ap_50, ap_50_95 = _class_ap(precision[0, :, k]), _class_ap(precision[:, :, k])
        tp_k, fp_k, npos_k = counts[k]
        per_class.append({
            "class": name, "ground_truth": int(npos_k), "true_positives": int(tp_k),
            "false_positives": int(fp_k),
            "average_precision": ap_50_95 if metric_type == "coco" else ap_50,
            "ap_50": ap_50, "ap_50_95": ap_50_95,
            "precision": round(float(tp_k / (tp_k + fp_k)), 6) if tp_k + fp_k else None,
            "recall": round(float(tp_k / npos_k), 6) if npos_k else None,
        })
        curves[name] = _pr_curve(coco_eval.params.recThrs, precision[0, :, k])
    return flat, {"per_class": per_class, "pr_curves": curves}


def _mean(values: np.ndarray) -> float:
    present = values[values > -1]
    return round(float(present.mean()), 6) if present.size else 0.0


def _class_ap(values: np.ndarray) -> float | None:
    present = values[values > -1]
    return round(float(present.mean()), 6) if present.size else None


def _pr_curve(recall: np.ndarray, precision: np.ndarray) -> dict[str, list[float]] | None:
    """Precision by recall at IoU 0.5 (COCO's interpolated curve), or None without ground truth."""
    if not (precision > -1).any():
        return None
    step = max(1, (len(recall) - 1) // (PR_CURVE_POINTS - 1))
    return {"recall": [round(float(r), 4) for r in recall[::step]],
            "precision": [round(float(max(p, 0.0)), 4) for p in precision[::step]]}


def _match_counts(coco_eval: COCOeval, n_classes: int) -> np.ndarray:
    """Per class: true positives, false positives and ground truths at IoU 0.5 (crowds ignored)."""
    counts = np.zeros((n_classes, 3), dtype=np.int64)
    n_areas, n_images = len(coco_eval.params.areaRng), len(coco_eval.params.imgIds)
    for k in range(n_classes):
        for e in coco_eval.evalImgs[k * n_areas * n_images:(k * n_areas + 1) * n_images]:  # area "all"
            if e is None:
                continue
            matched, ignored = e["dtMatches"][0] > 0, e["dtIgnore"][0].astype(bool)
            counts[k] += (int((matched & ~ignored).sum()), int((~matched & ~ignored).sum()),
                          int((~np.asarray(e["gtIgnore"], dtype=bool)).sum()))
    return counts
