"""The review queue on the Labelling page: images an endpoint scored with low confidence, least confident first,
with the model's answer as editable pre-labels. A person accepts each (as it is, or corrected: an edit accepts
it) or dismisses it; "Add to the dataset" stores the accepted ones as the next version of the dataset their
model trained on (`core.data.reviewed`), ready for "Retrain" on the Endpoints page. Accepted labels are a
draft (one file per endpoint, storage.drafts) until added, so a reload loses nothing."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from core.base.errors import KestrelError
from core.base.tasks import Task, spec
from core.data.relabel import EditedLabel
from core.data.reviewed import add_reviewed, endpoint_row, origin, queued
from storage.db import session_scope
from storage.drafts import DraftStore
from storage.repos import datasets, reviews
from storage.tables import Dataset, ImageItem, ReviewItem
from ui import common as _ui
from ui import label_editors

Accepted = dict[int, tuple[EditedLabel, ...]]  # review item id -> the labels accepted for it


def _store() -> DraftStore:
    return DraftStore(_ui.settings().drafts_dir, prefix="review")


def _accepted(endpoint_id: int) -> Accepted:
    kept = st.session_state.setdefault("review_accepted", {})
    if endpoint_id not in kept:
        restored: Accepted = {}
        for item_id, labels in _store().load(endpoint_id).items():
            try:
                restored[item_id] = tuple(EditedLabel.from_json(label) for label in labels)
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry: the image waits to be accepted again
        kept[endpoint_id] = restored
    return kept[endpoint_id]


def _persist(endpoint_id: int) -> None:
    _store().save(endpoint_id, {k: [label.as_json() for label in v] for k, v in _accepted(endpoint_id).items()})


def _accept(endpoint_id: int, item_id: int, labels: tuple[EditedLabel, ...], total: int) -> None:
    _accepted(endpoint_id)[item_id] = labels
    _persist(endpoint_id)
    st.session_state["review_position"] = min(int(st.session_state.get("review_position", 1)) + 1, total)


def _dismiss(endpoint: str, endpoint_id: int, item_id: int) -> None:
    with session_scope(_ui.engine()) as session:
        add_reviewed(session=session, endpoint=endpoint, labels={}, dismissed=[item_id])
    _accepted(endpoint_id).pop(item_id, None)
    _persist(endpoint_id)


def _add(endpoint: str, endpoint_id: int) -> None:
    accepted = _accepted(endpoint_id)
    try:
        with session_scope(_ui.engine()) as session:
            saved = add_reviewed(session=session, endpoint=endpoint,
                                 labels={k: [label.annotation() for label in v] for k, v in accepted.items()})
            dataset = session.get(Dataset, saved.dataset_id) if saved else None
            name = dataset.name if dataset else ""
    except KestrelError as exc:
        st.session_state["label_message"] = ("error", f"Not added: {_ui.say(exc)}")
        return
    count = len(accepted)
    accepted.clear()
    _store().remove(endpoint_id)
    st.session_state.pop("review_position", None)
    if saved is not None:
        st.session_state["label_message"] = (
            "success", f"Added {count} reviewed image{'s' if count != 1 else ''} as {name} version {saved.version}. "
                       f"Retrain the endpoint's model on it from the Endpoints page.")


def _shown(row: ReviewItem) -> ImageItem:
    """A queued image in the shape the editors take (never stored: its id is negative, apart from images')."""
    return ImageItem(id=-int(row.id or 0), version_id=0, position=0, sha256=row.sha256,
                     file_name=f"review-{row.id}.png", suffix=".png", width=row.width, height=row.height)


def _same(a: Sequence[EditedLabel], b: Sequence[EditedLabel]) -> bool:
    return sorted(a, key=repr) == sorted(b, key=repr)


def show() -> None:
    with session_scope(_ui.engine()) as session:
        counts = reviews.pending_counts(session=session)
    if not counts:
        st.info("No images wait for review. On the Endpoints page, let an endpoint keep the images it scores with "
                "low confidence; they appear here with the model's answer to correct.")
        st.page_link("pages/endpoints.py", label="Go to Endpoints", icon=":material/api:")
        return
    endpoint = _ui.url_selectbox("Endpoint", sorted(counts), key="review_endpoint", param="endpoint",
                                 format_func=lambda n: f"{n} ({counts.get(n, 0)} waiting)")
    with session_scope(_ui.engine()) as session:
        endpoint_id = int(endpoint_row(session, endpoint).id or 0)
        rows = queued(session, endpoint)
        try:
            source = origin(session=session, model_version_id=rows[0].model_version_id) if rows else None
        except KestrelError as exc:
            st.error(_ui.say(exc))
            return
        version = datasets.get_version(session=session, name=source.dataset) if source else None
        for row in rows:
            session.expunge(row)
    if not rows or source is None or version is None:
        st.info("The queue is empty.")
        return
    accepted = _accepted(endpoint_id)
    total = len(rows)
    if not 1 <= st.session_state.get("review_position", 0) <= total:
        st.session_state["review_position"] = 1
    row = rows[int(st.session_state["review_position"]) - 1]
    item_id = int(row.id or 0)
    suggested = tuple(EditedLabel.from_json(label) for label in row.prelabels)
    classes = list(dict.fromkeys([*version.classes, *(label.label for label in suggested)]))
    editor, panel = st.columns([3, 1])
    with editor:
        st.number_input(f"Image (of {total}, least confident first)", min_value=1, max_value=total, step=1,
                        key="review_position")
        st.caption(f"confidence {row.confidence:.3f} · deployment {row.deployment} · {row.width}×{row.height} · "
                   f"scored {row.created_at:%Y-%m-%d %H:%M}" + (" · **accepted**" if item_id in accepted else ""))
        labels = label_editors.edit(spec(Task(version.task)).label_kind, _shown(row),
                                    accepted.get(item_id, suggested), classes)
        if not _same(labels, accepted.get(item_id, suggested)):  # an edit accepts the image as corrected
            accepted[item_id] = tuple(labels)
            _persist(endpoint_id)
    with panel:
        st.button("Accept labels", key="review_accept", type="secondary", width="stretch",
                  on_click=_accept, args=(endpoint_id, item_id, tuple(labels), total), icon=":material/check:",
                  help="Keep these labels for this image (the model's, or as you corrected them); on to the next.")
        st.button("Dismiss image", key="review_dismiss", width="stretch", on_click=_dismiss,
                  args=(endpoint, endpoint_id, item_id), help="Take it out of the queue without adding it.")
        st.metric("Accepted, not added", len(accepted))
        st.button(f"Add to {source.dataset}", key="review_add",
                  type="primary", disabled=not accepted, width="stretch", on_click=_add, args=(endpoint, endpoint_id),
                  icon=":material/add_photo_alternate:",
                  help=f"Stores the accepted images as the next version of {source.dataset}.")
