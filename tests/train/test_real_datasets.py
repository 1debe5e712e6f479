"""Each shared real dataset trains for one epoch, in each format it comes in, through the same
commands a user types: `kestrel data import` then `kestrel train`."""

from __future__ import annotations

import shutil

import pytest

TINY_CLASSIFIER = ["--model", "test_resnet", "--set", "training_crop_size=32",
                   "--set", "validation_crop_size=32", "--set", "validation_resize_size=36"]
TINY_YOLO = ["--model", "yolov8n", "--set", "img_size=64", "--set", "training_batch_size=8"]


def _yolo_layout(shared, tmp_path):
    src = shared / "coco128"
    root = tmp_path / "yolo"
    shutil.copytree(src / "train2017", root / "images" / "train2017")
    shutil.copytree(src / "lightly_coco128_yolo" / "object_detection" / "labels", root / "labels")
    config = (src / "lightly_coco128_yolo" / "object_detection" / "config.yaml").read_text()
    (root / "data.yaml").write_text(config.replace("val: images/val2017", "val: images/train2017"))
    return root


CASES = {
    "fridge-jsonl": (lambda s, t: s / "fridgeObjects_small150" / "annotations.jsonl", [], TINY_CLASSIFIER),
    "fridge-mltable": (lambda s, t: s / "fridgeObjects_small150", [], TINY_CLASSIFIER),
    "fridge-multilabel": (lambda s, t: s / "odFridgeObjects_FairMOTformat" / "multilabel_mltable", [],
                          TINY_CLASSIFIER),
    "fridge-detection": (lambda s, t: s / "odFridgeObjects_FairMOTformat" / "od_mltable", [], TINY_YOLO),
    "icevision-voc": (lambda s, t: s / "icevision_samples" / "samples" / "fridge" / "odFridgeObjects", [],
                      TINY_YOLO),
    "icevision-coco": (lambda s, t: s / "icevision_samples" / "samples" / "annotations.json", [],
                       ["--model", "yolov8n-seg", *TINY_YOLO[2:]]),
    "coco128-coco": (lambda s, t: s / "coco128" / "annotations" / "instances_train2017.json",
                     ["--task", "image_object_detection"], TINY_YOLO),
    "coco128-yolo": (_yolo_layout, [], TINY_YOLO),
}


@pytest.mark.parametrize("case", list(CASES))
def test_real_dataset_trains_one_epoch(cli, shared, tmp_path, case):
    source, import_args, train_args = CASES[case]
    report = cli.json("data", "import", source(shared, tmp_path), "--name", case, *import_args)
    result = cli.json("train", "--data", case, *train_args, "--set", "number_of_epochs=1")
    assert result["status"] == "completed"
    assert result["epochs_run"] == 1
    assert result["primary_metric"] in result["metrics"]
    assert report["task"] in ("image_classification", "image_classification_multilabel",
                              "image_object_detection", "image_instance_segmentation")
