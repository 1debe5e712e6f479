"""The Jobs page: every job with its status and progress; one job's live leaderboard of child runs,
its primary metric per trial and a parallel-coordinates view of what the sweep tried; cancel; and
submitting a job YAML (the same file `kestrel job submit` takes).

``?job=N`` selects the job, so a reload or a shared link lands on it. The page only reads the
database; the worker does the work, so nothing here blocks.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from core.sweep.summary import job_summary
from pages import _ui
from storage.db import session_scope
from storage.repos import jobs

STATUS_ICON = {"queued": "🕓", "running": "▶️", "completed": "✅", "failed": "❌", "canceled": "⏹️",
               "early_terminated": "✂️"}


def leaderboard(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per trial: status, model, primary metric and each sampled parameter; best first."""
    rows = []
    for t in summary["trials"]:
        row = {"trial": t["trial_id"], "best": "★" if t["trial_id"] == summary["best_trial_id"] else "",
               "status": f"{STATUS_ICON.get(t['status'], '')} {t['status']}", "model": t["model_name"],
               t["primary_metric"] or "primary metric": t["primary_metric_value"], "epoch": t["epoch"],
               "note": t["stop_reason"] or t["error"]}
        row.update({k: v for k, v in t["params"].items() if k != "model_name"})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    metric = summary["trials"][0]["primary_metric"] or "primary metric"
    return frame.sort_values(metric, ascending=False, na_position="last").reset_index(drop=True)


def _submit(upload: Any) -> None:
    job_id, error = _ui.submit_job_yaml(upload.getvalue().decode("utf-8", errors="replace"))
    if error:
        st.error(error)
        return
    st.query_params["job"] = str(job_id)
    st.rerun()


def _job_list() -> None:
    with session_scope(_ui.engine()) as session:
        rows = [{"job": j.id, "name": j.name, "kind": j.kind,
                 "status": f"{STATUS_ICON.get(j.status, '')} {j.status}", "progress": j.progress,
                 "message": j.message, "created": j.created_at} for j in jobs.list_jobs(session=session)]
    if not rows:
        st.info("No jobs yet. Upload a job YAML above, or run `kestrel job submit job.yml`.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, use_container_width=True,
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)})
    ids = [r["job"] for r in rows]
    current = st.query_params.get("job")
    chosen = st.selectbox("Job", ids, index=ids.index(int(current)) if current and int(current) in ids else 0,
                          format_func=lambda i: f"job {i}: {next(r['name'] for r in rows if r['job'] == i)}")
    st.query_params["job"] = str(chosen)


@st.fragment(run_every="2s")
def job_view(job_id: int) -> None:
    """Redrawn every two seconds from the database: progress, leaderboard, charts."""
    with session_scope(_ui.engine()) as session:
        summary = job_summary(session=session, job_id=job_id)
    st.subheader(f"Job {job_id}: {summary['name']}")
    st.progress(summary["progress"], text=f"{summary['status']} — {summary['message'] or 'waiting for a worker'}")
    if summary["error"]:
        st.error(summary["error"])
    if summary["status"] in ("queued", "running") and st.button("Cancel job", key=f"cancel-{job_id}"):
        with session_scope(_ui.engine()) as session:
            jobs.request_cancel(session=session, job_id=job_id)
        st.toast("Cancel requested: running trials stop within seconds and keep what they made.")
    board = leaderboard(summary)
    if board.empty:
        st.caption("No trial has started yet.")
        return
    st.dataframe(board, hide_index=True, use_container_width=True)
    models = {t["trial_id"]: t["model_name"] for t in summary["trials"]}  # in start order: stable as trials come
    pick, go = st.columns([3, 1], vertical_alignment="bottom")
    trial_id = pick.selectbox("Trial", list(models), key=f"trial-pick-{job_id}",
                              format_func=lambda t: f"trial {t}: {models[t]}")
    go.page_link("pages/trial.py", label=f"Open trial {trial_id}", icon=":material/query_stats:",
                 query_params={"trial": str(trial_id)})
    metric = summary["trials"][0]["primary_metric"]
    scored = board.dropna(subset=[metric])
    if scored.empty:
        return
    left, right = st.columns(2)
    left.plotly_chart(px.bar(scored.sort_values("trial"), x="trial", y=metric, color="model",
                             title=f"{metric} per trial"), use_container_width=True)
    numeric = [c for c in scored.columns if c not in ("trial", "epoch") and pd.api.types.is_numeric_dtype(scored[c])
               and scored[c].nunique() > 1]
    if metric in numeric and len(numeric) > 1:
        right.plotly_chart(px.parallel_coordinates(scored, dimensions=numeric, color=metric,
                                                   title="What the sweep tried"), use_container_width=True)


st.title("Jobs")
with st.expander("Submit a job YAML"):
    upload = st.file_uploader("Job file (type: automl)", type=["yml", "yaml"])
    if upload is not None and st.button("Submit", type="primary"):
        _submit(upload)
_job_list()
if job := st.query_params.get("job"):
    job_view(int(job))
