"""Importing every format this module's readers cover, on the shared real datasets and on
small built ones: the counts a user would check after an import."""

from __future__ import annotations

import zipfile
from pathlib import Path

from factories import box, classification_set, write_image, write_jsonl

from core.data.formats.jsonl import parse_label


def test_fridge_multiclass_jsonl_counts_match_its_source(cli, shared):
    report = cli.json("data", "import", shared / "fridgeObjects_small150", "--name", "fridge")
    assert report["task"] == "image_classification"
    assert report["format"] == "mltable"
    assert report["images"] == 134
    assert report["classes"] == {"can": 32, "carton": 32, "milk_bottle": 37, "water_bottle": 33}
    assert report["annotations"] == 134
    assert report["skipped"] == []


def test_fridge_detection_mltable_counts_match_its_source(cli, shared):
    report = cli.json("data", "import", shared / "odFridgeObjects_FairMOTformat" / "od_mltable",
                      "--name", "fridge-od")
    assert report["task"] == "image_object_detection"
    assert (report["images"], report["annotations"]) == (128, 336)
    assert report["classes"] == {"can": 83, "carton": 86, "milk_bottle": 85, "water_bottle": 82}
    assert report["stats"]["boxes_per_image"] == {"1": 20, "2": 40, "3": 36, "4": 32}


def test_fridge_multilabel_jsonl_is_inferred_as_multilabel(cli, shared):
    report = cli.json("data", "import",
                      shared / "odFridgeObjects_FairMOTformat" / "multilabel_mltable" / "annotations.jsonl",
                      "--name", "fridge-ml")
    assert report["task"] == "image_classification_multilabel"
    assert report["images"] == 128
    assert report["classes"] == {"can": 83, "carton": 86, "milk_bottle": 85, "water_bottle": 82}


def test_detection_dataset_can_be_imported_as_multilabel(cli, shared):
    report = cli.json("data", "import", shared / "odFridgeObjects_FairMOTformat" / "od_mltable",
                      "--name", "derived", "--task", "image_classification_multilabel")
    assert report["task"] == "image_classification_multilabel"
    assert report["annotations"] == 336  # no image holds the same class twice


def test_segmentation_jsonl_with_string_coordinates_and_url_forms(cli, tmp_path):
    images = [write_image(tmp_path / "data" / "img" / f"{i}.png", seed=i) for i in range(4)]
    poly = [[0.1, 0.1, 0.5, 0.1, 0.5, 0.5]]
    lines = [
        {"image_url": "img/0.png", "label": [box("cat", "0.1", "0.1", "0.5", "0.5", polygon=poly)]},
        {"image_url": str(images[1]), "label": [box("dog", 0.2, 0.2, 0.9, 0.9, polygon=poly)]},
        {"image_url": "azureml://subscriptions/x/resourcegroups/y/workspaces/z/datastores/d/paths/img/2.png",
         "label": [box("cat", 0.1, 0.1, 0.5, 0.5, polygon=[[0.1, "0.1", 0.5, 0.1, 0.5, 0.5]])]},
        {"image_url": "img/3.png", "label": []},
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", lines)
    report = cli.json("data", "import", tmp_path / "data", "--name", "seg")
    assert report["task"] == "image_instance_segmentation"
    assert report["format"] == "jsonl"
    assert report["images"] == 4
    assert report["classes"] == {"cat": 2, "dog": 1}
    assert report["skipped"] == []


def test_folder_per_class_as_directory_and_as_zip(cli, tmp_path):
    root = tmp_path / "pets"
    for i in range(6):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.jpg", seed=i, fmt="JPEG")
    report = cli.json("data", "import", root, "--name", "pets")
    assert (report["format"], report["task"]) == ("folder", "image_classification")
    assert report["classes"] == {"cat": 3, "dog": 3}
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in root.rglob("*.jpg"):
            zf.write(file, Path("pets") / file.relative_to(root))
    again = cli.json("data", "import", archive, "--name", "pets")
    assert again["version"] == 2
    assert again["classes"] == {"cat": 3, "dog": 3}


def test_multilabel_csv_with_space_and_comma_separated_labels(cli, tmp_path):
    for i in range(3):
        write_image(tmp_path / "images" / f"{i}.png", seed=i)
    (tmp_path / "labels.csv").write_text(
        'filename,labels\nimages/0.png,cat dog\nimages/1.png,"cat,bird"\nimages/2.png,dog\n')
    report = cli.json("data", "import", tmp_path / "labels.csv", "--name", "tags")
    assert (report["format"], report["task"]) == ("csv", "image_classification_multilabel")
    assert report["classes"] == {"bird": 1, "cat": 2, "dog": 2}
    assert report["annotations"] == 5



def test_single_label_csv_is_multiclass_and_can_be_imported_as_multilabel(cli, tmp_path):
    for i in range(4):
        write_image(tmp_path / "images" / f"{i}.png", seed=i)
    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(
        f"images/{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(4)))
    report = cli.json("data", "import", tmp_path / "labels.csv", "--name", "pets")
    assert (report["format"], report["task"]) == ("csv", "image_classification")
    assert report["classes"] == {"cat": 2, "dog": 2} and report["skipped"] == []
    as_tags = cli.json("data", "import", tmp_path / "labels.csv", "--name", "pets-ml",
                       "--task", "image_classification_multilabel")
    assert as_tags["task"] == "image_classification_multilabel" and as_tags["annotations"] == 4


def test_detection_labels_in_the_shape_of_the_reference_examples(cli, tmp_path):
    """Seed 003 writes one box as an object, its numbers as strings, isCrowd as "true"/"false"."""
    for i in range(3):
        write_image(tmp_path / "images" / f"{i}.png", size=(40, 30), seed=i)
    lines = [
        {"image_url": "images/0.png", "image_details": {"format": "png", "width": "40px", "height": "30px"},
         "label": {"label": "cat", "topX": "0.1", "topY": "0", "bottomX": "0.5", "bottomY": "1",
                   "isCrowd": "true"}},
        {"image_url": "images/1.png", "label": [
            {"label": "dog", "topX": 0.2, "topY": 0.2, "bottomX": 0.6, "bottomY": 0.9, "isCrowd": False},
            {"label": "cat", "topX": "0.5", "topY": "0.1", "bottomX": "0.9", "bottomY": "0.5", "isCrowd": 0}]},
        {"image_url": "images/2.png", "image_details": {"format": "png", "width": "2230px", "height": "1500px"},
         "label": {"label": "dog", "topX": 0, "topY": 0, "bottomX": 1, "bottomY": 1, "isCrowd": "false"}}]
    report = cli.json("data", "import", write_jsonl(tmp_path / "od.jsonl", lines), "--name", "od")
    assert report["task"] == "image_object_detection" and report["skipped"] == []
    assert report["classes"] == {"cat": 2, "dog": 2} and report["annotations"] == 4
    # The stated size is only a check: 40×30 matches; 2230×1500 does not, which is said, labels kept.
    assert [w for w in report["warnings"] if "differ" in w] == [
        "1 image(s) differ from the size their annotation states (first: od.jsonl:3 images/2.png, stated "
        "2230×1500, the file is 40×30); the normalised labels were kept — check the files are the right ones"]
    crowd = [[i.is_crowd for i in parse_label(line["label"])[2]] for line in lines]
    assert crowd == [[True], [False, False], [False]]



def test_azureml_urls_of_a_datastore_resolve_by_the_longest_tail_found_in_the_folder(cli, tmp_path):
    """Seed 004's JSONL, written by Azure's helper, names blobs under LocalUpload/<hash>/; the person
    downloaded train/<class>/ only. Two classes share file names, so the tail must be long enough."""
    store = "azureml://subscriptions/s/resourcegroups/g/workspaces/w/datastores/workspaceblobstore/paths"
    lines = []
    for n, cls in enumerate(("buildings", "forest")):
        for i in range(3):
            write_image(tmp_path / "data" / "train" / cls / f"{i}.jpg", seed=10 * n + i, fmt="JPEG")
            lines.append({"image_url": f"{store}/LocalUpload/0a1b2c/train/{cls}/{i}.jpg", "label": cls})
    lines.append({"image_url": f"{store}/LocalUpload/0a1b2c/train/glacier/9.jpg", "label": "glacier"})
    lines.append({"image_url": f"{store}/../../etc/passwd", "label": "x"})
    write_jsonl(tmp_path / "data" / "train.jsonl", lines)
    report = cli.json("data", "import", tmp_path / "data", "--name", "intel")
    assert report["classes"] == {"buildings": 3, "forest": 3}
    assert [(s["line"], s["error"]) for s in report["skipped"]] == [
        (7, f"no file in the imported folder ends with '9.jpg' of '{store}/LocalUpload/0a1b2c/train/glacier/9.jpg'"),
        (8, f"image_url '{store}/../../etc/passwd' climbs out of its datastore with '..'")]



def test_a_mapped_datastore_resolves_urls_to_its_folder_even_from_an_upload(cli, settings, tmp_path):
    store = "azureml://subscriptions/s/resourcegroups/g/workspaces/w/datastores/workspaceblobstore/paths"
    lines = []
    for i in range(4):
        write_image(tmp_path / "blobs" / "LocalUpload" / "9f" / "train" / f"{i}.png", seed=i)
        lines.append({"image_url": f"{store}/LocalUpload/9f/train/{i}.png", "label": "a" if i % 2 else "b"})
    upload = settings.staging_dir / "upload-1" / "data"  # as the studio stages an upload
    write_jsonl(upload / "train.jsonl", lines)
    code, _, err = cli("data", "import", upload, "--name", "unmapped", ok=False)
    assert code == 2 and "no file in the imported folder ends with '0.png'" in err and "kestrel datastore create" in err
    mapped = cli.json("datastore", "create", "workspaceblobstore", "--path", tmp_path / "blobs")
    assert mapped == {"name": "workspaceblobstore", "path": str((tmp_path / "blobs").resolve())}
    assert cli.json("datastore", "list")["datastores"] == [mapped]
    report = cli.json("data", "import", upload, "--name", "mapped")
    assert report["images"] == 4 and report["skipped"] == []  # outside the upload, inside the mapped folder
    cli.json("datastore", "delete", "workspaceblobstore")
    assert cli.json("datastore", "list")["datastores"] == []


def test_importing_again_makes_a_new_version_and_show_finds_each(cli, tmp_path):
    first = classification_set(tmp_path / "a", {"x": 6, "y": 6})
    second = classification_set(tmp_path / "b", {"x": 7, "y": 7})
    assert cli.json("data", "import", first, "--name", "ds")["version"] == 1
    assert cli.json("data", "import", second, "--name", "ds")["version"] == 2
    assert cli.json("data", "show", "ds:1")["images"] == 12
    assert cli.json("data", "show", "ds")["images"] == 14
    assert cli.json("data", "show", "azureml:ds:2")["version"] == 2
    listed = cli.json("data", "list")
    assert [(d["name"], d["latest_version"]) for d in listed] == [("ds", 2)]


def test_validation_split_is_stratified_seeded_and_sized(cli, tmp_path):
    data = classification_set(tmp_path, {"a": 20, "b": 10, "c": 10})
    report = cli.json("data", "import", data, "--name", "s1")
    assert report["validation_images"] == 8
    again = cli.json("data", "import", data, "--name", "s2", "--validation-size", "0.5")
    assert again["validation_images"] == 20
    from storage.db import make_engine, session_scope
    from storage.repos.datasets import get_version, images
    from storage.settings import Settings

    with session_scope(make_engine(Settings().db_url)) as session:
        version = get_version(session=session, name="s1")
        split = {i.file_name: i.split for i in images(session=session, version_id=version.id)}
    by_class = {"a": 0, "b": 0, "c": 0}
    for line in data.read_text().splitlines():
        import json

        obj = json.loads(line)
        by_class[obj["label"]] += split[obj["image_url"]] == "validation"
    assert by_class == {"a": 4, "b": 2, "c": 2}
    cli("data", "import", data, "--name", "s3")
    with session_scope(make_engine(Settings().db_url)) as session:
        v3 = get_version(session=session, name="s3")
        assert {i.file_name: i.split for i in images(session=session, version_id=v3.id)} == split


def test_human_report_names_counts_and_warnings(cli, tmp_path):
    data = classification_set(tmp_path, {"rare": 3, "common": 20})
    _, stdout, _ = cli("data", "import", data, "--name", "few")
    assert "few:1" in stdout and "23 images" in stdout
    assert "class 'rare' has only 3 images" in stdout
    assert "imbalanced" in stdout
