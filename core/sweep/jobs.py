"""Submitting an AutoML job file, and a job as people and ``--json`` see it.

Everything a job could trip over is checked here, at submission: the YAML's fields, the data (data
given by path is imported now, as a dataset version), the task against the data, and every model
name of the search space (a name outside the catalog is checked by the worker when the studio submits,
so that the studio never loads the model libraries). What may still disappoint (a time limit shorter
than an epoch) is a warning, given before the job starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import Engine
from sqlmodel import Session

from core.base.errors import ConfigError, InputError
from core.base.params import resolve_params
from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.report import require_trainable
from core.sweep import estimate
from core.sweep.distributions import Choice, is_distribution
from core.sweep.jobspec import DataRef, JobSpec, parse_job
from core.sweep.space import grid_size
from core.sweep.summary import AUTOML
from core.train.recipe import ImageSizes
from core.zoo.catalog import known_model
from storage.db import session_scope
from storage.repos import jobs
from storage.repos.datasets import get_version
from storage.settings import Settings
from storage.tables import DatasetVersion, Job

if TYPE_CHECKING:
    from core.zoo.pretrained import ModelWeights


def submit_job(file: Path, *, settings: Settings, engine: Engine, libraries: bool = True,
               origin: dict[str, Any] | None = None) -> Job:
    """Check ``file`` (a job YAML), import its data given by path, and queue the job. With ``libraries``
    off, model names the catalog does not know are left to the worker (the studio never loads torch).
    ``origin`` is kept with the job (``rerun_of``: the trial it re-runs; ``extends``: the trial it goes on
    from, with ``extend_epochs`` more epochs)."""
    text = _read(file, settings.max_job_file_bytes)
    try:
        spec = parse_job(text, file.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{file.name}: {exc.path}", exc.reason, exc.allowed, exc.hints) from None
    _check_grid(spec, file, settings.max_grid_points)
    registered = spec.training_data.is_registered
    if registered:  # a wrong dataset name is refused before torch is loaded
        name, version = _dataset_ref(spec)
        row = _registered(spec, name, version, engine)
    check_models(spec, libraries=libraries)
    if spec.params.checkpoint_run_id:
        from core.runs.trial import checkpoint_weights

        checkpoint_weights(engine, spec.params.checkpoint_run_id, spec.task)
    if not registered:  # imported only once everything else is known to be right
        name, version = _import_training_data(spec, file, settings, engine)
        row = _registered(spec, name, version, engine)
    test = _test_dataset(spec, name, settings, engine)
    with session_scope(engine) as session:
        stored = spec.model_copy(update={"training_data": DataRef(name=name, version=str(row.version)),
                                         "validation_data": None, "test_data": test})
        planned = yaml.safe_load(stored.to_yaml())
        if origin and "extend_epochs" in origin:  # an extension trains only its new epochs
            planned["training_parameters"]["number_of_epochs"] = origin["extend_epochs"]
        facts = stored_facts(stored) | predicted(session, planned, row)
        job = jobs.enqueue(session=session, kind=AUTOML, name=spec.display_name or spec.name or file.stem,
                           spec={"yaml": stored.to_yaml(), "facts": facts, "dataset": name,
                                 "version": row.version, "source": str(file.resolve()), "notices": spec.notices,
                                 "test_data": f"{test.name}:{test.version}" if test else None, **(origin or {})})
        session.refresh(job)
        session.expunge(job)
        return job


def stored_facts(spec: JobSpec) -> dict[str, Any]:
    """What the jobs list and ``job show`` tell of the job's file (`core.sweep.summary.FACTS`), kept with
    the job so that no refresh parses its YAML again."""
    return {"task": spec.task.value, "primary_metric": spec.primary_metric,
            "max_trials": spec.limits.max_trials, "timeout_minutes": spec.limits.timeout_minutes}


def predicted(session: Session, doc: dict[str, Any], row: DatasetVersion) -> dict[str, Any]:
    """The job's time as estimated before it starts (`core.sweep.estimate.job_time`) and the range it is
    expected to fall in, on the device it will train on; the job page sets it beside the actual time."""
    device = estimate.planned_device(session)
    work = estimate.workload(doc, device=device, train_images=row.image_count - row.validation_count,
                             validation_images=row.validation_count,
                             image_sizes=ImageSizes.from_stats((row.stats or {}).get("image_sizes", {})))
    timing = estimate.job_time(doc, estimate.per_model(session=session, doc=doc, work=work))
    if timing is None:
        return {}
    return {"predicted_s": round(timing.job_s, 1), "predicted_range_s": [round(s, 1) for s in timing.range_s],
            "predicted_device": device}


def timeout_warnings(job: Job, *, engine: Engine, device: str) -> list[str]:
    """Each of the job's models whose estimated epoch on ``device`` does not fit its time limit, or
    leaves room for only a few epochs (`core.sweep.estimate.timeout_warnings`)."""
    with session_scope(engine) as session:
        row = get_version(session=session, name=job.spec["dataset"], version=job.spec["version"])
        if row is None:
            return []
        return estimate.timeout_warnings(session=session, doc=yaml.safe_load(job.spec["yaml"]), device=device,
                                         train_images=row.image_count - row.validation_count,
                                         validation_images=row.validation_count,
                                         image_sizes=ImageSizes.from_stats((row.stats or {}).get("image_sizes", {})))


def planned_weights(job: Job, *, engine: Engine, device: str) -> list[ModelWeights]:
    """Where each model the job will train starts from (cached, downloadable, or none: from scratch)."""
    from core.zoo.pretrained import status

    doc = yaml.safe_load(job.spec["yaml"])
    with session_scope(engine) as session:
        row = get_version(session=session, name=job.spec["dataset"], version=job.spec["version"])
        train_images = row.image_count - row.validation_count if row else 0
    task, params = Task(doc["task"]), doc.get("training_parameters") or {}
    models = estimate.planned_models(doc, gpu=estimate.on_gpu(device), train_images=train_images)
    return [status(model, task, params) for model in models]


def _read(file: Path, limit: int) -> str:
    """The job file's text. At most ``limit`` + 1 bytes are read: a job file is a few KB, and a huge
    one (a wrong file, a device) must be refused before it is held in memory and parsed."""
    try:
        with file.open("rb") as f:
            data = f.read(limit + 1)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise InputError(str(file), f"cannot read the job file ({exc.strerror})", "check the path") from None
    if len(data) > limit:
        said = f"{size:,} bytes" if size > limit else f"more than {limit:,} bytes"  # a device has no size
        raise InputError(str(file), f"the job file is {said}, over the limit of {limit:,} bytes",
                         "a job file is a few KB of YAML: check it is the file you meant, or raise the "
                         "limit with KESTREL_MAX_JOB_FILE_BYTES")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(file), f"is not UTF-8 text (byte {exc.start:,} cannot be read)",
                         "save the job file as UTF-8") from None


def _check_grid(spec: JobSpec, file: Path, limit: int) -> None:
    """A grid sweep is refused when its space has more points than ``limit``, counted without
    building them: the worker would try to serve a grid it can never finish."""
    if spec.sampling_algorithm != "grid" or not spec.search_space:
        return
    points = grid_size(spec.search_space)
    if points > limit:
        raise ConfigError(f"{file.name}: search_space", f"the grid has {points:,} points, over the limit of "
                          f"{limit:,} (KESTREL_MAX_GRID_POINTS); give fewer choices, or use "
                          "sampling_algorithm: random or bayesian, which try max_trials points of any space")


def _registered(spec: JobSpec, name: str, version: int | None, engine: Engine) -> DatasetVersion:
    """The stored dataset version the job names, checked to be trainable for the job's task."""
    with session_scope(engine) as session:
        row = get_version(session=session, name=name, version=version)
        if row is None:
            raise ConfigError("training_data.path", f"dataset {name}:{version or 'latest'} is not registered",
                              hints=["kestrel data list"])
        require_trainable(row, name)
        if row.task != spec.task.value:
            raise ConfigError("task", f"{spec.task.value} does not fit dataset {name}:{row.version}, which is "
                              f"{row.task}", [row.task])
        return row


def _test_dataset(spec: JobSpec, name: str, settings: Settings, engine: Engine) -> DataRef | None:
    """The dataset version the best model is scored on at the end (``test_data``), imported now when given
    by path (as ``<training dataset>-test``): a wrong path or task fails the submission, not the job's end."""
    data = spec.test_data
    if data is None:
        return None
    if data.path is not None:
        report = import_dataset(data.path, ImportOptions(f"{name}-test", spec.task, validation_fraction=0.0),
                                settings=settings, engine=engine)
        return DataRef(name=report["name"], version=str(report["version"]))
    assert data.name is not None
    with session_scope(engine) as session:
        row = get_version(session=session, name=data.name,
                          version=int(data.version) if data.version and data.version.isdigit() else None)
        if row is None:
            raise ConfigError("test_data.path", f"dataset {data.name}:{data.version or 'latest'} is not registered",
                              hints=["kestrel data list"])
        if row.task != spec.task.value:
            raise ConfigError("test_data", f"dataset {data.name}:{row.version} is {row.task}, not {spec.task.value}")
        return DataRef(name=data.name, version=str(row.version))


def _dataset_ref(spec: JobSpec) -> tuple[str, int | None]:
    data = spec.training_data
    assert data.name is not None
    if spec.validation_data is not None:
        raise ConfigError("validation_data", "a registered training dataset carries its own validation "
                          "split; leave validation_data out (or give both as paths)")
    return data.name, int(data.version) if data.version and data.version.isdigit() else None


def _import_training_data(spec: JobSpec, file: Path, settings: Settings, engine: Engine) -> tuple[str, int]:
    """Training data given by path, imported as a new dataset version."""
    data = spec.training_data
    assert data.path is not None
    if spec.validation_data is not None and spec.validation_data.path is None:
        raise ConfigError("validation_data.path", "give a path too when training_data is a path")
    name = _dataset_name(spec.experiment_name or file.stem)
    options = ImportOptions(name, spec.task, validation_fraction=spec.validation_data_size or 0.2,
                            validation_source=spec.validation_data.path if spec.validation_data else None)
    report = import_dataset(data.path, options, settings=settings, engine=engine)
    return name, int(report["version"])


def _dataset_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-._")[:100]
    return name or "job-data"


def check_models(spec: JobSpec, *, libraries: bool = True) -> None:
    """Every model the job may train must exist for its task (a typo fails now, not in trial 7). Names the
    reference and AutoMode use are known without the model libraries; any other name is asked of them
    (seconds: they load torch), or with ``libraries`` off left to the worker, which asks before trial 1."""
    subs = spec.search_space or ({},)
    for i, sub in enumerate(subs):
        entry = sub.get("model_name", spec.training_parameters.get("model_name"))
        names = list(entry.values) if isinstance(entry, Choice) else [] if is_distribution(entry) else [entry]
        for name in names:
            if name is None or known_model(str(name), spec.task) or not libraries:
                continue
            try:
                from core.zoo.families import resolve  # loads torch: after the cheaper checks

                resolve(str(name), spec.task, resolve_params(spec.task, {"model_name": name}))
            except ConfigError as exc:
                where = f"search_space[{i}].model_name" if spec.search_space else "training_parameters.model_name"
                raise ConfigError(where, exc.reason, exc.allowed, exc.hints) from None
