"""The label editors the Labelling page shows for one image: class tags (classification), boxes drawn on a
canvas (detection) or polygons (instance segmentation), each with a table beside it to change classes and
delete. Used for a dataset's images and for the review queue's (the model's answer as pre-labels)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from core.base.tasks import LabelKind
from core.data.draw import Overlay, colour_for
from core.data.relabel import EditedLabel, canvas_colour, canvas_fill, polygon_drawing, polygons_from_drawing
from storage.tables import ImageItem
from ui import common as _ui

CANVAS_MAX = (760, 560)  # the drawing area's largest width and height, in screen pixels
PREVIEW_SIDE = 640
DECIMALS = 4  # of a normalised coordinate: finer than a pixel of any image we accept
AXES = ("x0", "y0", "x1", "y1")
Box = tuple[float, float, float, float]


def edit(kind: LabelKind, item: ImageItem, labels: tuple[EditedLabel, ...], classes: list[str]) -> list[EditedLabel]:
    """The editor for labels of ``kind`` on ``item``; the labels as the person left them."""
    if kind == LabelKind.POLYGONS:
        return _polygon_editor(item, labels, classes)
    if kind == LabelKind.BOXES:
        return _box_editor(item, labels, classes)
    return _tag_editor(item, labels, classes, multi=kind == LabelKind.TAGS)


def _rounded(box: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (round(min(1.0, max(0.0, float(v))), DECIMALS) for v in box)
    return x0, y0, x1, y1


def _hex(label: str, classes: Sequence[str]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour_for(label, classes))


@st.cache_data(max_entries=64, show_spinner=False)
def _background(path: str, width: int, height: int) -> bytes | None:
    """The image scaled to the canvas, as PNG bytes (small images are enlarged to draw on)."""
    try:
        with Image.open(path) as image:
            scaled = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    except (OSError, ValueError):
        return None
    buffer = io.BytesIO()
    scaled.save(buffer, format="PNG")
    return buffer.getvalue()


def _tag_editor(item: ImageItem, labels: tuple[EditedLabel, ...], classes: list[str],
                multi: bool) -> list[EditedLabel]:
    overlays = tuple(Overlay(label.label) for label in labels)
    png = _ui.labelled_png(str(_ui.blob_path(item.sha256)), tuple(classes), overlays, PREVIEW_SIDE)
    if png is None:
        st.error("The image file is missing from the blob store; import the dataset again.")
    else:
        st.image(png, caption=item.file_name, width=min(PREVIEW_SIDE, max(320, item.width)))
    current = [label.label for label in labels]
    chosen = st.pills("Classes of this image" if multi else "Class of this image", classes,
                      selection_mode="multi" if multi else "single", key=f"label_tags_{item.id}",
                      default=current if multi else (current[0] if current else None))
    picked = (chosen or []) if multi else ([chosen] if chosen else [])
    return [EditedLabel(label) for label in picked]


def _canvas_size(item: ImageItem) -> tuple[int, int]:
    scale = min(CANVAS_MAX[0] / item.width, CANVAS_MAX[1] / item.height)
    return max(1, round(item.width * scale)), max(1, round(item.height * scale))


def _drawing(labels: Sequence[EditedLabel], classes: list[str], width: int, height: int) -> dict[str, Any]:
    objects = [{"type": "LabeledRect", "label": label.label, "left": box[0] * width, "top": box[1] * height,
                "width": (box[2] - box[0]) * width, "height": (box[3] - box[1]) * height,
                "originX": "left", "originY": "top", "scaleX": 1, "scaleY": 1, "angle": 0,
                "stroke": _hex(label.label, classes), "strokeWidth": 3, "fill": "rgba(0, 0, 0, 0)",
                "lockRotation": True, "strokeUniform": True}
               for label in labels if (box := label.box) is not None]
    return {"objects": objects}


def _mount(item: ImageItem, drawing: Callable[[], dict[str, Any]]) -> tuple[int, str, dict[str, Any]]:
    """The canvas's revision, key and initial drawing. The canvas reloads whenever its initial drawing
    changes, which would drop the selection on each edit; so the drawing is fixed per mount (key), and a
    change made in the table beside it remounts it (a new revision)."""
    revision = st.session_state.setdefault("label_canvas_revision", 0)
    key = f"label_canvas_{item.id}_{revision}"
    initial = st.session_state.get("label_canvas_initial")
    if not initial or initial[0] != key:
        initial = (key, drawing())
        st.session_state["label_canvas_initial"] = initial
    return revision, key, initial[1]


def _class_column(classes: list[str], table: pd.DataFrame) -> dict[str, Any]:
    return {"class": st.column_config.SelectboxColumn("class", options=sorted({*classes, *table["class"]}),
                                                      required=True)}


def _box_editor(item: ImageItem, labels: tuple[EditedLabel, ...], classes: list[str]) -> list[EditedLabel]:
    """The canvas: boxes drawn, moved, resized and deleted in the browser; classes in a table."""
    path = str(_ui.blob_path(item.sha256))
    width, height = _canvas_size(item)
    new_class = st.pills("Class for new boxes", classes, key="label_box_class", default=classes[0]) or classes[0]
    st.caption("Drag on the image to draw a box. The pencil button in the canvas toolbar switches to "
               "editing: move and resize boxes, delete the selected one, or click its label to rename it.")
    revision, key, initial = _mount(item, lambda: _drawing(labels, classes, width, height))
    result = st_canvas(background_image=_background(path, width, height), width=width, height=height,
                       drawing_mode="labeled_rect", label=new_class, stroke_color=_hex(new_class, classes),
                       stroke_width=3, fill_color="rgba(0, 0, 0, 0)", initial_drawing=initial, key=key,
                       font_size=14)
    boxes = [EditedLabel(b["label"] or new_class, _rounded((b["left"] / width, b["top"] / height,
                                                          (b["left"] + b["width"]) / width,
                                                          (b["top"] + b["height"]) / height)))
             for b in result.boxes]
    table = pd.DataFrame({"class": [b.label for b in boxes],
                          **{axis: [b.box[i] for b in boxes if b.box] for i, axis in enumerate(AXES)}})
    edited = st.data_editor(table, key=f"label_boxes_{key}", num_rows="delete", hide_index=True,
                            disabled=list(AXES), column_config=_class_column(classes, table))
    changed = [EditedLabel(str(row["class"]), _rounded([row[a] for a in AXES])) for _, row in edited.iterrows()]
    if changed != boxes:  # the table changed a class or deleted a row: remount the canvas from it
        st.session_state["label_canvas_revision"] = revision + 1
    return changed


def _polygon_editor(item: ImageItem, labels: tuple[EditedLabel, ...], classes: list[str]) -> list[EditedLabel]:
    """The canvas: polygons drawn, moved, resized, reshaped and deleted in the browser; classes in a table."""
    path = str(_ui.blob_path(item.sha256))
    width, height = _canvas_size(item)
    new_class = st.pills("Class for new polygons", classes, key="label_polygon_class",
                         default=classes[0]) or classes[0]
    # In polygon mode the canvas sends a closed polygon at once but other edits only on its "update" button.
    st.caption("Click the outline's corners on the image, then its first corner again to close it. The pencil "
               "button in the canvas toolbar switches to editing: move and resize polygons, click a selected one "
               "to drag its corners, or delete it; then click the arrow-up button (*Update the app with this "
               "drawing*) to keep the change. Change a class, or delete a polygon, in the table below.")
    revision, key, initial = _mount(item, lambda: polygon_drawing(labels, classes, width, height))
    result = st_canvas(background_image=_background(path, width, height), width=width, height=height,
                       drawing_mode="polygon", stroke_color=canvas_colour(new_class, classes), stroke_width=2,
                       fill_color=canvas_fill(new_class, classes), initial_drawing=initial, key=key)
    polygons = polygons_from_drawing((result.json_data or {}).get("objects") or [], classes, width, height,
                                     new_label=new_class)
    table = pd.DataFrame({"class": [p.label for p in polygons], "corners": [len(p.polygons[0]) // 2 for p in polygons],
                          **{axis: [p.box[i] for p in polygons if p.box] for i, axis in enumerate(AXES)}})
    edited = st.data_editor(table, key=f"label_polygons_{key}", num_rows="delete", hide_index=True,
                            disabled=["corners", *AXES], column_config=_class_column(classes, table))
    # Rows keep their index through deletions, which ties each row back to its polygon.
    changed = [replace(polygons[int(i)], label=str(row["class"])) for i, row in edited.iterrows()
               if 0 <= int(i) < len(polygons)]
    if changed != polygons:  # a class changed or a row was deleted: remount the canvas from the table
        st.session_state["label_canvas_revision"] = revision + 1
    return changed
