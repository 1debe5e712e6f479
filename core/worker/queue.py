"""`kestrel worker`: runs queued jobs outside the UI process and records their progress.

One worker claims one job at a time (compare-and-set in the database), keeps a heartbeat, and
on start returns to the queue the jobs of workers whose heartbeat stopped (a crash, kill -9). A worker
serves one lane (storage.repos.workers.LANES): the studio runs one for training and one for imports,
scoring and exports, so that quick work never waits behind a trial.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from core.base.errors import KestrelError
from core.base.processes import process_alive
from storage.artifacts import BlobStore, remove_staged, sweep_staging
from storage.db import session_scope
from storage.repos import jobs, reviews, workers
from storage.repos.datasets import referenced_blobs
from storage.settings import Settings
from storage.tables import Job

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
GRACE_S = 30.0  # a worker silent for this long is taken for dead
STAGED_MAX_AGE_S = 24 * 3600.0  # an upload folder no pending job reads is swept after this
SWEEP_EVERY_S = 3600.0

Handler = Callable[[Job, Settings, Engine], str]
HANDLERS: dict[str, Handler] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
    def add(handler: Handler) -> Handler:
        HANDLERS[kind] = handler
        return handler

    return add


@handles("import")
def run_import(job: Job, settings: Settings, engine: Engine) -> str:
    """Import a dataset given by path (an upload staged by the studio, or a folder)."""
    from core.base.tasks import parse_task
    from core.data.importer import ImportOptions, import_dataset

    spec = job.spec
    options = ImportOptions(spec["name"], parse_task(spec["task"]) if spec.get("task") else None,
                            spec.get("format"), float(spec.get("validation_size", 0.2)))

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            with session_scope(engine) as session:
                jobs.progress(session=session, job_id=job.id, fraction=done / max(total, 1),
                              message=f"{done} of {total} images checked")

    try:
        report = import_dataset(Path(spec["path"]), options, settings=settings, engine=engine,
                                progress=progress)
    finally:  # the blobs hold the images now; a staged upload would only pile up (a user's folder stays)
        remove_staged(Path(spec["path"]), settings.staging_dir)
    return f"imported {report['name']}:{report['version']} ({report['images']} images, " \
           f"{len(report['skipped'])} skipped)"


@handles("automl")
def run_automl(job: Job, settings: Settings, engine: Engine) -> str:
    from core.sweep.orchestrator import run_job

    return run_job(job, settings, engine)


@handles("score")
def run_score(job: Job, settings: Settings, engine: Engine) -> str:
    """Answer images staged by the Test-score page with a registered model version (spec: ``model``,
    ``images`` [{name, path}], ``staging``, ``xai``); the answers go to the job's folder."""
    from core.inference.models import resolve
    from core.inference.predict import load_predictor
    from core.inference.score import ImagesToScore, score_images

    spec = job.spec
    request = ImagesToScore([i["name"] for i in spec["images"]], [Path(i["path"]) for i in spec["images"]],
                            spec.get("xai"))
    explaining = " and explaining" if request.xai else ""

    def progress(done: int, total: int) -> None:
        _report(engine, job.id, done / max(total, 1), f"{done} of {total} images scored{explaining}")

    try:
        with session_scope(engine) as session:
            folder = Path(resolve(session, spec["model"]).artifact_dir)
        _report(engine, job.id, 0.0, f"loading {spec['model']}")
        report = score_images(load_predictor(folder), request, settings.job_dir(job.id),
                              max_pixels=settings.max_image_pixels, progress=progress)
    finally:
        remove_staged(Path(spec.get("staging", "")), settings.staging_dir)
    skipped = f", {len(report['skipped'])} could not be read" if report["skipped"] else ""
    return f"scored {report['images']} image(s) with {spec['model']}{skipped}"


@handles("export")
def run_export(job: Job, settings: Settings, engine: Engine) -> str:
    """Export a registered model version (spec: ``model``, ``format``) into the job's folder, with its sidecar."""
    from core.inference.export import export_model, sidecar_path
    from core.inference.models import resolve

    ref, fmt = job.spec["model"], job.spec["format"]
    with session_scope(engine) as session:
        folder = Path(resolve(session, ref).artifact_dir)
    _report(engine, job.id, 0.1, f"exporting {ref} to {fmt}")
    exported = export_model(folder, fmt, settings.job_dir(job.id))
    return f"exported {ref} to {exported.name} (described in {sidecar_path(exported).name})"


def _report(engine: Engine, job_id: int, fraction: float, message: str) -> None:
    with session_scope(engine) as session:
        jobs.progress(session=session, job_id=job_id, fraction=fraction, message=message)


@dataclass
class Worker:
    settings: Settings
    engine: Engine
    lane: str = "all"
    worker_id: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:8]}")
    current_job: int | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self, *, once: bool = False, poll_s: float = 1.0, until_job: int | None = None) -> int:
        """Run jobs until stopped (or, with ``once``, until the queue is empty; with ``until_job``,
        until that job has ended); returns the number of jobs run."""
        from core.train.device import machine

        with session_scope(self.engine) as session:
            workers.register(session=session, worker_id=self.worker_id, pid=os.getpid(), device=machine(),
                             lane=self.lane)
            # A worker whose process is gone is dead at once; one on another machine, by its heartbeat.
            alive = {w.worker_id for w in workers.live(session=session, grace_s=GRACE_S)
                     if process_alive(w.pid, w.heartbeat_at)}
            # Each lane takes back its own kinds only: two lanes starting together never count one crash twice.
            queued, failed = jobs.requeue_orphans(session=session, live_workers=alive,
                                                  kinds=None if self.lane == "all" else self.kinds,
                                                  max_crashes=self.settings.max_job_crashes)
            for job_id in queued:
                log.warning("job %d lost its worker; queued again", job_id)
            for job_id in failed:
                log.error("job %d failed: the worker died %d times while running it", job_id,
                          self.settings.max_job_crashes)
        beat = threading.Thread(target=self._beat, daemon=True)
        beat.start()
        done, swept = 0, float("-inf")
        try:
            while not self.stopping.is_set():
                with session_scope(self.engine) as session:
                    job = jobs.claim_next(session=session, worker_id=self.worker_id, kinds=self.kinds)
                if until_job is not None and _ended(self.engine, until_job):
                    break
                if job is None:
                    if "import" in self.kinds and time.monotonic() - swept > SWEEP_EVERY_S:  # idle: no job waits
                        self._sweep()
                        swept = time.monotonic()
                    if once:
                        break
                    self.stopping.wait(poll_s)
                    continue
                self._run_job(job)
                done += 1
        finally:
            self.stopping.set()
            beat.join(timeout=HEARTBEAT_S + 1)
            with session_scope(self.engine) as session:
                workers.retire(session=session, worker_id=self.worker_id)
        return done

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in workers.LANES[self.lane] if k in HANDLERS)

    def _sweep(self) -> None:
        """Files nothing will read again: uploads no pending job reads, blobs no dataset or review queue
        holds (an import killed before its commit, a dismissed review image), each untouched for a day."""
        with session_scope(self.engine) as session:
            pending = [Path(job.spec[key]) for job in jobs.list_jobs(session=session, statuses=jobs.ACTIVE)
                       for key in ("path", "staging") if isinstance(job.spec.get(key), str)]
            held = referenced_blobs(session=session) | reviews.blobs(session=session)
        for folder in sweep_staging(self.settings.staging_dir, keep=pending, older_than_s=STAGED_MAX_AGE_S):
            log.info("removed %s: an upload no job reads, untouched for a day", folder)
        orphans = BlobStore(self.settings.blobs_dir).sweep(keep=held, older_than_s=STAGED_MAX_AGE_S)
        if orphans:
            log.info("removed %d image blobs no dataset holds (left by an import that never ended)", len(orphans))

    def _run_job(self, job: Job) -> None:
        self.current_job = job.id
        log.info("job %d (%s) started", job.id, job.kind)
        try:
            message = HANDLERS[job.kind](job, self.settings, self.engine)
            with session_scope(self.engine) as session:
                canceled = jobs.is_cancel_requested(session=session, job_id=job.id)
                jobs.progress(session=session, job_id=job.id, fraction=1.0, message=message)
                jobs.finish(session=session, job_id=job.id, status="canceled" if canceled else "completed")
        except Exception as exc:  # the job fails, the worker goes on
            if not isinstance(exc, KestrelError):
                log.exception("job %d failed", job.id)
            with session_scope(self.engine) as session:
                jobs.finish(session=session, job_id=job.id, status="failed", error=str(exc))
        finally:
            self.current_job = None

    def _beat(self) -> None:
        while not self.stopping.wait(HEARTBEAT_S):
            with session_scope(self.engine) as session:
                workers.heartbeat(session=session, worker_id=self.worker_id,
                                  current_job_id=self.current_job)


def _ended(engine: Engine, job_id: int) -> bool:
    with session_scope(engine) as session:
        job = jobs.get(session=session, job_id=job_id)
        return job is None or job.status in jobs.FINAL
