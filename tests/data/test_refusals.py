"""Bad input is refused with a message naming the file, line and fix; the rest imports, and a
failed import leaves storage exactly as it was."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from factories import box, classification_set, write_image, write_jsonl
from PIL import Image, UnidentifiedImageError
from sqlmodel import select

from storage.db import session_scope
from storage.tables import Annotation, Dataset, DatasetVersion, ImageItem, ImportProblem


def _detection_lines(root: Path, n: int) -> list[dict]:
    return [{"image_url": str(write_image(root / f"{i}.png", seed=i)),
             "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]} for i in range(n)]


def _skipped(cli, root: Path, lines: list, **kw) -> list[dict]:
    write_jsonl(root / "train.jsonl", lines)
    report = cli.json("data", "import", root / "train.jsonl", "--name", kw.get("name", "d"))
    return report["skipped"]


def test_bad_boxes_are_reported_with_line_and_fix_and_tiny_overshoot_is_clipped(cli, tmp_path):
    lines = _detection_lines(tmp_path, 5)
    lines[1]["label"] = [box("cat", 0.1, 0.1, 1.37, 0.5)]
    lines[2]["label"] = [box("cat", 0.4, 0.1, 0.4, 0.5)]
    lines[3]["label"] = [box("cat", -0.0001, 0.1, 1.00001, 0.5)]
    skipped = _skipped(cli, tmp_path, lines)
    assert [(p["line"], p["file"]) for p in skipped] == [(2, "train.jsonl"), (3, "train.jsonl")]
    assert "bottomX 1.37 is outside 0..1" in skipped[0]["error"]
    assert "normalised" in skipped[0]["fix"]
    assert "zero area" in skipped[1]["error"]


def test_malformed_lines_missing_labels_and_missing_files_are_skipped(cli, tmp_path):
    lines = _detection_lines(tmp_path, 3) + [
        '{"image_url": "0.png", "label": [',
        {"image_url": "1.png"},
        {"label": "cat"},
        {"image_url": "nowhere.png", "label": [box("cat", 0.1, 0.1, 0.5, 0.5)]},
        {"image_url": "2.png", "label": [{"label": "cat", "topX": "abc", "topY": 0, "bottomX": 1, "bottomY": 1}]},
    ]
    skipped = _skipped(cli, tmp_path, lines)
    errors = {p["line"]: p["error"] for p in skipped}
    assert set(errors) == {4, 5, 6, 7, 8}
    assert "malformed JSON" in errors[4]
    assert "no label" in errors[5]
    assert "no image_url" in errors[6]
    assert "image file not found" in errors[7]
    assert "'abc', not a number" in errors[8]


def test_label_of_the_wrong_kind_for_the_task_is_refused(cli, tmp_path):
    lines = _detection_lines(tmp_path, 3)
    lines[0]["label"] = "cat"
    write_jsonl(tmp_path / "train.jsonl", lines)
    report = cli.json("data", "import", tmp_path / "train.jsonl", "--name", "d",
                      "--task", "image_object_detection")
    assert report["images"] == 2
    assert "needs boxes" in report["skipped"][0]["error"]


def test_unreadable_truncated_and_non_image_files_are_refused(cli, tmp_path):
    lines = _detection_lines(tmp_path, 4)
    (tmp_path / "0.png").write_bytes(b"this is not an image")
    jpeg = write_image(tmp_path / "t.jpg", size=(64, 64), seed=9, fmt="JPEG").read_bytes()
    (tmp_path / "1.png").write_bytes(jpeg[: len(jpeg) // 2])
    skipped = _skipped(cli, tmp_path, lines)
    errors = {p["line"]: p["error"] for p in skipped}
    assert "not an image" in errors[1]
    assert "truncated or corrupt" in errors[2]
    assert len(skipped) == 2


def test_decompression_bomb_is_refused_before_decoding(cli, tmp_path):
    lines = _detection_lines(tmp_path, 3)
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 Mpx in a few kB
    (tmp_path / "0.png").write_bytes(bomb.getvalue())
    skipped = _skipped(cli, tmp_path, lines)
    assert len(skipped) == 1 and "decompression bomb" in skipped[0]["error"]


def test_duplicate_images_are_reported_by_content(cli, tmp_path):
    lines = _detection_lines(tmp_path, 3)
    (tmp_path / "copy.png").write_bytes((tmp_path / "0.png").read_bytes())
    lines.append({"image_url": "copy.png", "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]})
    skipped = _skipped(cli, tmp_path, lines)
    assert len(skipped) == 1
    assert skipped[0]["line"] == 4 and "duplicate image: same content as 0.png" in skipped[0]["error"]


@pytest.mark.parametrize("entry", ["../evil.png", "/abs/evil.png", "a/../../evil.png"])
def test_zip_entries_outside_the_folder_are_refused(cli, tmp_path, entry):
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cat/1.png", write_image(tmp_path / "x.png").read_bytes())
        zf.writestr(entry, b"x")
    code, _, stderr = cli("data", "import", archive, "--name", "z", ok=False)
    assert code == 2
    assert "would write outside the upload folder" in stderr
    assert not (tmp_path / "evil.png").exists() and not Path("/abs/evil.png").exists()


def test_zip_bomb_is_refused(cli, tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/big.png", b"\0" * 50_000_000)
    code, _, stderr = cli("data", "import", archive, "--name", "z", ok=False)
    assert code == 2 and "decompression bomb" in stderr


def _snapshot(engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {t.__name__: len(session.exec(select(t)).all())
                for t in (Dataset, DatasetVersion, ImageItem, Annotation, ImportProblem)}


def test_import_failing_half_way_leaves_no_partial_version(cli, engine, settings, tmp_path, monkeypatch):
    cli("data", "import", classification_set(tmp_path / "v1", {"a": 6, "b": 6}), "--name", "ds")
    before, blobs_before = _snapshot(engine), sorted(settings.blobs_dir.rglob("*"))
    import storage.repos.datasets as repo

    real_create = repo.create_version

    def create_then_fail(*, session, new):
        real_create(session=session, new=new)  # rows are flushed, then the transaction dies
        raise OSError("disk full")

    monkeypatch.setattr("core.data.importer.create_version", create_then_fail)
    with pytest.raises(OSError):
        from core.data.importer import ImportOptions, import_dataset

        import_dataset(classification_set(tmp_path / "v2", {"a": 7, "c": 7}), ImportOptions("ds"),
                       settings=settings, engine=engine)
    assert _snapshot(engine) == before
    assert sorted(settings.blobs_dir.rglob("*")) == blobs_before
    assert cli.json("data", "show", "ds")["version"] == 1


def test_import_with_no_valid_image_fails_and_stores_nothing(cli, engine, tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [{"image_url": "missing.png", "label": "cat"}])
    before = _snapshot(engine)
    code, _, stderr = cli("data", "import", tmp_path / "t.jsonl", "--name", "none", ok=False)
    assert code == 2
    assert "no image could be imported" in stderr and "image file not found" in stderr
    assert _snapshot(engine) == before


def test_unknown_format_and_task_names_list_the_allowed_ones(cli, tmp_path):
    data = classification_set(tmp_path, {"a": 3})
    code, _, stderr = cli("data", "import", data, "--name", "x", "--format", "jsnl", ok=False)
    assert code == 2 and "did you mean 'jsonl'" in stderr and "allowed:" in stderr
    code, _, stderr = cli("data", "import", data, "--name", "x", "--task", "detection", ok=False)
    assert code == 2 and "image_object_detection" in stderr


def test_a_job_needs_ten_valid_images(cli, engine, tmp_path):
    from core.base.errors import InputError
    from core.data.report import require_trainable
    from storage.repos.datasets import get_version

    cli("data", "import", classification_set(tmp_path / "few", {"a": 5, "b": 4}), "--name", "few")
    cli("data", "import", classification_set(tmp_path / "ok", {"a": 5, "b": 5}), "--name", "ok")
    with session_scope(engine) as session:
        with pytest.raises(InputError, match="has 9 valid images; a job needs at least 10"):
            require_trainable(get_version(session=session, name="few"), "few")
        require_trainable(get_version(session=session, name="ok"), "ok")


def test_a_file_that_is_not_an_image_is_refused_as_such_once_ultralytics_is_loaded():
    # Importing ultralytics replaces PIL's Image.open with a wrapper that wants pi-heif on such a file.
    from core.data.validate import ItemError, open_image
    from core.zoo.ultralytics_env import offline_ultralytics

    offline_ultralytics()
    with pytest.raises(ItemError, match="not an image"):
        open_image(b"these bytes are no picture", 10_000)
    with pytest.raises(UnidentifiedImageError):  # every other caller of PIL too (pages, scoring)
        Image.open(io.BytesIO(b"these bytes are no picture"))
