"""The import preview: format, task, classes, counts, first images and problems read from the
annotations alone, before anything is stored; zips unpacked once inside the staging folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from factories import box, write_image, write_jsonl

from core.base.errors import ConfigError, InputError
from core.base.tasks import LabelKind, Task
from core.data.preview import WHOLE, preview_dataset, unpack
from core.data.samples import write_sample
from storage.settings import Settings


def test_a_sample_is_previewed_with_its_format_task_classes_and_first_images(tmp_path: Path) -> None:
    jsonl = write_sample(Task.SEGMENTATION, tmp_path / "shapes", count=8, size=32)
    found = preview_dataset(jsonl.parent, samples=3)
    assert (found.format, found.task, found.task_problem) == ("jsonl", Task.SEGMENTATION, "")
    assert found.image_count == 8 and found.is_complete and found.problem_count == 0
    assert found.classes == sorted(found.images_per_class) and set(found.classes) <= {"circle", "square", "triangle"}
    assert [r.name for r in found.samples] == ["images/shape_0000.png", "images/shape_0001.png",
                                               "images/shape_0002.png"]
    assert found.samples[0].kind == LabelKind.POLYGONS and found.samples[0].instances[0].polygons


def test_problems_are_listed_with_file_line_and_fix_and_the_rest_is_counted(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png", seed=1)
    write_jsonl(tmp_path / "train.jsonl", [
        {"image_url": "a.png", "label": [box("cat", 0.1, 0.1, 0.5, 0.5)]},
        {"label": [box("dog", 0.1, 0.1, 0.5, 0.5)]},
        {"image_url": "b.png", "label": [box("dog", 0.2, 0.2, 0.6, 0.6)]},
    ])
    found = preview_dataset(tmp_path)
    assert (found.format, found.task, found.image_count) == ("jsonl", Task.DETECTION, 2)
    assert found.images_per_class == {"cat": 1, "dog": 1}
    [problem] = found.problems
    assert (problem.file, problem.line, found.problem_count) == ("train.jsonl", 2, 1)
    assert "image_url" in problem.error and problem.fix


def test_labels_of_mixed_kinds_leave_the_task_to_the_user(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png", seed=1)
    write_jsonl(tmp_path / "train.jsonl", [{"image_url": "a.png", "label": "cat"},
                                           {"image_url": "b.png", "label": [box("dog", 0.1, 0.1, 0.5, 0.5)]}])
    found = preview_dataset(tmp_path)
    assert found.task is None and "cannot tell the task" in found.task_problem and found.image_count == 2


def test_reading_stops_after_max_items_and_says_so(tmp_path: Path) -> None:
    jsonl = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=5, size=16)
    found = preview_dataset(jsonl.parent, max_items=3)
    assert found.image_count == 3 and not found.is_complete


def test_unknown_data_and_broken_annotation_files_are_refused_with_a_fix(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as refused:
        preview_dataset(tmp_path)
    assert refused.value.file == WHOLE and "no known dataset format" in refused.value.problem
    (tmp_path / "coco.json").write_text('{"images": [], "annotations": [')
    with pytest.raises(InputError) as broken:
        preview_dataset(tmp_path, fmt="coco")
    assert broken.value.file == "coco.json" and broken.value.line == 1 and broken.value.fix
    with pytest.raises(ConfigError, match="unknown format 'cocoa'"):
        preview_dataset(tmp_path, fmt="cocoa")


def _zip(path: Path, folder: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in folder.rglob("*"):
            zf.write(file, f"wrapped/{file.relative_to(folder).as_posix()}")
    return path


def test_a_staged_zip_is_unpacked_beside_itself_and_deleted(settings: Settings, tmp_path: Path) -> None:
    data = write_sample(Task.DETECTION, tmp_path / "shapes", count=3, size=16).parent
    staged = settings.staging_dir / "upload"
    staged.mkdir(parents=True)
    root = unpack(_zip(staged / "shapes.zip", data), settings)
    assert root == staged / "unpacked" / "wrapped" and not (staged / "shapes.zip").exists()
    assert preview_dataset(root).image_count == 3


def test_a_zip_on_this_machine_is_unpacked_into_the_staging_folder_and_kept(settings: Settings,
                                                                            tmp_path: Path) -> None:
    data = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=2, size=16).parent
    archive = _zip(tmp_path / "mine.zip", data)
    root = unpack(archive, settings)
    assert root.resolve().is_relative_to(settings.staging_dir.resolve()) and archive.is_file()
    assert unpack(data, settings) == data  # a folder is read in place
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.txt", json.dumps({}))
    before = set(settings.staging_dir.iterdir())
    with pytest.raises(InputError, match="outside the upload folder"):
        unpack(bad, settings)
    assert set(settings.staging_dir.iterdir()) == before  # a refused zip leaves nothing behind


def test_the_preview_counts_how_azureml_urls_were_found_and_names_those_not_found(tmp_path):
    store = "azureml://subscriptions/s/resourcegroups/g/workspaces/w/datastores/{}/paths/LocalUpload/h/{}"
    lines = []
    for i in range(3):  # downloaded beside the JSONL, without the LocalUpload/<hash>/ prefix
        write_image(tmp_path / "upload" / "train" / f"{i}.png", seed=i)
        lines.append({"image_url": store.format("workspaceblobstore", f"train/{i}.png"), "label": "a"})
    for i in range(2):  # in a folder the person mapped to the datastore "other"
        write_image(tmp_path / "mapped" / "LocalUpload" / "h" / f"{i}.png", seed=10 + i)
        lines.append({"image_url": store.format("other", f"{i}.png"), "label": "b"})
    lines.append({"image_url": store.format("workspaceblobstore", "train/missing.png"), "label": "a"})
    write_jsonl(tmp_path / "upload" / "train.jsonl", lines)
    preview = preview_dataset(tmp_path / "upload", datastores={"other": tmp_path / "mapped"})
    assert preview.image_count == 5
    assert preview.resolved == {"path tail": 3, "datastore other": 2}
    assert [(p.line, p.error.split(" of ")[0]) for p in preview.problems] == [
        (6, "no file in the imported folder ends with 'missing.png'")]
    assert "kestrel datastore create" in preview.problems[0].fix
