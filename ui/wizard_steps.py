"""The wizard's steps other than the training mode (`ui.wizard_mode`): data, task and metric, limits and early
termination, and the review that names, shows and submits the job file. Each step edits the job file in
place and adds the mistakes its widgets found to ``problems`` ("Next" and "Submit" refuse while any)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
import yaml

from core.base.errors import ConfigError
from core.base.tasks import Task, spec
from core.data.balance import IMBALANCE_RATIO, imbalance_ratio
from core.sweep.jobspec import PRIMARY_METRICS, parse_job
from core.train import small_objects
from core.zoo.catalog import AUTOMODE_SAMPLING
from storage.db import session_scope
from storage.repos import datasets
from ui import common as _ui
from ui import trial_time as _trial_time
from ui import wizard_job as _job
from ui.wizard_mode import trials_input

POLICIES = ["none", "bandit", "median_stopping", "truncation_selection"]


def data_step(doc: dict[str, Any], problems: list[str]) -> None:
    with session_scope(_ui.engine()) as session:
        rows = datasets.list_datasets(session=session)
    if not rows:
        st.info("No datasets yet: import one on the Datasets page first.")
        return
    names = [r.name for r in rows]
    old_name, old_version = _trial_time.dataset_ref(doc)
    name = st.selectbox("Dataset", names, index=names.index(old_name) if old_name in names else 0,
                        key="wizard_dataset")
    row = next(r for r in rows if r.name == name)
    # Back and forward keep the chosen (or uploaded) version; a new dataset starts at its latest.
    chosen = int(old_version) if name == old_name and old_version and old_version.isdigit() else row.latest_version
    version = st.number_input("Version", 1, row.latest_version, min(max(chosen, 1), row.latest_version),
                              key="wizard_version")
    st.caption(f"{_job.plural(row.images, 'image', 'images')}, {_job.plural(row.classes, 'class', 'classes')}, "
               f"{spec(Task(row.task)).display_name}")
    doc["training_data"] = {"path": f"azureml:{name}:{int(version)}", "type": "mltable"}
    if name != old_name:  # the task comes from the dataset; kept as chosen while the dataset stays
        doc["task"] = row.task
    _imbalance(doc, name, int(version))
    _small_objects(doc, name, int(version))
    _test_data(doc, [r for r in rows if r.task == row.task and r.name != name])


def _small_objects(doc: dict[str, Any], name: str, version: int) -> None:
    """When most objects would be too small at the default size, say so and set the advised sizes on a click."""
    with session_scope(_ui.engine()) as session:
        row = datasets.get_version(session=session, name=name, version=version)
        seen = small_objects.assess(row.stats or {}, Task(row.task)) if row else None
    if seen is None or not seen.dominated:
        return
    params = doc.setdefault("training_parameters", {})
    applied = all(params.get(k) == v for k, v in seen.proposal.items())
    st.warning(seen.why, icon=":material/zoom_in:")
    label = ", ".join(f"{k} {v}" for k, v in seen.proposal.items())
    if st.button(f"Use {label}", key="wizard_small_objects", disabled=applied,
                 help="Sets these training parameters in the job file; the estimate above follows."):
        params.update(seen.proposal)
        st.rerun()
    if applied:
        st.caption(f"The job trains at {label}.")


def _imbalance(doc: dict[str, Any], name: str, version: int) -> None:
    """Above the ratio where the recipe compensates, say so and let the person turn it off (in the job file)."""
    with session_scope(_ui.engine()) as session:
        row = datasets.get_version(session=session, name=name, version=version)
        per_class = dict((row.stats or {}).get("images_per_class") or {}) if row else {}
    params = doc.setdefault("training_parameters", {})
    classifier = doc.get("task") in (Task.CLASSIFICATION.value, Task.MULTILABEL.value)
    key, off = ("weighted_loss", 0) if classifier else ("repeat_factor_sampling", False)
    ratio = imbalance_ratio(per_class)
    if ratio < IMBALANCE_RATIO:
        return
    remedy = ("weighs the loss by class, so that mistakes on rare classes count more" if classifier else
              "shows images of rare classes more often (repeat-factor sampling)")
    on = st.toggle(f"Compensate for imbalanced classes ({ratio:.0f} : 1)", value=params.get(key) != off,
                   key="wizard_balance", help=f"Training {remedy}. Off writes {key}: {str(off).lower()} into the job.")
    if not on:
        params[key] = off
    elif params.get(key) == off:
        del params[key]


def _test_data(doc: dict[str, Any], candidates: list[Any]) -> None:  # a dataset of the same task, held out
    options = ["(none)", *(f"azureml:{r.name}:{r.latest_version}" for r in candidates)]
    current = (doc.pop("test_data", None) or {}).get("path")
    choice = st.selectbox("Test data (optional)", options, key="wizard_test_data",
                          index=options.index(current) if current in options else 0,
                          format_func=lambda option: option.removeprefix("azureml:"),
                          help="Images no trial sees: the best model is scored on them once the trials end.")
    if choice != options[0]:
        doc["test_data"] = {"path": choice, "type": "mltable"}


def metric_step(doc: dict[str, Any], problems: list[str]) -> None:
    tasks = [t.value for t in Task]
    doc["task"] = st.selectbox("Task", tasks, index=tasks.index(doc["task"]),
                               format_func=lambda t: spec(Task(t)).display_name,
                               help="Taken from the dataset; it must match the dataset's labels.")
    metrics = PRIMARY_METRICS[Task(doc["task"])]
    current = doc.get("primary_metric", metrics[0])
    doc["primary_metric"] = st.selectbox("Primary metric", metrics,
                                         index=metrics.index(current) if current in metrics else 0)


def limits_step(doc: dict[str, Any], problems: list[str]) -> None:
    limits = doc["limits"]
    left, middle, right = st.columns(3)
    if "max_trials" not in limits:  # an uploaded job file may leave it out
        st.error("limits.max_trials is missing from the job file: set it below (1 trains one model, more "
                 "runs AutoMode or a sweep), or choose a training mode on the previous step.")
        limits["max_trials"] = int(left.number_input("Max trials", 1, 1000, 1, key="wizard_trials_missing"))
    elif limits["max_trials"] > 1:
        with left:
            limits["max_trials"] = trials_input(limits, "wizard_trials")
    limits["max_concurrent_trials"] = int(middle.number_input(
        "Max concurrent trials", 1, 100, int(limits.get("max_concurrent_trials", 1)),
        help="Capped at what this machine holds: one per GPU, or a share of the CPU cores."))
    limits["timeout_minutes"] = int(right.number_input("Timeout (minutes)", 1, 10080,
                                                       int(limits.get("timeout_minutes", 60))))
    if not doc.get("search_space") and limits["max_trials"] == 1:
        return
    policy = (doc.get("sweep") or {}).get("early_termination") or {}
    kind = st.selectbox("Early termination", POLICIES, index=POLICIES.index(policy.get("type", "none")))
    # A sweep without a sampling algorithm samples at random; AutoMode's is written out as it searches.
    sweep = doc.setdefault("sweep", {} if doc.get("search_space") else {"sampling_algorithm": AUTOMODE_SAMPLING})
    if kind == "none":
        sweep.pop("early_termination", None)
        return
    new = {"type": kind, "evaluation_interval": int(st.number_input("Evaluation interval", 1, 100,
                                                                    int(policy.get("evaluation_interval", 1)))),
           "delay_evaluation": int(st.number_input("Delay evaluation", 0, 100, int(policy.get("delay_evaluation", 0))))}
    if kind == "bandit":
        new["slack_factor"] = float(st.number_input("Slack factor", 0.01, 10.0, float(policy.get("slack_factor", 0.2))))
    if kind == "truncation_selection":
        new["truncation_percentage"] = int(st.number_input("Truncation percentage", 1, 99,
                                                           int(policy.get("truncation_percentage", 20))))
    sweep["early_termination"] = new


def _naming(doc: dict[str, Any], problems: list[str]) -> None:
    """The job's name in the job list, its experiment and its tags; each left out of the file when empty."""
    name, experiment, tags = st.columns(3)
    fields = {"display_name": name.text_input("Job name", str(doc.get("display_name") or ""), key="wizard_display_name",
                                              placeholder="e.g. shapes baseline",
                                              help="How the job is listed; empty: “job”."),
              "experiment_name": experiment.text_input("Experiment", str(doc.get("experiment_name") or ""),
                                                       key="wizard_experiment_name", placeholder="e.g. shapes",
                                                       help="A name that groups related jobs.")}
    for key, value in fields.items():
        if value.strip():
            doc[key] = value.strip()
        else:
            doc.pop(key, None)
    text = tags.text_input("Tags", _job.tags_text(doc.get("tags") or {}), key="wizard_tags",
                           placeholder="team=vision, purpose=baseline", help="key=value pairs, separated by commas.")
    parsed, problem = _job.parse_tags(text)
    if problem:
        problems.append(problem)
        st.error(problem)
    elif parsed:
        doc["tags"] = parsed
    else:
        doc.pop("tags", None)


def review_step(doc: dict[str, Any], problems: list[str]) -> None:
    _naming(doc, problems)
    here = _trial_time.Here.read(doc)
    st.markdown(_job.summary(doc, here))
    for warning in _trial_time.timeout_warnings(doc, here):  # before Submit: a timeout may keep nothing
        st.warning(warning, icon=":material/timer:")
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    st.code(text, language="yaml")
    st.download_button("Download job YAML", text, file_name="job.yml", mime="application/x-yaml")
    if st.button("Submit job", type="primary", disabled=bool(problems)):
        data = str((doc.get("training_data") or {}).get("path", "")).removeprefix("azureml:").split(":")[0]
        with st.spinner("Checking and queueing the job…"):  # a job without a display_name is named after its data
            job_id, error = _ui.submit_job_yaml(text, f"{data or 'job'}.yml")
        if error:
            st.error(error)
        else:
            st.session_state.pop("wizard_job", None)
            st.session_state["wizard_step"] = 0
            # switch_page replaces the query string: the job id goes with it, so the job's page opens.
            st.switch_page("pages/jobs.py", query_params={"job": str(job_id)})


def prefill() -> None:
    upload = st.file_uploader("Start from a job YAML", type=["yml", "yaml"], key="wizard_upload")
    if upload is not None and st.button("Load it"):
        try:
            loaded = yaml.safe_load(upload.getvalue())
            parse_job(yaml.safe_dump(loaded), Path.cwd())
        except (yaml.YAMLError, ConfigError) as exc:
            st.error(f"{upload.name}: {exc}")
            return
        st.session_state["wizard_job"] = {**_job.new_job(), **loaded}
        st.session_state["wizard_step"] = len(_job.STEPS) - 1
        st.rerun()
