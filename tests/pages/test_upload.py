"""Uploading on the Datasets page, run headless with AppTest: files are staged inside the staging
folder, an import job is queued (the page imports nothing itself), the worker imports it, and
the page then opens the new version."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data.samples import write_sample
from core.tasks import Task
from core.worker import Worker
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


def _upload(at: AppTest, files: list[tuple[str, bytes, str]], *, source: str, dataset: str,
            new: bool = True) -> AppTest:
    at.radio(key="upload_source").set_value(source).run()
    at.file_uploader[0].set_value(files).run()
    if new:
        at.text_input(key="upload_name").input(dataset)
    else:
        at.selectbox(key="upload_dataset").select(dataset)
    return at.button(key="upload_import").click().run()


def _import_jobs(engine) -> list:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return jobs.list_jobs(session=session, kind="import")


def test_folder_upload_is_staged_inside_staging_dir_and_queued(settings: Settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = _sample_files(tmp_path, prefix="shapes/")
    files.append(("../x.jpg", b"not really a picture", "image/jpeg"))
    at = _upload(AppTest.from_file(APP, default_timeout=60).run(), files, source="A folder", dataset="shapes")
    assert not at.exception
    [job] = _import_jobs(engine)
    assert job.status == "queued" and job.spec["name"] == "shapes" and job.spec["validation_size"] == 0.2
    staged = Path(job.spec["path"])
    assert staged.resolve().is_relative_to(settings.staging_dir.resolve())
    # The folder the browser sent is dropped: the annotation file sits at the staged root.
    assert (staged / "annotations.jsonl").is_file() and len(list((staged / "images").iterdir())) == 12
    assert not list(settings.home.rglob("x.jpg")) and not (settings.staging_dir.parent / "x.jpg").exists()
    assert any("../x.jpg" in w.value for w in at.warning)
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
    assert job.spec["path"].endswith("shapes.zip") and "task" not in job.spec  # the worker detects it
    assert Worker(settings, engine).run(once=True) == 1
    at.run()
    assert not at.exception
    assert at.selectbox(key="datasets_version").value == 2 and at.metric[0].value == "12"


def test_a_failed_import_shows_its_error_where_the_upload_was(settings: Settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    at = _upload(AppTest.from_file(APP, default_timeout=60).run(), [("notes.txt", b"hello", "text/plain")],
                 source="Files or a zip", dataset="junk")
    assert Worker(settings, engine).run(once=True) == 1
    at.run()
    assert not at.exception
    assert any("The import of **junk** failed" in e.value for e in at.error)
    assert "import_job" not in at.query_params


def test_a_bad_dataset_name_is_refused_before_anything_is_staged(settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    at = _upload(AppTest.from_file(APP, default_timeout=60).run(), [("a.png", b"x", "image/png")],
                 source="Files or a zip", dataset="no spaces please")
    assert any("is not a valid dataset name" in e.value for e in at.error)
    assert _import_jobs(engine) == [] and not settings.staging_dir.exists()


@pytest.mark.parametrize("name", ["../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "C:\\x.jpg", "..\\..\\x.jpg",
                                  "a\x00.jpg", ""])
def test_names_that_would_leave_the_upload_folder_are_refused(name: str, tmp_path: Path) -> None:
    from pages._upload import safe_name, stage

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
    at.button(key="upload_import").click().run()
    assert not at.exception
    [job] = _import_jobs(engine)
    assert job.spec["path"] == str(folder) and not settings.staging_dir.exists()  # nothing copied
    assert Worker(settings, engine).run(once=True) == 1
    at.run()
    assert at.selectbox(key="datasets_name").value == "local" and folder.is_dir()  # the user's folder stays
