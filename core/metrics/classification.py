"""Classification metrics (multi-class and multi-label) under the reference's metric names.

`classification_metrics` returns a flat dict of plain floats (what a trial reports and a
leaderboard sorts by) and an evaluation dict (per-class table, confusion matrices, PR and ROC
curves) for the trial page. Both are JSON-serialisable. Averages follow scikit-learn, which the
reference uses: macro = mean over the classes that occur (in targets or predictions; for AUC
and average precision, classes with positives and negatives), weighted = by true support.
A metric with no defined value (e.g. AUC with a single class in the validation set) is left out
rather than reported as 0 or NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional import classification as tmf

CURVE_POINTS = 101
EPS = 1e-15  # probability clip for log loss, as scikit-learn


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                           multilabel: bool, threshold: float = 0.5
                           ) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of ``probs`` [N, C] against class indices [N] or multi-hot rows [N, C]."""
    probs = probs.detach().float().cpu()
    targets = targets.detach().cpu()
    with warnings.catch_warnings():  # torchmetrics warns on absent classes; we handle them below
        warnings.simplefilter("ignore", UserWarning)
        if multilabel:
            return _multilabel(probs, targets.long(), list(classes), threshold)
        return _multiclass(probs, targets.long(), list(classes))


def _multiclass(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]
                ) -> tuple[dict[str, float], dict[str, Any]]:
    n = len(classes)
    preds = probs.argmax(dim=1)
    support = torch.bincount(targets, minlength=n).float()
    predicted = torch.bincount(preds, minlength=n).float()
    per_class = {
        "precision": tmf.multiclass_precision(preds, targets, n, average=None),
        "recall": tmf.multiclass_recall(preds, targets, n, average=None),
        "f1": tmf.multiclass_f1_score(preds, targets, n, average=None),
        "auc": tmf.multiclass_auroc(probs, targets, n, average=None),
        "average_precision": tmf.multiclass_average_precision(probs, targets, n, average=None),
    }
    flat = {"accuracy": float((preds == targets).float().mean()) if len(targets) else 0.0}
    flat |= _averages(per_class, support, occurs=(support + predicted) > 0,
                      ranked=(support > 0) & (support < len(targets)))
    picked = probs[torch.arange(len(targets)), targets].clamp(EPS, 1.0)
    flat["log_loss"] = float(-picked.log().mean()) if len(targets) else 0.0
    matrix = tmf.multiclass_confusion_matrix(preds, targets, n)
    evaluation = {
        "per_class": _table(classes, per_class, support),
        "confusion_matrix": {"classes": classes, "matrix": matrix.tolist()},
        "pr_curves": _curves(classes, tmf.multiclass_precision_recall_curve(probs, targets, n),
                             ("precision", "recall"), support),
        "roc_curves": _curves(classes, tmf.multiclass_roc(probs, targets, n), ("fpr", "tpr"), support),
    }
    return flat, evaluation


def _multilabel(probs: torch.Tensor, targets: torch.Tensor, classes: list[str], threshold: float
                ) -> tuple[dict[str, float], dict[str, Any]]:
    n = len(classes)
    preds = (probs >= threshold).long()  # the same rule the predictor's threshold uses
    support = targets.sum(dim=0).float()
    per_class = {
        "precision": tmf.multilabel_precision(preds, targets, n, average=None),
        "recall": tmf.multilabel_recall(preds, targets, n, average=None),
        "f1": tmf.multilabel_f1_score(preds, targets, n, average=None),
        "auc": tmf.multilabel_auroc(probs, targets, n, average=None),
        "average_precision": tmf.multilabel_average_precision(probs, targets, n, average=None),
    }
    # Exact-match (subset) accuracy: scikit-learn's accuracy_score on label sets.
    flat = {"accuracy": float((preds == targets).all(dim=1).float().mean()) if len(targets) else 0.0}
    flat["iou"] = samples_iou(preds, targets)
    flat |= _averages(per_class, support, occurs=(support + preds.sum(dim=0)) > 0,
                      ranked=(support > 0) & (support < len(targets)))
    clipped = probs.clamp(EPS, 1 - EPS)
    bce = -(targets * clipped.log() + (1 - targets) * (1 - clipped).log())
    flat["log_loss"] = float(bce.mean()) if len(targets) else 0.0
    for name, value in zip(classes, per_class["f1"].tolist(), strict=True):
        flat[f"f1_score_label_{name}"] = float(value)
    matrices = tmf.multilabel_confusion_matrix(preds, targets, n)  # [C, 2, 2]: [[tn, fp], [fn, tp]]
    evaluation = {
        "per_class": _table(classes, per_class, support),
        "confusion_matrix": {"classes": classes, "layout": [["tn", "fp"], ["fn", "tp"]],
                             "matrices": matrices.tolist()},
        "pr_curves": _curves(classes, tmf.multilabel_precision_recall_curve(probs, targets, n),
                             ("precision", "recall"), support),
        "roc_curves": _curves(classes, tmf.multilabel_roc(probs, targets, n), ("fpr", "tpr"), support),
    }
    return flat, evaluation


def samples_iou(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over images of |predicted ∩ true| / |predicted ∪ true|; an empty union counts as 1."""
    if len(targets) == 0:
        return 0.0
    inter = (preds.bool() & targets.bool()).sum(dim=1).float()
    union = (preds.bool() | targets.bool()).sum(dim=1).float()
    per_image = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return float(per_image.mean())


def _averages(per_class: dict[str, torch.Tensor], support: torch.Tensor, occurs: torch.Tensor,
              ranked: torch.Tensor) -> dict[str, float]:
    """Macro and weighted averages under the reference names."""
    names = {"precision": "precision_score", "recall": "recall_score", "f1": "f1_score",
             "auc": "AUC", "average_precision": "average_precision_score"}
    out: dict[str, float] = {}
    for key, name in names.items():
        # Threshold metrics count every class that occurs; ranking metrics need both sides.
        keep = ranked if key in ("auc", "average_precision") else occurs
        if not bool(keep.any()):
            continue
        values = per_class[key].float()
        out[f"{name}_macro"] = float(values[keep].mean())
        weights = support * keep
        if float(weights.sum()) > 0:
            out[f"{name}_weighted"] = float((values * weights).sum() / weights.sum())
    return out


def _table(classes: list[str], per_class: dict[str, torch.Tensor], support: torch.Tensor
           ) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(classes):
        row: dict[str, Any] = {"class": name}
        row |= {key: _number(float(values[i])) for key, values in per_class.items()}
        row["support"] = int(support[i])
        if row["support"] == 0:  # no positives: ranking metrics are undefined, not zero
            row["auc"] = row["average_precision"] = None
        rows.append(row)
    return rows


def _curves(classes: list[str], curves: tuple[Any, ...], keys: tuple[str, str],
            support: torch.Tensor) -> dict[str, dict[str, list[float]]]:
    """Per-class curves downsampled to at most CURVE_POINTS points; empty for absent classes."""
    first, second, thresholds = curves
    out: dict[str, dict[str, list[float]]] = {}
    for i, name in enumerate(classes):
        if support[i] == 0:
            out[name] = {keys[0]: [], keys[1]: [], "thresholds": []}
            continue
        a, b, t = first[i].float(), second[i].float(), thresholds[i].float()
        if len(t) < len(a):  # PR curves end with (precision 1, recall 0), which has no threshold
            t = torch.cat([t, torch.ones(len(a) - len(t))])
        keep = torch.linspace(0, len(a) - 1, min(len(a), CURVE_POINTS)).round().long().unique()
        out[name] = {keys[0]: _numbers(a[keep]), keys[1]: _numbers(b[keep]),
                     "thresholds": _numbers(t[keep])}
    return out


def _numbers(values: torch.Tensor) -> list[float]:
    return [_number(v) for v in values.tolist()]


def _number(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else 0.0
