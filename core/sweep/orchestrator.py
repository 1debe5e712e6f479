"""run_job: an AutoML job's trials, each in its own process, within the job's limits.

The loop: ask the sweep for a configuration, create its Trial row, start ``kestrel trial run ID``
(a child process, or a task on a Ray cluster: `core.sweep.launchers`), and when the process ends
read the row and tell the sweep its result. The database is the only
record, so a restarted worker rebuilds the sweep from the finished rows and goes on: a trial its
crash left behind is run again once (resuming from its checkpoint where the family keeps one),
then counted as failed.

Trials stop themselves on the job's cancel flag, their timeout and the termination policy (see
`core.runs.trial.StorageContext`). The orchestrator knows which limit ends each trial and tells it in words; at
that moment it sends SIGTERM (the trial stops at its next batch boundary and keeps its finished epochs) and
SIGKILL only after a grace period. A trial that dies without a result is recorded with the reason it was
signalled for, never as a bare signal number.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from core.base.errors import KestrelError, NotFound
from core.base.processes import process_alive
from core.runs import stopping
from core.sweep import automode
from core.sweep.distributions import Choice
from core.sweep.jobs import check_models
from core.sweep.jobspec import JobSpec, parse_job
from core.sweep.launchers import Slot, TrialProcess, executor, local_slots, placement, ray_slots, start_trial
from core.sweep.samplers import Sweeper
from core.sweep.termination import make_policy
from core.sweep.timing import time_trial
from core.train.device import cpu_cores
from storage.db import session_scope
from storage.repos import jobs, trials
from storage.repos.datasets import get_version
from storage.settings import Settings
from storage.tables import Job

log = logging.getLogger(__name__)
POLL_S = 0.5
SIGNAL_AFTER_S = 30.0  # grace between SIGTERM (at a cancel or the trial's deadline) and SIGKILL
MINUTE_S = 60.0  # the limits' unit; tests shrink it to see a timeout pass in seconds
TRIAL_COMMAND = ("-m", "core.cli", "trial", "run")  # after the interpreter: how a trial process starts
LIVE = ("queued", "running")
NOT_STARTED = "canceled before its first trial"  # the summary of a job canceled while it was being set up


@dataclass
class Child:
    trial_id: int
    process: TrialProcess
    slot: Slot
    deadline: float  # monotonic: when the trial should have stopped on its own
    reason: str  # why it is signalled at its deadline: its time limit in words, or "canceled"
    signalled: int = 0
    started: float = field(default_factory=time.monotonic)  # when its process was launched


@dataclass
class Capacity:
    slots: list[Slot] = field(default_factory=list)

    @classmethod
    def of_machine(cls, wanted: int, trial_mb: float | None = None) -> Capacity:
        """The GPUs, as many trials on each as fit at ``trial_mb`` (one each when unknown); on a CPU, up to
        one trial per core, sharing them out; on a Ray cluster, its GPUs and cores (`core.sweep.launchers`)."""
        if executor() == "ray":
            return cls(ray_slots(wanted))
        return cls(local_slots(wanted, cpu_cores(), trial_mb))


def run_job(job: Job, settings: Settings, engine: Engine) -> str:
    """Run an AutoML job to its limits; returns the summary line. Raises when every trial failed."""
    assert job.id is not None
    if _cancel_requested(engine, job.id):
        return NOT_STARTED
    spec = parse_job(job.spec["yaml"], settings.home)
    check_models(spec)  # a name the studio could not check fails the job now, not its trials one by one
    with session_scope(engine) as session:
        version = get_version(session=session, name=job.spec["dataset"], version=job.spec["version"])
        train_images = (version.image_count - version.validation_count) if version else 0
        classes = len(version.classes) if version else 2
    with session_scope(engine) as session:  # the largest GPU memory a trial of these models took here
        trial_mb = trials.gpu_peak_mb(session=session, models=_models(spec))
    capacity = Capacity.of_machine(spec.limits.max_concurrent_trials, trial_mb)  # imports torch: seconds
    # Asked again before the sweep is built: a cancel must not wait on AutoMode's plan or a big space.
    if _cancel_requested(engine, job.id):
        return NOT_STARTED
    sweeper, first = _sweeper(spec, train_images, classes, gpu=capacity.slots[0].gpu is not None)
    return _Run(job.id, spec, sweeper, first, capacity, settings, engine).go()


def _models(spec: JobSpec) -> list[str]:
    """The model names a job's trials train, as far as its file names them (AutoMode's are chosen later)."""
    named = [spec.params.model_name] if spec.params.model_name else []
    for sub in spec.search_space:
        entry = sub.get("model_name")
        named += [str(v) for v in (entry.values if isinstance(entry, Choice) else [entry]) if v]
    return sorted(set(named))


def _sweeper(spec: JobSpec, train_images: int, classes: int, *, gpu: bool
             ) -> tuple[Sweeper, list[dict[str, Any]]]:
    """The job's sweep, and the configurations it tries first (AutoMode's defaults)."""
    limit = spec.limits.max_trials
    if spec.mode == "automode":
        plan = automode.plan(spec.task, train_images, gpu, spec.training_parameters, classes)
        return Sweeper(plan.space, plan.algorithm, plan.seed, max_trials=limit), plan.first
    space = spec.search_space or [{}]  # one trial of the training_parameters alone
    return Sweeper(space, spec.sampling_algorithm, spec.params.seed, max_trials=limit), []


class _Run:
    def __init__(self, job_id: int, spec: JobSpec, sweeper: Sweeper, first: list[dict[str, Any]],
                 capacity: Capacity, settings: Settings, engine: Engine) -> None:
        self.job_id, self.spec, self.sweeper, self.settings, self.engine = job_id, spec, sweeper, settings, engine
        self.first = first
        self.free = list(capacity.slots)
        self.running: dict[int, Child] = {}
        self.deadline = time.monotonic() + spec.limits.timeout_minutes * MINUTE_S
        self.canceled = False
        self.spent = False  # the sweep has nothing left to ask (a grid fully served)
        self.numbers: dict[int, int] = {}  # trial id -> sweep number, for tell()

    def go(self) -> str:
        self._recover()
        while True:
            self._reap()
            self.canceled = self.canceled or self._cancel_requested()
            ending = self.canceled or time.monotonic() >= self.deadline
            while not ending and self.free and self._launch_next():
                pass
            self._hurry()
            if not self.running and (ending or not self._more()):
                break
            time.sleep(POLL_S)
        return self._close(timed_out=ending and not self.canceled)

    # -- bookkeeping --------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild the sweep from this job's rows (a restart); queue the trials a crash left behind again."""
        with session_scope(self.engine) as session:
            rows = trials.for_job(session=session, job_id=self.job_id)
            lost = [t for t in rows if t.status in LIVE and not process_alive(t.pid, t.heartbeat_at)]
            for t in lost:
                if t.status == "queued":  # not started yet: it runs when its turn comes
                    continue
                # Lost with the worker, it runs again from its checkpoint as long as it got further since
                # it was last lost; lost twice at one epoch (out of memory there, say), it fails.
                lost_at = t.metrics.get("lost_at_epoch")
                if lost_at is None or t.epoch > lost_at:
                    t.metrics = {**t.metrics, "relaunches": t.metrics.get("relaunches", 0) + 1,
                                 "lost_at_epoch": t.epoch}
                    t.status = "queued"
                    session.add(t)
                    log.warning("trial %d was lost with its worker; running it again", t.id)
                else:
                    trials.finish(session=session, trial_id=t.id, status="failed", metrics={},
                                  primary_metric_value=None,
                                  error=f"lost twice after epoch {t.epoch}: its process ended without a result "
                                        "each time (killed, or the machine out of memory)")
            done = [(t.params, t.primary_metric_value) for t in rows if t.status not in LIVE]
            self.requeued = [t.id for t in rows if t.status == "queued"]
            self.next_number = max((t.number for t in rows), default=-1) + 1
        if done or self.requeued:
            log.info("job %d resumes: %d trials finished, %d to run again", self.job_id, len(done),
                     len(self.requeued))
        self.sweeper.restore(done)
        for t in rows:
            if t.id in self.requeued:
                self.sweeper.reserve(t.params)
        self.sweeper.max_trials = self.spec.limits.max_trials - len(self.requeued)
        for params in self.first[len(done) + len(self.requeued):]:
            self.sweeper.enqueue(params)

    def _more(self) -> bool:
        return bool(self.requeued) or (self.sweeper.asked < (self.sweeper.max_trials or 0) and not self.spent)

    def _launch_next(self) -> bool:
        if self.requeued:
            trial_id = self.requeued.pop(0)
        else:
            asked = self.sweeper.ask() if not self.spent else None
            if asked is None:
                self.spent = True
                return False
            number, params = asked
            with session_scope(self.engine) as session:
                row = trials.create(session=session, job_id=self.job_id, number=self.next_number,
                                    model_name=str(params.get("model_name", self.spec.params.model_name or "")),
                                    params=params, primary_metric=self.spec.primary_metric)
                trial_id = row.id
            assert trial_id is not None
            self.numbers[trial_id] = number
            self.next_number += 1
        self._start(trial_id)
        return True

    def _start(self, trial_id: int) -> None:
        slot = self.free.pop(0)
        timeout, reason = self._time_limit()
        args = [*TRIAL_COMMAND, str(trial_id), "--timeout-s", f"{max(timeout, 1.0):.0f}", "--timeout-reason", reason]
        if slot.threads is not None:
            args += ["--threads", str(slot.threads)]
        out_dir = self.settings.runs_dir / f"trial-{trial_id}"
        out_dir.mkdir(parents=True, exist_ok=True)
        process = start_trial(args, slot, out_dir / "console.log", self.settings.max_log_bytes)
        log.info("trial %d started (%s)", trial_id, process.where)
        self.running[trial_id] = Child(trial_id, process, slot, time.monotonic() + timeout, reason)

    def _time_limit(self) -> tuple[float, str]:
        """How long the next trial may run, and the limit that ends it in words: the trial timeout when
        it comes before what is left of the job's."""
        remaining = self.deadline - time.monotonic()
        limits = self.spec.limits
        if limits.trial_timeout_minutes and limits.trial_timeout_minutes * MINUTE_S < remaining:
            return limits.trial_timeout_minutes * MINUTE_S, stopping.trial_timeout(limits.trial_timeout_minutes)
        return remaining, stopping.job_timeout(limits.timeout_minutes)

    def _reap(self) -> None:
        for trial_id, child in list(self.running.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.running[trial_id]
            self.free.append(child.slot)
            with session_scope(self.engine) as session:
                row = trials.get(session=session, trial_id=trial_id)
                assert row is not None
                if row.status in LIVE:  # the process died before it could record an end
                    status, reason, error = self._died(child, code, row.epoch)
                    trials.finish(session=session, trial_id=trial_id, status=status, metrics={},
                                  primary_metric_value=None, stop_reason=reason, error=error)
                    session.flush()
                # The process's whole time (imports, loading, timing the model) against the trial's own:
                # later estimates add what a trial costs beside its epochs.
                trials.set_metrics(session=session, trial_id=trial_id, key="process",
                                   values={"seconds": round(time.monotonic() - child.started, 1),
                                           **placement(child.process)})
                log.info("trial %d %s%s", trial_id, row.status,
                         f": {row.primary_metric} {row.primary_metric_value:.4f}"
                         if row.primary_metric_value is not None else f" {row.error}".rstrip())
                self._update(session)
            number = self.numbers.pop(trial_id, None)
            if number is not None:
                self.sweeper.tell(number, row.primary_metric_value)

    def _died(self, child: Child, code: int, epochs: int) -> tuple[str, str, str]:
        """Status, stop reason and error of a trial process that ended before it recorded a result."""
        if child.signalled:  # stopped by us: say why, in the limit's words
            status = "canceled" if child.reason == stopping.CANCELED else "failed"
            if epochs == 0:
                return status, child.reason, stopping.nothing_kept(child.reason)
            return status, child.reason, (f"{child.reason}; it was still saving {SIGNAL_AFTER_S:.0f} s later and "
                                          f"was ended: its {epochs} finished epoch(s) were not kept")
        if code == -signal.SIGKILL:
            why = "was killed (SIGKILL; often the machine running out of memory)"
        elif code < 0:
            why = f"was ended by {_signal_name(-code)} from outside the worker"
        else:
            why = f"exited with status {code}"
        return "canceled" if self.canceled else "failed", "", f"the trial process {why} before it recorded a result"

    def _update(self, session: Any) -> None:
        rows = trials.for_job(session=session, job_id=self.job_id)
        best = trials.best(rows)
        finished = sum(1 for t in rows if t.status not in LIVE)
        jobs.progress(session=session, job_id=self.job_id, fraction=finished / self.spec.limits.max_trials,
                      message=f"{finished} of {self.spec.limits.max_trials} trials finished" + (
                          f"; best: trial {best.id}, {best.primary_metric} {best.primary_metric_value:.4f}"
                          if best else ""), best_trial_id=best.id if best else None)

    def _cancel_requested(self) -> bool:
        return _cancel_requested(self.engine, self.job_id)

    def _hurry(self) -> None:
        """At a cancel or its deadline a trial gets SIGTERM and stops at its next batch boundary, keeping
        its finished epochs; one still running ``SIGNAL_AFTER_S`` later gets SIGKILL."""
        now = time.monotonic()
        for child in self.running.values():
            if self.canceled and not child.signalled:
                child.deadline, child.reason = min(child.deadline, now), stopping.CANCELED
            if child.signalled < 2 and now >= child.deadline + SIGNAL_AFTER_S * child.signalled:
                child.process.send_signal(signal.SIGTERM if child.signalled == 0 else signal.SIGKILL)
                child.signalled += 1

    def _close(self, *, timed_out: bool) -> str:
        with session_scope(self.engine) as session:
            rows = trials.for_job(session=session, job_id=self.job_id)
            best = trials.best(rows)
            self._update(session)
        failed = [t for t in rows if t.status == "failed"]
        if rows and len(failed) == len(rows) and not self.canceled:
            raise KestrelError(f"all {len(rows)} trials failed; trial {failed[0].id}: {failed[0].error}")
        tested = self._test(best) if best is not None and not self.canceled else ""
        why = "canceled" if self.canceled else stopping.job_timeout(self.spec.limits.timeout_minutes) \
            if timed_out else "done"
        summary = f"{why}: {len(rows)} trial{'s' if len(rows) != 1 else ''}"
        if best is not None and best.primary_metric_value is not None and not math.isnan(best.primary_metric_value):
            summary += f"; best trial {best.id} ({best.model_name}) {best.primary_metric} " \
                       f"{best.primary_metric_value:.4f}"
        return summary + tested

    def _test(self, best: Any) -> str:
        """Score the best trial's model on the job's test_data, as `kestrel score` would; its metrics are
        kept with the trial (``metrics["test"]``) and the answers in the job's folder."""
        test = self.spec.test_data
        if test is None or not best.artifact_dir:
            return ""
        from core.inference.predict import load_predictor
        from core.inference.score import read_source, score

        with session_scope(self.engine) as session:
            jobs.progress(session=session, job_id=self.job_id, fraction=1.0,
                          message=f"scoring trial {best.id}'s model on the test data {test.name}:{test.version}")
        source = read_source(f"{test.name}:{test.version}", self.spec.task, self.settings, self.engine)
        report = score(load_predictor(Path(best.artifact_dir)), source,
                       self.settings.job_dir(self.job_id) / "test_predictions.jsonl")
        with session_scope(self.engine) as session:
            trials.set_metrics(session=session, trial_id=best.id, key="test", values=report.get("metrics", {}))
        value = report.get("metrics", {}).get(self.spec.primary_metric)
        return f"; test {self.spec.primary_metric} {value:.4f}" if value is not None else ""


def _cancel_requested(engine: Engine, job_id: int) -> bool:
    with session_scope(engine) as session:
        return jobs.is_cancel_requested(session=session, job_id=job_id)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"



def run_job_trial(trial_id: int, settings: Settings, engine: Engine, *, timeout_s: float | None = None,
                  threads: int | None = None) -> Any:
    """The trial process's side (``kestrel trial run ID``): its row and its job give what to train."""
    from core.runs.trial import run_trial

    with session_scope(engine) as session:
        row = trials.get(session=session, trial_id=trial_id)
        job = jobs.get(session=session, job_id=row.job_id) if row and row.job_id else None
    if row is None or job is None:
        raise NotFound(f"trial {trial_id} is not a trial of a job")
    spec = parse_job(job.spec["yaml"], settings.home)
    policy = spec.sweep.early_termination if spec.sweep else None
    result = run_trial(settings=settings, engine=engine, dataset=job.spec["dataset"], version=job.spec["version"],
                       overrides={**spec.training_parameters, **row.params}, timeout_s=timeout_s,
                       trial_id=trial_id, primary_metric=spec.primary_metric, threads=threads,
                       policy=make_policy(policy.model_dump() if policy else None), extends=job.spec.get("extends"))
    time_trial(result, settings=settings, engine=engine, dataset=job.spec["dataset"], version=job.spec["version"])
    return result
