"""Reader-level tests of the COCO, Pascal VOC, YOLO and mask-folder formats.

Counts come from each dataset's SOURCE.md under /work/shared/datasets.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.base.tasks import LabelKind
from core.data.formats.base import formats
from core.data.formats.coco import write_coco
from core.data.masks import mask_to_polygons
from core.data.records import ImageRecord, Instance, Problem

for _module in ("coco", "masks", "voc", "yolo"):  # importing a format module registers it
    importlib.import_module(f"core.data.formats.{_module}")

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets"
if not DATA.is_dir():  # the same fallback as tests/conftest.py
    DATA = Path("/work/shared/datasets")
COCO128 = DATA / "coco128"
YOLO128 = COCO128 / "lightly_coco128_yolo"
FRIDGE_VOC = DATA / "icevision_samples/samples/fridge/odFridgeObjects"
ICEVISION_COCO = DATA / "icevision_samples/samples"

needs_data = pytest.mark.skipif(not COCO128.is_dir(), reason="shared datasets not present")


def fmt(name: str):
    entry = formats.get(name)
    return entry() if isinstance(entry, type) else entry  # the registry may hold classes


def read(name: str, path: Path) -> tuple[list[ImageRecord], list[Problem]]:
    items = list(fmt(name).read(path))
    return ([i for i in items if isinstance(i, ImageRecord)],
            [i for i in items if isinstance(i, Problem)])


def by_stem(records: list[ImageRecord]) -> dict[str, ImageRecord]:
    return {r.image.stem: r for r in records}


# --- real data -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coco128() -> list[ImageRecord]:
    records, problems = read("coco", COCO128)
    assert problems == []
    return records


@needs_data
def test_coco128_counts(coco128: list[ImageRecord]) -> None:
    assert fmt("coco").detect(COCO128) and fmt("coco").detect(COCO128 / "annotations")
    assert len(coco128) == 128 and all(r.image.is_file() for r in coco128)
    assert coco128[0].name == "train2017/000000000009.jpg" and coco128[0].line is None
    instances = [i for r in coco128 for i in r.instances]
    assert len(instances) == 939
    crowd = [i for i in instances if i.is_crowd]
    assert len(crowd) == 10 and all(i.polygons for i in crowd)  # RLE decoded to polygons
    assert all(i.polygons for i in instances)
    empty = sorted(r.image.stem for r in coco128 if r.kind is None)
    assert empty == ["000000000250", "000000000508"]
    assert {r.kind for r in coco128 if r.instances} == {LabelKind.POLYGONS}
    labels = Counter(i.label for i in instances)
    assert len(labels) == 71 and labels["person"] == 259 and labels["car"] == 47


@needs_data
def test_coco128_box_normalised(coco128: list[ImageRecord]) -> None:
    raw = json.loads((COCO128 / "annotations/instances_train2017.json").read_text())
    ann = next(a for a in raw["annotations"] if a["image_id"] == 9)
    x, y, w, h = ann["bbox"]
    record = by_stem(coco128)["000000000009"]
    assert (record.width, record.height) == (640, 480)
    first = record.instances[0]
    assert (first.x0, first.y0, first.x1, first.y1) == pytest.approx(
        (x / 640, y / 480, (x + w) / 640, (y + h) / 480))
    assert first.polygons[0][:2] == pytest.approx(
        (ann["segmentation"][0][0] / 640, ann["segmentation"][0][1] / 480))


@needs_data
def test_icevision_coco_counts() -> None:
    assert fmt("coco").detect(ICEVISION_COCO / "annotations.json")
    records, problems = read("coco", ICEVISION_COCO / "annotations.json")
    assert problems == [] and len(records) == 6 and all(r.image.is_file() for r in records)
    instances = [i for r in records for i in r.instances]
    assert len(instances) == 36 and sum(i.is_crowd for i in instances) == 1
    assert all(i.polygons for i in instances)


@needs_data
def test_voc_fridge() -> None:
    assert fmt("voc").detect(FRIDGE_VOC) and not fmt("voc").detect(FRIDGE_VOC / "images")
    records, problems = read("voc", FRIDGE_VOC)
    assert problems == [] and len(records) == 6
    assert sum(len(r.instances) for r in records) == 12
    assert all(r.image.is_file() and r.kind is LabelKind.BOXES for r in records)
    ten = by_stem(records)["10"]
    assert (ten.name, ten.origin, ten.width, ten.height) == ("images/10.jpg",
                                                             "annotations/10.xml", 499, 666)
    carton = ten.instances[0]
    assert carton.label == "carton"
    assert (carton.x0, carton.y0, carton.x1, carton.y1) == pytest.approx(
        (86 / 499, 102 / 666, 216 / 499, 439 / 666))


@needs_data
def test_yolo_boxes_match_coco(coco128: list[ImageRecord]) -> None:
    root = YOLO128 / "object_detection"
    assert fmt("yolo").detect(root) and not fmt("coco").detect(root)
    records, problems = read("yolo", root)
    assert len(records) == 128 and all(r.image.is_file() for r in records)
    assert sorted(p.file for p in problems) == ["labels/train2017/000000000656.txt",
                                                "labels/train2017/000000000659.txt"]
    assert all(p.error == "label file has no image" for p in problems)
    assert sum(len(r.instances) for r in records) == 941 - 12  # the orphans' 3 + 9 lines
    empty = sorted(r.image.stem for r in records if r.kind is None)
    assert empty == ["000000000250", "000000000508"]
    coco = by_stem(coco128)
    for record in records:  # each YOLO box is a non-crowd COCO box of the same class
        boxes = [i for i in coco[record.image.stem].instances if not i.is_crowd]
        assert len(boxes) == len(record.instances)
        for inst in record.instances:
            assert min(max(abs(inst.x0 - b.x0), abs(inst.y0 - b.y0), abs(inst.x1 - b.x1),
                           abs(inst.y1 - b.y1)) for b in boxes if b.label == inst.label) < 1e-5


@needs_data
def test_yolo_seg_uses_coco_category_ids(coco128: list[ImageRecord]) -> None:
    # config.yaml's names map COCO category ids (1..90, gaps) to names, so ids resolve as-is;
    # it also sets skip_if_label_file_missing, so the 28 unlabelled images are left out.
    records, problems = read("yolo", YOLO128 / "instance_segmentation")
    assert problems == [] and len(records) == 100
    assert sum(len(r.instances) for r in records) == 746
    assert {r.kind for r in records if r.instances} == {LabelKind.POLYGONS}
    coco = by_stem(coco128)
    for record in records:
        in_coco = {i.label for i in coco[record.image.stem].instances}
        assert {i.label for i in record.instances} <= in_coco
    assert {i.label for i in by_stem(records)["000000000009"].instances} == {
        "bowl", "orange", "broccoli"}


# --- synthetic cases ------------------------------------------------------------------------

def blank_png(path: Path, size: tuple[int, int] = (100, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return path


def test_yolo_bad_lines_and_background(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\n"
                                        "names: [cat, dog]\n")
    for stem in ("a", "b", "c"):
        blank_png(tmp_path / f"images/train/{stem}.png")
    labels = tmp_path / "labels/train"
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n1 x 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\n")
    (labels / "b.txt").write_text("1 0.1 0.1 0.3 0.1 0.2 0.4\n")
    assert fmt("yolo").detect(tmp_path)
    records, problems = read("yolo", tmp_path)
    assert [(p.file, p.line) for p in problems] == [("labels/train/a.txt", n) for n in (2, 3, 4)]
    assert "class id 5" in problems[2].error
    stems = by_stem(records)
    assert sorted(stems) == ["b", "c"]  # a is skipped, c is a background image; each once
    assert stems["c"].kind is None and stems["b"].kind is LabelKind.POLYGONS
    b = stems["b"].instances[0]
    assert (b.label, b.x0, b.y0, b.x1, b.y1) == pytest.approx(("dog", 0.1, 0.1, 0.3, 0.4))


def coco_json(path: Path, annotations: list[dict]) -> Path:
    blank_png(path.parent / "images/a.png")
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
        "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]}))
    return path


def test_coco_unknown_category(tmp_path: Path) -> None:
    file = coco_json(tmp_path / "labels.json", [
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
        {"id": 8, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20]}])
    assert fmt("coco").detect(tmp_path)
    records, problems = read("coco", file)
    assert records == [] and len(problems) == 1
    assert "annotation id 8" in problems[0].error and "category_id 3" in problems[0].error


def test_coco_detect_refuses_other_json(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(json.dumps({"images": ["a.png"]}))
    (tmp_path / "list.json").write_text(json.dumps([{"images": 1, "annotations": 2}]))
    assert not fmt("coco").detect(tmp_path)
    assert not fmt("coco").detect(tmp_path / "other.json")


def test_coco_writer_round_trip(tmp_path: Path) -> None:
    blank_png(tmp_path / "images/a.png", (640, 427))
    blank_png(tmp_path / "images/b.png", (333, 500))
    square = (0.1, 0.2, 0.3, 0.2, 0.3, 0.4)
    a = ImageRecord(tmp_path / "images/a.png", "a.png", "x", None, LabelKind.POLYGONS, (), (
        Instance("dog", 0.123456789, 0.2, 0.3333333333, 0.4, (square,)),
        Instance("cat", 0.5, 0.51, 0.987654321, 0.99, (square,), is_crowd=True)), 640, 427)
    b = ImageRecord(tmp_path / "images/b.png", "b.png", "x", None, None, width=333, height=500)
    out = tmp_path / "out.json"
    write_coco([(a, "a.png"), (b, "b.png")], ["cat", "dog"], out)
    written = json.loads(out.read_text())
    assert [c["id"] for c in written["categories"]] == [1, 2]
    assert written["annotations"][0]["category_id"] == 2
    records, problems = read("coco", out)
    assert problems == [] and [r.name for r in records] == ["images/a.png", "images/b.png"]
    assert records[1].kind is None and records[0].kind is LabelKind.POLYGONS
    for got, want in zip(records[0].instances, a.instances, strict=True):
        assert got.label == want.label and got.is_crowd == want.is_crowd
        assert (got.x0, got.y0, got.x1, got.y1) == pytest.approx(
            (want.x0, want.y0, want.x1, want.y1), abs=1e-6)
        assert got.polygons[0] == pytest.approx(square, abs=1e-6)


VOC_XML = """<annotation><filename>a.png</filename>{size}
<object><name>cat</name><difficult>1</difficult>
<bndbox><xmin>10</xmin><ymin>8</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>
</annotation>"""


def test_voc_problems(tmp_path: Path) -> None:
    blank_png(tmp_path / "images/a.png")
    ann = tmp_path / "Annotations"
    ann.mkdir()
    (ann / "good.xml").write_text(VOC_XML.format(
        size="<size><width>100</width><height>80</height></size>"))
    (ann / "nosize.xml").write_text(VOC_XML.format(size=""))
    (ann / "broken.xml").write_text(
        "<annotation>\n<filename>a.png</filename>\n<object>\n</annotation>")
    (ann / "bomb.xml").write_text('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">]>\n'
                                  "<annotation><filename>&lol;</filename></annotation>")
    assert fmt("voc").detect(tmp_path) and fmt("voc").detect(ann / "bomb.xml")
    records, problems = read("voc", tmp_path)
    assert len(records) == 1 and records[0].image == (tmp_path / "images/a.png").resolve()
    box = records[0].instances[0]  # difficult objects are kept
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((0.1, 0.1, 0.5, 0.5))
    found = {p.file: p for p in problems}
    assert "DOCTYPE" in found["Annotations/bomb.xml"].error
    assert found["Annotations/bomb.xml"].line == 2
    assert "malformed XML" in found["Annotations/broken.xml"].error
    assert found["Annotations/broken.xml"].line == 4
    assert "<size>" in found["Annotations/nosize.xml"].fix


def test_masks_to_polygons(tmp_path: Path) -> None:
    blank_png(tmp_path / "images/scene.jpg", (200, 150))
    blank_png(tmp_path / "images/empty.png", (200, 150))
    mask = Image.new("L", (200, 150))
    draw = ImageDraw.Draw(mask)
    draw.rectangle((20, 30, 69, 79), fill=255)  # pixels 20..69 × 30..79
    draw.ellipse((110, 40, 169, 99), fill=255)
    (tmp_path / "masks/thing").mkdir(parents=True)
    mask.save(tmp_path / "masks/thing/scene.png")
    Image.new("L", (10, 10)).save(tmp_path / "masks/thing/empty.png")  # wrong size
    assert fmt("masks").detect(tmp_path)
    records, problems = read("masks", tmp_path)
    assert len(problems) == 1 and "mask is 10×10" in problems[0].error
    (record,) = records
    assert record.kind is LabelKind.POLYGONS and (record.width, record.height) == (200, 150)
    boxes = sorted((i.x0, i.y0, i.x1, i.y1) for i in record.instances)
    want = [(20 / 200, 30 / 150, 70 / 200, 80 / 150), (110 / 200, 40 / 150, 170 / 200, 100 / 150)]
    assert len(boxes) == 2
    for got, expected in zip(boxes, want, strict=True):
        assert got == pytest.approx(expected, abs=0.02)


def test_mask_to_polygons_drops_specks() -> None:
    mask = np.zeros((50, 50), bool)
    mask[10, 10] = True  # a single pixel: noise
    mask[20:40, 20:40] = True
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1 and len(polygons[0]) >= 6
