"""Hostile and careless imports: each bad input is refused by name (file, line, field, what to do),
nothing outside an upload is read, and the datasets stored before stay exactly as they were."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from factories import box, classification_set, write_image, write_jsonl

from core.data.importer import ImportOptions, import_dataset

OUTSIDE_FIX = "paths must be relative to the dataset folder"


@pytest.fixture
def before(cli, tmp_path):
    """A dataset stored before the hostile import, and how it looked then."""
    cli("data", "import", classification_set(tmp_path / "base", {"a": 3, "b": 3}), "--name", "base")
    return _stored(cli)


def _stored(cli) -> dict:
    return {d["name"]: (d["latest_version"], d["images"]) for d in cli.json("data", "list")}


def _lines(root: Path, n: int) -> list[dict]:
    """``n`` good detection lines, their images written beside them."""
    for i in range(n):
        write_image(root / f"{i}.png", seed=100 + i)
    return [{"image_url": f"{i}.png", "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]} for i in range(n)]


def _staged(settings) -> Path:
    """A folder as the studio stages an upload: ``staging_dir/<id>/``."""
    root = settings.staging_dir / uuid.uuid4().hex
    root.mkdir(parents=True)
    return root


def _import_staged(settings, engine, root: Path) -> dict:
    return import_dataset(root, ImportOptions("up"), settings=settings, engine=engine)


def test_upload_paths_outside_the_upload_are_refused_per_row(cli, settings, engine, tmp_path, before):
    secret = write_image(tmp_path / "secret" / "s.png", seed=7)  # readable, but not uploaded
    root = _staged(settings)
    lines = _lines(root, 2)
    lines += [{"image_url": str(secret), "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]},
              {"image_url": "../../../secret/s.png", "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]},
              {"image_url": "link.png", "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]}]
    (root / "link.png").symlink_to(secret)
    write_jsonl(root / "annotations.jsonl", lines)
    report = _import_staged(settings, engine, root)
    assert report["images"] == 2
    skipped = {p["line"]: p for p in report["skipped"]}
    assert sorted(skipped) == [3, 4, 5]
    assert all(p["file"] == "annotations.jsonl" and "outside the uploaded dataset folder" in p["error"]
               and OUTSIDE_FIX in p["fix"] for p in skipped.values())
    # The path shown is where it leads: the link (line 5) resolves to the secret too.
    assert all(str(secret) in p["error"] for p in skipped.values())
    assert _stored(cli)["base"] == before["base"]


def test_zip_and_csv_paths_outside_the_archive_are_refused_per_row(cli, tmp_path, before):
    secret = write_image(tmp_path / "secret.png", seed=8)
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(2):
            zf.writestr(f"{i}.png", write_image(tmp_path / "src" / f"{i}.png", seed=20 + i).read_bytes())
        zf.writestr("labels.csv", f"filename,labels\n0.png,cat\n1.png,dog\n{secret},cat\n"
                                  "../../../../../../../../../etc/hostname,cat\n")
    report = cli.json("data", "import", archive, "--name", "up")
    assert report["images"] == 2
    assert [(p["file"], p["line"]) for p in report["skipped"]] == [("labels.csv", 4), ("labels.csv", 5)]
    assert all("outside the uploaded dataset folder" in p["error"] and OUTSIDE_FIX in p["fix"]
               for p in report["skipped"])
    assert _stored(cli)["base"] == before["base"]


def test_a_local_folder_keeps_its_own_layout(cli, tmp_path, before):
    """Not an upload: Azure's MLTable samples point at ../images, and that keeps importing."""
    lines = _lines(tmp_path / "set" / "images", 2)
    for line in lines:
        line["image_url"] = "../images/" + line["image_url"]
    write_jsonl(tmp_path / "set" / "table" / "annotations.jsonl", lines)
    report = cli.json("data", "import", tmp_path / "set" / "table", "--name", "local")
    assert report["images"] == 2 and report["skipped"] == []
    assert _stored(cli)["base"] == before["base"]


def test_devices_and_fifos_are_refused_before_reading(cli, tmp_path, before):
    lines = _lines(tmp_path, 2)
    os.mkfifo(tmp_path / "pipe.png")  # nobody writes: reading it would wait forever
    lines += [{"image_url": "/dev/zero", "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]},
              {"image_url": "pipe.png", "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]}]
    write_jsonl(tmp_path / "train.jsonl", lines)
    report = cli.json("data", "import", tmp_path / "train.jsonl", "--name", "dev")
    assert report["images"] == 2
    skipped = {p["line"]: p for p in report["skipped"]}
    assert "'/dev/zero' is not a regular file" in skipped[3]["error"]
    assert "pipe.png" in skipped[4]["error"] and "not a regular file" in skipped[4]["error"]
    assert all(p["file"] == "train.jsonl" and "image file" in p["fix"] for p in skipped.values())
    assert _stored(cli)["base"] == before["base"]


def test_an_image_file_over_the_byte_limit_is_refused(cli, tmp_path, before, monkeypatch):
    lines = _lines(tmp_path, 2)
    big = write_image(tmp_path / "big.png", size=(400, 400), seed=3)
    limit = max((tmp_path / f"{i}.png").stat().st_size for i in range(2)) + 1
    assert big.stat().st_size > limit
    monkeypatch.setenv("KESTREL_MAX_IMAGE_BYTES", str(limit))
    lines.append({"image_url": "big.png", "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]})
    write_jsonl(tmp_path / "train.jsonl", lines)
    report = cli.json("data", "import", tmp_path / "train.jsonl", "--name", "big")
    [problem] = report["skipped"]
    assert (problem["file"], problem["line"]) == ("train.jsonl", 3)
    assert f"above the per-image limit of {limit:,}" in problem["error"]
    assert "KESTREL_MAX_IMAGE_BYTES" in problem["fix"]
    assert _stored(cli)["base"] == before["base"]


@pytest.mark.parametrize(("name", "content", "line", "problem"), [
    ("train.jsonl", b'{"image_url": "0.png", "label": "cat"}\n{"image_url": "caf\xe9.png", "label": "cat"}\n',
     2, "byte 0xe9"),
    ("labels.csv", b"filename,labels\n0.png,caf\xe9\n", 2, "byte 0xe9"),
    ("labels.csv", "filename,labels\n0.png,cat\n".encode("utf-16"), 1, "is UTF-16 text"),
])
def test_annotation_files_that_are_not_utf8_are_refused_by_name(cli, engine, tmp_path, before, name,
                                                                content, line, problem):
    write_image(tmp_path / "data" / "0.png")
    (tmp_path / "data" / name).write_bytes(content)
    code, stdout, stderr = cli("data", "import", tmp_path / "data" / name, "--name", "enc", ok=False)
    assert code == 2 and "Traceback" not in stdout + stderr
    assert f"{name}:{line}" in stderr and problem in stderr and "save the file as UTF-8" in stderr
    assert _stored(cli) == before


def test_yolo_label_file_that_is_not_utf8_skips_that_image(cli, tmp_path, before):
    root = tmp_path / "yolo"
    for i in range(2):
        write_image(root / "images" / "train" / f"{i}.png", seed=30 + i)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train" / "1.txt").write_bytes(b"0 0.5 0.5 0.2 0.2 \xff\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cat]\n")
    report = cli.json("data", "import", root, "--name", "yolo")
    [problem] = report["skipped"]
    assert problem["file"] == "labels/train/1.txt" and problem["line"] == 1
    assert "not UTF-8" in problem["error"] and "save the file as UTF-8" in problem["fix"]
    assert report["images"] == 1 and _stored(cli)["base"] == before["base"]


def test_nan_and_infinite_box_coordinates_are_refused_per_row(cli, tmp_path, before):
    lines = _lines(tmp_path, 4)
    lines[1]["label"] = [box("cat", float("nan"), 0.1, 0.6, 0.6)]  # json writes NaN
    lines[2]["label"] = [box("cat", 0.1, 0.1, "inf", 0.6)]
    write_jsonl(tmp_path / "train.jsonl", lines)
    report = cli.json("data", "import", tmp_path / "train.jsonl", "--name", "nan")
    assert report["images"] == 2
    skipped = {p["line"]: p for p in report["skipped"]}
    assert "label[0].topX is nan, not a finite number" in skipped[2]["error"]
    assert "label[0].bottomX is 'inf', not a finite number" in skipped[3]["error"]
    assert all(p["file"] == "train.jsonl" and "0..1" in p["fix"] for p in skipped.values())
    assert _stored(cli)["base"] == before["base"]


def test_nan_box_in_coco_is_refused_naming_the_field(cli, tmp_path, before):
    for i in range(2):
        write_image(tmp_path / "coco" / f"{i}.png", size=(32, 24), seed=40 + i)
    doc = {"images": [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 24} for i in range(2)],
           "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 10, 10]},
                           {"id": 2, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 1, 10, 10]}],
           "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "coco" / "instances.json").write_text(json.dumps(doc))
    report = cli.json("data", "import", tmp_path / "coco" / "instances.json", "--name", "coco")
    [problem] = report["skipped"]
    assert problem["file"] == "instances.json" and "topX is nan, not a finite number" in problem["error"]
    assert report["images"] == 1 and _stored(cli)["base"] == before["base"]


def test_an_image_over_the_pixel_limit_says_so(cli, tmp_path, before, monkeypatch):
    lines = _lines(tmp_path, 2)
    write_image(tmp_path / "wide.png", size=(200, 100), seed=5)
    lines.append({"image_url": "wide.png", "label": [box("cat", 0.1, 0.1, 0.6, 0.6)]})
    write_jsonl(tmp_path / "train.jsonl", lines)
    monkeypatch.setenv("KESTREL_MAX_IMAGE_PIXELS", "10000")  # the others are 32×24
    report = cli.json("data", "import", tmp_path / "train.jsonl", "--name", "px")
    [problem] = report["skipped"]
    assert problem["line"] == 3 and "above the pixel limit of 10,000" in problem["error"]
    assert "corrupt" not in problem["error"] and "KESTREL_MAX_IMAGE_PIXELS" in problem["fix"]
    assert _stored(cli)["base"] == before["base"]


def test_a_jsonl_whose_every_line_is_bad_names_the_first_lines(cli, tmp_path, before):
    (tmp_path / "train.jsonl").write_text('{"image_url": \n{"label": "cat"}\n[1, 2]\n{"image_url": "x.png"}\n')
    code, _, stderr = cli("data", "import", tmp_path / "train.jsonl", "--name", "bad", ok=False)
    assert code == 2 and "no labels at all" not in stderr
    assert "no image could be imported (4 problems" in stderr
    assert "train.jsonl:1 malformed JSON" in stderr and "train.jsonl:2 no image_url" in stderr
    assert "fix the problems listed" in stderr
    assert _stored(cli) == before


def test_a_failed_hostile_upload_leaves_storage_as_it_was(cli, settings, engine, before):
    root = _staged(settings)
    write_jsonl(root / "annotations.jsonl", [{"image_url": "/etc/hostname", "label": "cat"},
                                             {"image_url": "/dev/zero", "label": "cat"}])
    blobs = sorted(settings.blobs_dir.rglob("*"))
    with pytest.raises(Exception, match="no image could be imported") as caught:
        _import_staged(settings, engine, root)
    assert "outside the uploaded dataset folder" in str(caught.value)
    assert _stored(cli) == before and sorted(settings.blobs_dir.rglob("*")) == blobs
    shutil.rmtree(root)


def test_the_upload_preview_draws_no_image_from_outside_the_upload_nor_a_fifo(tmp_path):
    from core.data.validate import image_path_refusal, upload_folder

    staging = tmp_path / "staging"
    upload = staging / "abc" / "data"
    upload.mkdir(parents=True)
    (upload / "ok.png").write_bytes(b"\x89PNG")
    fifo = upload / "pipe.png"
    os.mkfifo(fifo)
    inside = upload_folder(upload, staging)
    assert inside == staging / "abc" and upload_folder(tmp_path / "mine", staging) is None
    assert image_path_refusal(upload / "ok.png", 1000, inside) is None
    assert "outside the uploaded dataset folder" in image_path_refusal(Path("/etc/hostname"), 1000, inside)
    assert "not a regular file" in image_path_refusal(fifo, 1000, inside)  # and it did not block
    assert "above the per-image limit" in image_path_refusal(upload / "ok.png", 2, inside)


def test_blobs_an_import_killed_before_its_commit_left_are_swept_and_the_datasets_keep_theirs(
        settings, engine, tmp_path):
    from core.worker.queue import Worker
    from storage.artifacts import BlobStore

    import_dataset(classification_set(tmp_path / "kept", {"a": 3, "b": 3}), ImportOptions("kept"),
                   settings=settings, engine=engine)
    blobs = BlobStore(settings.blobs_dir)
    held = sorted(p.name for p in settings.blobs_dir.glob("*/*"))
    old_orphan, _ = blobs.put(b"bytes of an image whose import was killed")
    new_orphan, _ = blobs.put(b"bytes of an import still running")
    day_ago = time.time() - 2 * 24 * 3600
    for name in (*held, old_orphan):  # the dataset's own blobs are as old: age alone never removes them
        os.utime(blobs.path(name), (day_ago, day_ago))
    Worker(settings, engine)._sweep()
    assert not blobs.path(old_orphan).exists()
    assert blobs.path(new_orphan).exists()  # too young: its import may still be running
    assert all(blobs.path(name).exists() for name in held) and len(held) == 6
