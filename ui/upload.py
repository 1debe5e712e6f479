"""Uploading a dataset from the Datasets page: stage the files under the staging folder, preview
what was found (format, task, classes, the first images with their labels), and on confirmation
queue an "import" job for the worker, then follow it live until the new version can be opened.

The preview reads the annotation files only; the import itself (checking every image, storing)
runs in the worker, never in the script thread. ``?import_job=N`` names the import being
followed, so a reload comes back to it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import streamlit as st

from storage.artifacts import remove_staged, remove_tree
from storage.db import session_scope
from storage.repos import datasets as repo
from storage.repos import jobs
from storage.tables import Job
from ui import common as _ui
from ui import import_preview as _import_preview
from ui.import_preview import PENDING, Pending

PARAM = "import_job"
NEW_DATASET = "(a new dataset)"
FILES, FOLDER, LOCAL = "Files or a zip", "A folder", "A folder on this machine"
IMAGE_TYPES = ("png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp")
TYPES = ("zip", "jsonl", "json", "xml", "txt", "csv", "yaml", "yml", *IMAGE_TYPES)
# The importer's rule for dataset names (core.data.importer.NAME_PATTERN), checked here so a bad
# name is refused beside the input instead of failing the job later.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CHUNK = 1 << 20
MB = 1 << 20


class Upload(Protocol):
    """What the page needs of Streamlit's UploadedFile (and what tests can stand in for)."""

    name: str
    size: int

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Staged:
    path: Path  # what the import job reads: the zip, or the folder of files
    files: int
    bytes: int
    refused: list[str]  # names that would have written outside the folder


def safe_name(name: str) -> PurePosixPath | None:
    """``name`` as a relative path inside the upload folder, or None when it would leave it.

    Browsers send relative names for folder uploads ("set/images/a.png"); absolute names,
    ``..`` parts, drive letters and control characters are refused, not repaired.
    """
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if (not parts or path.is_absolute() or ".." in parts or ":" in parts[0]
            or any(ord(c) < 32 for c in name)):
        return None
    return PurePosixPath(*parts)


def stage(files: Sequence[Upload], staging_dir: Path,
          progress: Callable[[int, int], None] | None = None) -> Staged:
    """Write ``files`` under a new ``staging_dir/<uuid>/`` with their relative names kept.

    A single top-level folder shared by every file (a browser folder upload) is dropped, so
    the annotation file sits at the root the importer reads.
    """
    accepted: list[tuple[Upload, PurePosixPath]] = []
    refused: list[str] = []
    for file in files:
        rel = safe_name(file.name)
        if rel is None:
            refused.append(file.name)
        else:
            accepted.append((file, rel))
    tops = {rel.parts[0] for _, rel in accepted}
    if len(tops) == 1 and all(len(rel.parts) > 1 for _, rel in accepted):
        accepted = [(f, PurePosixPath(*rel.parts[1:])) for f, rel in accepted]
    root = staging_dir / uuid.uuid4().hex
    root.mkdir(parents=True)
    resolved_root = root.resolve()
    total, done = sum(f.size for f, _ in accepted), 0
    for file, rel in accepted:
        target = root / rel
        if not target.resolve().is_relative_to(resolved_root):  # a name safe_name missed; belt and braces
            refused.append(file.name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            while chunk := file.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    zips = [rel for _, rel in accepted if rel.suffix.lower() == ".zip"]
    path = root / zips[0] if len(accepted) == 1 and zips else root
    return Staged(path, len(accepted), done, refused)


def upload_form(names: list[str]) -> None:
    """The upload controls; on "Preview" the files are staged and read, and the preview is shown
    until the import is confirmed (an import job is queued) or canceled (the staged files go)."""
    if refused := st.session_state.pop("upload_refused", None):
        st.warning("Left out, because their names would write outside the upload folder: "
                   + ", ".join(f"`{n}`" for n in refused))
    if (pending := st.session_state.get(PENDING)) is not None:
        if task := _import_preview.show(pending, busy=st.query_params.get(PARAM) is not None):
            _queue(pending, task)
        return
    settings = _ui.settings()
    source = st.radio("Source", [FILES, FOLDER, LOCAL], horizontal=True, key="upload_source",
                      help="A folder upload keeps the folder's layout; a folder on this machine is read "
                           "in place, for data too large for a browser upload.")
    files: list = []
    local = ""
    generation = st.session_state.setdefault("upload_generation", 0)
    if source == LOCAL:
        local = st.text_input("Folder or file path on this machine", key="upload_path").strip()
    else:
        files = st.file_uploader(
            "Drop a zip, or an annotation file with its images", type=list(TYPES),
            accept_multiple_files="directory" if source == FOLDER else True,
            max_upload_size=max(1, settings.max_upload_bytes // MB), key=f"upload_files_{source}_{generation}",
            help="JSONL, MLTable, COCO, Pascal VOC, YOLO, CSV, masks or one folder per class.") or []
        if files:
            size = sum(f.size for f in files)
            st.caption(f"{len(files)} file{'s' if len(files) != 1 else ''}, {size / MB:,.1f} MB uploaded")
    left, right = st.columns(2)
    with left:
        existing = st.selectbox("Dataset", [NEW_DATASET, *names], key="upload_dataset",
                                help="An existing dataset gets a new version; its old versions stay as they are.")
        name = (st.text_input("New dataset name", key="upload_name", placeholder="e.g. fridge-items").strip()
                if existing == NEW_DATASET else existing)
    with right:
        validation = st.slider("Validation fraction", 0.0, 0.5, 0.2, 0.05, key="upload_validation",
                               help="The share of images held out to score models; 0.2 keeps 20% apart.")
    # Not disabled while inputs are empty: a click that commits a just-typed path would be lost.
    if not st.button("Preview", type="primary", key="upload_preview", icon=":material/visibility:",
                     help="Shows the format, task, classes and first images found; nothing is imported yet."):
        return
    if not (files or local):
        st.error("Drop the files first, or give the path of a folder on this machine.")
        return
    if not NAME_PATTERN.match(name):
        st.error(f"{name!r} is not a valid dataset name: use letters, digits, '.', '_' and '-' "
                 "(up to 100, starting with a letter or digit).")
        return
    if source == LOCAL:
        path = Path(local).expanduser()
        if not path.exists():
            st.error(f"`{local}` does not exist on this machine; check the path.")
            return
    else:
        path = _stage_with_progress(files, settings.staging_dir, settings.max_upload_bytes)
        if path is None:
            return
    with st.spinner("Reading the annotations…"):
        pending = _import_preview.read(path, name, validation)
    if pending is None:
        return
    st.session_state[PENDING] = pending
    st.session_state["upload_generation"] = generation + 1  # a fresh, empty uploader after the preview
    st.rerun()


def _queue(pending: Pending, task: str) -> None:
    job_spec = {"path": str(pending.root), "name": pending.name, "validation_size": pending.validation,
                "format": pending.format, "task": task}
    with session_scope(_ui.engine()) as session:
        job_id = jobs.enqueue(session=session, kind="import", name=f"import {pending.name}", spec=job_spec).id
    st.query_params[PARAM] = str(job_id)
    st.rerun()


def _stage_with_progress(files: Sequence[Upload], staging_dir: Path, limit: int) -> Path | None:
    total = sum(f.size for f in files)
    if total > limit:
        st.error(f"The upload is {total / MB:,.0f} MB, more than the limit of {limit / MB:,.0f} MB; "
                 "give a folder on this machine instead, or raise KESTREL_MAX_UPLOAD_BYTES.")
        return None
    zips = [f for f in files if f.name.lower().endswith(".zip")]
    if zips and len(files) > 1:
        st.error("Upload one zip on its own, or the files without a zip.")
        return None
    bar = st.progress(0.0, text="Writing the files…")

    def progress(done: int, all_bytes: int) -> None:
        bar.progress(done / max(all_bytes, 1), text=f"Writing the files: {done / MB:,.1f} of {all_bytes / MB:,.1f} MB")

    staged = stage(files, staging_dir, progress)
    bar.progress(1.0, text=f"{staged.files} files written ({staged.bytes / MB:,.1f} MB)")
    # Said after the rerun that empties the uploader, so it must outlive this run.
    st.session_state["upload_refused"] = staged.refused
    if not staged.files:
        remove_tree(staged.path)
        st.error("No file could be kept; rename the files and upload them again.")
        return None
    return staged.path


def _job_from_param() -> Job | None:
    value = st.query_params.get(PARAM)
    if value is None:
        return None
    with session_scope(_ui.engine()) as session:
        job = jobs.get(session=session, job_id=int(value)) if value.isdigit() else None
        if job is None or job.kind != "import":
            del st.query_params[PARAM]
            return None
        return job


def import_status() -> None:
    """The followed import: live progress while it runs; when it has finished, the outcome.

    Call it before the dataset and version pickers: a finished import selects its new version.
    """
    job = _job_from_param()
    if job is None:
        return
    if job.status not in jobs.FINAL:
        _live(job.id)
        return
    # The worker removes the staged copy when the import ends; this covers imports queued before it did.
    remove_staged(Path(job.spec.get("path", "")), _ui.settings().staging_dir)
    del st.query_params[PARAM]
    if job.status == "completed":
        _open_new_version(job)
    elif job.status == "failed":
        st.error(f"The import of **{job.spec.get('name')}** failed: {job.error}\n\n"
                 "Fix the data and upload it again; nothing was stored.")
    else:
        st.info(f"The import of **{job.spec.get('name')}** was canceled.")


@st.fragment(run_every="1s")
def _live(job_id: int) -> None:
    with session_scope(_ui.engine()) as session:
        job = jobs.get(session=session, job_id=job_id)
        status, fraction, message, name = (job.status, job.progress, job.message, job.spec.get("name")) \
            if job else ("failed", 0.0, "", "")
    if status in jobs.FINAL:
        st.rerun(scope="app")  # the whole page draws the outcome and opens the new version
    waiting = "Waiting for the worker (`kestrel worker`) to start it…"
    st.progress(fraction, text=f"Importing **{name}**: {message or (waiting if status == 'queued' else '…')}")
    st.page_link("pages/jobs.py", label=f"Job {job_id}", query_params={"job": str(job_id)},
                 icon=":material/open_in_new:")


def _open_new_version(job: Job) -> None:
    name = job.spec.get("name", "")
    with session_scope(_ui.engine()) as session:
        version = repo.version_from_source(session=session, name=name, source=job.spec.get("path", ""))
        number = version.version if version else None
    if number is None:
        st.warning(f"The import finished ({job.message}) but its version was not found; pick it below.")
        return
    st.session_state["datasets_name"], st.session_state["datasets_version"] = name, number
    st.query_params["dataset"], st.query_params["version"] = name, str(number)
    st.success(f"{job.message or 'Imported'}. Its import report is below.", icon=":material/check_circle:")
    st.page_link("pages/datasets.py", label=f"Open {name} version {number}", icon=":material/link:",
                 query_params={"dataset": name, "version": str(number)})
