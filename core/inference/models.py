"""The model registry: a finished trial's model becomes the next version of a named model, with
its task, metrics, source trial and inference settings (SPEC §7), which can be changed per version."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from core.base.errors import ConfigError, NotFound
from core.zoo.base import SETTINGS_FILE
from storage.artifacts import write_atomic
from storage.db import session_scope
from storage.repos import jobs, models, trials
from storage.settings import Settings
from storage.tables import ModelVersion

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")  # also a folder name: nothing that leaves models_dir
IDENTITY = ("task", "classes", "family", "architecture", "size", "model_name")  # what a model is, not how it scores
# training's files, not the model's
LEFT_BEHIND = ("console.log", "console.log.1", "trial.log", "trial.log.1", "checkpoint.pt", "best.pt",
               "resume.pt", "extension.pt")  # the last two: the state to extend the trial, not the model


def register(*, settings: Settings, engine: Engine, name: str, trial_id: int | None = None,
             job_id: int | None = None, path: Path | None = None) -> dict[str, Any]:
    """Register trial ``trial_id``'s model (or job ``job_id``'s best child, or the MLflow model folder
    ``path`` Kestrel exported) as the next version of ``name``."""
    if not NAME.match(name) or name in (".", ".."):
        raise ConfigError("--name", f"{name!r} is not a valid model name; use letters, digits, '.', '_' and '-' "
                          "(up to 63, starting with a letter or digit)")
    if sum(x is not None for x in (trial_id, job_id, path)) != 1:
        raise ConfigError("--trial/--job/--path", "give exactly one: the trial to register, the job whose best "
                          "child to, or an MLflow model folder")
    if path is not None:
        return _register_folder(settings, engine, name, path)
    with session_scope(engine) as session:
        if job_id is not None:
            job = jobs.get(session=session, job_id=job_id)
            if job is None or job.best_trial_id is None:
                raise NotFound(f"job {job_id} has no best trial (yet); `kestrel job show {job_id}` shows its trials")
            trial_id = job.best_trial_id
        assert trial_id is not None
        trial = trials.get(session=session, trial_id=trial_id)
        source = Path(trial.artifact_dir) if trial and trial.artifact_dir else None
        kept = trial is not None and trial.status in trials.WITH_MODEL and source is not None
        if not kept or not (source / SETTINGS_FILE).is_file():
            raise NotFound(f"trial {trial_id} has no saved model (only finished trials do)")
        model_settings = json.loads((source / SETTINGS_FILE).read_text())
        try:
            version = models.add_version(session=session, name=name, task=model_settings["task"], trial_id=trial_id,
                                         metrics=dict(trial.metrics.get("final", {})), settings=model_settings)
        except ValueError as exc:
            raise ConfigError("--name", str(exc)) from None
        return _store(session, version, source, settings.models_dir / name / str(version.version))


def _register_folder(settings: Settings, engine: Engine, name: str, path: Path) -> dict[str, Any]:
    from core.inference.mlflow_model import read_mlflow_model

    source, kestrel = read_mlflow_model(path)
    model_settings = json.loads((source / SETTINGS_FILE).read_text())
    with session_scope(engine) as session:
        try:
            version = models.add_version(session=session, name=name, task=model_settings["task"], trial_id=None,
                                         metrics=dict(kestrel.get("metrics", {})), settings=model_settings)
        except ValueError as exc:
            raise ConfigError("--name", str(exc)) from None
        return _store(session, version, source, settings.models_dir / name / str(version.version))


def _store(session: Session, version: ModelVersion, source: Path, target: Path) -> dict[str, Any]:
    """Copy the model's files into the version's own folder; none is left behind when the version is not."""
    try:
        _copy_model(source, target)
        version.artifact_dir = str(target)
        session.add(version)
        return describe(session, version)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _copy_model(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=False)
    for file in source.iterdir():
        if file.is_file() and file.name not in LEFT_BEHIND:
            shutil.copy2(file, target / file.name)


def resolve(session: Session, ref: str) -> ModelVersion:
    """``NAME:VERSION``, ``NAME`` or ``NAME@latest`` (its latest version); with or without ``azureml:``."""
    name, _, number = ref.removeprefix("azureml:").removesuffix("@latest").partition(":")
    if number and not number.isdigit():
        raise ConfigError("NAME:VERSION", f"version {number!r} in {ref!r} is not a number")
    version = models.get_version(session=session, name=name, version=int(number) if number else None)
    if version is None:
        raise NotFound(f"model {ref!r} not found; `kestrel model list` shows the registered models")
    return version


def describe(session: Session, version: ModelVersion) -> dict[str, Any]:
    model = models.model_of(session=session, version=version)
    return {"name": model.name, "version": version.version, "task": model.task, "trial_id": version.trial_id,
            "metrics": version.metrics, "settings": version.settings, "artifact_dir": version.artifact_dir,
            "created_at": version.created_at.isoformat()}


def update_settings(*, engine: Engine, ref: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change inference settings of one version; every change is checked before any is written."""
    with session_scope(engine) as session:
        version = resolve(session, ref)
        current = dict(version.settings)
        editable = sorted(k for k in current if k not in IDENTITY)
        for key, value in changes.items():
            if key not in editable:
                raise ConfigError(f"--set {key}", f"not an inference setting of {ref}", editable)
            current[key] = _checked(key, value, current[key])
        write_atomic(Path(version.artifact_dir) / SETTINGS_FILE, json.dumps(current, indent=2).encode())
        version.settings = current
        session.add(version)
        return describe(session, version)


def _checked(key: str, value: Any, old: Any) -> Any:
    kind = type(old)
    try:
        if kind is bool:
            if str(value).lower() not in ("true", "false"):
                raise ValueError
            new: Any = str(value).lower() == "true"
        else:
            new = kind(value) if old is not None else value
    except (TypeError, ValueError):
        raise ConfigError(f"--set {key}", f"{value!r} is not a {kind.__name__}") from None
    if kind in (int, float) and (new < 0 or (("thresh" in key or "ratio" in key) and new > 1)):
        raise ConfigError(f"--set {key}", f"{value!r} is out of range" + (" (0..1)" if "thresh" in key else ""))
    return new
