"""Any version exports to JSONL and COCO with its images, and re-imports to the same labels."""

from __future__ import annotations

import json

import pytest
from factories import box, write_image, write_jsonl


def _boxes(jsonl) -> dict[str, list[tuple]]:
    out = {}
    for line in jsonl.read_text().splitlines():
        obj = json.loads(line)
        name = obj["image_url"].rsplit("/", 1)[-1]
        out[name] = sorted((b["label"], b["topX"], b["topY"], b["bottomX"], b["bottomY"],
                            tuple(map(tuple, b.get("polygon", [])))) for b in obj["label"])
    return out


@pytest.mark.parametrize("with_polygons", [False, True])
def test_jsonl_to_coco_to_jsonl_keeps_every_box_within_1e6(cli, tmp_path, with_polygons):
    lines = []
    for i in range(5):
        write_image(tmp_path / "src" / f"{i}.png", size=(97, 61), seed=i)
        x = 0.1 + i / 37
        extra = {"polygon": [[x, 0.2, 0.7, 0.2, 0.7 - i / 91, 0.8]]} if with_polygons else {}
        lines.append({"image_url": f"{i}.png", "label": [
            box("cat", x, 0.2, 0.7, 0.8, **extra), box("dog", 0.01 * i + 0.3, 1 / 3, 0.9, 0.99, **extra)]})
    source = write_jsonl(tmp_path / "src" / "train.jsonl", lines)
    cli("data", "import", source, "--name", "a")
    cli("data", "export", "a", "--format", "coco", "--out", tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 5 and len(coco["annotations"]) == 10
    assert cli.json("data", "import", tmp_path / "coco", "--name", "b")["format"] == "coco"
    cli("data", "export", "b:1", "--format", "jsonl", "--out", tmp_path / "back")
    assert (tmp_path / "back" / "MLTable").exists()
    before, after = _boxes(source), _boxes(tmp_path / "back" / "annotations.jsonl")
    assert before.keys() == after.keys()
    for name in before:
        for b0, b1 in zip(before[name], after[name], strict=True):
            assert b0[0] == b1[0]
            assert max(abs(p - q) for p, q in zip(b0[1:5], b1[1:5])) < 1e-6
            for poly0, poly1 in zip(b0[5], b1[5], strict=True):
                assert max(abs(p - q) for p, q in zip(poly0, poly1, strict=True)) < 1e-6


def test_classification_export_reimports_with_the_same_classes(cli, shared, tmp_path):
    first = cli.json("data", "import", shared / "fridgeObjects_small150", "--name", "fridge")
    cli("data", "export", "fridge:1", "--format", "jsonl", "--out", tmp_path / "out")
    assert len(list((tmp_path / "out" / "images").rglob("*.jpg"))) == 134
    again = cli.json("data", "import", tmp_path / "out", "--name", "fridge2")
    assert (again["format"], again["classes"]) == ("mltable", first["classes"])


def test_export_of_a_missing_version_says_what_exists(cli, tmp_path):
    code, _, stderr = cli("data", "export", "nope:3", "--format", "jsonl", "--out", tmp_path, ok=False)
    assert code == 2 and "kestrel data list" in stderr
