"""The Labelling page: pick a dataset version and an image; click its tags (classification),
draw, move, resize and delete its boxes (detection) or polygons (instance segmentation); save the
edits as a new version. Its review queue (`ui.review_queue`) holds the images endpoints scored with
low confidence, with the model's answers to correct.

Edits are drafts until saved, kept in a file per version (storage.drafts) written on each change,
so leaving the page half-way, or a reload, loses nothing; saving never changes the version they
were made on. ``?dataset=&version=&image=`` selects what is shown, so a reload lands on the same image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from core.base.errors import KestrelError
from core.base.tasks import Task, spec
from core.data.relabel import EditedLabel, relabel_version, stored_labels
from storage.db import session_scope
from storage.drafts import DraftStore
from storage.repos import datasets as repo
from storage.repos import reviews
from storage.tables import DatasetVersion
from ui import common as _ui
from ui import label_editors, review_queue

Drafts = dict[int, tuple[EditedLabel, ...]]  # image id -> its unsaved labels


def _draft_store() -> DraftStore:
    return DraftStore(_ui.settings().drafts_dir)


def _drafts(version_id: int) -> Drafts:
    """The unsaved labels of the version's edited images; on the first look in a session, the draft
    file left by an earlier visit (a reload, another day) is restored."""
    drafts = st.session_state.setdefault("label_drafts", {})
    if version_id not in drafts:
        restored: Drafts = {}
        for image_id, labels in _draft_store().load(version_id).items():
            try:
                restored[image_id] = tuple(EditedLabel.from_json(label) for label in labels)
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry: that image keeps its stored labels
        if restored:
            st.session_state.setdefault("label_restored", {})[version_id] = len(restored)
        drafts[version_id] = restored
    return drafts[version_id]


def _persist(version_id: int) -> None:
    drafts = _drafts(version_id)
    _draft_store().save(version_id, {i: [label.as_json() for label in labels] for i, labels in drafts.items()})


def _pick(label: str, options: list[Any], *, key: str, param: str, on_change: Any = None,
          format_func: Any = str) -> Any:
    """A selectbox that starts from the URL's ``param`` and writes its choice back to it."""
    if st.session_state.get(key) not in options:
        match = [o for o in options if str(o) == st.query_params.get(param)]
        st.session_state[key] = match[0] if match else options[0]
    value = st.selectbox(label, options, key=key, on_change=on_change, format_func=format_func)
    st.query_params[param] = str(value)
    return value


def _reset_version() -> None:
    for key in ("label_version", "label_position"):
        st.session_state.pop(key, None)
    st.query_params.pop("version", None)
    st.query_params.pop("image", None)


def _reset_position() -> None:
    st.session_state.pop("label_position", None)
    st.query_params.pop("image", None)


def _step(delta: int, total: int) -> None:
    position = int(st.session_state.get("label_position", 1)) + delta
    st.session_state["label_position"] = min(max(1, position), total)


def _same(a: Sequence[EditedLabel], b: Sequence[EditedLabel]) -> bool:
    return sorted(a, key=repr) == sorted(b, key=repr)


def _keep(version_id: int, image_id: int, labels: Sequence[EditedLabel], stored: Sequence[EditedLabel]) -> None:
    """Record ``labels`` as the image's draft, or drop the draft when they equal what is stored;
    the draft file follows every change."""
    drafts = _drafts(version_id)
    before = drafts.get(image_id)
    if _same(labels, stored):
        drafts.pop(image_id, None)
    else:
        drafts[image_id] = tuple(labels)
    if drafts.get(image_id) != before:
        _persist(version_id)


def _save(version_id: int, number: int, name: str) -> None:
    drafts = _drafts(version_id)
    edits = {image_id: [label.annotation() for label in labels] for image_id, labels in drafts.items()}
    try:
        with session_scope(_ui.engine()) as session:
            saved = relabel_version(session=session, version_id=version_id, edits=edits).version
    except KestrelError as exc:
        st.session_state["label_message"] = ("error", f"Not saved: {exc}")
        return
    drafts.clear()
    _draft_store().remove(version_id)
    st.session_state.get("label_restored", {}).pop(version_id, None)
    st.session_state["label_version"] = saved
    st.session_state["label_message"] = ("success", f"Saved as {name} version {saved}; version {number} "
                                         "is unchanged.")


def _discard(version_id: int) -> None:
    _drafts(version_id).clear()
    _draft_store().remove(version_id)
    st.session_state.get("label_restored", {}).pop(version_id, None)
    for key in [k for k in st.session_state if str(k).startswith("label_tags_")]:
        del st.session_state[key]  # the tag buttons would otherwise keep the discarded choice
    st.session_state["label_canvas_revision"] = st.session_state.get("label_canvas_revision", 0) + 1


def _add_class(version_id: int) -> None:
    name = st.session_state.get("label_new_class", "").strip()
    extra = st.session_state.setdefault("label_classes", {}).setdefault(version_id, [])
    if name and name not in extra:
        extra.append(name)
    st.session_state["label_new_class"] = ""


def _navigation(total: int) -> None:
    left, middle, right = st.columns([2, 3, 2], vertical_alignment="bottom")
    left.button("Previous", key="label_previous", on_click=_step, args=(-1, total), shortcut="PageUp",
                icon=":material/chevron_left:", width="stretch")
    middle.number_input(f"Image (of {total})", min_value=1, max_value=total, step=1, key="label_position")
    right.button("Next", key="label_next", on_click=_step, args=(1, total), shortcut="PageDown",
                 icon=":material/chevron_right:", icon_position="right", width="stretch")


def _panel(version: DatasetVersion, name: str) -> None:
    """Adding a class, saving: drawn after the editor, so it counts the edit just made."""
    version_id = int(version.id or 0)
    st.text_input("Add a class", key="label_new_class", on_change=_add_class, args=(version_id,),
                  placeholder="a new class name, then Enter")
    edited = len(_drafts(version_id))
    st.metric("Images edited, not saved", edited)
    st.button("Save as a new version", key="label_save", type="primary", disabled=not edited,
              help=f"Version {version.version} stays as it is.", on_click=_save,
              args=(version_id, version.version, name), width="stretch", icon=":material/save:")
    st.button("Discard the edits", key="label_discard", disabled=not edited, on_click=_discard,
              args=(version_id,), width="stretch")


def _restored_notice(version_id: int) -> None:
    """Says that edits left unsaved on an earlier visit were brought back, until saved or discarded."""
    if not (count := st.session_state.get("label_restored", {}).get(version_id)):
        return
    notice, button = st.columns([4, 1], vertical_alignment="center")
    notice.info(f"Restored {count} unsaved edit{'s' if count != 1 else ''} from an earlier visit (images labelled "
                "but not saved). Save them as a new version, or discard the draft.", icon=":material/history:")
    button.button("Discard draft", key="label_discard_draft", on_click=_discard, args=(version_id,),
                  width="stretch")


def _choose_version() -> tuple[DatasetVersion, str] | None:
    with session_scope(_ui.engine()) as session:
        names = repo.dataset_names(session=session)
    if not names:
        st.info("No datasets yet: upload one on the Datasets page, then label it here.")
        st.page_link("pages/datasets.py", label="Datasets", icon=":material/photo_library:")
        return None
    left, right = st.columns(2)
    with left:
        name = _pick("Dataset", names, key="label_dataset", param="dataset", on_change=_reset_version)
    with session_scope(_ui.engine()) as session:
        by_number = {v.version: v for v in sorted(repo.versions(session=session, name=name), key=lambda v: -v.version)}
    with right:
        number = _pick("Version", list(by_number), key="label_version", param="version", on_change=_reset_position,
                       format_func=lambda n: f"{n} (latest)" if n == max(by_number) else str(n))
    return by_number[number], name


def main() -> None:
    st.title("Labelling")
    if message := st.session_state.pop("label_message", None):
        (st.success if message[0] == "success" else st.error)(message[1])
    with session_scope(_ui.engine()) as session:
        waiting = sum(reviews.pending_counts(session=session).values())
    modes = ["Dataset images", f"Review queue ({waiting})"]
    if st.session_state.get("label_mode") not in modes:  # the first look (the URL says), or the count changed
        review = (str(st.session_state["label_mode"]).startswith("Review") if "label_mode" in st.session_state
                  else st.query_params.get("mode") == "review")
        st.session_state["label_mode"] = modes[1] if review else modes[0]
    if st.segmented_control("Label", modes, key="label_mode", label_visibility="collapsed") == modes[1]:
        st.query_params["mode"] = "review"
        review_queue.show()
        return
    st.query_params.pop("mode", None)
    chosen = _choose_version()
    if chosen is None:
        return
    version, name = chosen
    version_id = int(version.id or 0)
    kind = spec(Task(version.task)).label_kind
    drafts = _drafts(version_id)  # restores the draft file of an earlier visit, if any
    _restored_notice(version_id)
    with session_scope(_ui.engine()) as session:
        total = repo.count_images(session=session, version_id=version_id)
    if total == 0:
        st.info("This version has no images.")
        return
    if not 1 <= st.session_state.get("label_position", 0) <= total:
        wanted = st.query_params.get("image", "1")
        st.session_state["label_position"] = min(max(1, int(wanted) if wanted.isdigit() else 1), total)
    position = int(st.session_state["label_position"])
    st.query_params["image"] = str(position)
    with session_scope(_ui.engine()) as session:
        [item] = repo.images(session=session, version_id=version_id, offset=position - 1, limit=1)
        image_id = int(item.id or 0)
        rows = repo.annotations(session=session, image_ids=[image_id])[image_id]
    stored = stored_labels(rows, kind)
    extra = st.session_state.get("label_classes", {}).get(version_id, [])
    drafted = sorted({label.label for labels in drafts.values() for label in labels})  # classes added earlier
    classes = list(dict.fromkeys([*version.classes, *extra, *drafted]))
    revision = st.session_state.get("label_canvas_revision", 0)
    editor, panel = st.columns([3, 1])
    with editor:
        _navigation(total)
        st.caption(f"{item.file_name} · {item.split} · {item.width}×{item.height}"
                   + (" · **edited**" if image_id in drafts else ""))
        new = label_editors.edit(kind, item, drafts.get(image_id, stored), classes)
        _keep(version_id, image_id, new, stored)
    if st.session_state.get("label_canvas_revision", 0) != revision:
        st.rerun()  # a class changed in the table beside the canvas: redraw the canvas from the draft
    with panel:
        _panel(version, name)


main()
