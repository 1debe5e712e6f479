"""Test-scoring a registered model version without an endpoint: the uploaded images are staged under the
staging folder, a "score" job is queued for the worker (which answers them as an endpoint would), and the
page follows it live, then reads the answers back from the job's folder to draw them.

``?score_job=N`` names the scoring followed, so a reload comes back to its result.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import streamlit as st

from storage.artifacts import remove_staged, write_atomic
from storage.db import session_scope
from storage.repos import jobs
from storage.repos import models as repo
from storage.tables import Job
from ui import common as _ui

PARAM = "score_job"
KIND = "score"
# The worker writes these into the job's folder (core.inference.score keeps the same names; it imports torch).
ANSWERS_FILE, SKIPPED_FILE, IMAGES_FOLDER = "answers.json", "skipped.json", "images"
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class Upload(Protocol):
    """What staging needs of Streamlit's UploadedFile."""

    name: str

    def getvalue(self) -> bytes: ...


@dataclass(frozen=True)
class Scored:
    """A finished scoring as the page draws it: the images answered and their answers, in one order."""

    ref: str
    names: list[str]
    images: list[bytes]
    answers: list[dict[str, Any]]
    classes: list[str]
    skipped: list[dict[str, str]]


def model_versions() -> dict[str, tuple[str, list[str]]]:
    """Every registered version as ``NAME:VERSION`` -> (task, classes)."""
    with session_scope(_ui.engine()) as session:
        return {f"{model.name}:{v.version}": (model.task, list(v.settings.get("classes", [])))
                for model, versions in repo.list_models(session=session) for v in versions}


def queue(ref: str, uploads: Sequence[Upload], xai: dict[str, Any] | None) -> None:
    """Stage ``uploads`` (under names made here, so no uploaded name reaches the file system), queue the
    scoring job and put its id in the URL."""
    root = _ui.settings().staging_dir / uuid.uuid4().hex
    images = []
    for k, upload in enumerate(uploads):
        suffix = PurePosixPath(upload.name).suffix.lower()
        path = root / f"{k:04d}{suffix if suffix in SUFFIXES else '.img'}"
        write_atomic(path, upload.getvalue())
        images.append({"name": upload.name, "path": str(path)})
    spec = {"model": ref, "images": images, "staging": str(root), "xai": xai}
    with session_scope(_ui.engine()) as session:
        job_id = jobs.enqueue(session=session, kind=KIND, name=f"test-score {ref} ({len(images)} images)",
                              spec=spec).id
    st.query_params[PARAM] = str(job_id)


def followed() -> Job | None:
    """The scoring job named in the URL; a stale or foreign id is dropped from it."""
    value = st.query_params.get(PARAM)
    if value is None:
        return None
    with session_scope(_ui.engine()) as session:
        job = jobs.get(session=session, job_id=int(value)) if value.isdigit() else None
    if job is None or job.kind != KIND:
        del st.query_params[PARAM]
        return None
    return job


def outcome(job: Job) -> Scored | None:
    """While ``job`` runs, its live progress; once it has ended, its answers (or why there are none)."""
    ref = job.spec.get("model", "")
    if job.status not in jobs.FINAL:
        _live(job.id)
        return None
    if job.status == "failed":
        st.error(f"Scoring with **{ref}** failed: {job.error}\n\nFix what it names and score again.")
        return None
    if job.status == "canceled":
        # Canceled while queued: the worker never saw it.
        remove_staged(Path(job.spec.get("staging", "")), _ui.settings().staging_dir)
        st.info(f"The scoring with **{ref}** was canceled.")
        return None
    folder = _ui.settings().job_dir(job.id or 0)
    try:
        answers = json.loads((folder / ANSWERS_FILE).read_text())
        skipped = json.loads((folder / SKIPPED_FILE).read_text())
        images = [p.read_bytes() for p in sorted((folder / IMAGES_FOLDER).iterdir())]
    except (OSError, ValueError):
        st.warning(f"The answers of job {job.id} are no longer in {folder}; score the images again.")
        return None
    for problem in skipped:
        st.warning(f"**{problem['file']}** was not scored: {problem['problem']} — {problem['fix']}.")
    return Scored(ref, [a.get("filename", "") for a in answers], images, answers, _classes(ref, answers), skipped)


def _classes(ref: str, answers: list[dict[str, Any]]) -> list[str]:
    """The version's classes (the colours' order); the answers' labels when the version is gone."""
    name, _, number = ref.rpartition(":")
    with session_scope(_ui.engine()) as session:
        version = repo.get_version(session=session, name=name, version=int(number)) if number.isdigit() else None
        if version is not None:
            return list(version.settings.get("classes", []))
    return sorted({a.get("label", "") for answer in answers for a in answer.get("boxes", [])}
                  | {label for answer in answers for label in answer.get("labels", [])})


@st.fragment(run_every="1s")
def _live(job_id: int | None) -> None:
    with session_scope(_ui.engine()) as session:
        job = jobs.get(session=session, job_id=job_id or 0)
        status, fraction, message = (job.status, job.progress, job.message) if job else ("failed", 0.0, "")
        ref = job.spec.get("model", "") if job else ""
    if status in jobs.FINAL:
        st.rerun(scope="app")  # the whole page draws the answers
    waiting = "waiting for the worker (`kestrel worker`) to start it…"
    st.progress(fraction, text=f"Scoring with **{ref}**: {message or (waiting if status == 'queued' else '…')}")
    st.page_link("pages/jobs.py", label=f"Job {job_id}", query_params={"job": str(job_id)},
                 icon=":material/open_in_new:")
