"""Whole imports of the shared real datasets in COCO, VOC and YOLO form, counted against their
SOURCE.md, through the same command a user types."""

from __future__ import annotations

from factories import coco128_yolo_layout


def test_coco128_coco_json_imports_as_segmentation_with_all_instances(cli, shared):
    report = cli.json("data", "import", shared / "coco128" / "annotations" / "instances_train2017.json",
                      "--name", "coco128")
    assert (report["format"], report["task"]) == ("coco", "image_instance_segmentation")
    assert report["images"] + len(report["skipped"]) == 128
    assert report["annotations"] == 939
    assert len(report["classes"]) == 71
    assert report["classes"]["person"] == 259 and report["classes"]["car"] == 47


def test_coco128_as_detection_drops_polygons_but_keeps_boxes(cli, shared):
    report = cli.json("data", "import", shared / "coco128" / "annotations" / "instances_train2017.json",
                      "--name", "coco128-det", "--task", "image_object_detection")
    assert report["task"] == "image_object_detection"
    assert report["images"] == 128 and report["annotations"] == 939


def test_icevision_voc_fridge_imports_twelve_boxes(cli, shared):
    report = cli.json("data", "import", shared / "icevision_samples" / "samples" / "fridge" / "odFridgeObjects",
                      "--name", "voc")
    assert (report["format"], report["task"]) == ("voc", "image_object_detection")
    assert (report["images"], report["annotations"]) == (6, 12)


def test_coco128_yolo_boxes_report_the_two_orphan_label_files(cli, shared, tmp_path):
    root = coco128_yolo_layout(shared, tmp_path / "yolo")
    report = cli.json("data", "import", root, "--name", "yolo")
    assert (report["format"], report["task"]) == ("yolo", "image_object_detection")
    assert report["images"] == 128
    orphans = sorted(p["file"] for p in report["skipped"])
    assert orphans == ["labels/train2017/000000000656.txt", "labels/train2017/000000000659.txt"]
    assert all("has no image" in p["error"] for p in report["skipped"])
    assert report["annotations"] == 941 - sum(
        len((root / f).read_text().strip().splitlines()) for f in orphans)
