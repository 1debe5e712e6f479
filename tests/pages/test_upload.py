"""Uploading on the Datasets page, run headless with AppTest: files are staged inside the staging
folder and previewed (format, task, classes, first images), an import job is queued on
confirmation (the page imports nothing itself), the worker imports it, and the page then opens
the new version."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.base.tasks import Task
from core.data.samples import write_sample
from core.worker.queue import Worker
from storage.db import session_scope
from storage.repos import jobs
from storage.repos.datasets import versions
from storage.settings import Settings

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _sample_files(tmp_path: Path, prefix: str = "") -> list[tuple[str, bytes, str]]:
    """A classification sample as a browser sends a folder: relative names under one folder."""
    jsonl = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=12, size=48)
    files = sorted(p for p in jsonl.parent.rglob("*") if p.is_file())
    return [(prefix + p.relative_to(jsonl.parent).as_posix(), p.read_bytes(),
             "image/png" if p.suffix == ".png" else "application/json") for p in files]


def _preview(at: AppTest, files: list[tuple[str, bytes, str]], *, source: str, dataset: str,
             new: bool = True) -> AppTest:
    at.radio(key="upload_source").set_value(source).run()
    at.file_uploader[0].set_value(files).run()
    if new:
        at.text_input(key="upload_name").input(dataset)
    else:
        at.selectbox(key="upload_dataset").select(dataset)
    return at.button(key="upload_preview").click().run()


def _upload(at: AppTest, files: list[tuple[str, bytes, str]], *, source: str, dataset: str,
            new: bool = True) -> AppTest:
    """Preview, then confirm the format and task found."""
    at = _preview(at, files, source=source, dataset=dataset, new=new)
    return at.button(key="upload_import").click().run()


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _import_jobs(engine) -> list:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return jobs.list_jobs(session=session, kind="import")


def test_folder_upload_is_staged_inside_staging_dir_and_queued(settings: Settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = _sample_files(tmp_path, prefix="shapes/")
    files.append(("../x.jpg", b"not really a picture", "image/jpeg"))
    at = _preview(AppTest.from_file(APP, default_timeout=60).run(), files, source="A folder", dataset="shapes")
    assert not at.exception
    assert any("../x.jpg" in w.value for w in at.warning)
    # Before anything is committed: the format, task, classes and the first images with their labels.
    assert _import_jobs(engine) == []
    assert _metrics(at) == {"Format": "JSON Lines", "Images": "12", "Classes": "3"}
    assert any("Task found from the labels: **Image classification (multi-class)**" in m.value for m in at.markdown)
    assert any("circle (4), square (4), triangle (4)" in c.value for c in at.caption)
    assert [i.captions for i in at.image][:2] == [["images/shape_0000.png"], ["images/shape_0001.png"]]
    assert len(at.image) == 6
    assert at.selectbox(key="upload_format").value == "jsonl"
    assert at.selectbox(key="upload_task").value == "image_classification"
    at.button(key="upload_import").click().run()
    assert not at.exception
    [job] = _import_jobs(engine)
    assert job.status == "queued" and job.spec["name"] == "shapes" and job.spec["validation_size"] == 0.2
    assert job.spec["format"] == "jsonl" and job.spec["task"] == "image_classification"
    staged = Path(job.spec["path"])
    assert staged.resolve().is_relative_to(settings.staging_dir.resolve())
    # The folder the browser sent is dropped: the annotation file sits at the staged root.
    assert (staged / "annotations.jsonl").is_file() and len(list((staged / "images").iterdir())) == 12
    assert not list(settings.home.rglob("x.jpg")) and not (settings.staging_dir.parent / "x.jpg").exists()
    assert at.query_params["import_job"] == str(job.id)
    assert "Importing **shapes**" in at.get("progress")[-1].proto.text  # the live part, before the worker runs
    with session_scope(engine) as session:
        assert versions(session=session, name="shapes") == []  # nothing imported in the script thread


def test_worker_imports_the_upload_and_the_page_opens_the_new_version(settings: Settings, engine,
                                                                      tmp_path) -> None:  # type: ignore[no-untyped-def]
    at = _upload(AppTest.from_file(APP, default_timeout=60).run(), _sample_files(tmp_path),
                 source="Files or a zip", dataset="shapes")
    assert Worker(settings, engine).run(once=True) == 1
    at.run()
    assert not at.exception
    assert any("imported shapes:1" in s.value for s in at.success)
    assert at.selectbox(key="datasets_name").value == "shapes" and at.selectbox(key="datasets_version").value == 1
    assert at.query_params["dataset"] == "shapes" and at.query_params["version"] == "1"
    assert "import_job" not in at.query_params
    assert any("Import report" in h.value for h in at.subheader)
    assert not any(settings.staging_dir.iterdir())  # the staged copy is gone once imported

    # The same data zipped, into the existing dataset: version 2, opened on completion.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data, _ in _sample_files(tmp_path / "again"):
            zf.writestr(f"shapes/{name}", data)
    at = _upload(at, [("shapes.zip", buffer.getvalue(), "application/zip")], source="Files or a zip",
                 dataset="shapes", new=False)
    [job, _] = _import_jobs(engine)
    # The zip was unpacked for the preview (into the staging folder, one copy: the zip is gone).
    staged = Path(job.spec["path"])
    assert staged.resolve().is_relative_to(settings.staging_dir.resolve()) and (staged / "annotations.jsonl").is_file()
    assert not list(settings.staging_dir.rglob("*.zip"))
    assert Worker(settings, engine).run(once=True) == 1
    at.run()
    assert not at.exception
    assert at.selectbox(key="datasets_version").value == 2 and at.metric[0].value == "12"


def test_data_in_no_known_format_is_refused_at_preview_with_a_fix(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    at = _preview(AppTest.from_file(APP, default_timeout=60).run(), [("notes.txt", b"hello", "text/plain")],
                  source="Files or a zip", dataset="junk")
    assert not at.exception
    assert any("could not be read" in e.value and "no known dataset format" in e.value for e in at.error)
    [table] = [d.value for d in at.dataframe]
    assert list(table.columns) == ["File", "Line", "Problem", "Fix"] and "JSONL file" in table["Fix"][0]
    assert at.button(key="upload_import").disabled
    at.button(key="upload_cancel").click().run()
    assert not any(settings.staging_dir.iterdir()) and _import_jobs(engine) == []  # the staged copy is gone
    assert at.button(key="upload_preview")  # back to the upload form


def test_problems_found_at_preview_are_listed_and_the_task_can_be_changed(settings: Settings, engine,
                                                                          tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = _sample_files(tmp_path)
    files = [(n, data + b'{"label": "circle"}\n' if n.endswith(".jsonl") else data, t) for n, data, t in files]
    at = _preview(AppTest.from_file(APP, default_timeout=60).run(), files, source="Files or a zip", dataset="tags")
    assert not at.exception
    assert any("1 item would be skipped" in w.value for w in at.warning)
    [problems] = [d.value for d in at.dataframe]
    assert list(problems["File"]) == ["annotations.jsonl"] and list(problems["Line"]) == [13]
    assert "image_url" in problems["Problem"][0] and problems["Fix"][0]
    at.selectbox(key="upload_task").select("image_classification_multilabel").run()
    at.button(key="upload_import").click().run()
    assert not at.exception
    [job] = _import_jobs(engine)
    assert job.spec["task"] == "image_classification_multilabel" and job.spec["format"] == "jsonl"


def test_a_failed_import_shows_its_error_where_the_upload_was(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    # Readable annotations (so the preview lets it through) naming an image that is not one.
    files = [("annotations.jsonl", b'{"image_url": "a.png", "label": "cat"}\n', "application/json"),
             ("a.png", b"not a picture", "image/png")]
    at = _preview(AppTest.from_file(APP, default_timeout=60).run(), files, source="Files or a zip", dataset="junk")
    assert any("a.png: the image is missing or unreadable" in w.value for w in at.warning)
    at.button(key="upload_import").click().run()
    assert Worker(settings, engine).run(once=True) == 1
    assert not any(settings.staging_dir.iterdir())  # the worker removed the staged copy of the failed import
    at.run()
    assert not at.exception
    assert any("The import of **junk** failed" in e.value for e in at.error)
    assert "import_job" not in at.query_params


def test_a_bad_dataset_name_is_refused_before_anything_is_staged(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    at = _preview(AppTest.from_file(APP, default_timeout=60).run(), [("a.png", b"x", "image/png")],
                  source="Files or a zip", dataset="no spaces please")
    assert any("is not a valid dataset name" in e.value for e in at.error)
    assert _import_jobs(engine) == [] and not settings.staging_dir.exists()


@pytest.mark.parametrize("name", ["../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "C:\\x.jpg", "..\\..\\x.jpg",
                                  "a\x00.jpg", ""])
def test_names_that_would_leave_the_upload_folder_are_refused(name: str, tmp_path: Path) -> None:
    from ui.upload import safe_name, stage

    class File(io.BytesIO):
        def __init__(self, name: str, data: bytes) -> None:
            super().__init__(data)
            self.name, self.size = name, len(data)

    assert safe_name(name) is None
    staged = stage([File(name, b"x"), File("set/ok.jpg", b"y")], tmp_path / "staging")
    assert staged.refused == [name] and staged.files == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["ok.jpg"]


def test_a_folder_on_this_machine_is_imported_in_place(settings: Settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = write_sample(Task.CLASSIFICATION, tmp_path / "local", count=3, size=32).parent
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.radio(key="upload_source").set_value("A folder on this machine").run()
    at.text_input(key="upload_path").input(str(folder))
    at.text_input(key="upload_name").input("local")
    at.button(key="upload_preview").click().run()
    assert _metrics(at)["Images"] == "3"
    at.button(key="upload_import").click().run()
    assert not at.exception
    [job] = _import_jobs(engine)
    assert job.spec["path"] == str(folder) and not settings.staging_dir.exists()  # nothing copied
    assert Worker(settings, engine).run(once=True) == 1
    at.run()
    assert at.selectbox(key="datasets_name").value == "local" and folder.is_dir()  # the user's folder stays
    assert len(list(folder.parent.rglob("*.png"))) == 3


def test_canceling_a_preview_of_a_folder_on_this_machine_leaves_it_alone(settings: Settings, engine,
                                                                          tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = write_sample(Task.CLASSIFICATION, tmp_path / "mine", count=3, size=32).parent
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.radio(key="upload_source").set_value("A folder on this machine").run()
    at.text_input(key="upload_path").input(str(folder))
    at.text_input(key="upload_name").input("mine")
    at.button(key="upload_preview").click().run()
    at.button(key="upload_cancel").click().run()
    assert not at.exception and _import_jobs(engine) == []
    assert len(list(folder.rglob("*.png"))) == 3 and (folder / "annotations.jsonl").is_file()


def test_the_preview_offers_every_format_the_importer_knows() -> None:
    from core.data.formats import DETECTION_ORDER
    from core.data.formats.base import formats
    from ui.import_preview import FORMAT_NAMES

    assert FORMAT_NAMES == list(DETECTION_ORDER) and set(FORMAT_NAMES) == set(formats.names())
