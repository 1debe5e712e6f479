"""Hostile and careless use of endpoints: pixel bombs in one request, slow decodes, keys read from the
database alone, a lost or loose secret, a server killed with SIGKILL. Each case is refused or survived
with a message saying what to do, and what was stored before (keys, deployments, rows) stays as it was."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from PIL import Image
from sqlalchemy import text
from typer.testing import CliRunner

from core.base.processes import process_alive
from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.inference.models import register
from core.runs.trial import run_trial
from core.serving import manage, runner
from storage.db import alembic_config, make_engine, session_scope
from storage.repos import models
from storage.settings import Settings
from storage.tables import utcnow

APP = str(Path(__file__).resolve().parents[2] / "app.py")
BOMB_SIDE = 8000  # one 1-bit PNG of this side is ~8 KB on the wire and 64 Mpx decoded
REGENERATE = "kestrel endpoint regenerate-key"


class Kestrel:
    """`kestrel …` in-process against the module's home; ``ok=False`` returns (exit code, stdout, stderr)."""

    def __init__(self, home: Path) -> None:
        from core.cli import app

        self.app, self.env = app, {"KESTREL_HOME": str(home)}

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        code, out, err = self.run(*args, "--json", env=env)
        assert code == 0, f"{args}: {out}{err}"
        return json.loads(out)

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        result = CliRunner().invoke(self.app, list(args), env={**self.env, **(env or {})})
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def module_ep(tmp_path_factory: pytest.TempPathFactory, template_db: Path, one_thread):  # type: ignore[no-untyped-def]
    """Endpoint ``ep`` serving deployment ``blue``: a 1-epoch test_resnet on 32 px shapes."""
    root = tmp_path_factory.mktemp("hostile-endpoints")
    home = root / "home"
    home.mkdir()
    shutil.copyfile(template_db, home / "kestrel.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KESTREL_HOME", str(home))
        mp.delenv("KESTREL_DATABASE_URL", raising=False)
        mp.delenv("KESTREL_SECRET_KEY", raising=False)
        settings = Settings()
        engine = make_engine(settings.db_url)
        jsonl = write_sample(Task.CLASSIFICATION, root / "shapes", count=16, size=64)
        import_dataset(jsonl, ImportOptions("shapes", Task.CLASSIFICATION), settings=settings, engine=engine)
        trial = run_trial(settings=settings, engine=engine, dataset="shapes", version=None,
                          overrides={"model_name": "test_resnet", "number_of_epochs": 1, "training_batch_size": 8,
                                     "training_crop_size": 32, "validation_crop_size": 32,
                                     "validation_resize_size": 32})
        register(settings=settings, engine=engine, name="shapes", trial_id=trial.trial_id)
        with session_scope(engine) as session:
            manage.create_endpoint(session=session, name="ep", settings=settings)
            manage.add_deployment(session=session, endpoint="ep", name="blue", model="shapes:1")
        try:
            yield {"settings": settings, "engine": engine, "kestrel": Kestrel(home),
                   "image": sorted((root / "shapes" / "images").iterdir())[0].read_bytes()}
        finally:
            runner.stop(engine, "ep")
            engine.dispose()


@pytest.fixture
def ep(module_ep, monkeypatch):  # type: ignore[no-untyped-def]
    """The module's endpoint with its server running and ready, and the module's home in the environment."""
    monkeypatch.setenv("KESTREL_HOME", str(module_ep["settings"].home))
    monkeypatch.delenv("KESTREL_SECRET_KEY", raising=False)
    runner.ensure_started(module_ep["settings"], module_ep["engine"], "ep")
    runner.wait_ready(module_ep["settings"], module_ep["engine"], "ep")
    return module_ep


def _keys(ep: dict) -> dict[str, str]:
    with session_scope(ep["engine"]) as session:
        return manage.keys(session, "ep", ep["settings"])


def _stored(ep: dict) -> dict[str, Any]:
    """What a hostile request must leave as it was: keys, deployments, traffic, registered models."""
    info = ep["kestrel"]("endpoint", "show", "ep")
    return {"keys": _keys(ep), "deployments": info["deployments"], "traffic": info["traffic"],
            "models": ep["kestrel"]("model", "list")}


def _score(ep: dict, body: bytes, *, key: str | None = None, json_form: bool = False) -> httpx.Response:
    info = ep["kestrel"]("endpoint", "show", "ep")
    headers = {"Authorization": f"Bearer {key or _keys(ep)['primary_key']}",
               "Content-Type": "application/json" if json_form else "application/octet-stream"}
    return httpx.post(info["scoring_uri"], content=body, headers=headers, timeout=60)


def _png(size: tuple[int, int], mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far, in bytes (Linux VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def _raw_keys(db: Path) -> tuple[str, str]:
    """The key columns as any SQL client sees them, without Kestrel."""
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT primary_key, secondary_key FROM endpoint").fetchone()


def _wait_gone(pid: int) -> None:
    end = time.monotonic() + 30
    while process_alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not process_alive(pid)


# Item 5: decompression bombs and decoding off the event loop.

def test_a_request_whose_images_add_up_past_the_pixel_limit_is_refused_before_decoding(ep):
    before = _stored(ep)
    bomb = base64.b64encode(_png((BOMB_SIDE, BOMB_SIDE))).decode()
    body = json.dumps({"input_data": {"columns": ["image"], "data": [bomb] * 12}}).encode()
    assert len(body) < 200_000  # small on the wire
    pid = ep["kestrel"]("endpoint", "show", "ep")["pid"]
    peak = _peak_rss(pid)
    refused = _score(ep, body, json_form=True)
    assert refused.status_code == 413
    assert refused.json()["error"] == (
        "input_data.data[2]: the request's images add up to 768,000,000 pixels; the limit is 128,000,000 per "
        "request (KESTREL_MAX_REQUEST_PIXELS) — send fewer or smaller images per request")
    # Refused from the headers alone: decoding even one of them to RGB would take ~256 MB.
    assert _peak_rss(pid) - peak < 100 * 1024**2
    ok = _score(ep, ep["image"])
    assert ok.status_code == 200 and ok.json()["labels"] == ["circle", "square", "triangle"]
    assert _stored(ep) == before


def test_one_image_over_the_per_image_limit_is_still_refused_by_name(ep):
    before = _stored(ep)
    big = base64.b64encode(_png((BOMB_SIDE + 1, BOMB_SIDE))).decode()
    body = json.dumps({"input_data": {"data": [base64.b64encode(ep["image"]).decode(), big]}}).encode()
    refused = _score(ep, body, json_form=True)
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("input_data.data[1]: 8001×8000 = 64,008,000 pixels is above the "
                                              "pixel limit of 64,000,000")
    assert "KESTREL_MAX_IMAGE_PIXELS" in refused.json()["error"]
    assert _stored(ep) == before


def test_health_and_other_requests_are_answered_while_a_slow_image_decodes(ep, monkeypatch):
    from fastapi.testclient import TestClient

    from core.serving import inputs
    from core.serving.app import create_app

    slow_png = _png((96, 96), "RGB")  # the sample images are 64 px: only this one decodes slowly
    entered, release, finished, real = threading.Event(), threading.Event(), threading.Event(), inputs.decode_image

    def slow_decode(image):  # type: ignore[no-untyped-def]
        if image.size == (96, 96):
            entered.set()
            release.wait(20)  # were decoding on the event loop, nothing else would be answered meanwhile
            finished.set()
        return real(image)

    monkeypatch.setattr(inputs, "decode_image", slow_decode)
    headers = {"Authorization": f"Bearer {_keys(ep)['primary_key']}", "Content-Type": "application/octet-stream"}
    answers: list[httpx.Response] = []
    with TestClient(create_app("ep", ep["settings"])) as client:
        for _ in range(600):
            if client.get("/health").json()["status"] == "ready":
                break
            time.sleep(0.1)
        slow = threading.Thread(target=lambda: answers.append(client.post("/score", content=slow_png,
                                                                          headers=headers)))
        slow.start()
        assert entered.wait(30)
        health = client.get("/health")
        other = client.post("/score", content=ep["image"], headers=headers)
        answered_while_decoding = not finished.is_set()
        release.set()
        slow.join(60)
    assert answered_while_decoding
    assert health.json()["status"] == "ready"
    assert other.status_code == 200 and other.json()["labels"] == ["circle", "square", "triangle"]
    assert answers[0].status_code == 200 and len(answers[0].json()["probs"]) == 3


# Item 6: keys not stored in plain text.

def test_the_database_alone_does_not_reveal_a_key(ep):
    keys = ep["kestrel"]("endpoint", "keys", "ep")
    assert set(keys) == {"primary_key", "secondary_key"} and all(len(k) >= 40 for k in keys.values())
    raw = _raw_keys(ep["settings"].home / "kestrel.db")
    assert all(value.startswith("fernet:") for value in raw)
    for key in keys.values():
        assert not any(key in value for value in raw)
        for file in ep["settings"].home.glob("kestrel.db*"):  # the database and its write-ahead log
            assert key.encode() not in file.read_bytes()
    assert _score(ep, ep["image"], key=keys["secondary_key"]).status_code == 200


def test_a_regenerated_key_replaces_the_old_one_on_the_running_server(ep):
    old = ep["kestrel"]("endpoint", "keys", "ep")
    assert _score(ep, ep["image"], key=old["primary_key"]).status_code == 200
    new = ep["kestrel"]("endpoint", "regenerate-key", "ep", "--key-type", "primary")
    assert new["primary_key"] != old["primary_key"] and new["secondary_key"] == old["secondary_key"]
    refused = _score(ep, ep["image"], key=old["primary_key"])
    assert refused.status_code == 401 and "wrong key" in refused.json()["error"]
    assert _score(ep, ep["image"], key=new["primary_key"]).status_code == 200
    assert ep["kestrel"]("endpoint", "keys", "ep") == new
    assert not any(new["primary_key"] in value for value in _raw_keys(ep["settings"].home / "kestrel.db"))


def test_plaintext_keys_of_an_older_database_are_sealed_by_the_upgrade(cli, settings):
    from alembic import command

    (settings.home / "kestrel.db").unlink()
    engine = make_engine(settings.db_url)
    command.upgrade(alembic_config(engine), "0002")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO endpoint (name, state, host, port, primary_key, secondary_key, traffic, created_at) "
            "VALUES ('old', 'stopped', '127.0.0.1', 8123, 'plain-primary', 'plain-secondary', '{\"blue\": 100}', "
            "'2026-01-01 00:00:00')"))
    engine.dispose()
    assert cli.json("endpoint", "keys", "old") == {"primary_key": "plain-primary", "secondary_key": "plain-secondary"}
    raw = _raw_keys(settings.home / "kestrel.db")
    assert all(value.startswith("fernet:") for value in raw) and not any("plain-" in value for value in raw)
    info = cli.json("endpoint", "show", "old")
    assert info["port"] == 8123 and info["traffic"] == {"blue": 100} and info["state"] == "stopped"


def test_keys_sealed_with_another_secret_say_how_to_replace_them(cli, settings, engine, monkeypatch):
    with session_scope(engine) as session:
        manage.create_endpoint(session=session, name="x", settings=settings)
    before = cli.json("endpoint", "keys", "x")
    raw = _raw_keys(settings.home / "kestrel.db")
    monkeypatch.setenv("KESTREL_SECRET_KEY", Fernet.generate_key().decode())
    code, _, err = cli("endpoint", "keys", "x", ok=False)
    assert code == 2
    assert "the primary key of endpoint x cannot be read with this secret" in err
    assert "sealed with another secret than KESTREL_SECRET_KEY" in err
    assert f"{REGENERATE} x --key-type primary" in err
    assert _raw_keys(settings.home / "kestrel.db") == raw  # nothing rewritten
    # With the secret that sealed them, the keys read as before.
    monkeypatch.delenv("KESTREL_SECRET_KEY")
    assert cli.json("endpoint", "keys", "x") == before


def test_the_secret_file_is_made_private_and_a_loose_one_is_refused(cli, settings, engine):
    secret = settings.home / "secret.key"
    assert not secret.exists()
    with session_scope(engine) as session:
        manage.create_endpoint(session=session, name="x", settings=settings)
    assert secret.stat().st_mode & 0o777 == 0o600
    before = cli.json("endpoint", "keys", "x")
    secret.chmod(0o644)
    code, _, err = cli("endpoint", "keys", "x", ok=False)
    assert code == 2
    assert f"{secret} can be read by other users (mode 644)" in err and f"chmod 600 {secret}" in err
    secret.chmod(0o600)
    assert cli.json("endpoint", "keys", "x") == before


def test_a_corrupt_secret_file_is_refused_by_name(cli, settings, engine):
    secret = settings.home / "secret.key"
    with session_scope(engine) as session:
        manage.create_endpoint(session=session, name="x", settings=settings)
    good = secret.read_bytes()
    raw = _raw_keys(settings.home / "kestrel.db")
    secret.write_bytes(b"not a key\n")
    code, _, err = cli("endpoint", "keys", "x", ok=False)
    assert code == 2
    assert f"{secret} is not a secret key (44 characters of URL-safe base64)" in err
    assert "put back the file you had" in err and REGENERATE in err
    assert _raw_keys(settings.home / "kestrel.db") == raw
    secret.write_bytes(good)
    assert set(cli.json("endpoint", "keys", "x")) == {"primary_key", "secondary_key"}


# Item 11: endpoint state after kill -9; start and restart.

def test_a_killed_server_shows_down_until_endpoint_start_brings_it_back(ep, monkeypatch):
    from streamlit.testing.v1 import AppTest

    kestrel, before = ep["kestrel"], _stored(ep)
    info = kestrel("endpoint", "show", "ep")
    os.kill(info["pid"], signal.SIGKILL)
    _wait_gone(info["pid"])
    shown = kestrel("endpoint", "show", "ep")
    assert shown["state"] == "down" and shown["hint"] == "its server is not running; `kestrel endpoint start ep`"
    listed = kestrel("endpoint", "list")["endpoints"]
    assert [(e["name"], e["state"]) for e in listed] == [("ep", "down")]
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/endpoints.py")
    at.run()
    assert list(at.dataframe[0].value["State"]) == ["○ down"]
    assert any("is down: its server is not running" in w.value for w in at.warning)
    started = kestrel("endpoint", "start", "ep")
    assert started["state"] == "ready" and started["pid"] != info["pid"] and "hint" not in started
    assert _score(ep, ep["image"]).status_code == 200
    again = kestrel("endpoint", "start", "ep")  # already running: left alone
    assert again["pid"] == started["pid"]
    assert _stored(ep) == before


def test_restart_gives_a_new_server_on_the_same_port(ep):
    kestrel, before = ep["kestrel"], _stored(ep)
    info = kestrel("endpoint", "show", "ep")
    restarted = kestrel("endpoint", "restart", "ep")
    assert restarted["state"] == "ready" and restarted["pid"] != info["pid"]
    assert restarted["port"] == info["port"] and restarted["scoring_uri"] == info["scoring_uri"]
    assert not process_alive(info["pid"])
    assert _score(ep, ep["image"]).status_code == 200
    assert _stored(ep) == before


def test_a_reused_pid_is_not_taken_for_the_server(cli, settings, engine):
    with session_scope(engine) as session:
        manage.create_endpoint(session=session, name="x", settings=settings)
    other = subprocess.Popen(["sleep", "60"])  # a process that happens to get the pid the row names
    try:
        with session_scope(engine) as session:
            row = models.get_endpoint(session=session, name="x")
            row.state, row.pid, row.started_at = "ready", other.pid, utcnow() - timedelta(hours=1)
            session.add(row)
        shown = cli.json("endpoint", "show", "x")
        assert shown["state"] == "down" and "kestrel endpoint start x" in shown["hint"]
        with session_scope(engine) as session:  # the same pid, recorded after the process started: ours
            row = models.get_endpoint(session=session, name="x")
            row.started_at = utcnow()
            session.add(row)
        assert cli.json("endpoint", "show", "x")["state"] == "ready"
    finally:
        other.kill()
        other.wait()
    assert cli.json("endpoint", "show", "x")["state"] == "down"
