"""Every import format. The import lines are the plugin list, in detection order: the most
specific layouts first, folder-per-class last because almost any folder could be one."""

from __future__ import annotations

from pathlib import Path

from core.base.errors import InputError
from core.data.formats import coco, csvlabels, folder, jsonl, masks, mltable, voc, yolo  # noqa: F401
from core.data.formats.base import DataFormat, formats

DETECTION_ORDER = ("mltable", "jsonl", "coco", "yolo", "voc", "masks", "csv", "folder")


def detect_format(path: Path) -> str:
    """The name of the format ``path`` is in; refused with the formats we know otherwise."""
    for name in DETECTION_ORDER:
        if name in formats.names() and formats.get(name)().detect(path):
            return name
    raise InputError(
        str(path),
        "no known dataset format found here",
        "give a JSONL file, an MLTable folder, COCO JSON, Pascal VOC XML, YOLO (data.yaml), "
        "a CSV 'filename,labels', images/ + masks/<class>/, or one folder of images per class; "
        "or name the format with --format",
    )


def get_format(name: str) -> DataFormat:
    return formats.get(name)()
