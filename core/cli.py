"""The `kestrel` command line: a thin edge over core and storage. Output for people goes to the
terminal; `--json` prints one JSON object on stdout and nothing else there."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import Engine

from core.errors import ConfigError, KestrelError, NotFound
from core.tasks import parse_task
from storage.db import make_engine, session_scope, upgrade
from storage.settings import Settings

app = typer.Typer(help="Kestrel: local AutoML for images.", no_args_is_help=True)
data_app = typer.Typer(help="Import, inspect and export datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
APP_FILE = Path(__file__).resolve().parent.parent / "app.py"


def reports_errors(command: F) -> F:
    """Turn Kestrel's errors into one clear line on stderr and exit status 2, no traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KestrelError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None

    return run  # type: ignore[return-value]


def open_storage() -> tuple[Settings, Engine]:
    settings = Settings()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    return settings, engine


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION`` (``azureml:`` prefix allowed, as in the reference's YAML)."""
    name, _, version = ref.removeprefix("azureml:").partition(":")
    if not version or version == "latest":
        return name, None
    if not version.isdigit():
        raise ConfigError("NAME:VERSION", f"version {version!r} in {ref!r} is not a number")
    return name, int(version)


@data_app.command("import")
@reports_errors
def data_import(
    path: Annotated[Path, typer.Argument(help="A file, folder or zip archive.")],
    name: Annotated[str, typer.Option(help="Dataset name; importing again makes a new version.")],
    task: Annotated[str | None, typer.Option(help="Task; inferred from the labels when clear.")] = None,
    format: Annotated[str | None, typer.Option("--format", help="Format; detected when omitted.")] = None,
    validation_size: Annotated[float, typer.Option(help="Fraction kept for validation.")] = 0.2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import labelled images as a new dataset version."""
    from core.data.formats import get_format
    from core.data.importer import ImportOptions, import_dataset

    if format is not None:
        get_format(format)
    options = ImportOptions(name, parse_task(task, "--task") if task else None, format, validation_size)
    settings, engine = open_storage()
    with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        job = bar.add_task("import", total=None)
        report = import_dataset(path.resolve(), options, settings=settings, engine=engine,
                                progress=lambda done, total: bar.update(job, completed=done, total=total))
    print_report(report, as_json)


@data_app.command("list")
@reports_errors
def data_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List datasets with their latest version."""
    from storage.repos.datasets import list_datasets

    _, engine = open_storage()
    with session_scope(engine) as session:
        rows = list_datasets(session=session)
    if as_json:
        print(json.dumps([{"name": r.name, "task": r.task, "latest_version": r.latest_version,
                           "images": r.images, "classes": r.classes,
                           "created_at": r.created_at.isoformat()} for r in rows]))
        return
    table = Table("name", "task", "latest version", "images", "classes")
    for r in rows:
        table.add_row(r.name, r.task, str(r.latest_version), str(r.images), str(r.classes))
    out.print(table if rows else "No datasets yet: kestrel data import PATH --name NAME")


@data_app.command("show")
@reports_errors
def data_show(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a dataset version: counts, classes, split, warnings and skipped items."""
    from core.data.report import version_report

    _, engine = open_storage()
    with session_scope(engine) as session:
        report = version_report(session=session, version=_version(session, ref))
    print_report(report, as_json)


@data_app.command("export")
@reports_errors
def data_export(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]")],
    format: Annotated[str, typer.Option("--format", help="jsonl or coco")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write into.")],
) -> None:
    """Export a dataset version with its images as JSONL (+ MLTable) or COCO."""
    from core.data.export import export_version
    from storage.artifacts import BlobStore

    settings, engine = open_storage()
    with session_scope(engine) as session:
        target = export_version(session=session, blobs=BlobStore(settings.blobs_dir),
                                version=_version(session, ref), fmt=format, out_dir=out_dir)
    out.print(f"wrote {target}")


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
    from core.params import parse_set_options
    from core.trial import run_trial

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
        from core.stopping import nothing_kept

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
) -> None:
    """Run queued jobs (imports, AutoML jobs) outside the studio's process."""
    import logging

    from core.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, engine = open_storage()
    runner = Worker(settings, engine)
    err.print(f"{runner.worker_id} waiting for jobs in {settings.home}")
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
    # The worker runs beside the UI, so long work survives a browser reload or a UI restart.
    worker_process = subprocess.Popen([sys.executable, "-m", "core.cli", "worker"], env=os.environ.copy())
    command = [sys.executable, "-m", "streamlit", "run", str(APP_FILE),
               "--server.address", host, "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    try:
        code = subprocess.call(command, cwd=APP_FILE.parent, env=os.environ.copy())
    finally:
        worker_process.terminate()
        worker_process.wait(timeout=30)
    raise typer.Exit(code)


def _version(session: Any, ref: str) -> Any:
    from storage.repos.datasets import get_version

    name, number = parse_ref(ref)
    version = get_version(session=session, name=name, version=number)
    if version is None:
        raise NotFound(f"dataset {ref!r} not found; `kestrel data list` shows what exists")
    return version


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    out.print(f"[bold]{report['name']}:{report['version']}[/bold]  {report['task']}  "
              f"(format {report['format']})")
    out.print(f"{report['images']} images, {report['annotations']} labels, "
              f"{report['validation_images']} in the validation split")
    classes = Table("class", "count")
    for label, count in report["classes"].items():
        classes.add_row(label, str(count))
    out.print(classes)
    for warning in report["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {warning}")
    if report["skipped"]:
        skipped = Table("file", "line", "problem", "fix", title=f"{len(report['skipped'])} skipped")
        for p in report["skipped"][:50]:
            skipped.add_row(p["file"], str(p["line"] or ""), p["error"], p["fix"])
        out.print(skipped)


# The sub-command modules build on the helpers above and register themselves on `app`.
import core.cli_jobs  # noqa: E402, F401
import core.cli_serving  # noqa: E402, F401
import core.cli_weights  # noqa: E402, F401

if __name__ == "__main__":
    # Run as ``python -m core.cli`` this file is ``__main__``: the sub-commands live on ``core.cli.app``.
    from core.cli import app as registered

    registered()
