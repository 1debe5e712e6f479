"""The Endpoints page's "Learning from requests" section: how sure each deployment was of the images it scored
lately (a canary beside the model it may replace), the review queue's settings and what waits in it, and
"Retrain": the deployed model trained on from its checkpoint on its dataset's latest version."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core.base.errors import KestrelError
from core.serving import manage
from core.serving.review import LOW
from core.sweep.rerun import submit_endpoint_retrain
from storage.db import session_scope
from storage.repos import reviews
from ui import common as _ui


def panel(name: str, info: dict[str, Any]) -> None:
    st.markdown("**Learning from requests**")
    _confidence(name, info)
    _review_settings(name, info)
    if info["review_pending"]:
        st.page_link("pages/labelling.py", label=f"Review the {info['review_pending']} image(s) waiting",
                     icon=":material/rate_review:", query_params={"mode": "review", "endpoint": name})
    _retrain(name, info)


def _confidence(name: str, info: dict[str, Any]) -> None:
    """Box plots of each deployment's confidence on its recent requests, with the summary figures."""
    with session_scope(_ui.engine()) as session:
        recent = reviews.confidences(session=session, endpoint_id=manage.get_endpoint(session, name).id or 0)
    if not recent:
        st.caption("No request scored yet: each deployment's confidence on new requests shows here.")
        return
    figure = go.Figure([go.Box(y=values, name=f"{dep} ({len(values)})", boxpoints="outliers", boxmean=True)
                        for dep, values in recent.items()])
    figure.add_hline(y=LOW, line_dash="dot", annotation_text="low")
    figure.update_layout(height=280, margin={"t": 30, "b": 10}, yaxis={"title": "confidence", "range": [0, 1.02]},
                         title=f"Confidence on the latest {sum(map(len, recent.values()))} scored images")
    st.plotly_chart(figure, key="endpoints_confidence")
    st.dataframe([{"Deployment": dep, "Traffic %": info["traffic"].get(dep, 0), "Images": s["images"],
                   "Mean": s["mean"], "Median": s["median"], f"Below {LOW}": f"{s['low']:.0%}"}
                  for dep, s in info["confidence"].items()], hide_index=True, key="endpoints_confidence_table")


def _review_settings(name: str, info: dict[str, Any]) -> None:
    review = info["review"] or {}
    with st.form(f"endpoints_review_{name}"):
        keep = st.toggle("Keep the images it scores with low confidence for review", value=bool(review),
                         key="endpoints_review_on")
        left, right = st.columns(2)
        threshold = left.slider("Below this confidence", 0.05, 1.0, float(review.get("threshold", 0.5)), step=0.05,
                                key="endpoints_review_threshold")
        quota = int(right.number_input("At most this many waiting", 1, 100_000, int(review.get("quota", 100)),
                                       key="endpoints_review_quota"))
        saved = st.form_submit_button("Save review settings", key="endpoints_review_save")
    if saved:
        try:
            with session_scope(_ui.engine()) as session:
                manage.set_review(session=session, name=name, threshold=threshold if keep else None, quota=quota)
        except KestrelError as exc:
            st.error(f"Not saved — {_ui.say(exc)}")
        else:
            st.success("Saved; it applies from the next request." if keep else "No more images are kept.")


def _retrain(name: str, info: dict[str, Any]) -> None:
    deployments = [d["name"] for d in info["deployments"]]
    if not deployments:
        return
    busiest = max(deployments, key=lambda d: info["traffic"].get(d, 0))
    left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
    deployment = left.selectbox("Retrain the model of", deployments, index=deployments.index(busiest),
                                key="endpoints_retrain_deployment")
    epochs = int(middle.number_input("Epochs", 1, 1000, 5, key="endpoints_retrain_epochs"))
    if right.button("Retrain", key="endpoints_retrain", width="stretch", icon=":material/model_training:",
                    help="Trains this model on from its checkpoint on the latest version of its dataset (with the "
                         "reviewed images added); then deploy the new model as a canary from the Models page."):
        _ui.queue_job("the retraining", lambda: submit_endpoint_retrain(
            endpoint=name, deployment=deployment, version=None, epochs=epochs, settings=_ui.settings(),
            engine=_ui.engine()))
