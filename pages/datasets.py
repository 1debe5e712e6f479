"""The Datasets page: every dataset, one version's import report, statistics and images.

``?dataset=NAME&version=N`` selects what is shown, so a reload or a shared link lands on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from core.base.tasks import Task, spec
from core.data.balance import imbalance_ratio
from core.train import small_objects
from storage.db import session_scope
from storage.repos import datasets as repo
from storage.repos import datastores
from storage.repos.datasets import DatasetRow
from storage.tables import DatasetVersion
from ui import common as _ui
from ui import upload as _upload

GRID_COLUMNS, GRID_ROWS = 4, 3
ALL = "all"


@dataclass(frozen=True)
class VersionStats:
    """The statistics the importer stored with a version, read once at the page's edge."""

    images_per_class: dict[str, int]
    instances_per_class: dict[str, int]
    box_widths: list[float]
    box_heights: list[float]
    box_labels: list[str]  # empty in statistics stored before boxes kept their class
    image_sizes: dict[str, int]
    splits: dict[str, int]

    @classmethod
    def from_json(cls, stats: dict[str, Any]) -> VersionStats:
        boxes = stats.get("box_sizes") or {}
        return cls(dict(stats.get("images_per_class") or {}), dict(stats.get("instances_per_class") or {}),
                   list(boxes.get("width") or []), list(boxes.get("height") or []), list(boxes.get("label") or []),
                   dict(stats.get("image_sizes") or {}), dict(stats.get("splits") or {}))


def _task_name(task: str) -> str:
    try:
        return spec(Task(task)).display_name
    except ValueError:
        return task


def _forget_version() -> None:
    # A new dataset starts at its latest version, not at the old one's number.
    st.session_state.pop("datasets_version", None)
    st.query_params.pop("version", None)


def _datasets_table(rows: list[DatasetRow]) -> None:
    frame = pd.DataFrame({
        "Name": [r.name for r in rows], "Task": [_task_name(r.task) for r in rows],
        "Latest version": [r.latest_version for r in rows], "Images": [r.images for r in rows],
        "Classes": [r.classes for r in rows], "Created": [r.created_at for r in rows],
    })
    st.dataframe(frame, hide_index=True, key="datasets_table",
                 column_config={"Created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})


def _summary(version: DatasetVersion) -> None:
    labels = "Instances" if spec(Task(version.task)).has_instances else "Tags"
    cells = st.columns(5)
    cells[0].metric("Images", version.image_count)
    cells[1].metric(labels, version.annotation_count)
    cells[2].metric("Classes", len(version.classes))
    cells[3].metric("Validation images", version.validation_count)
    cells[4].metric("Format", version.format)
    st.caption(f"{_task_name(version.task)} · from {_source(version.source)} · created "
               f"{version.created_at:%Y-%m-%d %H:%M} UTC · classes: " + ", ".join(version.classes))


def _source(source: str) -> str:
    """Where a version came from as the person knows it: the file they uploaded (not the staging copy the
    import read, since removed), or the path of their folder."""
    staging = _ui.settings().staging_dir.resolve()
    path = Path(source)
    if not path.is_absolute():  # a description, such as the built-in samples'
        return source
    if not path.is_relative_to(staging):
        return f"`{source}`"
    inside = path.relative_to(staging).parts[1:]  # below the upload's own temporary folder
    return f"an upload (`{Path(*inside)}`)" if inside else "an upload"


def _import_report(version: DatasetVersion) -> None:
    st.subheader("Import report")
    with session_scope(_ui.engine()) as session:
        problems = repo.problems(session=session, version_id=version.id)
    for warning in version.warnings:
        st.warning(warning)
    if not problems:
        st.success(f"All {version.image_count} images imported; no items were skipped.")
        return
    skipped = f"{len(problems)} item{'s' if len(problems) != 1 else ''}"
    st.warning(f"{version.image_count} images imported; {skipped} skipped, listed below with a fix each.")
    st.dataframe(pd.DataFrame({"File": [p.file for p in problems], "Line": [p.line for p in problems],
                               "Problem": [p.error for p in problems], "Fix": [p.fix for p in problems]}),
                 hide_index=True, key="datasets_problems")


def _class_bars(title: str, classes: list[str], per_class: dict[str, int], key: str) -> None:
    frame = pd.DataFrame({"class": classes, "count": [per_class.get(c, 0) for c in classes]})
    figure = px.bar(frame, x="class", y="count", color="class", title=title,
                    color_discrete_map=_ui.colour_map(classes))
    st.plotly_chart(figure.update_layout(showlegend=False), key=key)


def _statistics(version: DatasetVersion) -> None:
    st.subheader("Statistics")
    stats = VersionStats.from_json(version.stats)
    left, right = st.columns(2)
    with left:
        ratio = imbalance_ratio(stats.images_per_class)
        title = "Images per class" + (f" (largest to smallest {ratio:.1f} : 1)" if ratio > 1 else "")
        _class_bars(title, version.classes, stats.images_per_class, "datasets_chart_images")
    with right:
        if spec(Task(version.task)).has_instances:
            _class_bars("Instances per class", version.classes, stats.instances_per_class,
                        "datasets_chart_instances")
    left, right = st.columns(2)
    with left:
        if stats.box_widths:
            by_class = len(stats.box_labels) == len(stats.box_widths)
            figure = px.scatter(x=stats.box_widths, y=stats.box_heights, opacity=0.5,
                                color=stats.box_labels if by_class else None,
                                color_discrete_map=_ui.colour_map(version.classes),
                                category_orders={"color": version.classes},  # the legend in class order
                                title="Box sizes (fraction of the image)",
                                labels={"x": "width", "y": "height", "color": "class"},
                                range_x=[0, 1], range_y=[0, 1])
            st.plotly_chart(figure, key="datasets_chart_boxes")
    with right:
        if stats.image_sizes:
            sizes = sorted(stats.image_sizes.items(), key=lambda kv: -kv[1])[:20]
            figure = px.bar(x=[s for s, _ in sizes], y=[n for _, n in sizes], title="Image sizes",
                            labels={"x": "width × height (px)", "y": "images"})
            st.plotly_chart(figure.update_xaxes(type="category"), key="datasets_chart_sizes")
    _object_sizes(version)


def _object_sizes(version: DatasetVersion) -> None:
    """How large the objects are as a detector would see them, and the advice when most are too small."""
    seen = small_objects.assess(version.stats or {}, Task(version.task))
    if seen is None:
        return
    figure = px.histogram(x=seen.sides, nbins=40, labels={"x": f"object side in pixels at {seen.training_side} px"},
                          title=f"Object sizes as a detector sees them ({seen.fraction_small:.0%} under "
                                f"{small_objects.SMALL_SIDE} px)")
    figure.add_vline(x=small_objects.SMALL_SIDE, line_dash="dot", annotation_text="small")
    st.plotly_chart(figure.update_layout(yaxis_title="objects"), key="datasets_chart_object_sides")
    if seen.dominated:
        st.warning(seen.why + " The New job wizard sets this in one click.", icon=":material/zoom_in:")


@st.dialog("Image", width="large")
def _show_large(cell: _ui.GridCell, classes: tuple[str, ...]) -> None:
    png = _ui.labelled_png(cell.path, classes, cell.overlays, _ui.LARGE_SIDE)
    if png is None:
        st.error("The image file is missing from the blob store; import the dataset again.")
        return
    st.image(png, caption=cell.caption, width="stretch")
    if cell.overlays:
        st.dataframe(pd.DataFrame({
            "label": [o.label for o in cell.overlays],
            "box (x0, y0, x1, y1)": [", ".join(f"{v:.3f}" for v in o.box) if o.box else "" for o in cell.overlays],
        }), hide_index=True)


def _reset_grid_page() -> None:
    st.session_state["datasets_grid_page"] = 1


def _grid(version: DatasetVersion) -> None:
    st.subheader("Images")
    splits = sorted(VersionStats.from_json(version.stats).splits) or ["train", "validation"]
    left, middle, right = st.columns([2, 2, 1])
    with left:
        label = _grid_filter("Class", [ALL, *version.classes], "datasets_grid_class")
    with middle:
        split = _grid_filter("Split", [ALL, *splits], "datasets_grid_split")
    filters = {"label": None if label == ALL else label, "split": None if split == ALL else split}
    per_page = GRID_COLUMNS * GRID_ROWS
    with session_scope(_ui.engine()) as session:
        total = repo.count_images(session=session, version_id=version.id, **filters)
        with right:
            offset = _ui.page_picker(total, per_page, "datasets_grid_page")
        items = repo.images(session=session, version_id=version.id, offset=offset, limit=per_page,
                            **filters)
        labels = repo.annotations(session=session, image_ids=[i.id for i in items])
    if not items:
        st.info("No images match these filters.")
        return
    st.caption(f"Images {offset + 1}–{offset + len(items)} of {total}")
    cells = [_ui.GridCell(i.id, str(_ui.blob_path(i.sha256)), f"{i.file_name} · {i.split}",
                          _ui.overlays_from_annotations(labels[i.id])) for i in items]
    classes = tuple(version.classes)
    _ui.image_grid(cells, classes, columns=GRID_COLUMNS, key="datasets_grid",
                   on_view=lambda cell: _show_large(cell, classes))


def _grid_filter(label: str, options: list[str], key: str) -> str:
    if st.session_state.get(key) not in options:
        st.session_state[key] = ALL  # the class or split is not in this version
    return st.selectbox(label, options, key=key, on_change=_reset_grid_page)


def _datastores() -> None:
    """Folders that the reference's datastores stand for: an annotation file's
    ``azureml://…/datastores/NAME/paths/P`` is imported from FOLDER/P."""
    with session_scope(_ui.engine()) as session:
        mapped = [{"datastore": r.name, "folder": r.path} for r in datastores.list_all(session=session)]
    if mapped:
        st.dataframe(pd.DataFrame(mapped), hide_index=True, width="stretch")
    else:
        st.caption("No datastore is mapped. Without one, an image URL resolves to the file in your upload whose "
                   "path ends the same way (e.g. train/buildings/1.jpg).")
    with st.form("datastore_form", clear_on_submit=True, border=False):
        name_col, folder_col, go = st.columns([2, 4, 1], vertical_alignment="bottom")
        name = name_col.text_input("Datastore name", placeholder="workspaceblobstore", key="datastore_name")
        folder = folder_col.text_input("Folder on this machine", placeholder="/data/blobs", key="datastore_folder")
        if go.form_submit_button("Map"):
            _map_datastore(name.strip(), folder.strip())
    if mapped:
        pick, forget = st.columns([6, 1], vertical_alignment="bottom")
        gone = pick.selectbox("Mapping to forget", [m["datastore"] for m in mapped])
        if forget.button("Forget"):  # datasets imported through it keep their images
            with session_scope(_ui.engine()) as session:
                datastores.delete(session=session, name=gone)
            st.rerun()


def _map_datastore(name: str, folder: str) -> None:
    mapped, refusal = _ui.kestrel("datastore", "create", name, "--path", folder)  # checks as the CLI does
    if mapped is not None:
        st.success(f"Datastore {mapped['name']} → {mapped['path']}")
    else:
        st.error(refusal)


def _empty_state() -> None:
    st.info("No datasets yet. Upload one above, or import a folder, zip or JSONL file from a terminal "
            "and reload this page:\n\n`kestrel data import PATH --name NAME`")


def main() -> None:
    st.title("Datasets")
    with session_scope(_ui.engine()) as session:
        names = repo.dataset_names(session=session)
    with st.expander("Upload a dataset or a new version", expanded=not names or _upload.PENDING in st.session_state,
                     icon=":material/upload:"):
        _upload.upload_form(names)
    with st.expander("Datastores (for azureml:// image URLs)", icon=":material/folder_shared:"):
        _datastores()
    _upload.import_status()  # before the pickers: a finished import selects its new version
    with session_scope(_ui.engine()) as session:
        rows = repo.list_datasets(session=session)
    if not rows:
        _empty_state()
        return
    _datasets_table(rows)
    names = [r.name for r in rows]
    left, right = st.columns(2)
    with left:
        name = _ui.url_selectbox("Dataset", names, key="datasets_name", param="dataset", on_change=_forget_version)
    with session_scope(_ui.engine()) as session:
        versions = sorted(repo.versions(session=session, name=name), key=lambda v: -v.version)
    by_number = {v.version: v for v in versions}
    with right:
        number = _ui.url_selectbox("Version", list(by_number), key="datasets_version", param="version",
                       format_func=lambda n: f"{n} (latest)" if n == versions[0].version else str(n))
    version = by_number[number]
    _summary(version)
    _import_report(version)
    _statistics(version)
    _grid(version)


main()
