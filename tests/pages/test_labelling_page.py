"""The Labelling page, run headless with AppTest: tags clicked and boxes drawn become a new dataset
version; the version they were made on stays as it was.

AppTest cannot drag on the canvas (a browser component), so the detection test sets the canvas's
value in Session State, exactly the drawing the component sends back after a user's edit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_datasets_page import add_dataset

from core.base.errors import InputError
from core.base.tasks import Task
from core.data.relabel import canvas_colour, relabel_version
from storage.db import session_scope
from storage.repos import datasets as repo
from storage.repos.datasets import NewAnnotation
from storage.settings import Settings

pytestmark = pytest.mark.both_databases  # the studio's pages work on PostgreSQL too

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _open(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/labelling.py")
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _labels(engine, name: str, number: int) -> list[list[tuple]]:  # type: ignore[no-untyped-def]
    """Each image's labels in version ``number`` of ``name``, in image order."""
    with session_scope(engine) as session:
        version = repo.get_version(session=session, name=name, version=number)
        items = repo.images(session=session, version_id=version.id)
        rows = repo.annotations(session=session, image_ids=[i.id for i in items])
        return [[(a.label, a.x0, a.y0, a.x1, a.y1) for a in rows[i.id]] for i in items]


def _image_ids(engine, name: str, number: int) -> list[int]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        version = repo.get_version(session=session, name=name, version=number)
        return [i.id for i in repo.images(session=session, version_id=version.id)]


def test_no_dataset_points_to_the_datasets_page(settings: Settings) -> None:
    at = _open()
    assert not at.exception
    assert any("No datasets yet" in i.value for i in at.info)


def test_retagging_a_classification_image_saves_version_two(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    add_dataset(settings, "tags", Task.CLASSIFICATION, count=6)
    before = _labels(engine, "tags", 1)
    at = _open(dataset="tags", image="2")
    assert not at.exception
    pills = at.button_group(key=f"label_tags_{_image_ids(engine, 'tags', 1)[1]}")
    assert pills.value == before[1][0][0] == "square"
    pills.set_value("triangle").run()
    assert at.metric[0].value == "1"  # one image edited, not saved yet
    at.button(key="label_save").click().run()
    assert not at.exception
    assert any("version 2" in s.value and "version 1 is unchanged" in s.value for s in at.success)
    assert at.selectbox(key="label_version").value == 2 and at.query_params["version"] == "2"
    assert _labels(engine, "tags", 1) == before
    after = _labels(engine, "tags", 2)
    assert after[1] == [("triangle", None, None, None, None)] and after[0] == before[0] and after[2:] == before[2:]
    with session_scope(engine) as session:
        old, new = repo.versions(session=session, name="tags")
        assert new.stats["images_per_class"]["triangle"] == old.stats["images_per_class"].get("triangle", 0) + 1
        old_items = repo.images(session=session, version_id=old.id)
        new_items = repo.images(session=session, version_id=new.id)
        assert [i.sha256 for i in old_items] == [i.sha256 for i in new_items]  # the same blobs, no copies
        assert [i.split for i in old_items] == [i.split for i in new_items]


def test_drafts_survive_moving_between_images_and_can_be_discarded(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    add_dataset(settings, "tags", Task.MULTILABEL, count=4)
    first = _image_ids(engine, "tags", 1)[0]
    at = _open(dataset="tags")
    at.button_group(key=f"label_tags_{first}").set_value(["circle", "square", "triangle"]).run()
    at.button(key="label_next").click().run()
    assert at.query_params["image"] == "2" and at.metric[0].value == "1"
    at.button(key="label_previous").click().run()
    assert at.button_group(key=f"label_tags_{first}").value == ["circle", "square", "triangle"]
    at.button(key="label_discard").click().run()
    assert not at.exception and at.metric[0].value == "0"
    with session_scope(engine) as session:
        assert len(repo.versions(session=session, name="tags")) == 1


def test_edited_boxes_are_saved_as_a_new_version(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    add_dataset(settings, "boxes", Task.DETECTION, count=5)
    before = _labels(engine, "boxes", 1)
    first = _image_ids(engine, "boxes", 1)[0]
    at = _open(dataset="boxes")
    assert not at.exception
    key = f"label_canvas_{first}_0"
    drawing = copy.deepcopy(at.session_state[key])
    objects = drawing["drawing"]["raw"]["objects"]
    assert len(objects) == len(before[0]) and objects[0]["label"] == before[0][0][0]
    width = height = 560  # the canvas of a 96×96 image: the page's 760×560 drawing area, square
    # What the canvas sends after a user moved the first box, deleted the others and drew a new one.
    moved = {**objects[0], "left": 0.1 * width, "top": 0.2 * height, "width": 0.3 * width, "height": 0.3 * height}
    drawn = {"type": "LabeledRect", "label": "circle", "left": 0.5 * width, "top": 0.5 * height,
             "width": 0.25 * width, "height": 0.2 * height, "scaleX": 2, "scaleY": 1, "originX": "left",
             "originY": "top"}
    drawing["drawing"]["raw"]["objects"] = [moved, drawn]
    at.session_state[key] = drawing
    at.run()
    assert not at.exception and at.metric[0].value == "1"
    at.button(key="label_save").click().run()
    assert not at.exception
    assert _labels(engine, "boxes", 1) == before
    after = _labels(engine, "boxes", 2)
    assert after[0] == [(before[0][0][0], 0.1, 0.2, 0.4, 0.5), ("circle", 0.5, 0.5, 1.0, 0.7)]
    assert after[1:] == before[1:]


def test_relabel_refuses_labels_the_task_cannot_hold(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    add_dataset(settings, "tags", Task.CLASSIFICATION, count=3)
    add_dataset(settings, "boxes", Task.DETECTION, count=3)
    with session_scope(engine) as session:
        tags = repo.get_version(session=session, name="tags")
        boxes = repo.get_version(session=session, name="boxes")
        tag_image = repo.images(session=session, version_id=tags.id)[0].id
        box_image = repo.images(session=session, version_id=boxes.id)[0].id
    with pytest.raises(InputError, match="exactly one"), session_scope(engine) as session:
        relabel_version(session=session, version_id=tags.id,
                        edits={tag_image: [NewAnnotation("circle"), NewAnnotation("square")]})
    with pytest.raises(InputError, match="no area"), session_scope(engine) as session:
        relabel_version(session=session, version_id=boxes.id,
                        edits={box_image: [NewAnnotation("circle", (0.5, 0.5, 0.5, 0.9))]})
    add_dataset(settings, "outlines", Task.SEGMENTATION, count=3)
    with session_scope(engine) as session:
        outlines = repo.get_version(session=session, name="outlines")
        outline_image = repo.images(session=session, version_id=outlines.id)[0].id
    with pytest.raises(InputError, match="no polygon"), session_scope(engine) as session:
        relabel_version(session=session, version_id=outlines.id,
                        edits={outline_image: [NewAnnotation("circle", (0.1, 0.1, 0.5, 0.5))]})
    with session_scope(engine) as session:
        assert [len(repo.versions(session=session, name=n)) for n in ("tags", "boxes", "outlines")] == [1, 1, 1]


def _polygons(engine, name: str, number: int) -> list[list[tuple]]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        version = repo.get_version(session=session, name=name, version=number)
        items = repo.images(session=session, version_id=version.id)
        rows = repo.annotations(session=session, image_ids=[i.id for i in items])
        return [[(a.label, a.polygon) for a in rows[i.id]] for i in items]


def test_polygons_moved_deleted_and_drawn_are_saved_as_a_new_version(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    add_dataset(settings, "outlines", Task.SEGMENTATION, count=3)
    before = _polygons(engine, "outlines", 1)
    first = _image_ids(engine, "outlines", 1)[0]
    at = _open(dataset="outlines")
    assert not at.exception and at.metric[0].value == "0"  # looking is not editing
    key = f"label_canvas_{first}_0"
    drawing = copy.deepcopy(at.session_state[key])
    objects = drawing["drawing"]["raw"]["objects"]
    assert [o["type"] for o in objects] == ["Polygon"] * len(before[0])
    side = 560  # the canvas of a 96×96 image
    # What the canvas sends after a user dragged the first polygon 0.1 to the right, deleted the others
    # and drew a triangle with "triangle" chosen for new polygons (the tool strokes it in that class's colour).
    moved = {**objects[0], "left": objects[0]["left"] + 0.1 * side}
    drawn = {"type": "Polygon", "points": [{"x": 0.1 * side, "y": 0.6 * side}, {"x": 0.3 * side, "y": 0.6 * side},
                                           {"x": 0.2 * side, "y": 0.9 * side}],
             "left": 0.1 * side - 1, "top": 0.6 * side - 1, "strokeWidth": 2,
             "stroke": canvas_colour("triangle", ["circle", "square", "triangle"])}
    drawing["drawing"]["raw"]["objects"] = [moved, drawn]
    at.session_state[key] = drawing
    at.run()
    assert not at.exception and at.metric[0].value == "1"
    at.button(key="label_save").click().run()
    assert not at.exception
    assert _polygons(engine, "outlines", 1) == before
    after = _polygons(engine, "outlines", 2)
    label, [polygon] = before[0][0]
    shifted = [round(v + 0.1, 4) if k % 2 == 0 else round(v, 4) for k, v in enumerate(polygon)]
    assert [(a[0], [round(v, 4) for v in a[1][0]]) for a in after[0]] == [
        (label, shifted), ("triangle", [0.1, 0.6, 0.3, 0.6, 0.2, 0.9])]
    assert after[1:] == before[1:]
    [copied, *_] = _image_ids(engine, "outlines", 2)
    with session_scope(engine) as session:
        version = repo.get_version(session=session, name="outlines", version=2)
        rows = repo.annotations(session=session, image_ids=[copied])[copied]
    assert (rows[1].x0, rows[1].y0, rows[1].x1, rows[1].y1) == pytest.approx((0.1, 0.6, 0.3, 0.9))
    assert version.stats["instances_per_class"]["triangle"] >= 1


def test_a_draft_is_kept_on_disk_restored_on_return_and_gone_once_discarded_or_saved(settings: Settings,
                                                                                     engine) -> None:  # type: ignore[no-untyped-def]
    add_dataset(settings, "tags", Task.CLASSIFICATION, count=3)
    first = _image_ids(engine, "tags", 1)[0]
    drafts = settings.drafts_dir
    at = _open(dataset="tags")
    at.button_group(key=f"label_tags_{first}").set_value("triangle").run()
    assert [p.name for p in drafts.iterdir()] == [f"version-{_version_id(engine, 'tags', 1)}.json"]
    at = _open(dataset="tags")  # a reload, or coming back another day: a new session
    assert not at.exception
    assert any("Restored 1 unsaved edit " in i.value for i in at.info)
    assert at.metric[0].value == "1" and at.button_group(key=f"label_tags_{first}").value == "triangle"
    at.button(key="label_discard_draft").click().run()
    assert not at.exception and at.metric[0].value == "0" and not any(drafts.iterdir())
    assert not any("Restored" in i.value for i in at.info)
    at.button_group(key=f"label_tags_{first}").set_value("triangle").run()
    at = _open(dataset="tags")
    at.button(key="label_save").click().run()
    assert not at.exception and not any(drafts.iterdir())
    assert _labels(engine, "tags", 2)[0] == [("triangle", None, None, None, None)]
    at = _open(dataset="tags", version="1")
    assert not any("Restored" in i.value for i in at.info) and at.metric[0].value == "0"


def _version_id(engine, name: str, number: int) -> int:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return repo.get_version(session=session, name=name, version=number).id


def _queue(settings: Settings, engine, name: str, task: Task, answers: list[dict]) -> list[int]:  # type: ignore[no-untyped-def]
    """Endpoint ``ep`` serving a model trained (as its trial's manifest says) on version 1 of ``name``, with one
    queued image per answer (a low-confidence answer of that model); the queued items' ids."""
    import io

    from PIL import Image

    from core.serving.manage import add_deployment, create_endpoint
    from core.serving.review import confidence, prelabels
    from storage.artifacts import BlobStore
    from storage.repos import models, reviews
    from storage.tables import Trial

    with session_scope(engine) as session:
        trial = Trial(status="completed", model_name="test_resnet",
                      metrics={"manifest": {"dataset": {"name": name, "version": 1, "task": task.value}}})
        session.add(trial)
        session.flush()
        models.add_version(session=session, name="m", task=task.value, trial_id=trial.id, metrics={}, settings={})
        endpoint = create_endpoint(session=session, name="ep", settings=settings)
        add_deployment(session=session, endpoint="ep", name="blue", model="m:1")
        for n, answer in enumerate(answers):
            png = io.BytesIO()
            Image.new("RGB", (40, 30), (20 * n, 90, 160)).save(png, format="PNG")
            sha256, _ = BlobStore(settings.blobs_dir).put(png.getvalue())
            reviews.add(session=session, endpoint_id=endpoint.id, deployment="blue", model_version_id=1,
                        sha256=sha256, size=(40, 30), confidence=confidence(answer, task),
                        prelabels=prelabels(answer, task))
        return [row.id for row in reviews.pending(session=session, endpoint_id=endpoint.id)]


def test_the_review_queue_shows_the_models_answers_to_correct_and_adds_them_as_a_version(
        settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    add_dataset(settings, "tags", Task.CLASSIFICATION, count=6)
    labels = ["circle", "square", "triangle"]
    ids = _queue(settings, engine, "tags", Task.CLASSIFICATION,
                 [{"probs": [0.5, 0.3, 0.2], "labels": labels}, {"probs": [0.2, 0.4, 0.4], "labels": labels}])
    at = _open(mode="review", endpoint="ep")
    assert not at.exception
    assert at.session_state["label_mode"] == "Review queue (2)"
    first, second = ids  # least confident first: 0.4, then 0.5
    assert "confidence 0.400 · deployment blue" in at.caption[0].value
    pills = at.button_group(key=f"label_tags_{-first}")
    assert pills.value in {"square", "triangle"}  # the model's answer, as a pre-label
    pills.set_value("circle").run()  # corrected: accepted as corrected
    assert at.metric[0].value == "1"
    assert at.number_input(key="review_position").value == 1
    at.number_input(key="review_position").set_value(2).run()
    assert at.button_group(key=f"label_tags_{-second}").value == "circle"
    at.button(key="review_dismiss").click().run()
    at.button(key="review_add").click().run()
    assert not at.exception
    assert any("Added 1 reviewed image as tags version 2" in s.value for s in at.success)
    added = _labels(engine, "tags", 2)
    assert len(added) == 7 and added[-1] == [("circle", None, None, None, None)]
    assert _labels(engine, "tags", 1) == added[:-1]
    at.run()
    assert at.session_state["label_mode"] in ("Dataset images", "Review queue (0)")
