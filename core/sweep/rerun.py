"""Re-running a trial: a one-trial job built from the trial's manifest (the same dataset version, every
resolved parameter, the same seed), and how the re-run's result compares with the original's. Torch-free,
so the studio's Re-run button can queue one."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine
from sqlmodel import Session

from core.base.errors import KestrelError, NotFound
from core.sweep.jobs import submit_job
from storage.db import session_scope
from storage.repos import jobs, trials
from storage.settings import Settings
from storage.tables import Job

# The primary metric may move this much between two runs on one machine and still count as reproduced:
# seeded data order and initialisation repeat exactly, but some CPU and GPU kernels sum in a varying order.
TOLERANCE = 0.02


def submit_rerun(*, trial_id: int, settings: Settings, engine: Engine) -> Job:
    """Queue a job that trains trial ``trial_id`` again as its manifest describes it."""
    with session_scope(engine) as session:
        trial = trials.get(session=session, trial_id=trial_id)
        if trial is None:
            raise NotFound(f"trial {trial_id} does not exist; `kestrel job show ID` lists a job's trials")
        manifest, metric = trial.metrics.get("manifest"), trial.primary_metric
    if not manifest:
        raise KestrelError(f"trial {trial_id} has no manifest (it ran before Kestrel kept them), so it cannot be "
                           "re-run exactly; submit its job file again instead")
    data = manifest["dataset"]
    doc = {"type": "automl", "task": data["task"], "display_name": f"re-run of trial {trial_id}",
           "primary_metric": metric,
           "training_data": {"type": "mltable", "path": f"azureml:{data['name']}:{data['version']}"},
           "training_parameters": {k: v for k, v in manifest["params"].items() if v is not None},
           "limits": {"max_trials": 1}}
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / f"rerun-of-trial-{trial_id}.yml"
        file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return submit_job(file, settings=settings, engine=engine, libraries=False, origin={"rerun_of": trial_id})


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
