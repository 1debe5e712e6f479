"""Each shared real dataset trains for one epoch, in each format it comes in, through the same
commands a user types: `kestrel data import` then `kestrel train`."""

from __future__ import annotations

import pytest
from factories import coco128_yolo_layout

TINY_CLASSIFIER = ["--model", "test_resnet", "--set", "training_crop_size=32",
                   "--set", "validation_crop_size=32", "--set", "validation_resize_size=36"]
TINY_YOLO = ["--model", "yolov8n", "--set", "img_size=64", "--set", "training_batch_size=8"]


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
    "coco128-yolo": (lambda s, t: coco128_yolo_layout(s, t / "yolo"), [], TINY_YOLO),
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
