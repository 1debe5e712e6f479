"""The job wizard's job file, kept in Session State, and what the wizard says about it: the step bar, the
parser's refusals placed on the step that made them, AutoMode's sentence and the review's summary, each
worded from the file as it will be written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
import yaml

from core.base.errors import ConfigError
from core.base.tasks import Task, spec
from core.sweep.jobspec import PRIMARY_METRICS, Limits, parse_job
from core.zoo.catalog import AUTOMODE_SAMPLING
from ui import trial_time as _trial_time

STEPS = ["Data", "Task & metric", "Training mode", "Limits & early termination", "Review"]
# Which step owns a field of the job file, so a refusal is shown where the choice was made.
OWNER = {"training_data": 0, "validation_data": 0, "validation_data_size": 0, "test_data": 0, "task": 1,
         "primary_metric": 1, "training_parameters": 2, "search_space": 2, "sweep.sampling_algorithm": 2, "limits": 3,
         "sweep.early_termination": 3, "display_name": 4, "experiment_name": 4, "tags": 4}
SAMPLING = {"random": "random sampling", "grid": "grid search over every combination",
            "bayesian": "Bayesian sampling with TPE"}
TIMEOUT_MIN = Limits.model_fields["timeout_minutes"].default
SIZE_AND_BATCH = ("training_crop_size", "validation_crop_size", "min_size", "max_size", "img_size",
                  "training_batch_size", "validation_batch_size")  # as the review lists them when set


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


def step_bar(step: int) -> str:
    """The steps as one markdown line, the current one marked. The dots are escaped: a line starting with
    "1." would be drawn as a numbered list."""
    return " → ".join(f":blue-background[**{i + 1}\\. {name}**]" if i == step else f"{i + 1}\\. {name}"
                      for i, name in enumerate(STEPS))


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def sampling_of(doc: dict[str, Any]) -> str:
    """The sampling algorithm the job runs with: AutoMode's own, or the sweep's (random when unsaid)."""
    if is_automode(doc):
        return AUTOMODE_SAMPLING
    return str((doc.get("sweep") or {}).get("sampling_algorithm", "random")).lower()


def is_automode(doc: dict[str, Any]) -> bool:
    """Whether the job runs as AutoMode (as the engine tells it): several trials and no search space."""
    trials = (doc.get("limits") or {}).get("max_trials", 1)
    return isinstance(trials, int) and trials > 1 and not doc.get("search_space")


def sampling_words(doc: dict[str, Any]) -> str:
    """The job's sampling in words, with the job file's name for it; for AutoMode, a note when the file names
    another one (AutoMode always searches its own way)."""
    algorithm = sampling_of(doc)
    said = f"{SAMPLING.get(algorithm, algorithm)} (sampling_algorithm: {algorithm})"
    written = (doc.get("sweep") or {}).get("sampling_algorithm")
    if is_automode(doc) and written and str(written).lower() != algorithm:
        said += f"; the job file's sampling_algorithm: {written} does not change how AutoMode searches"
    return said


def automode_sentence(doc: dict[str, Any], here: _trial_time.Here) -> str:
    task, limits = Task(doc["task"]), doc["limits"]
    models = _trial_time.planned_models(doc, here)
    return (f"On this machine ({here.device}) AutoMode tries {' and '.join(models)} for "
            f"{spec(task).display_name.lower()}, in that order, each at its defaults first, then tunes the "
            f"learning rate (and the optimizer where pretrained weights are used) with {sampling_words(doc)} "
            f"across {limits.get('max_trials', 10)} trials, stopping at the job's timeout "
            f"({limits.get('timeout_minutes', TIMEOUT_MIN)} minutes) if that comes first. "
            f"Time per trial: {_trial_time.time_per_trial(doc, here)}.")


def _mode(doc: dict[str, Any], here: _trial_time.Here, task: Task | None) -> str:
    params, trials = doc.get("training_parameters") or {}, (doc.get("limits") or {}).get("max_trials", 1)
    if doc.get("search_space"):
        models = sorted({m for sub in doc["search_space"] for m in (sub.get("model_name") or {}).get("values", [])})
        return f"sweep over {', '.join(models) or 'the default model'}, {sampling_words(doc)}"
    if trials == 1:
        return f"one model: {params.get('model_name', 'the task default')}"
    if "model_name" in params:
        return f"AutoMode on one model, {params['model_name']}, {sampling_words(doc)}"
    models = ", ".join(_trial_time.planned_models(doc, here)) if task else "models"
    return f"AutoMode ({models}, chosen for the task and this machine), {sampling_words(doc)}"


def summary(doc: dict[str, Any], here: _trial_time.Here) -> str:
    """The job in plain words, one line per choice."""
    params, limits = doc.get("training_parameters") or {}, doc.get("limits") or {}
    task = Task(doc["task"]) if doc.get("task") in {t.value for t in Task} else None
    data = str((doc.get("training_data") or {}).get("path", "(none)")).removeprefix("azureml:")
    policy = (doc.get("sweep") or {}).get("early_termination") or {}
    stop = "none" if not policy else (f"{policy['type']}, every {policy.get('evaluation_interval', 1)} "
                                      f"evaluation(s) after {policy.get('delay_evaluation', 0)}")
    test = str((doc.get("test_data") or {}).get("path", "")).removeprefix("azureml:")
    lines = [f"**Dataset:** {data}" + (f"; **test data:** {test}" if test else ""),
             f"**Task:** {spec(task).display_name if task else doc.get('task')}; "
             f"**primary metric:** {doc.get('primary_metric') or (PRIMARY_METRICS[task][0] if task else '')}",
             f"**Mode:** {_mode(doc, here, task)}",
             f"**Trials:** {limits.get('max_trials', 1)}, at most {limits.get('max_concurrent_trials', 1)} at a time",
             f"**Timeouts:** job {limits.get('timeout_minutes', TIMEOUT_MIN)} min, each trial "
             + (f"{limits['trial_timeout_minutes']} min" if limits.get("trial_timeout_minutes") else "none"),
             f"**Early termination:** {stop}",
             "**Time per trial on this machine:** "
             + (_trial_time.time_per_trial(doc, here) if task else "unknown")]
    sized = [f"{key} {params[key]}" for key in SIZE_AND_BATCH if key in params]
    lines.insert(3, "**Image size and batch size:** " + (", ".join(sized) or "left to each trial's recipe"))
    if "number_of_epochs" in params:
        lines.insert(3, f"**Epochs:** {params['number_of_epochs']}")
    if tags := doc.get("tags"):
        lines.insert(0, "**Tags:** " + tags_text(tags))
    if doc.get("display_name") or doc.get("experiment_name"):
        lines.insert(0, f"**Job name:** {doc.get('display_name') or '(none)'}; "
                        f"**experiment:** {doc.get('experiment_name') or '(none)'}")
    return "\n".join(f"- {line}" for line in lines)


def tags_text(tags: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in tags.items())


def parse_tags(text: str) -> tuple[dict[str, str], str]:
    """``team=vision, purpose=baseline`` as a mapping, and a refusal to show (empty when fine)."""
    tags: dict[str, str] = {}
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        key, sign, value = piece.partition("=")
        if not sign or not key.strip():
            return tags, (f"Tags: {piece!r} is not a key=value pair; write pairs such as team=vision, "
                          "separated by commas")
        tags[key.strip()] = value.strip()
    return tags, ""
