"""Helpers shared by the studio's pages: settings, the one database engine, labelled pictures
and a paged image grid. Streamlit-only glue; queries live in storage.repos."""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
from PIL import Image
from sqlalchemy import Engine

from core.base.errors import ConfigError, KestrelError
from core.data.draw import Overlay, class_colour, draw_labels, thumbnail
from storage.artifacts import BlobStore
from storage.db import make_engine, upgrade
from storage.repos import workers
from storage.settings import Settings
from storage.tables import Annotation, Job, WorkerState

log = logging.getLogger(__name__)
THUMBNAIL_SIDE = 320
LARGE_SIDE = 1280
FIELD_NAMES = {"NAME": "Endpoint name", "--name": "Deployment name", "--traffic": "Traffic",
               "--key-type": "Key", "NAME:VERSION": "Model version"}  # the CLI's names, as forms call them


def _route_through_app() -> None:
    """Until app.py first calls st.navigation, Streamlit takes a folder named ``pages/`` beside it for an
    old-style multipage app, and a deep link opened first on a fresh server runs that page file alone,
    without app.py's set-up and sidebar. Every page imports this module, so the first run of any of them
    turns that mode off and reruns: app.py then routes the same URL, query parameters included."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_route_through_app()


def say(exc: KestrelError) -> str:
    """A Kestrel error in the page's words: the CLI's flag names become the form's field names."""
    if not isinstance(exc, ConfigError):
        return str(exc)
    field = exc.path.removeprefix("--set ")
    message = f"{FIELD_NAMES.get(field, field)}: {exc.reason}"
    if exc.hints:
        message += f"; did you mean {', '.join(repr(h) for h in exc.hints)}?"
    return message + (f" (allowed: {', '.join(exc.allowed)})" if exc.allowed else "")


def settings() -> Settings:
    # Not cached: reading the environment is cheap, and a cache would outlive KESTREL_HOME
    # changes between test apps in one process.
    return Settings()


@st.cache_resource(show_spinner=False)
def _engine_for(db_url: str) -> Engine:
    engine = make_engine(db_url)
    upgrade(engine, settings())  # the settings locate the secret that seals endpoint keys
    return engine


def engine() -> Engine:
    """The process's engine for the configured database, migrated once."""
    return _engine_for(settings().db_url)


def blob_path(sha256: str) -> Path:
    return BlobStore(settings().blobs_dir).path(sha256)


def device_of(live: Sequence[WorkerState]) -> str:
    """What trains here, as the live worker recorded it; without one, this machine's cores are the best guess."""
    return next((w.device for w in live if w.device), f"CPU, {len(os.sched_getaffinity(0))} cores")


def register_trial(trial_id: int, name: str, said: str = "") -> None:
    """Register a trial's model as the next version of ``name``; say so with a link to it, or why not."""
    from core.inference import models

    try:
        version = models.register(settings=settings(), engine=engine(), name=name, trial_id=trial_id)
    except (KestrelError, OSError) as exc:
        st.error(f"Not registered: {exc}")
        return
    ref = f"{version['name']}:{version['version']}"
    st.success(f"Registered as **{ref}**{said}.")
    st.page_link("pages/models.py", label=f"Open model {ref}", icon=":material/deployed_code:",
                 query_params={"model": ref})


def queue_job(what: str, submit: Callable[[], Job]) -> None:
    """Queue a job with ``submit`` under a spinner; say so with a link to it, or why it was not queued."""
    try:
        with st.spinner(f"Queueing {what}…"):
            job = submit()
    except KestrelError as exc:
        st.error(f"Not queued: {say(exc)}")
        return
    st.success(f"Queued as job {job.id}.")
    st.page_link("pages/jobs.py", label=f"Open job {job.id}", icon=":material/model_training:",
                 query_params={"job": str(job.id)})


def lane_lines(live: Sequence[WorkerState]) -> list[str]:
    """The sidebar's word on the workers: one line per lane ("Training: running job 5", "Imports & scoring:
    idle"), a lane nobody serves "down"; a worker serving every lane gives one "Worker: …" line."""
    if not live:
        return [":red[Worker: down] — long work waits until `kestrel worker` runs"]
    lanes = ["all"] if any(w.lane == "all" for w in live) else ["training", "quick"]
    lines = []
    for lane in lanes:
        serving = [w for w in live if w.lane == lane]
        busy = sorted(w.current_job_id for w in serving if w.current_job_id)
        title = workers.LANE_TITLES[lane]
        if not serving:
            lines.append(f":red[{title}: down] — its jobs wait until `kestrel worker --lane {lane}` runs")
        elif busy:
            lines.append(f"{title}: running " + ", ".join(f"[job {j}](jobs?job={j})" for j in busy))
        else:
            lines.append(f"{title}: idle")
    return lines


def epoch_position(epochs: float, planned: int) -> str:
    """Where a running trial is: "epoch 3 of 10, 40% through"."""
    running = min(int(epochs) + 1, planned) if planned else int(epochs) + 1
    within = 1.0 if planned and epochs >= planned else epochs - int(epochs)
    return f"epoch {running}" + (f" of {planned}" if planned else "") + f", {within:.0%} through"


def colour_map(classes: Sequence[str]) -> dict[str, str]:
    """Each class's colour for plotly charts, the same as in the pictures."""
    return {name: "rgb({},{},{})".format(*class_colour(i)) for i, name in enumerate(classes)}


def overlays_from_annotations(annotations: Sequence[Annotation]) -> tuple[Overlay, ...]:
    """Stored annotations as overlays: rows without box or polygon are tags."""
    out = []
    for a in annotations:
        has_box = None not in (a.x0, a.y0, a.x1, a.y1)
        box = (a.x0, a.y0, a.x1, a.y1) if has_box else None
        polygons = tuple(tuple(p) for p in a.polygon or ())
        out.append(Overlay(a.label, box, polygons))  # type: ignore[arg-type]
    return tuple(out)


@st.cache_data(max_entries=2000, show_spinner=False)
def labelled_png(path: str, classes: tuple[str, ...], overlays: tuple[Overlay, ...],
                 max_side: int) -> bytes | None:
    """The image at ``path`` shrunk to ``max_side`` with its labels drawn, as PNG bytes.

    Cached by its arguments: blob paths are content hashes, so an entry never goes stale.
    None when the file is missing or unreadable.
    """
    try:
        with Image.open(path) as image:
            small = thumbnail(image, max_side)
    except (OSError, ValueError):
        return None
    buffer = io.BytesIO()
    draw_labels(small, classes, overlays).save(buffer, format="PNG")
    return buffer.getvalue()


def page_picker(total: int, per_page: int, key: str) -> int:
    """A page-number input; returns the offset of the first item on the chosen page."""
    pages = max(1, math.ceil(total / per_page))
    if not 1 <= st.session_state.get(key, 1) <= pages:
        st.session_state[key] = 1  # a filter shrank the list under the chosen page
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=key)
    return (int(page) - 1) * per_page


@dataclass(frozen=True)
class GridCell:
    """One picture of a grid: what to draw and what to say under it."""

    item_id: int
    path: str
    caption: str
    overlays: tuple[Overlay, ...]


def image_grid(cells: Sequence[GridCell], classes: Sequence[str], *, columns: int, key: str,
               on_view: Callable[[GridCell], None]) -> None:
    """Thumbnails with labels drawn, ``columns`` per row, each with a View button."""
    for start in range(0, len(cells), columns):
        for slot, cell in zip(st.columns(columns), cells[start:start + columns]):
            with slot:
                png = labelled_png(cell.path, tuple(classes), cell.overlays, THUMBNAIL_SIDE)
                if png is None:
                    st.warning(f"{cell.caption}: the image file is missing or unreadable.")
                    continue
                st.image(png, caption=cell.caption, width="stretch")
                if st.button("View", key=f"{key}_view_{cell.item_id}", width="stretch"):
                    on_view(cell)


def kestrel(*args: str) -> tuple[Any, str]:
    """``kestrel ARGS --json`` in a process of its own (the model libraries stay out of this one): its
    answer, or the refusal to show (a crash is summarised, the log keeps it whole)."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "core.cli", *args, "--json"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=False)
    if result.returncode != 0:
        refusal = result.stderr.strip()
        if "Traceback (most recent call last)" in refusal:
            log.error("kestrel %s failed:\n%s", " ".join(args), refusal)
            refusal = (f"kestrel {' '.join(args[:2])} failed ({refusal.splitlines()[-1]}); the studio's log has "
                       "the details")
        return None, refusal.removeprefix("error: ") or "refused"
    return json.loads(result.stdout), ""


def submit_job_yaml(text: str, file_name: str = "job.yml") -> tuple[int | None, str]:
    """Queue a job file as `kestrel job submit` does, in this process and in well under a second: the
    YAML, the data and the catalog's model names are checked here; a name only the model libraries
    know is checked by the worker before trial 1. Returns the job id, or the refusal to show."""
    import tempfile

    from core.sweep.jobs import submit_job

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / Path(file_name).name  # a job without a display_name takes the file's stem
        file.write_text(text, encoding="utf-8")
        try:
            job = submit_job(file, settings=settings(), engine=engine(), libraries=False)
        except KestrelError as exc:
            return None, str(exc)
    return job.id, ""


def url_selectbox(label: str, options: list[Any], *, key: str, param: str, on_change: Any = None,
          format_func: Any = str) -> Any:
    """A selectbox that follows the URL's ``param`` and writes its choice back to it. A URL this selectbox did
    not write (a link to another dataset, a model just registered) wins over the choice kept in the session."""
    wanted, written = st.query_params.get(param), st.session_state.get(f"{key}:url")
    match = [o for o in options if str(o) == wanted]
    if match and wanted != written:
        st.session_state[key] = match[0]
    elif st.session_state.get(key) not in options:
        st.session_state[key] = match[0] if match else options[0]
    value = st.selectbox(label, options, key=key, format_func=format_func, on_change=on_change)
    st.query_params[param] = st.session_state[f"{key}:url"] = str(value)
    return value
