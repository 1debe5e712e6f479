"""Each studio page's server time, and `kestrel job list/show`'s wall time, on a large home: 1,000 jobs
with 10,000 trials (metric points, final metrics; a few running) and a 10,000-image dataset version.

The home is KESTREL_HOME when set (the rows are added to what it holds), else a fresh temporary folder.
Rows go in with bulk inserts (seconds); only the images a page shows get real blobs. Pages run headless
with Streamlit's AppTest in this process, each opened once and rerun once (the rerun is what a refresh
or a click costs); a page's time is the time its scripts run, as on a server (AppTest's own set-up of
each app is printed apart). The first page pays for the imports, so a throwaway page opens before them.
Commands run as a shell runs them, each in a fresh process.

    PYTHONPATH=. .venv/bin/python bench/ui_pages.py [--jobs 1000] [--trials-per-job 10] [--images 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from sqlalchemy import Engine, func, insert, select

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
KESTREL = Path(sys.executable).parent / "kestrel"
CLASSES = ["circle", "square", "triangle", "ring"]
METRICS = ("mean_average_precision", "precision", "recall")
EPOCHS = 5
GOAL_S = 1.0
JOB_YAML = """\
type: automl
task: image_object_detection
primary_metric: mean_average_precision
training_data: {path: 'azureml:bench:1', type: mltable}
limits: {max_trials: %d, max_concurrent_trials: 2, timeout_minutes: 120}
sweep: {sampling_algorithm: random, early_termination: {type: bandit, evaluation_interval: 2, slack_factor: 0.2}}
search_space:
- model_name: {type: choice, values: [fasterrcnn_resnet18_fpn, yolov5]}
  learning_rate: {type: uniform, min_value: 0.0001, max_value: 0.01}
"""


@dataclass(frozen=True)
class Seeded:
    job_id: int  # a finished sweep on the list's first page
    trial_id: int  # its best trial, with an evaluation on disk
    model: str  # NAME:VERSION of a registered model


def _next_id(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return (connection.execute(select(func.max(table.id))).scalar() or 0) + 1


def _png(i: int) -> bytes:
    image = Image.new("RGB", (160, 120), (30 + i * 7 % 200, 90, 140))
    ImageDraw.Draw(image).ellipse((20 + i % 60, 20, 80 + i % 60, 90), fill=(240, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def seed_dataset(settings: Any, engine: Engine, count: int) -> str:
    """A detection dataset version of ``count`` images with two boxes each; the first 48 have blobs."""
    from storage.artifacts import BlobStore
    from storage.tables import Annotation, Dataset, DatasetVersion, ImageItem

    name = f"bench-{_next_id(engine, Dataset)}"
    rng, now = random.Random(0), datetime.now(UTC)
    boxes = [(rng.uniform(0, .5), rng.uniform(0, .5), rng.uniform(.05, .5), rng.uniform(.05, .5), CLASSES[i % 4])
             for i in range(2 * count)]
    stats = {"images_per_class": dict.fromkeys(CLASSES, count // 2),
             "instances_per_class": dict.fromkeys(CLASSES, count // 2),
             "boxes_per_image": {"2": count}, "image_sizes": {"160x120": count},
             "box_sizes": {"width": [round(b[2], 5) for b in boxes[::10]],
                           "height": [round(b[3], 5) for b in boxes[::10]], "label": [b[4] for b in boxes[::10]]},
             "splits": {"train": count - count // 5, "validation": count // 5}}
    blobs = BlobStore(settings.blobs_dir)
    first_image = _next_id(engine, ImageItem)
    with engine.begin() as connection:
        dataset_id = connection.execute(insert(Dataset).values(name=name, created_at=now)).inserted_primary_key[0]
        version_id = connection.execute(insert(DatasetVersion).values(
            dataset_id=dataset_id, version=1, task="image_object_detection", format="jsonl", source="bench",
            classes=CLASSES, stats=stats, warnings=[], validation_fraction=0.2, image_count=count,
            annotation_count=2 * count, validation_count=count // 5, created_at=now)).inserted_primary_key[0]
        images = []
        for i in range(count):
            sha = blobs.put(_png(i))[0] if i < 48 else hashlib.sha256(f"{name}/{i}".encode()).hexdigest()
            images.append({"id": first_image + i, "version_id": version_id, "position": i, "sha256": sha,
                           "file_name": f"img{i:05d}.png", "suffix": ".png", "width": 160, "height": 120,
                           "split": "validation" if i % 5 == 0 else "train"})
        connection.execute(insert(ImageItem), images)
        connection.execute(insert(Annotation), [
            {"image_id": first_image + k // 2, "label": label, "x0": x, "y0": y, "x1": x + w, "y1": y + h,
             "polygon": None, "is_crowd": False} for k, (x, y, w, h, label) in enumerate(boxes)])
    return name


def _trial_rows(job: dict[str, Any], first_id: int, count: int, rng: random.Random) -> list[dict[str, Any]]:
    now, rows = datetime.now(UTC), []
    for n in range(count):
        running = job["status"] == "running" and n >= count - 2
        value = None if running or n % 7 == 3 else round(rng.uniform(0.2, 0.8), 4)
        start = job["started_at"] + timedelta(minutes=5 * n)
        final = {m: round(rng.uniform(0.2, 0.9), 4) for m in METRICS} | {"mean_average_precision": value}
        final["per_class"] = [{"class": c, "average_precision": rng.random()} for c in CLASSES]
        rows.append({
            "id": first_id + n, "job_id": job["id"], "number": n, "model_name": "fasterrcnn_resnet18_fpn",
            "status": "running" if running else "completed" if value is not None else "failed",
            "params": {"model_name": "fasterrcnn_resnet18_fpn", "learning_rate": round(rng.uniform(1e-4, 1e-2), 5),
                       "optimizer": rng.choice(["sgd", "adam", "adamw"])},
            "metrics": {} if value is None else {"final": final, "epochs_run": EPOCHS, "train_images": 8000},
            "primary_metric": "mean_average_precision", "primary_metric_value": value, "device": "cuda:0",
            "epoch": 2 if running else EPOCHS, "stop_reason": "", "error": "" if value or running else "diverged",
            "artifact_dir": "", "pid": None, "heartbeat_at": now if running else start + timedelta(minutes=4),
            "started_at": start, "finished_at": None if running else start + timedelta(minutes=4)})
    return rows


def seed_jobs(engine: Engine, jobs: int, per_job: int, dataset: str) -> tuple[int, int]:
    """``jobs`` AutoML sweeps of ``per_job`` trials each (the newest few running), with metric points."""
    from storage.tables import Job, MetricPoint, Trial

    rng, now = random.Random(1), datetime.now(UTC)
    job_id, trial_id = _next_id(engine, Job), _next_id(engine, Trial)
    facts = {"task": "image_object_detection", "primary_metric": "mean_average_precision", "max_trials": per_job,
             "timeout_minutes": 120}
    job_rows, trial_rows = [], []
    for k in range(jobs):
        started = now - timedelta(hours=jobs - k)
        status = "running" if k >= jobs - 3 else "failed" if k % 50 == 7 else "completed"
        job = {"id": job_id + k, "kind": "automl", "name": f"sweep {k}", "status": status,
               "spec": {"yaml": JOB_YAML % per_job, "facts": facts, "dataset": dataset, "version": 1,
                        "source": "/bench/job.yml", "notices": [], "test_data": None},
               "progress": 0.5 if status == "running" else 1.0, "message": f"{per_job} trials",
               "error": "out of memory" if status == "failed" else "", "cancel_requested": False,
               "worker_id": "bench", "best_trial_id": None, "crashes": 0, "crash_progress": 0.0,
               "created_at": started, "started_at": started,
               "finished_at": None if status == "running" else started + timedelta(minutes=5 * per_job)}
        trials = _trial_rows(job, trial_id + len(trial_rows), per_job, rng)
        scored = [t for t in trials if t["primary_metric_value"] is not None]
        job["best_trial_id"] = max(scored, key=lambda t: t["primary_metric_value"])["id"] if scored else None
        job_rows.append(job)
        trial_rows += trials
    points = [{"trial_id": t["id"], "step": step, "name": name, "value": rng.random(), "created_at": now}
              for t in trial_rows for step in range(1, t["epoch"] + 1) for name in METRICS[:2]]
    with engine.begin() as connection:
        connection.execute(insert(Job), job_rows)
        connection.execute(insert(Trial), trial_rows)
        connection.execute(insert(MetricPoint), points)
    finished = next(j for j in reversed(job_rows) if j["status"] == "completed" and j["best_trial_id"])
    return finished["id"], finished["best_trial_id"]


def seed_models(settings: Any, engine: Engine, trial_id: int) -> str:
    """An evaluation on disk for ``trial_id``, a registered model from it and an endpoint deploying it."""
    from core.serving import manage
    from storage.db import session_scope
    from storage.repos import models
    from storage.tables import Trial

    folder = settings.home / "bench-trial"
    folder.mkdir(parents=True, exist_ok=True)
    curve = {"recall": [i / 100 for i in range(101)], "precision": [1 - i / 200 for i in range(101)]}
    (folder / "evaluation.json").write_text(json.dumps({
        "iou_type": "bbox", "metric_type": "coco", "pr_curves": dict.fromkeys(CLASSES, curve),
        "per_class": [{"class": c, "average_precision": 0.5} for c in CLASSES], "samples": []}))
    model_settings = {"task": "image_object_detection", "classes": CLASSES, "model_name": "fasterrcnn_resnet18_fpn",
                      "box_score_thresh": 0.3}
    (folder / "settings.json").write_text(json.dumps(model_settings))
    (folder / "trial.log").write_text("epoch 1\n" * 2000)
    name = f"bench-model-{_next_id(engine, Trial)}"
    with session_scope(engine) as session:
        trial = session.get(Trial, trial_id)
        assert trial is not None
        trial.artifact_dir = str(folder)
        session.add(trial)
        version = models.add_version(session=session, name=name, task="image_object_detection", trial_id=trial_id,
                                     metrics={"mean_average_precision": 0.5}, settings=model_settings,
                                     artifact_dir=str(folder))
        manage.create_endpoint(session=session, name=f"{name}-ep", settings=settings)
        manage.add_deployment(session=session, endpoint=f"{name}-ep", name="blue", model=f"{name}:{version.version}")
    return f"{name}:{version.version}"


class ScriptClock:
    """Seconds Streamlit spends running scripts (app.py, then the page), which is a server's time for a
    run. AppTest's own set-up of each app (it scans every installed package for components, ~0.4 s
    here) is no part of it; a server does that once, at start."""

    def __init__(self) -> None:
        from streamlit.runtime.scriptrunner import script_runner

        self.seconds = 0.0
        run = script_runner.ScriptRunner._run_script

        def timed(runner: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return run(runner, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        script_runner.ScriptRunner._run_script = timed  # type: ignore[method-assign]

    def measure(self, work: Any) -> float:
        before = self.seconds
        work()
        return self.seconds - before


def time_page(clock: ScriptClock, page: str, **query: str) -> tuple[float, float, float, str]:
    """Server seconds to open ``page`` and to rerun it, AppTest's wall seconds to open it, and the page's
    first exception, if any."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page(f"pages/{page}.py")
    for key, value in query.items():
        at.query_params[key] = value
    start = time.perf_counter()
    opened = clock.measure(at.run)
    wall = time.perf_counter() - start
    rerun = clock.measure(at.run)
    return opened, rerun, wall, at.exception[0].message if at.exception else ""


def time_cli(*args: str, repeat: int = 3) -> float:
    """Median wall seconds of `kestrel ARGS` (a fresh process each time, as a shell runs it)."""
    # Byte code is cached as on a person's machine (some sandboxes switch that off, and every run then
    # compiles the repository's modules again).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([str(KESTREL), *args], check=True, env=env, stdout=subprocess.DEVNULL, cwd=ROOT)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _line(what: str, seconds: float, extra: str = "") -> None:
    verdict = "ok" if seconds < GOAL_S else "OVER"
    print(f"{what:<44} {seconds:>7.3f} s   goal < {GOAL_S:.0f} s  {verdict}  {extra}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--trials-per-job", type=int, default=10)
    parser.add_argument("--images", type=int, default=10000)
    args = parser.parse_args()
    os.environ.setdefault("KESTREL_HOME", tempfile.mkdtemp(prefix="kestrel-bench-"))
    sys.path.insert(0, str(ROOT))
    from storage.db import make_engine, upgrade
    from storage.settings import Settings

    settings = Settings()
    engine = make_engine(settings.db_url)
    upgrade(engine, settings)
    start = time.perf_counter()
    dataset = seed_dataset(settings, engine, args.images)
    job_id, trial_id = seed_jobs(engine, args.jobs, args.trials_per_job, dataset)
    model = seed_models(settings, engine, trial_id)
    print(f"seeded {args.jobs} jobs, {args.jobs * args.trials_per_job} trials, {args.images} images into "
          f"{settings.home} in {time.perf_counter() - start:.1f} s")
    engine.dispose()

    # AppTest warns of a "missing ScriptRunContext" each time it is set up; nothing to act on here.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").disabled = True
    clock = ScriptClock()
    time_page(clock, "weights")  # imports streamlit, pandas and plotly into this process: not counted
    pages = [("jobs (list, page 1, newest job)", "jobs", {}), (f"jobs ?job={job_id}", "jobs", {"job": str(job_id)}),
             (f"trial ?trial={trial_id}", "trial", {"trial": str(trial_id)}),
             (f"datasets ({args.images} images)", "datasets", {"dataset": dataset, "version": "1"}),
             ("labelling", "labelling", {"dataset": dataset, "version": "1"}),
             ("models", "models", {"model": model}), ("endpoints", "endpoints", {}), ("score", "score", {}),
             ("weights", "weights", {}), ("wizard", "wizard", {})]
    print(f"{'page: server time to open it':<44} {'':>7}               then to rerun it; AppTest's wall time to open")
    for label, page, query in pages:
        opened, rerun, wall, exception = time_page(clock, page, **query)
        _line(label, opened, f"rerun {rerun:.3f} s; AppTest {wall:.3f} s"
              + (f"  EXCEPTION: {exception}" if exception else ""))
    print(f"{'command (median of 3 runs, wall time)':<44}")
    _line("kestrel --help", time_cli("--help"))
    _line("kestrel job list --json", time_cli("job", "list", "--json"))
    _line(f"kestrel job show {job_id} --json", time_cli("job", "show", str(job_id), "--json"))


if __name__ == "__main__":
    main()
