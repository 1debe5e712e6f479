"""The job wizard: data → task and metric → training mode → limits and early termination → review.

Each step edits one part of a job file (the reference's CLI v2 YAML, the same file `kestrel job
submit` takes) kept in Session State; each "Next" checks the file so far with the job parser and
shows a mistake on the step that made it. Review shows the YAML, offers it for download and submits
it through the CLI (which checks the model names with the model libraries this process never loads).
A job YAML can be uploaded to start pre-filled.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import yaml

from core.base.errors import ConfigError
from core.base.tasks import Task, spec
from core.sweep import estimate
from core.sweep.jobspec import PRIMARY_METRICS, parse_job
from core.train import recipe
from core.zoo.catalog import CATALOG, automode_models, size_text
from storage.db import session_scope
from storage.repos import datasets
from ui import common as _ui
from ui import pretrained as _pretrained
from ui import trial_time as _trial_time

log = logging.getLogger(__name__)
STEPS = ["Data", "Task & metric", "Training mode", "Limits & early termination", "Review"]
# Which step owns a field of the job file, so a refusal is shown where the choice was made.
OWNER = {"training_data": 0, "validation_data": 0, "validation_data_size": 0, "test_data": 0, "task": 1,
         "primary_metric": 1, "training_parameters": 2, "search_space": 2, "sweep.sampling_algorithm": 2, "limits": 3,
         "sweep.early_termination": 3}
MODELS = {  # what the wizard offers first; any other name of the model libraries can be typed in
    Task.CLASSIFICATION: ["resnet18", "resnet50", "mobilenetv2", "seresnext", "vits16r224", "vitb16r224"],
    Task.DETECTION: ["yolov5", "yolo11n", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet18_fpn",
                     "retinanet_resnet50_fpn"],
    Task.SEGMENTATION: ["maskrcnn_resnet50_fpn", "maskrcnn_resnet18_fpn", "yolo11n-seg"],
}
MODELS[Task.MULTILABEL] = MODELS[Task.CLASSIFICATION]
KINDS = ["choice", "uniform", "loguniform", "quniform", "qloguniform", "normal", "lognormal", "randint"]
POLICIES = ["none", "bandit", "median_stopping", "truncation_selection"]
SIZE_LABELS = {"training_crop_size": "Training crop (px)", "validation_crop_size": "Validation crop (px)",
               "img_size": "YOLO image size (px)", "min_size": "Shorter side (px)",
               "max_size": "Longer side at most (px)"}
RECIPE_HELP = ("Left empty, the trial's recipe sets it: the reference's fine-tuning rate when pretrained weights "
               "are to be had, AdamW's rate for training from scratch otherwise.")
# Mistakes a step's widgets found in this run (unreadable bounds, missing fields); "Next" refuses while any.
PROBLEMS: list[str] = []


def new_job() -> dict[str, Any]:
    return {"type": "automl", "task": Task.CLASSIFICATION.value, "training_data": {"type": "mltable"},
            "limits": {"max_trials": 10, "max_concurrent_trials": 1, "timeout_minutes": 60}}


def job() -> dict[str, Any]:
    return st.session_state.setdefault("wizard_job", new_job())


def check(doc: dict[str, Any], step: int) -> str | None:
    """The parser's refusal of ``doc`` when it belongs to ``step`` or an earlier one; None when fine."""
    try:
        parse_job(yaml.safe_dump(doc), Path.cwd())
    except ConfigError as exc:
        owner = next((s for field, s in OWNER.items() if exc.path.startswith(field)), 0)
        return str(exc) if owner <= step else None
    return None


def _data_step(doc: dict[str, Any]) -> None:
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
    st.caption(f"{row.images} images, {row.classes} classes, {spec(Task(row.task)).display_name}")
    doc["training_data"] = {"path": f"azureml:{name}:{int(version)}", "type": "mltable"}
    if name != old_name:  # the task comes from the dataset; kept as chosen while the dataset stays
        doc["task"] = row.task
    _test_data(doc, [r for r in rows if r.task == row.task and r.name != name])


def _test_data(doc: dict[str, Any], candidates: list[Any]) -> None:  # a dataset of the same task, held out
    options = ["(none)", *(f"azureml:{r.name}:{r.latest_version}" for r in candidates)]
    current = (doc.pop("test_data", None) or {}).get("path")
    choice = st.selectbox("Test data (optional)", options, key="wizard_test_data",
                          index=options.index(current) if current in options else 0,
                          format_func=lambda option: option.removeprefix("azureml:"),
                          help="Images no trial sees: the best model is scored on them once the trials end.")
    if choice != options[0]:
        doc["test_data"] = {"path": choice, "type": "mltable"}


def _metric_step(doc: dict[str, Any]) -> None:
    tasks = [t.value for t in Task]
    doc["task"] = st.selectbox("Task", tasks, index=tasks.index(doc["task"]),
                               format_func=lambda t: spec(Task(t)).display_name,
                               help="Taken from the dataset; it must match the dataset's labels.")
    metrics = PRIMARY_METRICS[Task(doc["task"])]
    current = doc.get("primary_metric", metrics[0])
    doc["primary_metric"] = st.selectbox("Primary metric", metrics,
                                         index=metrics.index(current) if current in metrics else 0)


def _mode_step(doc: dict[str, Any]) -> None:
    modes = ["AutoMode", "One model", "Sweep"]
    mode = "Sweep" if doc.get("search_space") else "One model" if doc["limits"].get("max_trials") == 1 else "AutoMode"
    mode = st.radio("Training mode", modes, index=modes.index(mode), horizontal=True,
                    help="AutoMode picks models and hyperparameters itself; a sweep tries what you lay out.")
    params = dict(doc.get("training_parameters") or {})
    models = MODELS[Task(doc["task"])]
    epochs = st.number_input("Epochs", 1, 1000, int(params.get("number_of_epochs", _trial_time.DEFAULT_EPOCHS)))
    params["number_of_epochs"] = int(epochs)
    doc["training_parameters"] = params  # the choices below edit it in place; estimates read it already
    here = _trial_time.Here.read(doc)
    if mode == "One model":
        doc["limits"]["max_trials"] = 1
        doc.pop("search_space", None)
        doc.pop("sweep", None)
        _model_table(doc, models, here)
        current = params.get("model_name", models[0])
        params["model_name"] = st.selectbox("Model", [*models, *([current] if current not in models else [])],
                                            index=[*models, current].index(current), accept_new_options=True)
        st.caption(f"{params['model_name']}: {_pretrained.sentence(params['model_name'])}. "
                   f"Time per trial on this machine: {_trial_time.time_per_trial(doc, here)}.")
        rate = st.number_input("Learning rate", 1e-6, 1.0, params.get("learning_rate"), format="%.5f",
                               placeholder="the recipe's", help=RECIPE_HELP)
        if rate is None:
            params.pop("learning_rate", None)
        else:
            params["learning_rate"] = float(rate)
    else:
        params.pop("model_name", None)
        doc["limits"]["max_trials"] = max(2, int(doc["limits"].get("max_trials", 10)))
        if mode == "AutoMode":
            doc.pop("search_space", None)
            doc["limits"]["max_trials"] = _trials_input(doc["limits"], "wizard_auto_trials")
            st.info(_automode_sentence(doc, here))
        else:
            doc["search_space"] = _space_editor(doc.get("search_space") or [{}], models)
            sweep = doc.setdefault("sweep", {})
            sweep["sampling_algorithm"] = st.selectbox("Sampling", ["random", "grid", "bayesian"],
                                                       index=["random", "grid", "bayesian"].index(
                                                           sweep.get("sampling_algorithm", "random")))
    models = _trial_time.planned_models(doc, here)
    if mode != "One model":
        _weights_lines(models)
    _size_inputs(doc, params, here, models)


def _weights_lines(models: list[str]) -> None:
    """Each planned model's starting weights, before anything trains."""
    sentences = {m: _pretrained.sentence(m) for m in models}
    st.markdown("**Starting weights:** " + "; ".join(f"{m} — {said}" for m, said in sentences.items()))
    if any(_pretrained.SCRATCH in said for said in sentences.values()):
        st.page_link("pages/weights.py", label="Import pretrained weights", icon=":material/download:")


def _size_inputs(doc: dict[str, Any], params: dict[str, Any], here: _trial_time.Here, models: list[str]) -> None:
    """The image sizes trials will use, chosen from the dataset's images; a changed one goes in the job."""
    task = Task(doc["task"])
    suggested: dict[str, int] = {}
    for model in models:
        sized = recipe.sized(task, recipe.family_of(model, task), here.image_sizes, here.train_images or 0)
        suggested |= {k: int(v) for k, v in sized.items() if k in SIZE_LABELS}
    if not suggested or here.image_sizes is None:
        return
    st.caption(f"Image sizes, chosen from your images (typically {here.image_sizes.short} by "
               f"{here.image_sizes.long} pixels): smaller trains faster, larger sees more detail.")
    for column, (key, value) in zip(st.columns(len(suggested)), suggested.items(), strict=True):
        chosen = int(column.number_input(SIZE_LABELS[key], 32, 4096, int(params.get(key, value)), step=32,
                                         key=f"wizard_{key}_{value}"))
        if chosen != value or key in params:
            params[key] = chosen


def _model_table(doc: dict[str, Any], models: list[str], here: _trial_time.Here) -> None:
    """The offered models for the task: size, speed class on a CPU, time per trial here and what each is
    good for."""
    guesses = _trial_time.estimates(doc, models, here) or {}
    rows = [{"model": m, "size (parameters)": size_text(m),
             "speed on a CPU": CATALOG[m].cpu_speed if m in CATALOG else "",
             "time per trial here": estimate.say(g.seconds) if (g := guesses.get(m)) else "not run here yet",
             "good for": CATALOG[m].good_for if m in CATALOG else ""} for m in models]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="wizard_models")


def _trials_input(limits: dict[str, Any], key: str) -> int:
    """The one trial count (``limits.max_trials``), asked on the mode step for AutoMode and on Limits."""
    return int(st.number_input("Max trials", 2, 1000, max(2, int(limits.get("max_trials", 10))), key=key,
                               help="How many models and settings to try; the job also stops at its timeout."))


def _automode_sentence(doc: dict[str, Any], here: _trial_time.Here) -> str:
    task, limits = Task(doc["task"]), doc["limits"]
    models = automode_models(task, estimate.on_gpu(here.device), here.train_images or 0)
    return (f"On this machine ({here.device}) AutoMode tries {' and '.join(models)} for "
            f"{spec(task).display_name.lower()}, in that order, each at its defaults first, then tunes the "
            f"learning rate and optimizer with Bayesian search (TPE) across {limits.get('max_trials', 10)} "
            f"trials, stopping at the job's timeout ({limits.get('timeout_minutes', 10080)} minutes) if that "
            f"comes first. Time per trial: {_trial_time.time_per_trial(doc, here)}.")


def _space_editor(space: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """One table per model (a sub-space): parameter, distribution, and its values or bounds."""
    count = st.number_input("Models in the sweep", 1, 6, len(space))
    out = []
    for i in range(int(count)):
        sub = space[i] if i < len(space) else {}
        st.markdown(f"**Sub-space {i + 1}**")
        model = sub.get("model_name", {}).get("values", [models[min(i, len(models) - 1)]])
        chosen = st.multiselect("Models", sorted({*models, *model}), default=model, key=f"space-{i}-models",
                                accept_new_options=True)
        rows = [{"parameter": k, "distribution": v.get("type", "choice") if isinstance(v, dict) else "choice",
                 "values / bounds": _bounds(v)} for k, v in sub.items() if k != "model_name"]
        rows = rows or [{"parameter": "learning_rate", "distribution": "uniform", "values / bounds": "0.0001, 0.01"}]
        table = st.data_editor(pd.DataFrame(rows), num_rows="dynamic", key=f"space-{i}", hide_index=True,
                               column_config={"distribution": st.column_config.SelectboxColumn(options=KINDS)})
        entry: dict[str, Any] = {"model_name": {"type": "choice", "values": chosen}}
        for _, row in table.dropna(subset=["parameter"]).iterrows():
            name, text = str(row["parameter"]).strip(), row["values / bounds"]
            try:
                entry[name] = _distribution(str(row["distribution"]), "" if pd.isna(text) else str(text))
            except (yaml.YAMLError, ValueError) as exc:
                entry[name] = str(text)  # kept as typed, so the row still shows it to be fixed
                PROBLEMS.append(f"Sub-space {i + 1}, {name}: {exc}")
                st.error(PROBLEMS[-1])
        out.append(entry)
    return out


def _bounds(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    if value.get("type") == "choice":
        return ", ".join(str(v) for v in value.get("values", []))
    return ", ".join(str(value[k]) for k in ("min_value", "max_value", "mu", "sigma", "q", "upper") if k in value)


def _distribution(kind: str, text: str) -> dict[str, Any]:
    """A search-space entry from the editor's row; ValueError says which value cannot be read."""
    values = []
    for piece in (v.strip() for v in text.split(",")):
        if not piece:
            continue
        try:
            values.append(yaml.safe_load(piece))
        except yaml.YAMLError:
            raise ValueError(f"cannot read {piece!r} in the values / bounds; write numbers or words "
                             f"separated by commas, e.g. 0.0001, 0.01") from None
    if not values:
        raise ValueError("the values / bounds are empty; write them separated by commas, e.g. 0.0001, 0.01")
    if kind == "choice":
        return {"type": "choice", "values": values}
    names = {"normal": ("mu", "sigma"), "lognormal": ("mu", "sigma"), "randint": ("upper",),
             "quniform": ("min_value", "max_value", "q"), "qloguniform": ("min_value", "max_value", "q")}
    return {"type": kind, **dict(zip(names.get(kind, ("min_value", "max_value")), values, strict=False))}


def _limits_step(doc: dict[str, Any]) -> None:
    limits = doc["limits"]
    left, middle, right = st.columns(3)
    if "max_trials" not in limits:  # an uploaded job file may leave it out
        st.error("limits.max_trials is missing from the job file: set it below (1 trains one model, more "
                 "runs AutoMode or a sweep), or choose a training mode on the previous step.")
        limits["max_trials"] = int(left.number_input("Max trials", 1, 1000, 1, key="wizard_trials_missing"))
    elif limits["max_trials"] > 1:
        with left:
            limits["max_trials"] = _trials_input(limits, "wizard_trials")
    limits["max_concurrent_trials"] = int(middle.number_input(
        "Max concurrent trials", 1, 100, int(limits.get("max_concurrent_trials", 1)),
        help="Capped at what this machine holds: one per GPU, or a share of the CPU cores."))
    limits["timeout_minutes"] = int(right.number_input("Timeout (minutes)", 1, 10080,
                                                       int(limits.get("timeout_minutes", 60))))
    if not doc.get("search_space") and limits["max_trials"] == 1:
        return
    policy = (doc.get("sweep") or {}).get("early_termination") or {}
    kind = st.selectbox("Early termination", POLICIES, index=POLICIES.index(policy.get("type", "none")))
    sweep = doc.setdefault("sweep", {"sampling_algorithm": "random"})
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


def _summary(doc: dict[str, Any], here: _trial_time.Here) -> str:
    """The job in plain words, one line per choice."""
    params, limits = doc.get("training_parameters") or {}, doc.get("limits") or {}
    sweep = doc.get("sweep") or {}
    task = Task(doc["task"]) if doc.get("task") in {t.value for t in Task} else None
    data = str((doc.get("training_data") or {}).get("path", "(none)")).removeprefix("azureml:")
    trials = limits.get("max_trials", 1)
    if doc.get("search_space"):
        models = sorted({m for sub in doc["search_space"] for m in (sub.get("model_name") or {}).get("values", [])})
        sampling = sweep.get("sampling_algorithm", "random")
        mode = f"sweep over {', '.join(models) or 'the default model'} ({sampling} sampling)"
    elif "model_name" in params or trials == 1:
        mode = f"one model: {params.get('model_name', 'the task default')}"
    else:
        mode = "AutoMode (models and settings chosen for the task and this machine)"
    policy = sweep.get("early_termination") or {}
    stop = "none" if not policy else (f"{policy['type']}, every {policy.get('evaluation_interval', 1)} "
                                      f"evaluation(s) after {policy.get('delay_evaluation', 0)}")
    test = str((doc.get("test_data") or {}).get("path", "")).removeprefix("azureml:")
    lines = [f"**Dataset:** {data}" + (f"; **test data:** {test}" if test else ""),
             f"**Task:** {spec(task).display_name if task else doc.get('task')}; "
             f"**primary metric:** {doc.get('primary_metric') or (PRIMARY_METRICS[task][0] if task else '')}",
             f"**Mode:** {mode}",
             f"**Trials:** {trials}, at most {limits.get('max_concurrent_trials', 1)} at a time",
             f"**Timeouts:** job {limits.get('timeout_minutes', 10080)} min, each trial "
             + (f"{limits['trial_timeout_minutes']} min" if limits.get("trial_timeout_minutes") else "none"),
             f"**Early termination:** {stop}",
             "**Time per trial on this machine:** "
             + (_trial_time.time_per_trial(doc, here) if task else "unknown")]
    if "number_of_epochs" in params:
        lines.insert(3, f"**Epochs:** {params['number_of_epochs']}")
    return "\n".join(f"- {line}" for line in lines)


def _review_step(doc: dict[str, Any]) -> None:
    here = _trial_time.Here.read(doc)
    st.markdown(_summary(doc, here))
    for warning in _trial_time.timeout_warnings(doc, here):  # before Submit: a timeout may keep nothing
        st.warning(warning, icon="⏱️")
    text = yaml.safe_dump(doc, sort_keys=False)
    st.code(text, language="yaml")
    st.download_button("Download job YAML", text, file_name="job.yml", mime="application/x-yaml")
    if st.button("Submit job", type="primary"):
        job_id, error = _ui.submit_job_yaml(text)
        if error:
            st.error(error)
        else:
            st.session_state.pop("wizard_job", None)
            st.session_state["wizard_step"] = 0
            # switch_page replaces the query string: the job id goes with it, so the job's page opens.
            st.switch_page("pages/jobs.py", query_params={"job": str(job_id)})


def _prefill() -> None:
    upload = st.file_uploader("Start from a job YAML", type=["yml", "yaml"], key="wizard_upload")
    if upload is not None and st.button("Load it"):
        try:
            loaded = yaml.safe_load(upload.getvalue())
            parse_job(yaml.safe_dump(loaded), Path.cwd())
        except (yaml.YAMLError, ConfigError) as exc:
            st.error(f"{upload.name}: {exc}")
            return
        st.session_state["wizard_job"] = {**new_job(), **loaded}
        st.session_state["wizard_step"] = 4
        st.rerun()


st.title("New job")
_prefill()
step = st.session_state.setdefault("wizard_step", 0)
st.markdown(" → ".join(f":blue-background[**{i + 1}. {name}**]" if i == step else f"{i + 1}. {name}"
                       for i, name in enumerate(STEPS)))
st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}: {STEPS[step]}")
doc = job()
PROBLEMS.clear()
try:
    [_data_step, _metric_step, _mode_step, _limits_step, _review_step][step](doc)
except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a job file this step cannot read
    log.exception("wizard step %s", STEPS[step])
    PROBLEMS.append(f"The job file has a field this step cannot read ({type(exc).__name__}: {exc}). "
                    "Fix it in the YAML and load it again, or go back and choose again.")
    st.error(PROBLEMS[-1])
back, forward = st.columns(2)
if step > 0 and back.button("Back"):
    st.session_state["wizard_step"] = step - 1
    st.rerun()
if step < len(STEPS) - 1 and forward.button("Next", type="primary"):
    problem = "; ".join(PROBLEMS) or check(doc, step)
    if problem:
        st.error(problem)
    else:
        st.session_state["wizard_step"] = step + 1
        st.rerun()
