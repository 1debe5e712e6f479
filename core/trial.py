"""One trial: resolve parameters and model, train on the best device, store every result.

The single entry for a trial, used by `kestrel train`, the worker's trial processes and tests.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from core.data.view import VersionData, load_version
from core.errors import ConfigError
from core.params import TrainingParams, resolve_params
from core.tasks import Task
from core.tasks import spec as task_spec
from core.train.device import choose_device, describe, use_all_cores
from core.zoo.base import PARAMS_FILE, SETTINGS_FILE, WEIGHTS_FILE, ModelSpec, TrainedModel
from core.zoo.families import resolve
from storage.artifacts import BlobStore, write_atomic
from storage.db import session_scope
from storage.repos import trials
from storage.settings import Settings

log = logging.getLogger(__name__)
SOFTWARE = ("torch", "torchvision", "timm", "ultralytics", "kestrel")
FINISHED = ("completed", "early_terminated", "canceled")
LOGGERS = ("core", "ultralytics")  # what the trial log collects


@dataclass
class TrialResult:
    trial_id: int
    status: str
    primary_metric: str
    metrics: dict[str, float]
    device: str
    epochs_run: int
    artifacts: dict[str, str]
    notices: list[str] = field(default_factory=list)
    stop_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StorageContext:
    """Reports go to the database as metric points; stops on the trial's timeout."""

    def __init__(self, engine: Engine, trial_id: int, out_dir: Path, device: str,
                 timeout_s: float | None = None) -> None:
        self.engine, self.trial_id, self.out_dir, self.device = engine, trial_id, out_dir, device
        self.deadline = time.monotonic() + timeout_s if timeout_s else None

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        log.info("epoch %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        with session_scope(self.engine) as session:
            trials.append_metrics(session=session, trial_id=self.trial_id, step=step, metrics=metrics)

    def should_stop(self) -> str | None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "timeout"
        return None


def run_trial(*, settings: Settings, engine: Engine, dataset: str, version: int | None,
              overrides: Mapping[str, Any], job_id: int | None = None,
              timeout_s: float | None = None) -> TrialResult:
    """Train one model on a dataset version with ``overrides`` over the defaults."""
    with session_scope(engine) as session:
        data = load_version(session=session, blobs=BlobStore(settings.blobs_dir), name=dataset,
                            version=version)
    params = resolve_params(data.task, overrides)
    family, _ = resolve(params.model_name or "", data.task, params)
    params = resolve_params(data.task, family.default_params(data.task), overrides)
    if params.checkpoint_run_id:
        params = resolve_params(data.task, overrides, {"checkpoint_path": str(
            _checkpoint_weights(engine, params.checkpoint_run_id, data.task))})
    family, model = resolve(params.model_name or "", data.task, params)
    device = choose_device(params.device)
    primary = task_spec(data.task).primary_metric
    with session_scope(engine) as session:
        row = trials.create(session=session, model_name=params.model_name or "", job_id=job_id,
                            params=params.model_dump(mode="json"), primary_metric=primary)
    out_dir = settings.runs_dir / f"trial-{row.id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to(out_dir / "trial.log")
    try:
        use_all_cores()
        with session_scope(engine) as session:
            trials.start(session=session, trial_id=row.id, device=describe(device), pid=os.getpid(),
                         artifact_dir=str(out_dir), software=_software())
        log.info("trial %d: %s (%s) on %s, dataset %s:%d", row.id, model.display_name or
                 model.architecture, model.family, describe(device), data.name, data.version)
        ctx = StorageContext(engine, row.id, out_dir, device, timeout_s)
        try:
            trained = family.train(model, data, params, ctx)
        except Exception as exc:
            log.exception("trial %d failed", row.id)
            with session_scope(engine) as session:
                trials.finish(session=session, trial_id=row.id, status="failed", metrics={},
                              primary_metric_value=None, error=f"{type(exc).__name__}: {exc}")
            raise
        return _store(engine, row.id, out_dir, data, params, model, trained,
                      ctx.should_stop() or trained.stop_reason or None, device)
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _store(engine: Engine, trial_id: int, out_dir: Path, data: VersionData, params: TrainingParams,
           model: ModelSpec, trained: TrainedModel, stop_reason: str | None, device: str) -> TrialResult:
    settings_json = {**trained.settings, "task": data.task.value, "classes": data.classes,
                     "family": model.family, "architecture": model.architecture,
                     "size": model.size, "model_name": params.model_name}
    files = {"weights": trained.weights, "settings": out_dir / SETTINGS_FILE,
             "params": out_dir / PARAMS_FILE, "evaluation": out_dir / "evaluation.json",
             "log": out_dir / "trial.log"}
    for key, content in (("settings", settings_json), ("params", params.model_dump(mode="json")),
                         ("evaluation", trained.evaluation)):
        write_atomic(files[key], json.dumps(content, indent=2).encode())
    for notice in trained.notices:
        log.warning(notice)
    primary = task_spec(data.task).primary_metric
    # A trial stopped early keeps its model and metrics; the reason says why it stopped. Early
    # stopping on a flat metric is a normal completion, as in the reference.
    status = {None: "completed", "early_stopping": "completed", "canceled": "canceled"}.get(
        stop_reason, "early_terminated")
    with session_scope(engine) as session:
        trials.finish(session=session, trial_id=trial_id, status=status,
                      metrics={"final": trained.metrics, "notices": trained.notices,
                               "epochs_run": trained.epochs_run},
                      primary_metric_value=trained.metrics.get(primary), stop_reason=stop_reason or "")
    return TrialResult(trial_id, status, primary, trained.metrics, describe(device), trained.epochs_run,
                       {k: str(v) for k, v in files.items()}, trained.notices, stop_reason or "")


def _checkpoint_weights(engine: Engine, run_id: str, task: Task) -> Path:
    """The weights of the finished trial ``run_id`` (``12`` or ``trial-12``), to continue from."""
    field = "training_parameters.checkpoint_run_id"
    number = run_id.removeprefix("trial-")
    if not number.isdigit():
        raise ConfigError(field, f"{run_id!r} is not a trial id such as 12 or trial-12")
    with session_scope(engine) as session:
        row = trials.get(session=session, trial_id=int(number))
    if row is None or row.status not in FINISHED or not row.artifact_dir:
        raise ConfigError(field, f"trial {run_id} is not a finished trial with a saved model")
    settings = json.loads((Path(row.artifact_dir) / SETTINGS_FILE).read_text())
    if Task(settings["task"]) is not task:
        raise ConfigError(field, f"trial {run_id} trained a {settings['task']} model; this dataset "
                          f"is {task.value}")
    return Path(row.artifact_dir) / WEIGHTS_FILE


def _log_to(file: Path) -> logging.Handler:
    handler = logging.FileHandler(file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return handler


def _software() -> dict[str, str]:
    versions = {}
    for package in SOFTWARE:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
