"""The trial page: one child run's status, per-epoch curves, evaluation (confusion matrix, PR curves,
per-class table), validation images with prediction beside ground truth, log, parameters, and
"Register model". ``?trial=N`` selects the trial; while it runs, status, curves and log refresh.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from core.zoo.base import PARAMS_FILE, SETTINGS_FILE
from storage.db import session_scope
from storage.repos import trials
from storage.tables import Trial
from ui import common as _ui
from ui import trial_evaluation as _trial_evaluation
from ui import trial_followup as _followup

LIVE = ("queued", "running")
# Material icons: Streamlit ships their font, where emoji would be boxes on a machine without an emoji font.
STATUS_BADGE = {"queued": ("gray", ":material/schedule:"), "running": ("blue", ":material/play_arrow:"),
                "completed": ("green", ":material/check_circle:"), "failed": ("red", ":material/error:"),
                "canceled": ("orange", ":material/stop_circle:"),
                "early_terminated": ("violet", ":material/content_cut:")}
LOG_TAIL_BYTES = 64_000  # the end of the log is what explains a failure; a long run's start is not
# Azure ML's rule for model names; it also keeps the name a plain folder under the models directory.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


@dataclass(frozen=True)
class Artifacts:
    """What a finished trial wrote beside its weights, read once at the page's edge."""

    evaluation: dict[str, Any]
    settings: dict[str, Any]
    params: dict[str, Any]  # every training parameter as resolved (the row holds only the job's)

    @classmethod
    def read(cls, folder: str) -> Artifacts:
        if not folder:  # a queued trial has no folder yet
            return cls({}, {}, {})
        root = Path(folder)
        return cls(_json_file(root / "evaluation.json"), _json_file(root / SETTINGS_FILE),
                   _json_file(root / PARAMS_FILE))

    @property
    def classes(self) -> list[str]:
        """The dataset's class list (its order gives each class its colour)."""
        if self.settings.get("classes"):
            return list(self.settings["classes"])
        return [row["class"] for row in self.evaluation.get("per_class") or [] if "class" in row]


def _json_file(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _trial(trial_id: int) -> Trial | None:
    with session_scope(_ui.engine()) as session:
        return trials.get(session=session, trial_id=trial_id)


# --- the live part: status, curves, log ----------------------------------------------------------

def _status(trial: Trial, latest: float | None) -> None:
    value = trial.primary_metric_value if trial.primary_metric_value is not None else latest
    colour, icon = STATUS_BADGE.get(trial.status, ("gray", ""))
    about, epochs, metric = st.columns([3, 1, 1], vertical_alignment="center")
    with about:
        st.badge(trial.status.replace("_", " "), icon=icon or None, color=colour)  # type: ignore[arg-type]
        st.markdown(f"**{trial.model_name or 'model not chosen yet'}** on {trial.device or 'no device yet'}")
    planned = int(trial.metrics.get("epochs") or 0)
    epochs.metric("Epochs", f"{trial.epoch} of {planned}" if planned else trial.epoch)
    if trial.status == "running":
        st.progress(min(1.0, trial.epoch_progress / planned) if planned else trial.epoch_progress % 1,
                    text=_ui.epoch_position(trial.epoch_progress, planned))
    metric.metric(trial.primary_metric or "primary metric", "—" if value is None else f"{value:.4f}")
    if trial.error and trial.stop_reason:  # a time limit or a cancel came before its first epoch ended
        st.error(f"Stopped: {trial.error}.")
    elif trial.error:
        st.error(f"The trial failed: {trial.error}. The log below shows where.")
    elif trial.stop_reason:
        st.info(f"Stopped before its last epoch: {trial.stop_reason.replace('_', ' ')}.")
    for notice in trial.metrics.get("notices") or []:
        st.warning(notice)


def _line(frame: pd.DataFrame, names: list[str], title: str, key: str, since: int | None) -> None:
    chosen = frame[frame["metric"].isin(names)]
    if chosen.empty:
        return
    # Markers, because a one-epoch curve is a single point and a line alone would not show it.
    figure = px.line(chosen, x="epoch", y="value", color="metric", markers=True, title=title)
    if chosen["value"].between(0, 1).all() and "loss" not in title.lower():  # a score: show it on 0..1
        figure.update_yaxes(range=[0, 1.05])
    if since:  # an extension: the epochs before the line are the trial it goes on from
        figure.add_vline(x=since + 0.5, line_dash="dot", annotation_text="extended here")
    st.plotly_chart(figure.update_xaxes(dtick=1 if chosen["epoch"].max() <= 20 else None), key=key)


def _curves(curves: dict[str, list[tuple[int, float]]], primary: str, since: int | None) -> None:
    if not curves:
        st.caption("No epoch has been reported yet; the curves appear after the first evaluation.")
        return
    frame = pd.DataFrame([{"epoch": step, "metric": name, "value": value}
                          for name, points in curves.items() for step, value in points])
    losses = [n for n in curves if "loss" in n]
    main = [primary] if primary in curves else []
    others = [n for n in curves if n not in losses and n not in main]
    left, right = st.columns(2)
    with left:
        _line(frame, losses, "Loss (train and validation)", "trial_chart_loss", since)
    with right:
        _line(frame, main, f"{primary} (validation)", "trial_chart_primary", since)
    _line(frame, others, "Other validation metrics (click a legend entry to hide it)", "trial_chart_metrics", since)


def _overview(trial_id: int, started_live: bool) -> None:
    trial = _trial(trial_id)
    if trial is None:
        st.error(f"Trial {trial_id} no longer exists.")
        return
    with session_scope(_ui.engine()) as session:
        curves = trials.curves(session=session, trial_id=trial_id)
    points = curves.get(trial.primary_metric) or []
    _status(trial, points[-1][1] if points else None)
    extends = _followup.continued(trial)
    _curves(curves, trial.primary_metric, extends["epoch"] if extends else None)
    if started_live and trial.status not in LIVE:
        st.rerun()  # it just finished: draw the whole page again, now with its evaluation


def _log(trial_id: int) -> None:
    trial = _trial(trial_id)
    file = Path(trial.artifact_dir) / "trial.log" if trial and trial.artifact_dir else None
    with st.expander("Trial log (its end)", expanded=bool(trial and trial.status == "failed")):
        if file is None or not file.is_file():
            st.caption("No log yet: it starts when a worker picks the trial up.")
            return
        with file.open("rb") as handle:
            handle.seek(max(0, file.stat().st_size - LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
        st.code(tail, language="text")


# --- parameters and registration -----------------------------------------------------------------

RECIPES = {"from_scratch": "trained from scratch with the small-data recipe (AdamW, warmup and cosine, label "
                           "smoothing for classification)",
           "fine_tune": "fine-tuned from pretrained weights with the reference's defaults"}


def _parameters(trial: Trial, resolved: dict[str, Any]) -> None:
    if recipe := resolved.get("recipe"):
        st.caption(f"**Recipe:** {RECIPES.get(recipe, recipe)}, image sizes chosen from the data; the job's own "
                   "settings (★ below) win over the recipe's.")
    with st.expander("Parameters"):
        asked = trial.params  # what the job (its search space or AutoMode) chose for this trial
        params = {**resolved, **asked}
        names = sorted(params, key=lambda k: (k not in asked, k))
        st.caption("The job's choices first (★), then every other parameter as the trial resolved it.")
        st.dataframe(pd.DataFrame({"parameter": names, "value": [str(params[k]) for k in names],
                                   "set by the job": ["★" if k in asked else "" for k in names]}),
                     hide_index=True, key="trial_params")


def _register(trial: Trial) -> None:
    st.subheader("Register model")
    if trial.status not in trials.WITH_MODEL or not trial.artifact_dir:
        st.caption(f"Only a finished trial's model can be registered; this trial is {trial.status}.")
        return
    with st.form("trial_register_form"):
        name = st.text_input("Model name", key="trial_register_name", placeholder="e.g. fridge-items",
                             help="Registering again under the same name adds the next version.")
        submitted = st.form_submit_button("Register model", type="primary", key="trial_register")
    if not submitted:
        return
    name = name.strip()
    if not MODEL_NAME.fullmatch(name):
        st.error("Give the model a name of letters, digits, '-', '_' or '.', starting with a letter or digit.")
        return
    assert trial.id is not None
    _ui.register_trial(trial.id, name)


def main() -> None:
    raw = st.query_params.get("trial", "")
    trial = _trial(int(raw)) if raw.isdigit() else None
    if trial is None:
        st.title("Trial")
        missing = f"Trial {raw} does not exist." if raw else "No trial chosen."
        st.info(f"{missing} Open one from a job's leaderboard on the Jobs page.")
        st.page_link("pages/jobs.py", label="Go to Jobs", icon=":material/model_training:")
        return
    assert trial.id is not None
    st.title(f"Trial {trial.id}" + (f" · job {trial.job_id}, trial {trial.number}" if trial.job_id else ""))
    if trial.job_id is not None:
        st.page_link("pages/jobs.py", label=f"Back to job {trial.job_id}", icon=":material/arrow_back:",
                     query_params={"job": str(trial.job_id)})
    live = trial.status in LIVE
    if live:  # re-read every two seconds; the overview redraws the whole page when the trial ends
        st.fragment(_overview, run_every="2s")(trial.id, True)
        st.fragment(_log, run_every="2s")(trial.id)
    else:
        _overview(trial.id, False)
        _log(trial.id)
    if live:
        st.caption("The evaluation, validation images and registration appear when the trial ends.")
        _parameters(trial, {})
        return
    artifacts = Artifacts.read(trial.artifact_dir)
    _trial_evaluation.evaluation(artifacts.evaluation, artifacts.classes, trial.id, artifacts.params)
    _trial_evaluation.samples(trial, artifacts.evaluation, artifacts.classes)
    _followup.compared(trial)
    _parameters(trial, artifacts.params)
    _register(trial)
    _followup.reproduce_or_extend(trial)


main()
