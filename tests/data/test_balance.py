"""Class imbalance: the ratio the importer reports and the recipe acts on, and repeat-factor sampling as the
detectors' loaders and ultralytics' folder apply it."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from core.base.tasks import Task
from core.data.balance import imbalance_ratio, repeat_factors, repeats
from core.data.detection_loaders import RepeatFactorSampler
from core.data.records import Instance
from core.data.view import Item, VersionData
from core.zoo.yolo_dataset import write_yolo_dataset


def _boxes(*labels: str, n: int = 0) -> Item:
    return Item(Path(f"{n}.png"), f"{n}.png", 64, 64, (),
                tuple(Instance(label, 0.1, 0.1, 0.5, 0.5) for label in labels))


def _set(common: int = 50, rare: int = 2) -> list[Item]:
    return [_boxes("car", n=n) for n in range(common)] + [_boxes("car", "bike", n=common + n) for n in range(rare)]


def test_the_ratio_is_the_largest_class_over_the_smallest():
    assert imbalance_ratio({"a": 50, "b": 5, "c": 10}) == 10.0
    assert imbalance_ratio({"a": 7}) == 1.0 and imbalance_ratio({}) == 1.0
    assert imbalance_ratio({"a": 7, "gone": 0}) == 1.0  # a class without images is not a class to balance


def test_images_of_a_rare_class_repeat_by_the_square_root_of_its_rarity():
    items = _set(common=50, rare=2)
    factors = repeat_factors(items)
    # car is in every image (t = 1/5 of its frequency); bike in 2 of 52: sqrt((1/5) / (2/52)) = sqrt(5.2)
    assert factors[:50] == [1.0] * 50
    assert factors[50:] == pytest.approx([math.sqrt(5.2)] * 2)
    assert repeat_factors([_boxes("a", n=k) for k in range(5)] + [_boxes("b", n=9)]) == [1.0] * 6  # 5:1 is fine
    copies = [repeats([2.3] * 1000, seed)[0] for seed in range(200)]
    assert set(copies) == {2, 3} and 0.2 < copies.count(3) / 200 < 0.4


def test_the_sampler_draws_each_epoch_afresh_with_a_fixed_length():
    factors = repeat_factors(_set(common=50, rare=2))
    sampler = RepeatFactorSampler(factors, seed=0)
    epochs = [list(sampler) for _ in range(40)]
    assert len(sampler) == round(sum(factors)) and all(len(e) == len(sampler) for e in epochs)
    assert epochs[0] != epochs[1]
    shown = Counter(i for e in epochs for i in e)
    rare_rate = (shown[50] + shown[51]) / 2 / 40  # per epoch, for each of the two rare images
    common_rate = sum(shown[i] for i in range(50)) / 50 / 40
    assert rare_rate == pytest.approx(math.sqrt(5.2), rel=0.15) and common_rate == pytest.approx(1.0, rel=0.1)


def test_ultralytics_gets_the_repeated_training_images_as_files(tmp_path):
    (tmp_path / "blobs").mkdir()
    items = []
    for n, item in enumerate(_set(common=3, rare=1)):  # blobs: any bytes, the images are only linked
        (tmp_path / "blobs" / f"{n}").write_bytes(b"\x89PNG")
        items.append(Item(tmp_path / "blobs" / f"{n}", item.name, 64, 64, item.tags, item.instances))
    data = VersionData("d", 1, Task.DETECTION, ["bike", "car"], items, items[:1])
    write_yolo_dataset(data, tmp_path / "yolo", [], copies=[1, 1, 1, 3])
    train = sorted(p.name for p in (tmp_path / "yolo" / "labels" / "train").iterdir())
    assert train == ["000000.txt", "000001.txt", "000002.txt", "000003-1.txt", "000003-2.txt", "000003.txt"]
    copy = (tmp_path / "yolo" / "labels" / "train" / "000003-2.txt").read_text().splitlines()
    assert [line.split()[0] for line in copy] == ["1", "0"]  # the copy has the image's car and bike
    assert len(list((tmp_path / "yolo" / "images" / "train").iterdir())) == 6
    assert len(list((tmp_path / "yolo" / "images" / "val").iterdir())) == 1  # validation is never repeated
