"""One trial: resolve parameters and model, train on the best device, store every result.

The single entry for a trial, used by `kestrel train`, the worker's trial processes and tests.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from core.base.errors import ConfigError, KestrelError
from core.base.params import TrainingParams, resolve_params
from core.base.processes import process_alive
from core.base.tasks import Task
from core.base.tasks import spec as task_spec
from core.data.balance import images_per_class, imbalance_ratio
from core.data.view import VersionData, load_version
from core.runs import ddp, stopping
from core.runs import manifest as manifests
from core.runs.stopping import Policy
from core.train import recipe as recipes
from core.train.device import choose_device, describe, use_all_cores
from core.train.loop import CHECKPOINT_FILE, RESUME_FILE
from core.train.recipe import Recipe
from core.zoo.base import PARAMS_FILE, SETTINGS_FILE, WEIGHTS_FILE, ModelFamily, ModelSpec, TrainedModel
from core.zoo.families import resolve
from storage.artifacts import BlobStore, write_atomic
from storage.db import session_scope
from storage.repos import jobs, trials
from storage.settings import Settings

log = logging.getLogger(__name__)
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
    """Reports go to the database as metric points. Stops on the trial's timeout and, for a job's
    trial, on the job's cancel, the worker's SIGTERM or its early-termination policy, judged at each report."""

    POLL_S = 1.0  # how often the job's cancel flag is read: cancel takes effect within seconds
    PROGRESS_S = 2.0  # how often the position within an epoch is written (the leaderboard redraws every 2 s)

    def __init__(self, engine: Engine, trial_id: int, out_dir: Path, device: str,
                 timeout_s: float | None = None, *, job_id: int | None = None, primary_metric: str = "",
                 policy: Policy | None = None) -> None:
        self.engine, self.trial_id, self.out_dir, self.device = engine, trial_id, out_dir, device
        self.deadline = time.monotonic() + timeout_s if timeout_s else None
        # The worker names its limit ("job timeout after 60 min"); `kestrel train` gives seconds only.
        self.timeout_reason = stopping.worker_timeout_reason() or (
            stopping.timeout(timeout_s) if timeout_s else "stopped by the worker")
        self.job_id, self.primary_metric, self.policy = job_id, primary_metric, policy
        self.reason: str | None = None
        self._polled = self._progressed = 0.0
        self.owner: int | None = None  # in a copy for another process: the trial process's pid

    def __getstate__(self) -> dict[str, Any]:
        """A copy for processes of the trial's own (ultralytics' DDP ranks): the database by its URL, and the
        trial process's pid, since the worker's SIGTERM reaches that process only."""
        state = {k: v for k, v in self.__dict__.items() if k != "engine"}
        return state | {"url": self.engine.url.render_as_string(hide_password=False), "owner": os.getpid()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from storage.db import make_engine

        self.__dict__.update({k: v for k, v in state.items() if k != "url"})
        self.engine = make_engine(state["url"])

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        with session_scope(self.engine) as session:
            if trials.has_step(session=session, trial_id=self.trial_id, step=step):
                return
            trials.append_metrics(session=session, trial_id=self.trial_id, step=step, metrics=metrics)
        log.info("epoch %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if self.policy is not None and self.job_id is not None and self.primary_metric in metrics:
            self._judge()

    def progress(self, epochs: float) -> None:
        if time.monotonic() - self._progressed < self.PROGRESS_S:
            return
        self._progressed = time.monotonic()
        with session_scope(self.engine) as session:
            trials.progress(session=session, trial_id=self.trial_id, epochs=epochs)

    def _judge(self) -> None:
        assert self.policy is not None and self.job_id is not None
        with session_scope(self.engine) as session:
            curves = trials.history(session=session, job_id=self.job_id, metric=self.primary_metric)
            finished = {t.id for t in trials.for_job(session=session, job_id=self.job_id) if t.finished_at}
        # Policies count intervals: each report of the primary metric is one, whatever the epoch.
        intervals = {tid: [(i + 1, v) for i, (_, v) in enumerate(curve)] for tid, curve in curves.items()}
        reason = self.policy.should_stop(self.trial_id, intervals, finished)
        if reason and self.reason is None:
            log.info("early termination: %s", reason)
            self.reason = reason

    def should_stop(self) -> str | None:
        """The reason to stop, once there is one. The worker's SIGTERM counts at once: its cancel, or its
        deadline for this trial (which may come before this process's own, counted from a later start)."""
        asked = stopping.terminated()
        if self.reason is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = self.timeout_reason
        if self.reason is None and (asked or time.monotonic() - self._polled >= self.POLL_S):
            self._polled = time.monotonic()
            if self.job_id is not None:
                with session_scope(self.engine) as session:
                    if jobs.is_cancel_requested(session=session, job_id=self.job_id):
                        self.reason = stopping.CANCELED
            if self.reason is None and self.owner is not None and not process_alive(self.owner):
                self.reason = "the trial's process ended"  # stopped by force: its ranks must not train on unseen
        if self.reason is None and asked:
            self.reason = self.timeout_reason
        return self.reason


def run_trial(*, settings: Settings, engine: Engine, dataset: str, version: int | None,
              overrides: Mapping[str, Any], timeout_s: float | None = None, trial_id: int | None = None,
              primary_metric: str | None = None, policy: Policy | None = None,
              threads: int | None = None, extends: int | None = None) -> TrialResult:
    """Train one model on a dataset version with ``overrides`` over the defaults.

    A job's trial comes with its row (``trial_id``, created queued by the job), the job's primary
    metric and termination policy, and its share of the CPU cores (``threads``). A trial that
    ``extends`` another goes on from that one's resume state (its ``number_of_epochs`` counts the
    other's epochs too)."""
    with session_scope(engine) as session:
        data = load_version(session=session, blobs=BlobStore(settings.blobs_dir), name=dataset,
                            version=version)
    params, family, model, recipe = trial_params(engine, data, overrides)
    device = choose_device(params.device)
    primary = primary_metric or task_spec(data.task).primary_metric
    resolved = params.model_dump(mode="json")
    if trial_id is None:
        with session_scope(engine) as session:
            trial_id = trials.create(session=session, model_name=params.model_name or "", params=resolved,
                                     primary_metric=primary).id
            assert trial_id is not None
    out_dir = settings.runs_dir / f"trial-{trial_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to(out_dir / "trial.log", settings.max_log_bytes)
    try:
        use_all_cores(threads)
        manifest = manifests.build(data, params, model, family.weights(model, params), describe(device))
        if extends is not None:
            manifest["extends"] = _continue_from(engine, extends, trial_id, out_dir)
        write_atomic(out_dir / manifests.MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
        with session_scope(engine) as session:
            trials.start(session=session, trial_id=trial_id, device=describe(device), pid=os.getpid(),
                         artifact_dir=str(out_dir), software=manifest["software"],
                         model_name=params.model_name or "", train_images=len(data.train),
                         epochs=params.number_of_epochs)
            trials.set_metrics(session=session, trial_id=trial_id, key="manifest", values=manifest)
            job_id = trials.get(session=session, trial_id=trial_id).job_id  # type: ignore[union-attr]
        log.info("trial %d: %s (%s) on %s, dataset %s:%d", trial_id, model.display_name or
                 model.architecture, model.family, describe(device), data.name, data.version)
        log.info("%s", recipes.describe(recipe.name, {k: v for k, v in recipe.values.items()
                                                      if k not in overrides}))
        ctx = StorageContext(engine, trial_id, out_dir, device, timeout_s, job_id=job_id, primary_metric=primary,
                             policy=policy)
        try:
            trained = ddp.train(family, model, data, params, ctx)
            _record_gpu_memory(engine, trial_id, device)
        except Exception as exc:
            log.exception("trial %d failed", trial_id)
            with session_scope(engine) as session:
                trials.finish(session=session, trial_id=trial_id, status="failed", metrics={},
                              primary_metric_value=None, error=f"{type(exc).__name__}: {exc}")
            raise
        return _store(engine, trial_id, out_dir, data, params, model, trained,
                      ctx.reason or trained.stop_reason or None, device, primary)
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _record_gpu_memory(engine: Engine, trial_id: int, device: str) -> None:
    """The GPU memory the trial took at its peak: the worker packs as many trials of this model onto a GPU
    as fit (`core.sweep.launchers.gpu_slots`)."""
    if device.startswith("cuda"):
        import torch

        peak = torch.cuda.max_memory_reserved(torch.device(device)) / 2**20
        with session_scope(engine) as session:
            trials.set_metrics(session=session, trial_id=trial_id, key="memory", values={"gpu_peak_mb": round(peak)})


def _continue_from(engine: Engine, parent_id: int, trial_id: int, out_dir: Path) -> dict[str, Any]:
    """Start trial ``trial_id`` where finished trial ``parent_id`` stopped: its resume state becomes this
    trial's checkpoint (unless this trial has one of its own, after a crash) and its curves this trial's
    first points. What it started from, for the manifest."""
    with session_scope(engine) as session:
        parent = trials.get(session=session, trial_id=parent_id)
        epoch = int(((parent.metrics if parent else {}).get("resume") or {}).get("epoch", 0))
        source = Path(parent.artifact_dir) / RESUME_FILE if parent and parent.artifact_dir else None
        if source is None or not epoch or not source.is_file():
            raise KestrelError(f"trial {parent_id} kept no resume state to go on from ({source or 'no folder'}); "
                               f"start a job with checkpoint_run_id: {parent_id} to train on from its weights")
        trials.continue_curves(session=session, source=parent_id, target=trial_id, up_to=epoch)
    if not (out_dir / CHECKPOINT_FILE).is_file():
        copy = out_dir / (CHECKPOINT_FILE + ".tmp")
        shutil.copyfile(source, copy)
        os.replace(copy, out_dir / CHECKPOINT_FILE)
    log.info("going on from trial %d after its epoch %d", parent_id, epoch)
    return {"trial": parent_id, "epoch": epoch, "sha256": manifests.file_sha256(source)}


def trial_params(engine: Engine, data: VersionData, overrides: Mapping[str, Any]
                 ) -> tuple[TrainingParams, ModelFamily, ModelSpec, Recipe]:
    """The trial's parameters: task < family < recipe (sized to the data, chosen by whether pretrained
    weights are to be had) < ``overrides``; and its family, model and recipe."""
    layers: list[Mapping[str, Any]] = [overrides]
    params = resolve_params(data.task, overrides)
    if params.checkpoint_run_id:
        layers.append({"checkpoint_path": str(checkpoint_weights(engine, params.checkpoint_run_id, data.task))})
    family, _ = resolve(params.model_name or "", data.task, params)
    params = resolve_params(data.task, family.default_params(data.task), *layers)
    family, model = resolve(params.model_name or "", data.task, params)
    pretrained = recipes.choose(params.recipe, family.weights(model, params).pretrained)
    recipe = recipes.recipe(task=data.task, family=family.name, pretrained=pretrained,
                            images=recipes.ImageSizes.of((i.width, i.height) for i in data.train),
                            train_images=len(data.train), classes=len(data.classes),
                            epochs=params.number_of_epochs,
                            crop=params.validation_crop_size if "validation_crop_size" in params.model_fields_set
                            else None, imbalance=imbalance_ratio(images_per_class(data.train)))
    # The recipe sets no name, size or tiling, so the model resolved above stays the trial's.
    params = resolve_params(data.task, family.default_params(data.task), recipe.values, *layers,
                            {"recipe": recipe.name})
    return params, family, model, recipe


def _store(engine: Engine, trial_id: int, out_dir: Path, data: VersionData, params: TrainingParams,
           model: ModelSpec, trained: TrainedModel, stop_reason: str | None, device: str,
           primary: str) -> TrialResult:
    settings_json = {**trained.settings, "task": data.task.value, "classes": data.classes,
                     "family": model.family, "architecture": model.architecture,
                     "size": model.size, "model_name": params.model_name}
    files = {"weights": trained.weights, "settings": out_dir / SETTINGS_FILE,
             "params": out_dir / PARAMS_FILE, "evaluation": out_dir / "evaluation.json",
             "log": out_dir / "trial.log"}
    # Stopped before its first epoch ended (a time limit or a cancel; for an extension, its first new
    # epoch): no model to keep or register.
    kept = not (stop_reason and (trained.epochs_run == 0 or not trained.metrics))
    if not kept:
        trained.weights.unlink(missing_ok=True)
        (out_dir / RESUME_FILE).unlink(missing_ok=True)
        files = {k: v for k, v in files.items() if k in ("params", "log")}
    for key, content in (("settings", settings_json), ("params", params.model_dump(mode="json")),
                         ("evaluation", trained.evaluation)):
        if key in files:
            write_atomic(files[key], json.dumps(content, indent=2).encode())
    for notice in trained.notices:
        log.warning(notice)
    # A trial stopped early keeps its model and metrics; the reason says why it stopped. Early
    # stopping on a flat metric is a normal completion, as in the reference.
    status = {None: "completed", "early_stopping": "completed", stopping.CANCELED: "canceled"}.get(
        stop_reason, "early_terminated")
    error = "" if kept else stopping.nothing_kept(stop_reason or "")
    if error:
        log.warning(error)
        status = "canceled" if stop_reason == stopping.CANCELED else "failed"
    with session_scope(engine) as session:
        trials.finish(session=session, trial_id=trial_id, status=status,
                      metrics={"final": trained.metrics, "notices": trained.notices,
                               "epochs_run": trained.epochs_run,
                               "resume": {"epoch": trained.resume_epoch} if kept and trained.resume_epoch else None},
                      primary_metric_value=trained.metrics.get(primary), stop_reason=stop_reason or "",
                      error=error)
    return TrialResult(trial_id, status, primary, trained.metrics, describe(device), trained.epochs_run,
                       {k: str(v) for k, v in files.items()}, trained.notices, stop_reason or "")


def checkpoint_weights(engine: Engine, run_id: str, task: Task) -> Path:
    """The weights of the finished trial ``run_id`` (``12`` or ``trial-12``), to continue from."""
    field = "training_parameters.checkpoint_run_id"
    number = run_id.removeprefix("trial-")
    if not number.isdigit():
        raise ConfigError(field, f"{run_id!r} is not a trial id such as 12 or trial-12")
    with session_scope(engine) as session:
        row = trials.get(session=session, trial_id=int(number))
    if row is None or row.status not in trials.WITH_MODEL or not row.artifact_dir:
        raise ConfigError(field, f"trial {run_id} is not a finished trial with a saved model")
    settings = json.loads((Path(row.artifact_dir) / SETTINGS_FILE).read_text())
    if Task(settings["task"]) is not task:
        raise ConfigError(field, f"trial {run_id} trained a {settings['task']} model; this dataset "
                          f"is {task.value}")
    return Path(row.artifact_dir) / WEIGHTS_FILE


def _log_to(file: Path, max_bytes: int) -> logging.Handler:
    handler = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=1, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return handler
