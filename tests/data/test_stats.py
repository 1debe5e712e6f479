"""A version's statistics as the Datasets page charts them."""

from __future__ import annotations

from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import CLASSES, write_sample
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


def test_small_classes_make_one_warning_that_names_the_smallest_first():
    from core.data.stats import version_warnings

    assert version_warnings(60, {"rare": 1, "common": 59}) == [
        "class 'rare' has only 1 image; 10–15 per class are recommended",
        "classes are imbalanced: 'common' has 59 images, 'rare' only 1 image (59:1); trials compensate (a "
        "class-weighted loss for classifiers, repeat-factor sampling for detectors) unless the job sets "
        "weighted_loss: 0 or repeat_factor_sampling: false; images of the small classes help most"]
    many = {f"c{i:02d}": 1 + i % 9 for i in range(30)} | {"person": 61}
    (small, imbalance) = version_warnings(200, many)
    assert small.startswith("30 classes have fewer than 10 images ('c00' 1, 'c09' 1, 'c18' 1, 'c27' 1, 'c01' 2")
    assert "and 18 more, fewest first); 10–15 per class are recommended" in small
    assert "'person' has 61 images" in imbalance
