"""`kestrel doctor`: what this machine offers Kestrel, and everything a run could fetch from the network."""

from __future__ import annotations

import json
import shutil
from typing import Any

from rich.table import Table

from core.cli.common import JsonFlag, app, out, reports_errors

STATE_COLOURS = {"cached": "green", "downloadable": "cyan", "unavailable": "yellow", "in place": "green",
                 "off": "green", "ok": "green"}


@app.command()
@reports_errors
def doctor(as_json: JsonFlag = False) -> None:
    """Device, threads, free disk and the database; for every zoo model whether its pretrained weights are
    cached, downloadable or not to be had; and anything else a run would fetch. Changes nothing (the
    database is read, not upgraded)."""
    report = _report()
    if as_json:
        print(json.dumps(report, default=str))
        return
    machine = Table("machine", "", show_header=False)
    for key in ("device", "torch", "cores", "threads", "home", "disk_free", "offline"):
        machine.add_row(key, str(report[key]))
    db = report["database"]
    machine.add_row("database", f"{db['url']} — revision {db['revision'] or 'none'} of {db['head']}"
                    + ("" if db["current"] else " (the next kestrel command upgrades it)"))
    out.print(machine)
    network = Table("a run could fetch", "state", "where")
    for row in report["network"]:
        network.add_row(row["what"], _coloured(row["state"]), row["where"])
    out.print(network)
    weights = Table("model", "task", "pretrained weights", "where")
    for row in report["weights"]:
        weights.add_row(row["model"], row["task"], _coloured(row["state"]), row["where"])
    out.print(weights)


def _coloured(state: str) -> str:
    colour = STATE_COLOURS.get(state, "yellow")
    return f"[{colour}]{state}[/{colour}]"


def _report() -> dict[str, Any]:
    import torch

    from core.train.device import cpu_cores, machine
    from core.zoo.pretrained import zoo_status
    from core.zoo.weights import offline
    from storage.settings import Settings

    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.home).free
    return {"device": machine(), "torch": torch.__version__, "cuda": torch.version.cuda if torch.cuda.is_available()
            else None, "cores": cpu_cores(), "threads": torch.get_num_threads(), "home": str(settings.home),
            "disk_free_bytes": free, "disk_free": f"{free / 2**30:,.1f} GiB", "offline": offline(),
            "database": _database(settings.db_url), "network": _network(),
            "weights": [w.as_dict() for w in zoo_status()]}


def _database(url: str) -> dict[str, Any]:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from storage.db import head_revision, make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            stamped = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:  # no version table: a database no command has opened yet
        stamped = []
    finally:
        engine.dispose()
    head = head_revision()
    return {"url": make_url(url).render_as_string(hide_password=True), "revision": stamped[0] if stamped else None,
            "head": head, "current": stamped == [head]}


def _network() -> list[dict[str, str]]:
    """What a run could ask the network for, beside pretrained weights (listed per model), and its state here."""
    from core.zoo.ultralytics_env import fonts
    from core.zoo.weights import HOSTS, offline

    rows = [{"what": f"font {font.name} for ultralytics' plots", "state": "in place" if font.is_file() else "missing",
             "where": f"{font} (copied from matplotlib's DejaVu Sans, never downloaded)"} for font in fonts()]
    rows += [
        {"what": "ultralytics' connectivity check and analytics", "state": "off",
         "where": "YOLO_OFFLINE=1, YOLO_AUTOINSTALL=0 and settings sync=False before ultralytics loads"},
        {"what": "Streamlit's usage statistics", "state": "off", "where": ".streamlit/config.toml and kestrel studio"},
        {"what": "pretrained weights (" + ", ".join(sorted(set(HOSTS.values()))) + ")",
         "state": "off" if offline() else "on demand",
         "where": "KESTREL_OFFLINE is set: caches and your files only" if offline()
         else "only for a model whose weights are not cached, when its host answers; KESTREL_OFFLINE=1 never asks"},
    ]
    return rows
