"""`kestrel data …`: import, list, show and export datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from core.base.errors import NotFound
from core.base.tasks import parse_task
from core.cli.common import app, err, open_storage, out, parse_ref, reports_errors, session_scope

data_app = typer.Typer(help="Import, inspect and export datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
