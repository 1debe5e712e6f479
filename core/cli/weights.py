"""`kestrel weights …`: which zoo models have pretrained weights here, and a person's file imported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from core.base.tasks import parse_task
from core.cli.common import JsonFlag, app, err, out, reports_errors

weights_app = typer.Typer(help="Pretrained weights: what is cached, and importing a file.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
STATE_COLOURS = {"cached": "green", "downloadable": "cyan", "unavailable": "yellow"}


@weights_app.command("list")
@reports_errors
def weights_list(as_json: JsonFlag = False) -> None:
    """For every zoo model: pretrained weights cached, downloadable (network reachable) or unavailable."""
    from core.zoo.pretrained import zoo_status

    rows = zoo_status()
    if as_json:
        print(json.dumps([r.as_dict() for r in rows]))
        return
    table = Table("model", "task", "family", "weights", "where")
    for r in rows:
        colour = STATE_COLOURS.get(r.status.state, "white")
        table.add_row(r.model, r.task.value, r.family, f"[{colour}]{r.status.state}[/{colour}]", r.status.where)
    out.print(table)


@weights_app.command("import")
@reports_errors
def weights_import(
    file: Annotated[Path, typer.Argument(help="A .safetensors or .pth state dict; an ultralytics .pt.")],
    model: Annotated[str, typer.Option(help="The zoo model these weights are for, e.g. resnet18, yolo11n.")],
    task: Annotated[str | None, typer.Option(help="The task, where the model name serves several.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a weights file against MODEL and put it where its library looks (for offline machines)."""
    from core.zoo.pretrained import import_file

    if file.suffix == ".pt":  # ultralytics' own format is a pickle: the person chose to trust it
        err.print(f"note: {file.name} is a pickle (ultralytics' format); it is loaded because you import it")
    weights, tensors = import_file(file.resolve(), model, parse_task(task, "--task") if task else None)
    if as_json:
        print(json.dumps({**weights.as_dict(), "tensors": tensors}))
        return
    out.print(f"{model}: {tensors} tensors fit; weights {weights.status.state} at {weights.status.where}")
