"""`kestrel datastore …`: the reference's datastores mapped to local folders, so that annotation files
naming ``azureml://…/datastores/NAME/paths/P`` import unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from core.base.errors import ConfigError, NotFound
from core.cli.common import JsonFlag, app, open_storage, out, reports_errors, session_scope

datastore_app = typer.Typer(help="Map the reference's datastores to folders on this machine.", no_args_is_help=True)
app.add_typer(datastore_app, name="datastore")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,254}$")  # the reference's datastore names


@datastore_app.command("create")
@reports_errors
def datastore_create(
    name: Annotated[str, typer.Argument(help="The datastore's name in the URLs, e.g. workspaceblobstore.")],
    path: Annotated[Path, typer.Option(help="The local folder holding the datastore's files (its /paths/).")],
    as_json: JsonFlag = False,
) -> None:
    """Resolve azureml://…/datastores/NAME/paths/P to PATH/P when importing; the folder is yours to read."""
    if not NAME.match(name):
        raise ConfigError("NAME", f"{name!r} is not a datastore name; use letters, digits, '_' and '-'")
    folder = path.expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError("--path", f"{path} is not a folder on this machine")
    _, engine = open_storage()
    from storage.repos import datastores

    with session_scope(engine) as session:
        if datastores.get(session=session, name=name) is not None:
            raise ConfigError("NAME", f"datastore {name} is mapped already", hints=[f"kestrel datastore delete {name}"])
        datastores.create(session=session, name=name, path=folder)
    _print({"name": name, "path": str(folder)}, as_json, f"datastore {name} → {folder}")


@datastore_app.command("list")
@reports_errors
def datastore_list(as_json: JsonFlag = False) -> None:
    """The mapped datastores and their folders."""
    _, engine = open_storage()
    from storage.repos import datastores

    with session_scope(engine) as session:
        rows = [{"name": r.name, "path": r.path} for r in datastores.list_all(session=session)]
    _print({"datastores": rows}, as_json, "\n".join(f"{r['name']} → {r['path']}" for r in rows) or "no datastores")


@datastore_app.command("delete")
@reports_errors
def datastore_delete(name: str, as_json: JsonFlag = False) -> None:
    """Forget a mapping (datasets imported through it keep their images)."""
    _, engine = open_storage()
    from storage.repos import datastores

    with session_scope(engine) as session:
        if not datastores.delete(session=session, name=name):
            raise NotFound(f"datastore {name} is not mapped; `kestrel datastore list` shows them")
    _print({"name": name, "deleted": True}, as_json, f"datastore {name} forgotten")


def _print(data: dict, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(data))
    else:
        out.print(text)
