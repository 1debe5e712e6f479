"""The preview of an upload before it is imported: the detected format and task, the classes, the
image count, the first images with their labels drawn on, and the problems found in the
annotations. The format and task can be changed; nothing is stored until "Import".

Reading the annotations is core.data.preview's (no image is decoded beyond the thumbnails). It is
imported on the first preview only: the format readers bring OpenCV, which a studio that never
uploads does not need to load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from core.base.errors import InputError
from core.base.tasks import Task, spec
from core.data.draw import overlays_from_record
from core.data.records import Problem
from core.data.validate import image_path_refusal, upload_folder
from storage.artifacts import remove_staged
from storage.db import session_scope
from storage.repos import datastores
from ui import common as _ui

if TYPE_CHECKING:
    from core.data.preview import ImportPreview

PENDING = "upload_pending"
# Every format the importer knows, in its detection order (core.data.formats.DETECTION_ORDER).
FORMAT_LABELS = {"mltable": "MLTable", "jsonl": "JSON Lines", "coco": "COCO JSON", "yolo": "YOLO",
                 "voc": "Pascal VOC", "masks": "Mask images", "csv": "CSV", "folder": "One folder per class"}
FORMAT_NAMES = list(FORMAT_LABELS)
COLUMNS = 3


@dataclass(frozen=True)
class Pending:
    """An upload read but not committed yet: what its preview found, and what the import job gets."""

    root: Path  # the data to import: inside the staging folder, or the user's own folder
    name: str
    validation: float
    format: str | None  # the format read (detected or chosen); None when none could be detected
    preview: ImportPreview | None  # None: nothing could be read, ``refusal`` says why
    refusal: Problem | None = None


def read(path: Path, name: str, validation: float, fmt: str | None = None) -> Pending | None:
    """The preview of ``path`` (a zip is unpacked first); None, with the error shown, when a zip is refused."""
    from core.data.preview import preview_dataset, unpack

    try:
        root = unpack(path, _ui.settings())
    except InputError as exc:
        remove_staged(path, _ui.settings().staging_dir)
        st.error(f"The zip was refused: {exc.problem}; {exc.fix}.")
        return None
    try:
        with session_scope(_ui.engine()) as session:
            mapped = datastores.mapping(session=session)
        preview = preview_dataset(root, fmt=fmt, datastores=mapped)
    except InputError as exc:
        return Pending(root, name, validation, fmt, None, Problem(exc.file, exc.line, exc.problem, exc.fix))
    return Pending(root, name, validation, preview.format, preview)


def _reread(pending: Pending) -> None:
    fmt = st.session_state.get("upload_format")
    st.session_state[PENDING] = read(pending.root, pending.name, pending.validation, fmt) or pending


def problem_table(problems: Sequence[Problem], key: str) -> None:
    st.dataframe(pd.DataFrame({"File": [p.file for p in problems], "Line": [p.line for p in problems],
                               "Problem": [p.error for p in problems], "Fix": [p.fix for p in problems]}),
                 hide_index=True, key=key)


def _task_label(value: str) -> str:
    return spec(Task(value)).display_name


def _found(preview: ImportPreview, root: Path) -> None:
    """What was found: counts, classes, the first images with their labels drawn, problems. An upload's
    images are drawn only from inside it, and only regular files of allowed size (as the import reads)."""
    settings = _ui.settings()
    upload = upload_folder(root, settings.staging_dir)
    with session_scope(_ui.engine()) as session:
        mapped = list(datastores.mapping(session=session).values())
    cells = st.columns(3)
    cells[0].metric("Format", FORMAT_LABELS.get(preview.format, preview.format))
    cells[1].metric("Images", f"{preview.image_count:,}" + ("" if preview.is_complete else "+"))
    cells[2].metric("Classes", len(preview.classes))
    st.markdown(f"Task found from the labels: **{spec(preview.task).display_name if preview.task else 'unclear'}**")
    if preview.classes:
        st.caption("Classes (images): " + ", ".join(f"{c} ({n})" for c, n in preview.images_per_class.items()))
    if not preview.is_complete:
        st.caption("Counted from the start of a large dataset; the import reads all of it.")
    if preview.resolved:  # azureml:// URLs: say how each was found; those not found are among the problems
        ways = {"path tail": "by the end of their path, in the upload"}
        st.caption("Image URLs found: " + ", ".join(f"{n:,} {ways.get(way, f'through {way}')}"
                                                    for way, n in preview.resolved.items()))
    classes = tuple(preview.classes)
    for start in range(0, len(preview.samples), COLUMNS):
        for slot, record in zip(st.columns(COLUMNS), preview.samples[start:start + COLUMNS]):
            inside = next((folder for folder in mapped if record.image.is_relative_to(folder)), upload)
            if refusal := image_path_refusal(record.image, settings.max_image_bytes, inside):
                slot.warning(f"{record.name}: {refusal}.")
                continue
            png = _ui.labelled_png(str(record.image), classes, tuple(overlays_from_record(record)),
                                   _ui.THUMBNAIL_SIDE)
            if png is None:
                slot.warning(f"{record.name}: the image is missing or unreadable.")
            else:
                slot.image(png, caption=record.name, width="stretch")
    if preview.problems:
        count = preview.problem_count
        listed = "" if len(preview.problems) == count else f" (the first {len(preview.problems)})"
        st.warning(f"{count} item{'s' if count != 1 else ''} would be skipped, listed below with a fix each"
                   f"{listed}. Fix the data and upload it again, or import the rest.")
        problem_table(preview.problems, "upload_preview_problems")


def show(pending: Pending, *, busy: bool) -> str | None:
    """The preview with its format and task to confirm or change; returns the task once "Import" is
    clicked. "Cancel" removes the staged copy (never a folder on this machine) and ends the preview."""
    st.markdown(f"**Check before importing `{pending.name}`**: nothing is stored until you click Import.")
    preview = pending.preview
    if preview is not None:
        _found(preview, pending.root)
    elif pending.refusal is not None:
        read_as = f" as {FORMAT_LABELS.get(pending.format, pending.format)}" if pending.format else ""
        st.error(f"The data could not be read{read_as}: {pending.refusal.error}. "
                 "Choose its format below, or cancel and upload it again.")
        problem_table([pending.refusal], "upload_preview_problems")
    left, right = st.columns(2)
    with left:
        st.selectbox("Format", FORMAT_NAMES, format_func=lambda f: FORMAT_LABELS.get(f, f), key="upload_format",
                     index=FORMAT_NAMES.index(pending.format) if pending.format in FORMAT_NAMES else None,
                     placeholder="Choose the format", on_change=_reread, args=(pending,),
                     help="Detected from the files; choose another to read them again.")
    with right:
        tasks = [t.value for t in Task]
        found = preview.task.value if preview and preview.task else None
        task = st.selectbox("Task", tasks, format_func=_task_label, key="upload_task", placeholder="Choose the task",
                            index=tasks.index(found) if found else None,
                            help="Found from the labels; choose another to import them for that task.")
    if preview is not None and preview.task is None:
        st.info(f"The task is unclear: {preview.task_problem}. Choose it above.")
    ready = preview is not None and preview.image_count > 0 and task is not None
    left, right = st.columns(2)
    if left.button("Import", type="primary", key="upload_import", disabled=busy or not ready, width="stretch",
                   icon=":material/upload:", help="Wait for the running import to finish first." if busy else None):
        del st.session_state[PENDING]
        return task
    if right.button("Cancel", key="upload_cancel", width="stretch", help="Removes the uploaded copy."):
        remove_staged(pending.root, _ui.settings().staging_dir)
        del st.session_state[PENDING]
        st.rerun()
    return None
