"""`kestrel job …` and the internal `kestrel trial run ID` (how the worker starts each trial)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from core.base.errors import NotFound
from core.cli.common import JsonFlag, app, err, open_storage, out, reports_errors, session_scope

job_app = typer.Typer(help="Submit and follow AutoML jobs (the reference's job YAML).", no_args_is_help=True)
trial_app = typer.Typer(help="Trials (child runs) of jobs.", no_args_is_help=True)
app.add_typer(job_app, name="job")
app.add_typer(trial_app, name="trial")



@job_app.command("submit")
@reports_errors
def job_submit(
    file: Annotated[Path, typer.Argument(help="An AutoML job YAML (type: automl).")],
    wait: Annotated[bool, typer.Option(help="Wait until the job ends; runs it here when no worker is up.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check a job file, import its data given by path, and queue the job for the worker; warn when a
    model's epoch will not fit the job's time limit."""
    from core.sweep.jobs import planned_weights, submit_job, timeout_warnings

    settings, engine = open_storage()
    job = submit_job(file, settings=settings, engine=engine)
    assert job.id is not None
    device = _worker_device(engine)
    notices = job.spec.get("notices", [])
    for notice in notices:
        err.print(f"[cyan]notice:[/cyan] {notice}")
    warnings = timeout_warnings(job, engine=engine, device=device)
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    weights = planned_weights(job, engine=engine, device=device)
    for w in weights:
        colour = "yellow" if w.status.state == "unavailable" else "green"
        err.print(f"[{colour}]{w.model}:[/{colour}] {w.status.sentence()}")
    if not as_json:
        out.print(f"job {job.id} queued: {job.name} on {job.spec['dataset']}:{job.spec['version']}")
    if wait:
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            _wait(job.id, settings, engine, quiet=as_json)
    _show(job.id, engine, as_json, warnings=warnings, notices=notices, pretrained=[w.as_dict() for w in weights])


def _worker_device(engine: Any) -> str:
    """Where the job will train: the live worker's device, else this machine's (`--wait` runs it here)."""
    from core.train.device import machine
    from core.worker.queue import GRACE_S
    from storage.repos import workers

    with session_scope(engine) as session:
        live = workers.serving(workers.live(session=session, grace_s=GRACE_S), "automl")
        return next((w.device for w in live if w.device), "") or machine()


def _wait(job_id: int, settings: Any, engine: Any, *, quiet: bool) -> None:
    """Follow the job; with no live worker, this process becomes one until the job ends."""
    from core.base.processes import process_alive
    from core.worker.queue import GRACE_S, Worker
    from storage.repos import jobs, workers

    with session_scope(engine) as session:
        alive = [w for w in workers.serving(workers.live(session=session, grace_s=GRACE_S), "automl")
                 if process_alive(w.pid, w.heartbeat_at)]
    if not alive:
        Worker(settings, engine).run(until_job=job_id)
        return
    last = ""
    while True:
        with session_scope(engine) as session:
            job = jobs.get(session=session, job_id=job_id)
            assert job is not None
            status, message = job.status, job.message
        if message != last and not quiet:
            err.print(f"job {job_id}: {message}")
            last = message
        if status in jobs.FINAL:
            return
        time.sleep(1.0)


def _show(job_id: int, engine: Any, as_json: bool, *, warnings: list[str] | None = None,
          notices: list[str] | None = None, pretrained: list[dict[str, str]] | None = None) -> None:
    from core.sweep.summary import job_summary

    with session_scope(engine) as session:
        summary = job_summary(session=session, job_id=job_id)
    if as_json:
        extra = {"warnings": warnings, "notices": notices, "pretrained": pretrained} if warnings is not None else {}
        print(json.dumps(summary | extra, default=str))
        return
    out.print(f"job {summary['job_id']} [bold]{summary['status']}[/bold] {summary['name']} "
              f"({summary['dataset']}) {summary['message']}")
    if summary["error"]:
        out.print(f"[red]error:[/red] {summary['error']}")
    table = Table("trial", "status", "model", "primary metric", "params", "note")
    for t in summary["trials"]:
        value = t["primary_metric_value"]
        mark = " ★" if t["trial_id"] == summary["best_trial_id"] else ""
        params = ", ".join(f"{k}={v}" for k, v in t["params"].items() if k != "model_name")
        table.add_row(f"{t['trial_id']}{mark}", t["status"], t["model_name"],
                      "" if value is None else f"{t['primary_metric']} {value:.4f}", params,
                      t["error"] or t["stop_reason"])  # a stop that kept nothing explains itself in error
    out.print(table)
    if summary["test_metrics"]:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in list(summary["test_metrics"].items())[:4])
        out.print(f"best model on the test data {summary['test_data']}: {scores}")


@job_app.command("list")
@reports_errors
def job_list(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many jobs.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many of the newest jobs first.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Jobs, newest first, with their status and progress; --limit and --offset page through them."""
    from storage.repos import jobs

    _, engine = open_storage()
    with session_scope(engine) as session:
        rows = [{"job_id": j.id, "kind": j.kind, "name": j.name, "status": j.status, "progress": j.progress,
                 "message": j.message, "best_trial_id": j.best_trial_id, "created_at": j.created_at.isoformat()}
                for j in jobs.list_jobs(session=session, limit=limit, offset=offset)]
        total = jobs.count(session=session)
    if as_json:
        print(json.dumps({"jobs": rows, "total": total, "limit": limit, "offset": offset}))
        return
    table = Table("job", "kind", "name", "status", "progress", "message")
    for r in rows:
        table.add_row(str(r["job_id"]), r["kind"], r["name"], r["status"], f"{r['progress']:.0%}", r["message"])
    out.print(table)
    if offset + len(rows) < total:
        err.print(f"jobs {offset + 1}–{offset + len(rows)} of {total}; --offset {offset + limit} shows older ones")


@job_app.command("show")
@reports_errors
def job_show(job_id: int, as_json: JsonFlag = False) -> None:
    """A job, its trials with their parameters and metrics, and its best child (★)."""
    _, engine = open_storage()
    _show(job_id, engine, as_json)


@job_app.command("cancel")
@reports_errors
def job_cancel(job_id: int, as_json: JsonFlag = False) -> None:
    """Stop a job: running trials stop within seconds and keep what they produced."""
    from storage.repos import jobs

    _, engine = open_storage()
    with session_scope(engine) as session:
        if jobs.get(session=session, job_id=job_id) is None:
            raise NotFound(f"job {job_id} does not exist; `kestrel job list` shows the jobs")
        job = jobs.request_cancel(session=session, job_id=job_id)
        status = job.status
    if as_json:
        print(json.dumps({"job_id": job_id, "status": status, "cancel_requested": True}))
    else:
        out.print(f"job {job_id}: " + ("canceled" if status == "canceled" else f"{status}; cancel requested"))


@job_app.command("logs")
@reports_errors
def job_logs(job_id: int, as_json: JsonFlag = False) -> None:
    """Each trial's training log, in trial order."""
    from core.sweep.summary import job_summary

    _, engine = open_storage()
    with session_scope(engine) as session:
        summary = job_summary(session=session, job_id=job_id)
    logs = {}
    for t in summary["trials"]:
        file = Path(t["artifact_dir"]) / "trial.log" if t["artifact_dir"] else None
        logs[str(t["trial_id"])] = file.read_text(encoding="utf-8", errors="replace") if file and file.is_file() \
            else ""
    if as_json:
        print(json.dumps({"job_id": job_id, "status": summary["status"], "message": summary["message"],
                          "error": summary["error"], "trials": logs}))
        return
    out.print(f"job {job_id} {summary['status']}: {summary['message']} {summary['error']}".rstrip())
    for trial_id, text in logs.items():
        out.rule(f"trial {trial_id}")
        out.print(text or "(no log yet)", markup=False, highlight=False)


@trial_app.command("run", hidden=True)
@reports_errors
def trial_run(
    trial_id: int,
    timeout_s: Annotated[float | None, typer.Option(help="Stop the trial after this many seconds.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads this trial may use.")] = None,
    timeout_reason: Annotated[str | None, typer.Option(
        help="The limit --timeout-s comes from, in words (e.g. 'job timeout after 60 min').")] = None,
) -> None:
    """Run one queued trial of a job (the worker starts one such process per trial)."""
    import logging

    from core.runs import stopping

    # SIGTERM from the worker asks for a stop at the next batch boundary, from before the heavy imports on.
    with stopping.worker_trial(timeout_reason):
        from core.sweep.orchestrator import run_job_trial

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings, engine = open_storage()
        result = run_job_trial(trial_id, settings, engine, timeout_s=timeout_s, threads=threads)
    out.print(f"trial {trial_id} {result.status}")


def queued_job(job: Any, wait: bool, as_json: bool, settings: Any, engine: Any) -> Any:
    """Say that ``job`` is queued and, with ``wait``, see it through (on stderr under --json)."""
    assert job.id is not None
    if not as_json:
        out.print(f"job {job.id} queued: {job.name}")
    if wait:
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            _wait(job.id, settings, engine, quiet=as_json)
    return job


@trial_app.command("extend")
@reports_errors
def trial_extend(
    trial_id: int,
    epochs: Annotated[int, typer.Option(help="How many more epochs to train.")],
    wait: Annotated[bool, typer.Option(help="Wait for the new trial; runs it here when no worker is up.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train a finished trial N more epochs, from its last checkpoint with its optimizer's state and the
    learning-rate schedule planned for the longer run, as a new trial linked to it (a one-trial job)."""
    from core.sweep.rerun import submit_extension
    from storage.repos import trials

    settings, engine = open_storage()
    job = queued_job(submit_extension(trial_id=trial_id, epochs=epochs, settings=settings, engine=engine),
                  wait, as_json, settings, engine)
    with session_scope(engine) as session:
        trial = next(iter(trials.for_job(session=session, job_id=job.id)), None)
        result = {"job_id": job.id, "extends": trial_id, "epochs": epochs,
                  "trial": trial.id if trial else None, "status": trial.status if trial else "queued",
                  "metric": trial.primary_metric if trial else None,
                  "value": trial.primary_metric_value if trial else None,
                  "curves": trials.curves(session=session, trial_id=trial.id) if trial else {}}
    if as_json:
        print(json.dumps(result, default=str))
    elif result["value"] is not None:
        out.print(f"trial {result['trial']} (extends trial {trial_id}): {result['metric']} {result['value']:.4f}")


@trial_app.command("rerun")
@reports_errors
def trial_rerun(
    trial_id: int,
    wait: Annotated[bool, typer.Option(help="Wait for the re-run and compare; runs it here when no worker is up.")]
    = False,
    as_json: JsonFlag = False,
) -> None:
    """Train a trial again from its manifest (same data version, parameters and seed) as a one-trial job;
    with --wait, show the primary metric's difference and what differed between the two runs."""
    from core.sweep.rerun import comparison, submit_rerun

    settings, engine = open_storage()
    job = queued_job(submit_rerun(trial_id=trial_id, settings=settings, engine=engine), wait, as_json, settings, engine)
    with session_scope(engine) as session:
        compared = comparison(session=session, job_id=job.id) or {}
    if as_json:
        print(json.dumps({"job_id": job.id, **compared}, default=str))
        return
    if compared.get("delta") is not None:
        verdict = "reproduced" if compared["reproduced"] else "NOT reproduced"
        out.print(f"trial {compared['trial']}: {compared['metric']} {compared['rerun']:.4f} against "
                  f"{compared['original']:.4f} (trial {trial_id}), delta {compared['delta']:+.4f}: {verdict} "
                  f"within ±{compared['tolerance']}")
        for line in compared["differences"]:
            out.print(f"  differs: {line}")
