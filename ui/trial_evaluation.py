"""The trial page's evaluation of a finished trial: the confusion matrix (its cells open their images),
PR and ROC curves, per-class tables, and validation images with prediction beside ground truth."""

from __future__ import annotations

import functools
import io
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core.data.draw import Overlay, draw_labels
from storage.db import session_scope
from storage.repos import datasets, jobs
from storage.tables import Trial
from ui import common as _ui

CELL_COLUMNS = 6
SAMPLE_COLUMNS = 4  # two ground-truth/prediction pairs per row
SAMPLE_SIDE = 320  # small images (tiles, icons) are enlarged to it, so their labels stay readable


# --- the evaluation: confusion matrix, PR curves, per-class table -----------------------------------

def _confusion(matrix: dict[str, Any], trial_id: int) -> None:
    names = list(matrix.get("classes") or [])
    clickable: dict[str, Any] = {}
    if matrix.get("matrix"):
        figure = px.imshow(matrix["matrix"], x=names, y=names, text_auto=True, color_continuous_scale="Blues",
                           labels={"x": "predicted", "y": "true", "color": "images"}, title="Confusion matrix")
        if matrix.get("cells"):
            # A heatmap sends no selection events (streamlit#8760); an invisible marker on each cell does.
            figure.add_trace(go.Scatter(
                x=[names[c["predicted"]] for c in matrix["cells"]], y=[names[c["true"]] for c in matrix["cells"]],
                mode="markers", marker={"size": 40, "opacity": 0}, showlegend=False,
                hovertemplate="true %{y}, predicted %{x}: click to see the images<extra></extra>"))
            clickable = {"on_select": functools.partial(_pick_cell, trial_id), "selection_mode": "points"}
    elif matrix.get("matrices"):  # multi-label: one 2x2 matrix per class, [[tn, fp], [fn, tp]]
        rows = [[m[0][0], m[0][1], m[1][0], m[1][1]] for m in matrix["matrices"]]
        figure = px.imshow(rows, x=["true negative", "false positive", "false negative", "true positive"],
                           y=names, text_auto=True, color_continuous_scale="Blues",
                           labels={"color": "images"}, title="Confusion per class")
    else:
        return
    st.plotly_chart(figure.update_xaxes(side="bottom"), key="trial_confusion", **clickable)


def _pick_cell(trial_id: int) -> None:
    """A click on the matrix chooses the cell whose images are shown below it."""
    points = st.session_state["trial_confusion"]["selection"]["points"]
    if points:
        st.session_state[f"trial_{trial_id}_cell_true"] = points[0]["y"]
        st.session_state[f"trial_{trial_id}_cell_predicted"] = points[0]["x"]


def _cell_images(matrix: dict[str, Any], classes: list[str], trial_id: int) -> None:
    """The validation images behind one cell of the confusion matrix: clicked on it, or chosen here.
    The most frequent mistake is shown first."""
    names, cells = list(matrix.get("classes") or []), matrix.get("cells") or []
    if not cells:
        return
    by_cell = {(names[c["true"]], names[c["predicted"]]): c["images"] for c in cells}
    counts = matrix["matrix"]
    worst = max(cells, key=lambda c: (c["true"] != c["predicted"], counts[c["true"]][c["predicted"]]))
    keys = f"trial_{trial_id}_cell_true", f"trial_{trial_id}_cell_predicted"  # per trial: classes differ
    st.session_state.setdefault(keys[0], names[worst["true"]])
    st.session_state.setdefault(keys[1], names[worst["predicted"]])
    st.markdown("**Images of a cell** — click a cell of the matrix, or choose it here")
    left, right = st.columns(2)
    true = left.selectbox("True class", names, key=keys[0])
    predicted = right.selectbox("Predicted class", names, key=keys[1])
    images = by_cell.get((true, predicted), [])
    count = counts[names.index(true)][names.index(predicted)]
    if not images:
        st.caption(f"No validation image of {true} was predicted as {predicted}.")
        return
    shown = f"the first {len(images)} of {count}" if count > len(images) else f"all {count}"
    st.caption(f"True {true}, predicted {predicted}: {shown}.")
    columns = st.columns(CELL_COLUMNS)
    for k, image in enumerate(images):
        png = _sample_png(str(_ui.blob_path(str(image.get("blob", "")))), tuple(classes), ())
        if png is None:
            columns[k % CELL_COLUMNS].warning(f"{image.get('image')}: missing from the blob store.")
        else:
            columns[k % CELL_COLUMNS].image(png, caption=str(image.get("image")), width="stretch")


def _curve_chart(curves: dict[str, Any], x: str, y: str, classes: list[str], title: str, key: str) -> None:
    rows = [{"class": name, x: a, y: b} for name, curve in (curves or {}).items() if curve
            for a, b in zip(curve.get(x) or [], curve.get(y) or [], strict=False)]
    if not rows:
        st.caption(f"{title}: no class has positives in the validation set.")
        return
    figure = px.line(pd.DataFrame(rows), x=x, y=y, color="class", color_discrete_map=_ui.colour_map(classes),
                     title=title, range_x=[0, 1], range_y=[0, 1.05])
    st.plotly_chart(figure, key=key)


def _ap_bars(rows: list[dict[str, Any]], classes: list[str]) -> None:
    """Each class's average precision as a bar, so the weak classes stand out."""
    frame = pd.DataFrame([{"class": r["class"], "average precision": r.get("average_precision") or 0.0}
                          for r in rows if "class" in r])
    figure = px.bar(frame, x="class", y="average precision", color="class", range_y=[0, 1],
                    color_discrete_map=_ui.colour_map(classes), title="Average precision per class")
    st.plotly_chart(figure.update_layout(showlegend=False), key="trial_ap")


def _recall_bars(rows: list[dict[str, Any]], classes: list[str], params: dict[str, Any]) -> None:
    """Each class's recall, so that a class the model rarely finds stands out; and whether training
    compensated for imbalanced classes (`core.train.recipe.balanced`)."""
    found = [r for r in rows if "class" in r and r.get("recall") is not None]
    if not found:
        return
    frame = pd.DataFrame([{"class": r["class"], "recall": r["recall"]} for r in found])
    figure = px.bar(frame, x="class", y="recall", color="class", range_y=[0, 1.05], title="Recall per class",
                    color_discrete_map=_ui.colour_map(classes))
    st.plotly_chart(figure.update_layout(showlegend=False), key="trial_recall")
    if params.get("weighted_loss"):
        st.caption(f"Trained with a class-weighted loss (weighted_loss {params['weighted_loss']}): mistakes on "
                   "rare classes counted more.")
    elif params.get("repeat_factor_sampling"):
        st.caption("Trained with repeat-factor sampling: images of rare classes were shown more often.")


def _per_class_table(rows: list[dict[str, Any]], trial_id: int, key: str) -> None:
    if not rows:
        return
    frame = pd.DataFrame(rows)
    st.dataframe(frame, hide_index=True, key=key)
    st.download_button("Download CSV", frame.to_csv(index=False), file_name=f"trial-{trial_id}-{key}.csv",
                       mime="text/csv", key=f"{key}_csv", on_click="ignore")


def evaluation(evaluation: dict[str, Any], classes: list[str], trial_id: int, params: dict[str, Any]) -> None:
    """``params``: the trial's resolved training parameters."""
    st.subheader("Evaluation on the validation images")
    if not evaluation.get("per_class"):
        st.info("This trial wrote no evaluation: it is saved when training ends with a model.")
        return
    is_detection = "iou_type" in evaluation
    left, right = st.columns(2)
    with left:
        if is_detection:
            _curve_chart(evaluation.get("pr_curves") or {}, "recall", "precision", classes,
                         "Precision–recall at IoU 0.5", "trial_pr")
        else:
            _confusion(evaluation.get("confusion_matrix") or {}, trial_id)
    with right:
        if is_detection:
            _ap_bars(evaluation["per_class"], classes)
            st.caption(f"Average precision follows `{evaluation.get('metric_type', 'voc')}`; "
                       f"{'mask' if evaluation.get('iou_type') == 'segm' else 'box'} IoU. Each class's "
                       "ground truth, matches at IoU 0.5 and AP are in the table below.")
        else:
            _curve_chart(evaluation.get("pr_curves") or {}, "recall", "precision", classes,
                         "Precision–recall per class", "trial_pr")
    if not is_detection:
        _cell_images(evaluation.get("confusion_matrix") or {}, classes, trial_id)
    if not is_detection and evaluation.get("roc_curves"):
        with st.expander("ROC curves"):
            _curve_chart(evaluation["roc_curves"], "fpr", "tpr", classes, "ROC per class", "trial_roc")
    _recall_bars(evaluation["per_class"], classes, params)
    _per_class_table(evaluation["per_class"], trial_id, "trial_per_class")
    if box := evaluation.get("box"):  # segmentation: the box metrics beside the mask ones
        with st.expander("Box metrics"):
            _curve_chart(box.get("pr_curves") or {}, "recall", "precision", classes,
                         "Box precision–recall at IoU 0.5", "trial_box_pr")
            _per_class_table(box.get("per_class") or [], trial_id, "trial_box_per_class")


# --- validation images ----------------------------------------------------------------------------

def _overlays(entries: list[dict[str, Any]]) -> tuple[Overlay, ...]:
    return tuple(Overlay(e["label"], tuple(e["box"]) if e.get("box") else None,  # type: ignore[arg-type]
                         tuple(tuple(p) for p in e.get("polygons") or ()), e.get("score"))
                 for e in entries if "label" in e)


def samples(trial: Trial, evaluation: dict[str, Any], classes: list[str]) -> None:
    st.subheader("Validation images")
    samples = evaluation.get("samples") or []
    if not samples:
        _ground_truth_only(trial, classes)
        return
    st.caption("Ground truth (left) beside the model's prediction (right), first validation images.")
    pairs = SAMPLE_COLUMNS // 2
    for start in range(0, len(samples), pairs):
        columns = st.columns(SAMPLE_COLUMNS)
        for k, sample in enumerate(samples[start:start + pairs]):
            path = str(_ui.blob_path(str(sample.get("blob", ""))))
            truth = _sample_png(path, tuple(classes), _overlays(sample.get("truth") or []))
            predicted = _overlays(sample.get("predicted") or [])
            guess = _sample_png(path, tuple(classes), predicted)
            if truth is None or guess is None:
                columns[2 * k].warning(f"{sample.get('image')}: the image file is missing from the blob store.")
                continue
            columns[2 * k].image(truth, caption=f"{sample.get('image')}: ground truth", width="stretch")
            columns[2 * k + 1].image(guess, caption=f"predicted: {_said(predicted)}", width="stretch")


@st.cache_data(max_entries=500, show_spinner=False)
def _sample_png(path: str, classes: tuple[str, ...], overlays: tuple[Overlay, ...]) -> bytes | None:
    """The image at SAMPLE_SIDE (larger ones shrunk, smaller ones enlarged) with ``overlays`` drawn."""
    try:
        with Image.open(path) as image:
            scale = SAMPLE_SIDE / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            # Enlarged pixels stay sharp squares: blurring a 32-pixel tile helps nobody.
            resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
            picture = image.convert("RGB").resize(size, resample)
    except (OSError, ValueError):
        return None
    buffer = io.BytesIO()
    draw_labels(picture, classes, overlays).save(buffer, format="PNG")
    return buffer.getvalue()


def _said(predicted: tuple[Overlay, ...]) -> str:
    if not predicted:
        return "nothing"
    if all(o.is_tag for o in predicted):
        return ", ".join(o.caption for o in predicted)
    return f"{len(predicted)} object{'s' if len(predicted) != 1 else ''}"


def _ground_truth_only(trial: Trial, classes: list[str]) -> None:
    with session_scope(_ui.engine()) as session:
        job = jobs.get(session=session, job_id=trial.job_id) if trial.job_id is not None else None
        spec = job.spec if job is not None else {}
        version = (datasets.get_version(session=session, name=spec["dataset"], version=spec.get("version"))
                   if spec.get("dataset") else None)
        items = (datasets.images(session=session, version_id=version.id, split="validation", limit=8)
                 if version is not None else [])
        labels = datasets.annotations(session=session, image_ids=[i.id for i in items])
    if not items:
        st.info("This trial stored no predictions on validation images, and its dataset version is not "
                "known to the studio, so there are no images to show.")
        return
    st.info("This trial stored no predictions on validation images (it ran before Kestrel kept them): "
            "ground truth only. A new trial shows the model's predictions beside it.")
    for start in range(0, len(items), SAMPLE_COLUMNS):
        for column, item in zip(st.columns(SAMPLE_COLUMNS), items[start:start + SAMPLE_COLUMNS], strict=False):
            png = _sample_png(str(_ui.blob_path(item.sha256)), tuple(version.classes or classes),
                              _ui.overlays_from_annotations(labels[item.id]))
            if png is not None:
                column.image(png, caption=f"{item.file_name}: ground truth", width="stretch")
