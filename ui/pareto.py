"""A job's accuracy against latency: each trial's primary metric against the time its model takes to answer
one image on this machine, the Pareto frontier drawn through the trials no other beats on both; a frontier
trial is registered in one click, and its model page deploys it in one more."""

from __future__ import annotations

import re
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from ui import common as _ui


def pareto_section(summary: dict[str, Any]) -> None:
    timed = [t for t in summary["trials"] if t.get("pareto") is not None]
    if not timed:
        if any(t["status"] == "completed" for t in summary["trials"]):
            st.caption("No trial's model has been timed on this machine (KESTREL_MEASURE_LATENCY is off, or the "
                       "trials ran before Kestrel timed them), so there is no accuracy-against-latency chart.")
        return
    metric = timed[0]["primary_metric"]
    st.subheader("Accuracy against latency")
    st.plotly_chart(_figure(timed, metric), width="stretch", key=f"pareto-{summary['job_id']}")
    front = sorted((t for t in timed if t["pareto"]), key=lambda t: t["latency"]["batch1_ms"])
    labels = {t["trial_id"]: _label(t, metric) for t in front}
    choice = st.selectbox("A trial on the frontier", list(labels), format_func=labels.__getitem__,
                          key=f"pareto-pick-{summary['job_id']}")
    name = _model_name(summary["name"], choice)
    if st.button(f"Register trial {choice} as {name}", key=f"pareto-register-{summary['job_id']}",
                 icon=":material/deployed_code:"):
        _ui.register_trial(choice, name, "; deploy it from its page")


def _figure(timed: list[dict[str, Any]], metric: str) -> go.Figure:
    figure = go.Figure(layout={"xaxis_title": "milliseconds per image (batch 1, this machine)",
                               "yaxis_title": metric, "yaxis": {"range": [0, 1.05]}, "legend_title_text": ""})
    for on_front, name, symbol in ((False, "dominated", "circle-open"), (True, "Pareto frontier", "diamond")):
        rows = [t for t in timed if t["pareto"] is on_front]
        figure.add_trace(go.Scatter(
            x=[t["latency"]["batch1_ms"] for t in rows], y=[t["primary_metric_value"] for t in rows], mode="markers",
            name=name, marker={"symbol": symbol, "size": 12 if on_front else 9},
            text=[f"trial {t['trial_id']}: {t['model_name']}" for t in rows], hovertemplate="%{text}<br>"
            "%{x:.1f} ms, " + metric + " %{y:.4f}<extra></extra>"))
    front = sorted((t for t in timed if t["pareto"]), key=lambda t: t["latency"]["batch1_ms"])
    figure.add_trace(go.Scatter(x=[t["latency"]["batch1_ms"] for t in front],
                                y=[t["primary_metric_value"] for t in front], mode="lines", line={"shape": "hv"},
                                showlegend=False, hoverinfo="skip"))
    return figure


def _label(trial: dict[str, Any], metric: str) -> str:
    lat = trial["latency"]
    onnx = f", ONNX {lat['onnx_batch1_ms']:.1f} ms" if lat.get("onnx_batch1_ms") is not None else ""
    return (f"trial {trial['trial_id']}: {trial['model_name']} — {metric} {trial['primary_metric_value']:.4f}, "
            f"{lat['batch1_ms']:.1f} ms{onnx}, {lat['model_mb']:.1f} MB")


def _model_name(job_name: str, trial_id: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", job_name).strip("-._") or "model"
    return f"{stem}-trial-{trial_id}"[:255]
