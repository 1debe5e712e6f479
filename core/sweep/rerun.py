"""Re-running a trial and extending one: one-trial jobs built from the trial's manifest (the same dataset
version, every resolved parameter, the same seed); how a re-run's result compares with the original's.
Torch-free, so the studio's Re-run and "Train N more epochs" buttons can queue them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine
from sqlmodel import Session

from core.base.errors import KestrelError, NotFound
from core.data.reviewed import endpoint_row, origin
from core.sweep.jobs import submit_job
from storage.db import session_scope
from storage.repos import datasets, jobs, models, trials
from storage.settings import Settings
from storage.tables import Job, Trial

# The primary metric may move this much between two runs on one machine and still count as reproduced:
# seeded data order and initialisation repeat exactly, but some CPU and GPU kernels sum in a varying order.
TOLERANCE = 0.02
MAX_EXTRA_EPOCHS = 1000


def submit_rerun(*, trial_id: int, settings: Settings, engine: Engine) -> Job:
    """Queue a job that trains trial ``trial_id`` again as its manifest describes it (an extension again
    from the same trial's resume state)."""
    trial, manifest = _with_manifest(trial_id, engine, "re-run exactly; submit its job file again instead")
    origin: dict[str, Any] = {"rerun_of": trial_id}
    if "extends" in manifest:
        origin["extends"] = manifest["extends"]["trial"]
    return _one_trial_job(manifest, trial.primary_metric, f"re-run of trial {trial_id}", {}, origin,
                          settings=settings, engine=engine)


def submit_extension(*, trial_id: int, epochs: int, settings: Settings, engine: Engine) -> Job:
    """Queue a job whose one trial goes on training trial ``trial_id`` for ``epochs`` more epochs, from its
    last checkpoint with the optimizer's state (`core.train.loop.fit`); the new trial links to the first."""
    if not 1 <= epochs <= MAX_EXTRA_EPOCHS:
        raise KestrelError(f"--epochs {epochs}: give a whole number of epochs from 1 to {MAX_EXTRA_EPOCHS}")
    trial, manifest = _with_manifest(trial_id, engine, "be extended; start a job with checkpoint_run_id: "
                                     f"{trial_id} to train on from its weights")
    if why := why_not_extendable(trial):
        raise KestrelError(f"trial {trial_id} ({trial.model_name}) cannot be extended: {why}")
    done = int(trial.metrics["resume"]["epoch"])
    return _one_trial_job(manifest, trial.primary_metric, f"trial {trial_id} + {epochs} epochs",
                          {"number_of_epochs": done + epochs},
                          {"extends": trial_id, "extend_epochs": epochs}, settings=settings, engine=engine)


def submit_retrain(*, trial_id: int, dataset_version: int, epochs: int | None, origin: dict[str, Any],
                   settings: Settings, engine: Engine) -> Job:
    """Queue a job whose one trial trains on from trial ``trial_id``'s model (``checkpoint_run_id``) with
    its parameters, on version ``dataset_version`` of its dataset (one with reviewed images added): the
    active-learning loop's incremental trial. ``epochs``: None keeps the trial's own."""
    if epochs is not None and not 1 <= epochs <= MAX_EXTRA_EPOCHS:
        raise KestrelError(f"--epochs {epochs}: give a whole number of epochs from 1 to {MAX_EXTRA_EPOCHS}")
    trial, manifest = _with_manifest(trial_id, engine, "be retrained; start a job with checkpoint_run_id: "
                                     f"{trial_id} on the new dataset version")
    manifest = {**manifest, "dataset": {**manifest["dataset"], "version": dataset_version}}
    params: dict[str, Any] = {"checkpoint_run_id": str(trial_id)}
    if epochs is not None:
        params["number_of_epochs"] = epochs
    name = f"retrain of trial {trial_id} on {manifest['dataset']['name']}:{dataset_version}"
    return _one_trial_job(manifest, trial.primary_metric, name, params, {"retrain_of": trial_id, **origin},
                          settings=settings, engine=engine)


def submit_endpoint_retrain(*, endpoint: str, deployment: str | None, version: int | None, epochs: int | None,
                            settings: Settings, engine: Engine) -> Job:
    """"Retrain" on an endpoint: the model behind ``deployment`` (the one taking most traffic when None)
    trained on from its checkpoint on version ``version`` (the latest when None) of the dataset it trained on."""
    with session_scope(engine) as session:
        row = endpoint_row(session, endpoint)
        deployed = {d.name: d for d in models.deployments(session=session, endpoint_id=row.id)}
        name = deployment or max(deployed, key=lambda d: row.traffic.get(d, 0), default=None)
        if name not in deployed:
            raise NotFound(f"endpoint {endpoint} has no deployment {name!r}; deployments: {sorted(deployed)}")
        source = origin(session=session, model_version_id=deployed[name].model_version_id)
        latest = datasets.get_version(session=session, name=source.dataset, version=version)
        if latest is None:
            raise NotFound(f"dataset {source.dataset} has no version {version or '(none left)'}")
        number = latest.version
    return submit_retrain(trial_id=source.trial_id, dataset_version=number, epochs=epochs,
                          origin={"endpoint": endpoint, "deployment": name}, settings=settings, engine=engine)


def why_not_extendable(trial: Trial) -> str | None:
    """Why ``trial`` cannot be trained on, and what to do instead; None when it can."""
    if trial.status not in trials.WITH_MODEL:
        return f"it is {trial.status}; extend it once it has finished"
    if (trial.metrics.get("resume") or {}).get("epoch"):
        return None
    why = "it kept no resume state (it ran before Kestrel kept one, or stopped before its first epoch)"
    return f"{why}; start a job with checkpoint_run_id: {trial.id} to train on from its weights"


def _with_manifest(trial_id: int, engine: Engine, otherwise: str) -> tuple[Trial, dict[str, Any]]:
    with session_scope(engine) as session:
        trial = trials.get(session=session, trial_id=trial_id)
        if trial is None:
            raise NotFound(f"trial {trial_id} does not exist; `kestrel job show ID` lists a job's trials")
        session.expunge(trial)
    manifest = trial.metrics.get("manifest")
    if not manifest:
        raise KestrelError(f"trial {trial_id} has no manifest (it ran before Kestrel kept them), so it cannot "
                           + otherwise)
    return trial, manifest


def _one_trial_job(manifest: dict[str, Any], metric: str, name: str, params: dict[str, Any],
                   origin: dict[str, Any], *, settings: Settings, engine: Engine) -> Job:
    data = manifest["dataset"]
    doc = {"type": "automl", "task": data["task"], "display_name": name, "primary_metric": metric,
           "training_data": {"type": "mltable", "path": f"azureml:{data['name']}:{data['version']}"},
           "training_parameters": {k: v for k, v in (manifest["params"] | params).items() if v is not None},
           "limits": {"max_trials": 1}}
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / f"{name.replace(' ', '-').replace('+', 'plus')}.yml"
        file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return submit_job(file, settings=settings, engine=engine, libraries=False, origin=origin)


def comparison(*, session: Session, job_id: int) -> dict[str, Any] | None:
    """For a re-run job: the original's and the re-run's primary metric, their difference, whether it is
    within :data:`TOLERANCE`, and what differs between the two manifests (None for any other job)."""
    job = jobs.get(session=session, job_id=job_id)
    original_id = job.spec.get("rerun_of") if job else None
    if original_id is None:
        return None
    original = trials.get(session=session, trial_id=int(original_id))
    rerun = next(iter(trials.for_job(session=session, job_id=job_id)), None)
    if original is None:
        return {"original_trial": original_id, "trial": rerun.id if rerun else None, "missing": True}
    before, after = original.primary_metric_value, rerun.primary_metric_value if rerun else None
    delta = None if before is None or after is None else after - before
    ignored = ("device", "threads")  # said apart: the machine, not the recipe
    return {"original_trial": original.id, "trial": rerun.id if rerun else None, "metric": original.primary_metric,
            "original": before, "rerun": after, "delta": delta, "tolerance": TOLERANCE,
            "reproduced": None if delta is None else abs(delta) <= TOLERANCE,
            "differences": differences({k: v for k, v in (original.metrics.get("manifest") or {}).items()
                                        if k not in ignored},
                                       {k: v for k, v in ((rerun.metrics.get("manifest") if rerun else None) or {})
                                        .items() if k not in ignored}) if rerun and rerun.metrics.get("manifest")
            else [],
            "machines": [(original.metrics.get("manifest") or {}).get("device"),
                         ((rerun.metrics.get("manifest") if rerun else None) or {}).get("device")]}


def differences(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """What differs between two manifests, as ``field: a → b`` lines (the parameters one by one)."""
    out = []
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key), second.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{line}" for line in differences(a, b)]
        elif a != b:
            out.append(f"{key}: {a!r} → {b!r}")
    return out
