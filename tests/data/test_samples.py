"""The procedural sample datasets: reproducible, balanced, and with labels that fit the images."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from core.base.tasks import Task
from core.data.formats.jsonl import read_jsonl
from core.data.records import ImageRecord
from core.data.samples import CLASSES, SAMPLE_NAMES, write_sample


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _records(jsonl: Path) -> list[ImageRecord]:
    items = list(read_jsonl(jsonl, jsonl.parent))
    assert all(isinstance(i, ImageRecord) for i in items), [i for i in items if not isinstance(i, ImageRecord)]
    return items  # type: ignore[return-value]


@pytest.mark.parametrize("task", list(Task))
def test_sample_is_identical_byte_for_byte_when_generated_twice(task: Task, tmp_path: Path) -> None:
    first = _files(write_sample(task, tmp_path / "a", count=12).parent)
    second = _files(write_sample(task, tmp_path / "b", count=12).parent)
    assert len(first) == 13  # 12 images and annotations.jsonl
    assert first == second


def test_different_seeds_give_different_images(tmp_path: Path) -> None:
    a = _files(write_sample(Task.CLASSIFICATION, tmp_path / "a", count=3, seed=1).parent)
    b = _files(write_sample(Task.CLASSIFICATION, tmp_path / "b", count=3, seed=2).parent)
    assert a["images/shape_0000.png"] != b["images/shape_0000.png"]


def test_every_task_has_a_sample_name() -> None:
    assert set(SAMPLE_NAMES) == set(Task)
    assert len(set(SAMPLE_NAMES.values())) == len(Task)


def test_classification_sample_has_balanced_classes(tmp_path: Path) -> None:
    records = _records(write_sample(Task.CLASSIFICATION, tmp_path, count=60))
    assert Counter(r.tags[0] for r in records) == {name: 20 for name in CLASSES}
    with Image.open(records[0].image) as image:
        assert image.size == (96, 96) and image.mode == "RGB"


def test_multilabel_sample_has_one_to_three_distinct_sorted_tags(tmp_path: Path) -> None:
    records = _records(write_sample(Task.MULTILABEL, tmp_path, count=60))
    assert all(1 <= len(r.tags) <= 3 and list(r.tags) == sorted(set(r.tags)) for r in records)
    assert {t for r in records for t in r.tags} == set(CLASSES)
    assert Counter(len(r.tags) for r in records).keys() == {1, 2, 3}


@pytest.mark.parametrize("task", [Task.DETECTION, Task.SEGMENTATION])
def test_boxes_lie_in_the_image_and_polygons_in_their_boxes(task: Task, tmp_path: Path) -> None:
    records = _records(write_sample(task, tmp_path, count=60))
    instances = [i for r in records for i in r.instances]
    assert all(1 <= len(r.instances) <= 3 for r in records)
    assert {i.label for i in instances} == set(CLASSES)
    for inst in instances:
        assert 0 <= inst.x0 < inst.x1 <= 1 and 0 <= inst.y0 < inst.y1 <= 1
        # Large enough to learn from: at least ~a fifth of the image side each way.
        assert inst.x1 - inst.x0 >= 0.19 and inst.y1 - inst.y0 >= 0.19
        if task is Task.SEGMENTATION:
            (polygon,) = inst.polygons
            xs, ys = polygon[0::2], polygon[1::2]
            assert (min(xs), min(ys), max(xs), max(ys)) == (inst.x0, inst.y0, inst.x1, inst.y1)
            assert len(xs) == {"circle": 24, "square": 4, "triangle": 3}[inst.label]
        else:
            assert inst.polygons == ()


def test_jsonl_names_images_relative_to_itself(tmp_path: Path) -> None:
    jsonl = write_sample(Task.DETECTION, tmp_path / "out", count=2)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["image_url"] for line in lines] == ["images/shape_0000.png", "images/shape_0001.png"]
    assert all((jsonl.parent / line["image_url"]).is_file() for line in lines)


def test_studio_start_registers_each_task_sample_once(cli, settings, engine):
    from core.data.samples import register_samples

    assert register_samples(settings=settings, engine=engine) == list(SAMPLE_NAMES.values())
    assert register_samples(settings=settings, engine=engine) == []
    listed = {d["name"]: d for d in cli.json("data", "list")}
    for task, name in SAMPLE_NAMES.items():
        assert listed[name]["task"] == task.value
        assert listed[name]["images"] == 60
        assert cli.json("data", "show", name)["skipped"] == []
