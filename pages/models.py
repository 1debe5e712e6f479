"""The Models page: registered model versions with their metrics and source trial, a version's inference
settings, "Export" (ONNX or TorchScript, written by the worker, then downloaded) and "Deploy", which
writes the endpoint's rows, starts its server process and links to it on the Endpoints page.

``?model=NAME:VERSION`` selects the version shown, so a reload lands on it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
import yaml

from core.base.errors import KestrelError
from core.base.tasks import Task, spec
from core.inference.models import IDENTITY, update_settings
from core.serving import manage, runner
from storage.db import session_scope
from storage.repos import jobs, trials
from storage.repos import models as repo
from storage.tables import Job, ModelVersion
from ui import common as _ui

NEW_ENDPOINT = "New endpoint…"
EXPORT_FORMATS = {"onnx": "ONNX", "torchscript": "TorchScript"}


def _task_name(task: str) -> str:
    try:
        return spec(Task(task)).display_name
    except ValueError:
        return task


def _primary_metric(session: Any, version: ModelVersion, task: str) -> str:
    trial = trials.get(session=session, trial_id=version.trial_id) if version.trial_id else None
    if trial is not None and trial.primary_metric:
        return trial.primary_metric
    try:
        return spec(Task(task)).primary_metric
    except ValueError:
        return ""


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _model_table() -> list[str]:
    """The table of every registered version; returns their ``NAME:VERSION`` refs, newest model last."""
    rows: list[dict[str, Any]] = []
    with session_scope(_ui.engine()) as session:
        for model, versions in repo.list_models(session=session):
            for v in versions:
                primary = _primary_metric(session, v, model.task)
                scalars = _scalars(v.metrics)
                rows.append({"Model": model.name, "Version": v.version, "Task": _task_name(model.task),
                             "Source trial": v.trial_id, "Primary metric": primary,
                             "Value": scalars.get(primary), "Created": v.created_at,
                             **{k: x for k, x in scalars.items() if k != primary}})
    if not rows:
        st.info("No registered models yet. Register a finished trial's model from its trial page, or run "
                "`kestrel model register --trial N --name NAME`.")
        return []
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="models_table",
                 column_config={"Created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                                "Value": st.column_config.NumberColumn(format="%.4f")})
    return [f"{r['Model']}:{r['Version']}" for r in rows]


def _setting_widget(key: str, value: Any, widget_key: str) -> Any:
    # No bounds on the inputs: core.inference.models checks ranges and says what is wrong, the same for CLI and page.
    if isinstance(value, bool):
        return st.checkbox(key, value=value, key=widget_key)
    if isinstance(value, int):
        return st.number_input(key, value=value, step=1, key=widget_key)
    if isinstance(value, float):
        return st.number_input(key, value=value, step=0.05, format="%.4g", key=widget_key)
    if value is None:
        text = st.text_input(key, value="", placeholder="not set", key=widget_key)
        return yaml.safe_load(text) if text.strip() else None
    return st.text_input(key, value=str(value), key=widget_key)


def _settings_form(ref: str, version: ModelVersion) -> None:
    editable = {k: v for k, v in sorted(version.settings.items()) if k not in IDENTITY}
    st.markdown("**Inference settings**: used by endpoints and batch scoring of this version.")
    if not editable:
        st.caption("This version has no editable inference settings.")
        return
    with st.form(f"models_settings_{version.id}"):
        columns = st.columns(3)
        values = {}
        for i, (key, value) in enumerate(editable.items()):
            with columns[i % 3]:
                values[key] = _setting_widget(key, value, f"models_setting_{version.id}_{key}")
        saved = st.form_submit_button("Save settings", type="primary", key="models_settings_save")
    if not saved:
        return
    changes = {k: v for k, v in values.items() if v != editable[k]}
    if not changes:
        st.info("Nothing changed.")
        return
    try:
        update_settings(engine=_ui.engine(), ref=ref, changes=changes)
    except KestrelError as exc:
        st.error(f"Not saved — {_ui.say(exc)}. Correct the value and save again.")
        return
    st.success(f"Saved {', '.join(sorted(changes))}. Endpoints serving {ref} use them after a restart "
               "(Restart on the Endpoints page).")


def _deploy_form(ref: str, default_name: str) -> None:
    st.markdown("**Deploy** this version behind an HTTP endpoint.")
    with session_scope(_ui.engine()) as session:
        endpoints = [e.name for e in repo.list_endpoints(session=session)]
    left, middle, right = st.columns(3)
    choice = left.selectbox("Endpoint", [NEW_ENDPOINT, *endpoints], key="models_deploy_endpoint")
    endpoint = middle.text_input("New endpoint name", value=f"{default_name}-ep", key="models_deploy_new") \
        if choice == NEW_ENDPOINT else choice
    deployment = right.text_input("Deployment name", value=default_name, key="models_deploy_name")
    share = None
    if choice != NEW_ENDPOINT:
        share = st.slider("Share of its traffic (a canary beside the deployments there; they keep the rest in "
                          "their proportions)", 0, 100, 10, step=5, key="models_deploy_share")
        st.caption("Deploying to a running endpoint restarts it: it answers 503 while its models load. The "
                   "Endpoints page then compares the deployments' confidence on new requests.")
    if not st.button("Deploy", type="primary", key="models_deploy"):
        return
    try:
        with session_scope(_ui.engine()) as session:  # the endpoint and its deployment in one transaction
            if choice == NEW_ENDPOINT:
                manage.create_endpoint(session=session, name=endpoint.strip(), settings=_ui.settings())
            manage.add_deployment(session=session, endpoint=endpoint.strip(), name=deployment.strip(), model=ref,
                                  share=share)
        # Not waiting for readiness: the Endpoints page follows the state the server writes.
        runner.start(_ui.settings(), _ui.engine(), endpoint.strip())
    except KestrelError as exc:
        st.error(f"Not deployed — {_ui.say(exc)}")
        return
    st.success(f"Deploying {ref} as {deployment.strip()} on {endpoint.strip()}: it answers once its models "
               "are loaded.")
    st.page_link("pages/endpoints.py", label=f"Open endpoint {endpoint.strip()}", icon=":material/api:",
                 query_params={"endpoint": endpoint.strip()})


def _export_form(ref: str) -> None:
    st.markdown("**Export** this version to run without Kestrel: the model file, and a JSON sidecar saying how "
                "to feed it and read its outputs.")
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    fmt = left.selectbox("Format", list(EXPORT_FORMATS), format_func=EXPORT_FORMATS.get, key="models_export_format")
    if right.button("Export", key="models_export", width="stretch", help="The worker writes the files; "
                    "they can be downloaded here once it has."):
        with session_scope(_ui.engine()) as session:
            jobs.enqueue(session=session, kind="export", name=f"export {ref} to {EXPORT_FORMATS[fmt]}",
                         spec={"model": ref, "format": fmt})
    for job in _latest_exports(ref):
        _export_outcome(job)


def _latest_exports(ref: str) -> list[Job]:
    """The newest export job of ``ref`` in each format."""
    latest: dict[str, Job] = {}
    with session_scope(_ui.engine()) as session:
        for job in jobs.list_jobs(session=session, kind="export"):  # newest first
            if job.spec.get("model") == ref:
                latest.setdefault(job.spec.get("format", ""), job)
    return list(latest.values())


def _export_outcome(job: Job) -> None:
    label = EXPORT_FORMATS.get(job.spec.get("format", ""), job.spec.get("format", ""))
    if job.status not in jobs.FINAL:
        _export_live(job.id, label)
    elif job.status == "failed":
        st.error(f"The {label} export failed: {job.error}")
    elif job.status == "canceled":
        st.info(f"The {label} export was canceled.")
    else:
        folder = _ui.settings().job_dir(job.id or 0)
        files = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith(".")) \
            if folder.is_dir() else []
        if not files:
            st.warning(f"The {label} export's files are no longer in {folder}; export again.")
            return
        st.caption(f"{label} export ({job.finished_at:%Y-%m-%d %H:%M} UTC): {job.message}")
        for column, path in zip(st.columns(len(files)), files):
            column.download_button(f"Download {path.name} ({path.stat().st_size / 2**20:,.1f} MB)",
                                   data=path.read_bytes, file_name=path.name, on_click="ignore",
                                   key=f"models_download_{job.id}_{path.name}", icon=":material/download:")


@st.fragment(run_every="1s")
def _export_live(job_id: int | None, label: str) -> None:
    with session_scope(_ui.engine()) as session:
        job = jobs.get(session=session, job_id=job_id or 0)
        status, fraction, message = (job.status, job.progress, job.message) if job else ("failed", 0.0, "")
    if status in jobs.FINAL:
        st.rerun(scope="app")  # the whole page offers the files
    waiting = "waiting for the worker (`kestrel worker`) to start it…"
    st.progress(fraction, text=f"{label} export: {message or (waiting if status == 'queued' else '…')}")


def _version_view(ref: str) -> None:
    with session_scope(_ui.engine()) as session:
        name, _, number = ref.rpartition(":")
        version = repo.get_version(session=session, name=name, version=int(number))
        assert version is not None  # chosen from the table just read
        task = repo.model_of(session=session, version=version).task
        primary = _primary_metric(session, version, task)
        trial = trials.get(session=session, trial_id=version.trial_id) if version.trial_id else None
        job_id = trial.job_id if trial else None
    st.subheader(f"{name} version {number}")
    source = f"trial {version.trial_id}" + (f" of job {job_id}" if job_id else "") if version.trial_id else "—"
    st.caption(f"{_task_name(task)} · from {source} · registered {version.created_at:%Y-%m-%d %H:%M} UTC · "
               f"classes: {', '.join(version.settings.get('classes', []))}")
    scalars = _scalars(version.metrics)
    shown = ([primary] if primary in scalars else []) + [k for k in scalars if k != primary]
    for column, key in zip(st.columns(min(6, len(shown)) or 1), shown[:6]):
        column.metric(key + (" ★" if key == primary else ""), f"{scalars[key]:.4f}")
    if version.trial_id:
        st.page_link("pages/trial.py", label=f"Open source trial {version.trial_id}", icon=":material/query_stats:",
                     query_params={"trial": str(version.trial_id)})
    st.page_link("pages/score.py", label=f"Score test images with {ref}", icon=":material/image_search:",
                 query_params={"model": ref})
    _settings_form(ref, version)
    _export_form(ref)
    _deploy_form(ref, f"{name}-v{number}")


st.title("Models")
refs = _model_table()
if refs:
    _version_view(_ui.url_selectbox("Model version", refs, key="models_version", param="model"))
