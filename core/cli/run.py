"""`kestrel train`, `kestrel worker` and `kestrel studio`: one trial, the job runner, the studio."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from core.cli.common import APP_FILE, app, err, open_storage, out, parse_ref, reports_errors


@app.command()
@reports_errors
def train(
    data: Annotated[str, typer.Option(metavar="NAME[:VERSION]", help="Dataset version to train on.")],
    model: Annotated[str | None, typer.Option(help="Model name; the task's default if omitted.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="Any training parameter, repeatable.")] = None,
    timeout_minutes: Annotated[float | None, typer.Option(help="Stop the trial after this long.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Train one model (one trial) on a dataset version and store the results."""
    from core.base.params import parse_set_options
    from core.runs.trial import run_trial

    overrides = parse_set_options(set_ or [])
    if model:
        overrides["model_name"] = model
    name, number = parse_ref(data)
    settings, engine = open_storage()
    # Libraries print progress to stdout; with --json, stdout carries the answer alone.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        result = run_trial(settings=settings, engine=engine, dataset=name, version=number,
                           overrides=overrides, timeout_s=timeout_minutes * 60 if timeout_minutes else None)
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    if result.stop_reason and not result.epochs_run:  # stopped before its first epoch ended: no model
        from core.runs.stopping import nothing_kept

        out.print(f"trial {result.trial_id} {result.status} on {result.device}: {nothing_kept(result.stop_reason)}")
    else:
        out.print(f"trial {result.trial_id} {result.status} on {result.device} after "
                  f"{result.epochs_run} epochs: {result.primary_metric} "
                  f"{result.metrics.get(result.primary_metric, float('nan')):.4f}")
    for notice in result.notices:
        out.print(f"[yellow]notice:[/yellow] {notice}")
    out.print(f"artifacts in {Path(result.artifacts['params']).parent}")


@app.command()
@reports_errors
def worker(
    once: Annotated[bool, typer.Option(help="Run what is queued, then exit.")] = False,
    lane: Annotated[str, typer.Option(help="training: AutoML jobs; quick: imports, scoring, exports; all: both.")]
    = "all",
) -> None:
    """Run queued jobs (imports, AutoML jobs, scoring, exports) outside the studio's process."""
    import logging

    from core.base.errors import ConfigError
    from core.worker.queue import Worker
    from storage.repos.workers import LANES

    if lane not in LANES:
        raise ConfigError("--lane", f"{lane!r} is not a lane", list(LANES))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, engine = open_storage()
    runner = Worker(settings, engine, lane=lane)
    err.print(f"{runner.worker_id} ({lane}) waiting for jobs in {settings.home}")
    done = runner.run(once=once)
    err.print(f"{runner.worker_id} ran {done} job(s)")


@app.command()
@reports_errors
def studio(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the studio.")] = 8501,
) -> None:
    """Open the studio in the browser (registers the sample datasets on first start)."""
    from core.data.samples import register_samples

    settings, engine = open_storage()
    for name in register_samples(settings=settings, engine=engine):
        err.print(f"registered sample dataset {name}")
    from core.serving.runner import restore_all

    for name in restore_all(settings, engine):
        err.print(f"endpoint {name} started again")
    out.print(f"Kestrel studio: http://{host}:{port}")
    # The workers run beside the UI, so long work survives a browser reload or a UI restart; two lanes, so
    # an import or a scoring never waits behind a training trial.
    lanes = [subprocess.Popen([sys.executable, "-m", "core.cli", "worker", "--lane", lane], env=os.environ.copy())
             for lane in ("training", "quick")]
    command = [sys.executable, "-m", "streamlit", "run", str(APP_FILE),
               "--server.address", host, "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    try:
        code = subprocess.call(command, cwd=APP_FILE.parent, env=os.environ.copy())
    finally:
        for process in lanes:
            process.terminate()
        for process in lanes:
            process.wait(timeout=30)
    raise typer.Exit(code)
