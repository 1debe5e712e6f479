"""Explanations on the Test-score page: what to ask the model for (SPEC §9's options for classifiers, D-RISE's
budget for detectors), and, for a detector's answer, its picture with the boxes to click, each showing the
heat map of what made the model find it."""

from __future__ import annotations

import base64
import functools
import io
from typing import Any

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core.base.tasks import Task
from core.explain.params import MASK_BUDGET, XAI_ALGORITHMS, DetectionXaiParams

CLASSIFIERS = {Task.CLASSIFICATION.value, Task.MULTILABEL.value}
MASKS = DetectionXaiParams.model_fields["number_of_masks"].default


def options(tasks: set[str]) -> dict[str, Any] | None:
    """The request's ``xai_parameters`` when Explain is on for models of ``tasks`` (None when off)."""
    if not tasks:
        return None
    if tasks <= CLASSIFIERS:
        return _classifier_options()
    if tasks & CLASSIFIERS:
        st.caption("This endpoint's deployments do different tasks; pick one deployment to explain its answers.")
        return None
    return _detector_options()


def _classifier_options() -> dict[str, Any] | None:
    if not st.toggle("Explain", key="score_explain", help="Adds a 2×2 picture of what the model looked at."):
        return None
    left, right = st.columns(2)
    algorithm = left.selectbox("Algorithm", XAI_ALGORITHMS, key="score_xai_algorithm",
                               format_func=lambda a: a.replace("_", " ").replace("xrai", "XRAI"))
    steps = right.number_input("Steps (n_steps)", min_value=2, max_value=1000, value=50, step=10,
                               key="score_n_steps", disabled=algorithm in ("guided_backprop", "guided_gradcam"),
                               help="Integration steps of XRAI and integrated gradients: more is finer and slower.")
    return {"xai_algorithm": algorithm, "n_steps": int(steps), "visualizations": True}


def _detector_options() -> dict[str, Any] | None:
    if not st.toggle("Explain", key="score_explain",
                     help="A heat map per detected box (D-RISE): which parts of the image made the model find it."):
        return None
    masks = st.number_input("Masks (the budget)", min_value=MASK_BUDGET[0], max_value=MASK_BUDGET[1], value=MASKS,
                            step=50, key="score_masks",
                            help="The model looks at the image through this many random masks: one prediction "
                                 "each. More gives a cleaner map and takes longer.")
    st.caption(f"About {int(masks)} predictions per image: seconds for a small YOLO model, minutes for a large "
               "Faster R-CNN on a CPU.")
    return {"xai_algorithm": "d_rise", "number_of_masks": int(masks), "visualizations": True}


def box_maps(answer: dict[str, Any], drawn: bytes, key: str) -> None:
    """The drawn picture with a marker on each explained box; clicking one (or choosing it below) shows its
    heat map."""
    explained = [k for k, b in enumerate(answer.get("boxes", [])) if b.get("visualizations")]
    if not explained:
        return
    boxes = answer["boxes"]
    with Image.open(io.BytesIO(drawn)) as picture:
        width, height = picture.size
        figure = go.Figure(go.Image(z=picture.convert("RGB")))
    figure.add_trace(go.Scatter(
        x=[(boxes[k]["box"]["topX"] + boxes[k]["box"]["bottomX"]) / 2 * width for k in explained],
        y=[(boxes[k]["box"]["topY"] + boxes[k]["box"]["bottomY"]) / 2 * height for k in explained],
        mode="markers", marker={"size": 18, "symbol": "circle-open", "color": "white", "line": {"width": 3}},
        text=[f"{boxes[k]['label']} {boxes[k]['score']:.2f}" for k in explained],
        hovertemplate="%{text}: click for its heat map<extra></extra>", showlegend=False))
    figure.update_layout(margin={"l": 0, "r": 0, "t": 30, "b": 0}, title="Click a box's marker to explain it",
                         xaxis={"visible": False}, yaxis={"visible": False})
    chosen_key = f"{key}_box"
    st.plotly_chart(figure, key=key, on_select=functools.partial(_pick_box, key, chosen_key, explained),
                    selection_mode="points")
    chosen = st.selectbox("Box", explained, key=chosen_key,
                          format_func=lambda k: f"{k + 1}. {boxes[k]['label']} ({boxes[k]['score']:.2f})")
    box = boxes[chosen]
    st.image(base64.b64decode(box["visualizations"]), width="stretch",
             caption=f"What made the model find {box['label']} ({box['score']:.2f}): the box in red, the warmest "
                     "regions mattered most (D-RISE)")


def _pick_box(key: str, chosen_key: str, explained: list[int]) -> None:
    """A click on a marker chooses the box whose heat map is shown."""
    points = st.session_state[key]["selection"]["points"]
    if points:
        st.session_state[chosen_key] = explained[int(points[0]["point_index"])]
