"""Endpoint processes: start (detached, so they outlive the command or studio that started them),
stop, restart, and bring back after a reboot or a studio start. Torch-free: it only runs processes
and records their pid, start time and port in the database.

A server killed outright (kill -9, a crash, a reboot) cannot update its row, so the state shown is the
row's checked against the process (`shown_state`): "down" when the row says it serves but it is gone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from core.base.errors import KestrelError, NotFound
from core.base.processes import process_alive
from storage.db import session_scope
from storage.repos import models
from storage.settings import Settings
from storage.tables import Endpoint, utcnow

ROOT = Path(__file__).resolve().parents[2]
STOPPED = "stopped"
DOWN = "down"  # shown, never stored: the row says starting or ready, and its process is gone
SERVING = ("creating", "starting", "ready")
LOG_LINES = 12  # the end of a server's log that an error about it quotes


def scoring_uri(host: str, port: int | None) -> str:
    return f"http://{host}:{port}/score" if port else ""


def start(settings: Settings, engine: Engine, name: str) -> int:
    """Start the endpoint's server (again); returns its port, the one it had when that is still free."""
    stop(engine, name)
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name=name)
        if row is None:
            raise NotFound(f"endpoint {name} does not exist; `kestrel endpoint list` shows them")
        host, port = row.host, row.port
    # Keep the endpoint's port (its URL) when it frees up within seconds; a dead server's port can linger.
    if not (port and _wait_free(host, port)):
        port = _free_port(host)
    _log(settings, name).parent.mkdir(parents=True, exist_ok=True)
    with open(_log(settings, name), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "endpoint", "serve", name, "--host", host, "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, "KESTREL_HOME": str(settings.home)})
    started_at = utcnow()  # after Popen returned: the process surely started by then (see process_alive)
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name=name)
        assert row is not None
        row.pid, row.started_at, row.port, row.state = process.pid, started_at, port, "starting"
        session.add(row)
    return port


def ensure_started(settings: Settings, engine: Engine, name: str) -> bool:
    """Start the endpoint's server unless it runs; returns whether it was started."""
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name=name)
        if row is None:
            raise NotFound(f"endpoint {name} does not exist; `kestrel endpoint list` shows them")
        if is_running(row):
            return False
    start(settings, engine, name)
    return True


def stop(engine: Engine, name: str, *, state: str = STOPPED) -> None:
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name=name)
        pid, started_at = (row.pid, row.started_at) if row else (None, None)
    if pid and _alive(pid, started_at):
        _terminate(pid, started_at)
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name=name)
        if row is not None and row.pid == pid:
            row.pid, row.started_at, row.state = None, None, state
            session.add(row)


def is_running(row: Endpoint) -> bool:
    """Whether the server process recorded in ``row`` still runs (not another one reusing its pid)."""
    return _alive(row.pid, row.started_at)


def shown_state(row: Endpoint) -> str:
    """The state to show for ``row``: its own, or "down" when it says starting or ready and its process is
    gone (killed with SIGKILL, crashed, or the machine restarted)."""
    return DOWN if row.state in SERVING and not is_running(row) else row.state


def log_tail(settings: Settings, name: str, lines: int = LOG_LINES) -> list[str]:
    """The last lines of the endpoint's server log (empty when it has none)."""
    try:
        text = _log(settings, name).read_text(errors="replace")
    except FileNotFoundError:
        return []
    return text.strip().splitlines()[-lines:]


def restore_all(settings: Settings, engine: Engine) -> list[str]:
    """Start every endpoint that should serve and whose process is gone; returns their names."""
    with session_scope(engine) as session:
        lost = [e.name for e in models.list_endpoints(session=session) if e.state != STOPPED and not is_running(e)]
    for name in lost:
        start(settings, engine, name)
    return lost


def wait_ready(settings: Settings, engine: Engine, name: str, timeout_s: float = 120.0) -> dict:
    """Poll the endpoint's ``/health`` until its models are loaded; raises with the server's reason (or its
    log's last lines, when the process ended) when it cannot serve."""
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name=name)
        if row is None:
            raise NotFound(f"endpoint {name} does not exist")
        host, port, pid, started_at = row.host, row.port, row.pid, row.started_at
    end = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as answer:
                health = json.loads(answer.read())
            if health["status"] == "ready":
                return health
            if health["status"] == "failed":
                raise KestrelError(f"endpoint {name} cannot load its models: {health['error']}")
            last = health["status"]
        except OSError as exc:
            last = str(exc)
            if pid and not _alive(pid, started_at):
                tail = "\n".join(log_tail(settings, name))
                raise KestrelError(f"endpoint {name}'s server exited:\n{tail}") from None
        time.sleep(0.3)
    raise KestrelError(f"endpoint {name} on port {port} was not ready after {timeout_s:.0f} s ({last}); "
                       f"its log: {_log(settings, name)}")


def _log(settings: Settings, name: str) -> Path:
    return settings.home / "endpoints" / f"{name}.log"


def _alive(pid: int | None, started_at: datetime | None) -> bool:
    return process_alive(pid, started_at)


def _terminate(pid: int, started_at: datetime | None) -> None:
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 10
    while time.monotonic() < end and _alive(pid, started_at):
        time.sleep(0.1)
    if _alive(pid, started_at):
        os.kill(pid, signal.SIGKILL)


def _wait_free(host: str, port: int, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while not _free(host, port):
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


def _free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
