"""A version's statistics as the Datasets page charts them."""

from __future__ import annotations

from core.data.importer import ImportOptions, import_dataset
from core.data.samples import CLASSES, write_sample
from core.tasks import Task
from storage.db import session_scope
from storage.repos.datasets import get_version


def test_box_sizes_keep_the_class_of_each_box(settings, engine, tmp_path):
    jsonl = write_sample(Task.DETECTION, tmp_path, count=12, size=48)
    import_dataset(jsonl, ImportOptions("boxes", Task.DETECTION), settings=settings, engine=engine)
    with session_scope(engine) as session:
        version = get_version(session=session, name="boxes")
        boxes, per_class = version.stats["box_sizes"], version.stats["instances_per_class"]
    assert len(boxes["label"]) == len(boxes["width"]) == len(boxes["height"]) == sum(per_class.values())
    assert {label: boxes["label"].count(label) for label in per_class} == per_class
    assert set(per_class) <= set(CLASSES) and len(per_class) > 1
