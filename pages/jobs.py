"""The Jobs page: the jobs, 50 a page and newest first, with their status and progress; one job's live
leaderboard of child runs, its primary metric per trial and a parallel-coordinates view of what the
sweep tried; cancel; and submitting a job YAML (the same file `kestrel job submit` takes).

``?job=N`` selects the job, so a reload or a shared link lands on it. The page only reads the
database; the worker does the work, so nothing here blocks.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.base.errors import NotFound
from core.sweep.summary import PAGE_SIZE, job_summaries, job_summary
from storage.db import session_scope
from storage.repos import jobs
from ui import common as _ui
from ui import pareto as _pareto

# Symbols every system font has (emoji render as boxes where no emoji font is installed).
STATUS_ICON = {"queued": "…", "running": "▶", "completed": "✓", "failed": "✗", "canceled": "■",
               "early_terminated": "✂"}
# The badge colour behind each status cell (light tints, readable in both themes' dark text).
STATUS_COLOUR = {"queued": "#e0e0e0", "running": "#cfe2ff", "completed": "#d1e7dd", "failed": "#f8d7da",
                 "canceled": "#fff3cd", "early_terminated": "#ffe5d0"}
BEST_ROW_COLOUR = "#d1e7dd"
LIVE = ("queued", "running")  # a job or trial that may still change


def _status(status: str) -> str:
    return f"{STATUS_ICON.get(status, '')} {status}"


def _status_badge(cell: Any) -> str:
    status = str(cell).split(" ")[-1]
    return f"background-color: {STATUS_COLOUR[status]}; color: #111" if status in STATUS_COLOUR else ""


def _clock(seconds: float | None) -> str:
    """``1h 02m 03s`` style; empty when unknown."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _best_value(summary: dict[str, Any]) -> float | None:
    values = {t["trial_id"]: t["primary_metric_value"] for t in summary["trials"]
              if t["primary_metric_value"] is not None}
    if summary["best_trial_id"] in values:
        return values[summary["best_trial_id"]]
    return max(values.values(), default=None)


def job_rows(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """The jobs list: one row per job, the id a link to its page. Non-AutoML jobs leave task and trials blank."""
    rows = []
    for s in summaries:
        done = sum(t["status"] not in LIVE for t in s["trials"])
        rows.append({
            "job": f"jobs?job={s['job_id']}", "name": s["name"], "kind": s["kind"], "task": s["task"] or "",
            "status": _status(s["status"]), "progress": s["progress"],
            "trials": f"{done} / {s['max_trials']}" if s["max_trials"] else "",
            "best": _best_value(s),
            "primary metric": s["primary_metric"] or "",
            "started": s["started_at"], "duration": _clock(s["duration_s"]), "message": s["message"]})
    frame = pd.DataFrame(rows)
    if not frame.empty:  # one conversion for the column: one per row was most of the list's time
        frame["started"] = pd.to_datetime(frame["started"], utc=True, format="ISO8601")
    return frame


def leaderboard(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per trial: status, model, primary metric, the other metrics, duration and each sampled
    parameter; best first."""
    metric = summary["trials"][0]["primary_metric"] if summary["trials"] else ""
    metric = metric or "primary metric"
    rows = []
    for t in summary["trials"]:
        # A running trial shows what it reported last; a finished one, its best epoch's evaluation.
        shown = t["metrics"] if t["status"] != "running" else t.get("latest_metrics") or {}
        value = t["primary_metric_value"] if t["primary_metric_value"] is not None else shown.get(metric)
        row = {"trial": t["trial_id"], "best": "★" if t["trial_id"] == summary["best_trial_id"] else "",
               "status": _status(t["status"]), "model": t["model_name"], metric: value,
               "trained": _trained(t)}
        row.update({k: v for k, v in shown.items() if k != metric})
        row.update({"epoch": t["epoch"], "duration (s)": t["duration_s"], "ran on": t.get("ran_on") or "",
                    "note": t["error"] or t["stop_reason"]})
        row.update({k: v for k, v in t["params"].items() if k != "model_name" and k not in row})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(metric, ascending=False, na_position="last").reset_index(drop=True)


def _trained(trial: dict[str, Any]) -> float | None:
    """The share of its planned epochs a trial has trained (within the running epoch too); None when unknown."""
    planned = trial.get("planned_epochs") or 0
    if trial["status"] == "queued":
        return 0.0
    if not planned:
        return None
    return min(1.0, (trial["epoch_progress"] if trial["status"] == "running" else trial["epoch"]) / planned)


def _requested_job() -> int | None:
    """The ``?job=`` parameter as a job id; a malformed one is dropped with a warning."""
    raw = st.query_params.get("job")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        st.warning(f"“{raw}” is not a job id; pick a job from the list instead.")
        del st.query_params["job"]
        return None


def _submit(upload: Any) -> None:
    with st.spinner("Checking and queueing the job…"):
        job_id, error = _ui.submit_job_yaml(upload.getvalue().decode("utf-8", errors="replace"), upload.name)
    if error:
        st.error(error)
        return
    st.query_params["job"] = str(job_id)
    st.rerun()


def _page_offset() -> int:
    """The page picker (pages of PAGE_SIZE jobs, newest first); the offset of the chosen page's first job."""
    with session_scope(_ui.engine()) as session:
        total = jobs.count(session=session)
    return _ui.page_picker(total, PAGE_SIZE, "jobs-page") if total > PAGE_SIZE else 0


@st.cache_data(ttl=60, max_entries=64, show_spinner=False)
def _job_frame(db_url: str, offset: int, state: jobs.ListState, tick: int) -> pd.DataFrame:
    """The jobs list's page at ``offset``, read again only when its state (or, while a shown job runs, the
    clock's ``tick``) changes: every open tab refreshes it every two seconds, mostly to find nothing new.
    ``db_url`` keeps databases apart (tests run many in one process)."""
    with session_scope(_ui.engine()) as session:
        return job_rows(job_summaries(session=session, limit=PAGE_SIZE, offset=offset))


@st.fragment(run_every="2s")
def job_list(offset: int) -> None:
    """Redrawn every two seconds, so statuses and trial counts move without a reload; only the shown
    page's state is queried, and the page itself only when that changed."""
    engine = _ui.engine()
    with session_scope(engine) as session:
        state = jobs.list_state(session=session, limit=PAGE_SIZE, offset=offset)
    if not state.total:
        st.info("No jobs yet. Upload a job YAML above, or run `kestrel job submit job.yml`.")
        return
    frame = _job_frame(str(engine.url), offset, state, int(time.time()) if state.is_running else 0)
    if frame.empty:
        st.info("No jobs on this page; pick an earlier page.")
        return
    if state.total > PAGE_SIZE:
        st.caption(f"Jobs {offset + 1}–{offset + len(frame)} of {state.total}, newest first")
    st.dataframe(frame.style.map(_status_badge, subset=["status"]), hide_index=True, width="stretch",
                 key="job-list", column_config={
                     "job": st.column_config.LinkColumn("job", display_text=r"jobs\?job=(\d+)",
                                                        help="Open the job's page"),
                     "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
                     "best": st.column_config.NumberColumn("best", help="The best trial's primary metric",
                                                           format="%.4f"),
                     "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm:ss")})


def _job_picker(job_id: int | None, offset: int) -> int | None:
    """A choice among the shown page's jobs (and the one in the address, wherever it is): ids and names
    only, in one query."""
    with session_scope(_ui.engine()) as session:
        names = dict(jobs.names(session=session, limit=PAGE_SIZE, offset=offset, also=job_id))
    if not names:
        return job_id
    ids = list(names)
    chosen = st.selectbox("Job", ids, index=ids.index(job_id) if job_id in ids else 0,
                          format_func=lambda i: f"job {i}: {names[i]}")
    if job_id is not None and job_id not in ids:
        return job_id  # a job that is not listed (e.g. deleted): let the job view say so
    st.query_params["job"] = str(chosen)
    return chosen


def _elapsed_and_left(summary: dict[str, Any]) -> tuple[str, str]:
    elapsed = summary["duration_s"]
    if elapsed is None:
        return "not started", ""
    timeout = summary["timeout_minutes"]
    if not timeout:
        return _clock(elapsed), "no timeout"
    if summary["finished_at"]:
        return _clock(elapsed), "finished"
    return _clock(elapsed), _clock(max(0.0, timeout * 60 - elapsed))


def progress_header(summary: dict[str, Any]) -> None:
    """Trials running, done, stopped early and failed; elapsed time and time left before the timeout."""
    counts = pd.Series([t["status"] for t in summary["trials"]], dtype=object).value_counts()
    elapsed, left = _elapsed_and_left(summary)
    cells = st.columns(6)
    for cell, (label, status) in zip(cells, [("Running", "running"), ("Done", "completed"),
                                             ("Stopped early", "early_terminated"), ("Failed", "failed")],
                                     strict=False):
        cell.metric(label, int(counts.get(status, 0)))
    cells[4].metric("Elapsed", elapsed)
    cells[5].metric("Time left", left or "—",
                    help=f"Against the job's timeout of {summary['timeout_minutes']} minutes"
                    if summary["timeout_minutes"] else None)


def _predicted_against_actual(summary: dict[str, Any]) -> None:
    """The time estimated before the job started, with its range, against the time it took (or takes so far)."""
    predicted, span = summary.get("predicted_s"), summary.get("predicted_range_s")
    if not predicted or not span:
        return
    said = f"Predicted before it started: {_clock(predicted)} (likely {_clock(span[0])} to {_clock(span[1])})"
    took = summary["duration_s"]
    if summary["finished_at"] and took:
        verdict = "within the range" if span[0] <= took <= span[1] else "outside the range"
        said += f"; it took {_clock(took)}, {took / predicted - 1:+.0%} against the prediction, {verdict}."
    st.caption(said)


def test_set(summary: dict[str, Any]) -> None:
    """The best model's metrics on the job's test data, beside its validation metrics."""
    if not summary.get("test_data"):
        return
    if summary.get("test_metrics") is None:
        st.caption(f"Test data {summary['test_data']}: the best model is scored on it once the trials end.")
        return
    best = next(t for t in summary["trials"] if t["trial_id"] == summary["best_trial_id"])
    names = [n for n in summary["test_metrics"] if n in best["metrics"]]
    st.markdown(f"**Best model on the test data** `{summary['test_data']}` (trial {best['trial_id']})")
    st.dataframe(pd.DataFrame({"metric": names, "test": [summary["test_metrics"][n] for n in names],
                               "validation": [best["metrics"][n] for n in names]}),
                 hide_index=True, width="stretch")


def _highlight_best(row: pd.Series) -> list[str]:
    style = f"background-color: {BEST_ROW_COLOUR}; color: #111" if row.get("best") == "★" else ""
    return [style] * len(row)


def _show_leaderboard(board: pd.DataFrame) -> None:
    shown = board.assign(trial=[f"trial?trial={t}" for t in board["trial"]])
    styled = shown.style.apply(_highlight_best, axis=1).map(_status_badge, subset=["status"])
    st.dataframe(styled, hide_index=True, width="stretch", column_config={
        "trial": st.column_config.LinkColumn("trial", display_text=r"trial\?trial=(\d+)",
                                             help="Open the trial's page"),
        "trained": st.column_config.ProgressColumn("trained", min_value=0, max_value=1, format="percent",
                                                   help="Share of the trial's planned epochs trained so far"),
        "duration (s)": st.column_config.NumberColumn("duration (s)", format="%.0f")})


def _metric_bars(scored: pd.DataFrame, metric: str) -> go.Figure:
    # Graph objects, not plotly express: express takes ~0.1 s a chart, and a live job redraws every two seconds.
    # Scores lie in [0, 1] (every primary metric is one); trials are whole numbers.
    figure = go.Figure(layout={"title": {"text": f"{metric} per trial"}, "xaxis_title": "trial",
                               "xaxis": {"dtick": 1 if len(scored) <= 30 else None}, "yaxis_title": metric,
                               "yaxis": {"range": [0, 1.05]}, "legend_title_text": "model"})
    for model, rows in scored.sort_values("trial").groupby("model", sort=False):
        figure.add_trace(go.Bar(x=rows["trial"], y=rows[metric], name=str(model)))
    return figure


def _tried(scored: pd.DataFrame, metric: str, numeric: list[str]) -> go.Figure:
    line = {"color": scored[metric], "colorscale": "Plasma", "showscale": True, "colorbar": {"title": metric}}
    return go.Figure(go.Parcoords(line=line, dimensions=[{"label": c, "values": scored[c]} for c in numeric]),
                     layout={"title": {"text": "What the sweep tried"}})


def _charts(summary: dict[str, Any], board: pd.DataFrame) -> None:
    """The primary metric per trial, and each numeric hyperparameter against it."""
    metric = summary["trials"][0]["primary_metric"]
    scored = board.dropna(subset=[metric])
    if scored.empty:
        return
    left, right = st.columns(2)
    left.plotly_chart(_metric_bars(scored, metric), width="stretch")
    tried = {k for t in summary["trials"] for k in t["params"]} | {metric}  # hyperparameters against the metric
    numeric = [c for c in scored.columns if c in tried and pd.api.types.is_numeric_dtype(scored[c])
               and scored[c].nunique() > 1]
    if metric in numeric and len(numeric) > 1:
        right.plotly_chart(_tried(scored, metric, numeric), width="stretch")


def job_view(job_id: int, is_live: bool) -> None:
    """Progress, leaderboard and charts from the database; a live job's view is redrawn every two seconds
    (see :func:`show_job`), and drawn once more, whole, when it ends."""
    try:
        with session_scope(_ui.engine()) as session:
            summary = job_summary(session=session, job_id=job_id)
    except NotFound:
        st.info(f"Job {job_id} does not exist (it may have been deleted); pick a job from the list.")
        if st.query_params.get("job") == str(job_id):
            del st.query_params["job"]
        return
    if is_live and summary["status"] not in LIVE:
        st.rerun()  # it just ended: the whole page again, now without the refresh
    st.subheader(f"Job {job_id}: {summary['name']}")
    said = summary["message"] or ("waiting for a worker" if summary["status"] == "queued" else "")
    st.progress(summary["progress"], text=summary["status"] + (f" — {said}" if said else ""))
    if summary["kind"] == "automl":
        progress_header(summary)
        _predicted_against_actual(summary)
    if summary["error"]:
        st.error(summary["error"])
    test_set(summary)
    if summary["status"] in LIVE and st.button("Cancel job", key=f"cancel-{job_id}"):
        with session_scope(_ui.engine()) as session:
            jobs.request_cancel(session=session, job_id=job_id)
        st.toast("Cancel requested: running trials stop within seconds and keep what they made.")
    board = leaderboard(summary)
    if board.empty:
        st.caption("No trial has started yet.")
        return
    _show_leaderboard(board)
    models = {t["trial_id"]: t["model_name"] for t in summary["trials"]}  # in start order: stable as trials come
    pick, link = st.columns([3, 1], vertical_alignment="bottom")
    trial_id = pick.selectbox("Trial", list(models), key=f"trial-pick-{job_id}",
                              format_func=lambda t: f"trial {t}: {models[t]}")
    link.page_link("pages/trial.py", label=f"Open trial {trial_id}", icon=":material/query_stats:",
                   query_params={"trial": str(trial_id)})
    _charts(summary, board)
    _pareto.pareto_section(summary)


def show_job(job_id: int) -> None:
    """A queued or running job's view refreshes every two seconds; an ended job's does not change."""
    with session_scope(_ui.engine()) as session:
        job = jobs.get(session=session, job_id=job_id)
        is_live = job is not None and job.status in LIVE
    if is_live:
        st.fragment(job_view, run_every="2s")(job_id, True)
    else:
        job_view(job_id, False)


st.title("Jobs")
with st.expander("Submit a job YAML"):
    upload = st.file_uploader("Job file (type: automl)", type=["yml", "yaml"])
    if upload is not None and st.button("Submit", type="primary"):
        _submit(upload)
requested = _requested_job()
shown_from = _page_offset()
job_list(shown_from)
if (selected := _job_picker(requested, shown_from)) is not None:
    show_job(selected)
