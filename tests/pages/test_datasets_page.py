"""The Datasets page, run headless with AppTest against a real database in a fresh home
(conftest's ``settings`` fixture: KESTREL_HOME set, database migrated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from core.base.tasks import Task
from core.data.formats.jsonl import read_jsonl
from core.data.records import ImageRecord
from core.data.samples import CLASSES, write_sample
from storage.artifacts import BlobStore
from storage.db import make_engine, session_scope
from storage.repos.datasets import NewAnnotation, NewImage, NewVersion, create_version, get_version
from storage.settings import Settings

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _new_image(record: ImageRecord, blobs: BlobStore, split: str) -> NewImage:
    sha256, _ = blobs.put(record.image.read_bytes())
    annotations = [NewAnnotation(i.label, (i.x0, i.y0, i.x1, i.y1), [list(p) for p in i.polygons] or None)
                   for i in record.instances]
    annotations += [NewAnnotation(tag) for tag in record.tags]
    return NewImage(sha256, record.name, ".png", 96, 96, split, annotations)


def add_dataset(settings: Settings, name: str, task: Task, *, count: int = 15, uploaded: bool = False,
                stats: dict[str, Any] | None = None) -> None:
    """Store a sample of ``task`` as dataset ``name``, with one skipped item reported; ``uploaded``: read
    from the staging folder, as the studio's uploads are; ``stats``: statistics to store instead of the
    sample's."""
    base = settings.staging_dir / "tmp-upload" if uploaded else settings.home / "src"
    jsonl = write_sample(task, base / name, count=count)
    records = [r for r in read_jsonl(jsonl, jsonl.parent) if isinstance(r, ImageRecord)]
    blobs = BlobStore(settings.blobs_dir)
    images = [_new_image(r, blobs, "validation" if k % 5 == 0 else "train") for k, r in enumerate(records)]
    per_class = {c: sum(any(a.label == c for a in i.annotations) for i in images) for c in CLASSES}
    stats = {"images_per_class": per_class, "instances_per_class": per_class,
             "box_sizes": {"width": [0.3, 0.4], "height": [0.3, 0.35], "label": ["circle", "square"]},
             "image_sizes": {"96x96": count},
             "splits": {"train": count - count // 5, "validation": count // 5}} | (stats or {})
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        create_version(session=session, new=NewVersion(
            name=name, task=task.value, format="jsonl", source=str(jsonl), classes=list(CLASSES),
            stats=stats, warnings=["class 'triangle' has fewer than 10 images"], validation_fraction=0.2,
            images=images,
            problems=[{"file": "annotations.jsonl", "line": 7, "error": "no image_url",
                       "fix": 'add "image_url": "<path of the image>"'}]))
    engine.dispose()


def run_app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _frames(at: AppTest) -> list:
    return [d.value for d in at.dataframe]


def test_empty_home_says_how_to_import_a_dataset(settings: Settings) -> None:
    at = run_app()
    assert not at.exception
    assert any("kestrel data import PATH --name NAME" in i.value for i in at.info)


def test_page_lists_datasets_and_shows_the_import_report(settings: Settings) -> None:
    add_dataset(settings, "shapes-boxes", Task.DETECTION)
    at = run_app()
    assert not at.exception
    table = _frames(at)[0]
    assert list(table["Name"]) == ["shapes-boxes"] and list(table["Images"]) == [15]
    problems = next(f for f in _frames(at) if "Fix" in f.columns)
    assert list(problems["Problem"]) == ["no image_url"] and list(problems["Line"]) == [7]
    assert any("fewer than 10 images" in w.value for w in at.warning)
    assert len(at.image) == 12  # one full page of the grid
    assert at.query_params["dataset"] == "shapes-boxes"
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    boxes = next(c for c in charts if c["layout"]["title"]["text"].startswith("Box sizes"))
    assert [trace["name"] for trace in boxes["data"]] == ["circle", "square"]  # one colour per class
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        counts = get_version(session=session, name="shapes-boxes").stats["images_per_class"]
    engine.dispose()
    ratio = max(counts.values()) / min(counts.values())
    assert f"Images per class (largest to smallest {ratio:.1f} : 1)" in [c["layout"]["title"]["text"] for c in charts]


def test_query_params_select_the_dataset_and_version(settings: Settings) -> None:
    add_dataset(settings, "alpha", Task.CLASSIFICATION, count=6)
    add_dataset(settings, "beta", Task.SEGMENTATION, count=6)
    add_dataset(settings, "beta", Task.SEGMENTATION, count=9)
    at = run_app(dataset="beta", version="1")
    assert not at.exception
    assert at.selectbox(key="datasets_name").value == "beta"
    assert at.selectbox(key="datasets_version").value == 1
    assert at.metric[0].value == "6"
    at.selectbox(key="datasets_name").select("alpha").run()
    assert not at.exception
    assert at.query_params["dataset"] == "alpha" and at.query_params["version"] == "1"
    at.selectbox(key="datasets_name").select("beta").run()
    assert at.selectbox(key="datasets_version").value == 2  # a newly chosen dataset opens at its latest
    assert at.query_params["version"] == "2"


def test_grid_filters_by_class_and_split_and_opens_an_image(settings: Settings) -> None:
    add_dataset(settings, "tags", Task.CLASSIFICATION, count=15)
    at = run_app()
    at.selectbox(key="datasets_grid_class").select("circle").run()
    assert not at.exception
    assert len(at.image) == 5
    at.selectbox(key="datasets_grid_split").select("validation").run()
    assert not at.exception
    # Images 0, 5 and 10 are validation; of those only image 0 is a circle (index % 3 == 0).
    assert [i.captions for i in at.image] == [["images/shape_0000.png · validation"]]
    view = next(b for b in at.button if b.key and b.key.startswith("datasets_grid_view_"))
    view.click().run()
    assert not at.exception
    assert len(at.image) == 2  # the large picture, in its dialog, beside the thumbnail


def test_second_page_of_the_grid_shows_the_rest(settings: Settings) -> None:
    add_dataset(settings, "many", Task.MULTILABEL, count=15)
    at = run_app()
    at.number_input(key="datasets_grid_page").set_value(2).run()
    assert not at.exception
    assert len(at.image) == 3


def test_sidebar_says_whether_the_worker_is_alive(settings, engine):
    from streamlit.testing.v1 import AppTest

    from storage.db import session_scope
    from storage.repos import workers

    at = AppTest.from_file(APP, default_timeout=60).run()
    assert any("Worker: down" in c.value for c in at.sidebar.caption)
    with session_scope(engine) as session:
        workers.register(session=session, worker_id="w1", pid=1, device="GPU: NVIDIA H100 80GB HBM3")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert any(c.value == "Worker: idle" for c in at.sidebar.caption)
    assert any(c.value == "Device: GPU: NVIDIA H100 80GB HBM3" for c in at.sidebar.caption)


def test_a_new_version_is_previewed_in_the_open_upload_panel_above_the_datasets(settings: Settings,
                                                                                tmp_path: Path) -> None:
    add_dataset(settings, "shapes", Task.DETECTION, count=6)
    jsonl = write_sample(Task.DETECTION, tmp_path / "more", count=4, size=32)
    files = [(p.relative_to(jsonl.parent).as_posix(), p.read_bytes(), "application/octet-stream")
             for p in sorted(jsonl.parent.rglob("*")) if p.is_file()]
    at = run_app()
    assert not at.expander[0].proto.expanded  # datasets exist: the upload panel starts closed
    at.file_uploader[0].set_value(files).run()
    at.selectbox(key="upload_dataset").select("shapes")
    at.button(key="upload_preview").click().run()
    assert not at.exception
    assert at.expander[0].proto.expanded  # the preview is in view
    # The preview's counts and thumbnails come first, then the version shown below.
    assert [m.value for m in at.metric if m.label == "Images"] == ["4", "6"]
    assert [i.captions for i in at.image][:4] == [[f"images/shape_{k:04d}.png"] for k in range(4)]
    assert any("Check before importing `shapes`" in m.value for m in at.markdown)
    assert list(_frames(at)[0]["Name"]) == ["shapes"]  # the page goes on below
    at.button(key="upload_cancel").click().run()
    assert not at.exception and not at.expander[0].proto.expanded and not any(settings.staging_dir.iterdir())


def test_a_datastore_is_mapped_to_a_folder_and_listed(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    at = run_app()
    at.text_input(key="datastore_name").input("workspaceblobstore")
    at.text_input(key="datastore_folder").input(str(tmp_path / "missing"))
    at.button[[b.label for b in at.button].index("Map")].click().run()
    assert any("is not a folder on this machine" in e.value for e in at.error)  # the CLI's own check
    at.text_input(key="datastore_name").input("workspaceblobstore")  # the form starts empty again
    at.text_input(key="datastore_folder").input(str(tmp_path))
    at.button[[b.label for b in at.button].index("Map")].click().run()
    assert not at.exception and any(f"workspaceblobstore → {tmp_path}" in s.value for s in at.success)
    at.run()
    mapped = next(frame for frame in _frames(at) if "datastore" in frame.columns)
    assert mapped.to_dict("list") == {"datastore": ["workspaceblobstore"], "folder": [str(tmp_path)]}


def test_sidebar_shows_each_lane_and_links_the_job_it_runs(settings, engine):
    from streamlit.testing.v1 import AppTest

    from storage.db import session_scope
    from storage.repos import workers

    with session_scope(engine) as session:
        workers.register(session=session, worker_id="w1", pid=1, device="CPU, 2 cores", lane="training")
        workers.heartbeat(session=session, worker_id="w1", current_job_id=7)
    at = AppTest.from_file(APP, default_timeout=60).run()
    captions = [c.value for c in at.sidebar.caption]
    assert "Training: running [job 7](jobs?job=7)" in captions
    assert any(c.startswith(":red[Imports & scoring: down]") and "--lane quick" in c for c in captions)
    with session_scope(engine) as session:
        workers.register(session=session, worker_id="w2", pid=1, device="CPU, 2 cores", lane="quick")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "Imports & scoring: idle" in [c.value for c in at.sidebar.caption]


def test_an_uploaded_version_names_the_upload_not_the_staging_copy(settings: Settings) -> None:
    add_dataset(settings, "fridge", Task.CLASSIFICATION, uploaded=True)
    at = run_app(dataset="fridge")
    assert not at.exception
    said = " ".join(c.value for c in at.caption)
    assert "from an upload (`fridge/annotations.jsonl`)" in said and "staging" not in said


def test_a_link_to_another_dataset_opens_that_dataset_not_the_one_kept_in_the_session(settings: Settings) -> None:
    add_dataset(settings, "first", Task.CLASSIFICATION, count=6)
    add_dataset(settings, "second", Task.CLASSIFICATION, count=6)
    at = run_app(dataset="first")
    assert at.selectbox(key="datasets_name").value == "first"
    at.query_params["dataset"] = "second"  # what a page link to ?dataset=second does within the session
    at.run()
    assert not at.exception
    assert at.selectbox(key="datasets_name").value == "second"
    at.selectbox(key="datasets_name").select("first").run()  # the person's own choice still sticks
    at.run()
    assert at.selectbox(key="datasets_name").value == "first" and at.query_params["dataset"] == "first"


def test_object_sizes_are_drawn_as_a_detector_sees_them_and_small_ones_get_advice(settings: Settings) -> None:
    add_dataset(settings, "large-objects", Task.DETECTION, stats={"image_sizes": {"640x480": 15}})
    add_dataset(settings, "small-objects", Task.DETECTION, stats={
        "image_sizes": {"4000x3000": 15}, "box_sizes": {"width": [0.01, 0.012, 0.3], "height": [0.01, 0.01, 0.3],
                                                        "label": ["circle", "circle", "square"]}})
    at = run_app(dataset="large-objects")
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: c for c in at.get("plotly_chart")}
    assert "Object sizes as a detector sees them (0% under 32 px)" in charts
    assert not [w for w in at.warning if "smaller than 32 px" in w.value]
    at = run_app(dataset="small-objects")
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: c for c in at.get("plotly_chart")}
    assert "Object sizes as a detector sees them (67% under 32 px)" in charts
    (advice,) = [w.value for w in at.warning if "smaller than 32 px" in w.value]
    assert advice.startswith("67% of the objects are smaller than 32 px at the 640 px a YOLO model would train at")
    # 35-px objects in 12-megapixel photos: lifting them takes 3400-px training images, so tiles.
    assert "Tiles of a 4x4 grid" in advice and "The New job wizard sets this in one click" in advice
