"""Tiling for small objects (SPEC §7 ``tile_grid_size``), the same in training, validation and serving
for both detector families: the windows, a box as one tile sees it, the torchvision training draws, the
YOLO folder's tiles, and detections on tiles merged back into one answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from core.base.prediction import Detection, Prediction
from core.base.tasks import Task
from core.data.detection_loaders import DetectionImages
from core.data.records import Instance
from core.data.tiles import clip, image_and_tiles, source_side, tile_windows
from core.data.view import Item, VersionData
from core.zoo.tiling import detect_tiled, merge_predictions
from core.zoo.yolo_dataset import write_yolo_dataset


def test_tiles_cover_the_image_with_the_asked_overlap() -> None:
    windows = tile_windows(300, 100, (3, 2), 0.25)
    assert len(windows) == 6
    assert {w[0] for w in windows} == {0, 90, 180} and {w[2] for w in windows} == {120, 210, 300}
    assert {(w[1], w[3]) for w in windows} == {(0, 57), (43, 100)}


def _coordinate_image(width: int, height: int) -> torch.Tensor:
    """Channel 0 holds x, channel 1 y: a crop knows where it came from."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs, ys, torch.zeros_like(xs)]).to(torch.uint8)


def test_tiled_detection_maps_tiles_back_and_merges_duplicates() -> None:
    # Global objects (x0, y0, x1, y1, label, score, small): the small one only a tile finds.
    scene = [(20, 20, 60, 60, 1, 0.9, False), (150, 30, 190, 70, 2, 0.8, False),
             (200, 120, 206, 126, 1, 0.7, True)]

    def detect(crops: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for crop in crops:
            x0, y0 = int(crop[0, 0, 0]), int(crop[1, 0, 0])
            h, w = crop.shape[-2:]
            tile = (w, h) != (240, 160)
            found = [(a - x0, b - y0, c - x0, d - y0, label, score) for a, b, c, d, label, score, small
                     in scene if x0 <= a and c <= x0 + w and y0 <= b and d <= y0 + h and (tile or not small)]
            masks = torch.zeros(len(found), 1, h, w)
            for k, (a, b, c, d, *_) in enumerate(found):
                masks[k, 0, b:d, a:c] = 1
            outputs.append({"boxes": torch.tensor([f[:4] for f in found], dtype=torch.float32).reshape(-1, 4),
                            "labels": torch.tensor([f[4] for f in found], dtype=torch.int64),
                            "scores": torch.tensor([f[5] for f in found]), "masks": masks})
        return outputs

    merged = detect_tiled(detect, _coordinate_image(240, 160), (2, 2), 0.25, 0.25, 100)
    assert sorted(map(tuple, merged["boxes"].int().tolist())) == sorted(s[:4] for s in scene)
    assert sorted(merged["labels"].tolist()) == [1, 1, 2]
    assert merged["masks"].shape == (3, 1, 160, 240)
    for box, mask in zip(merged["boxes"].int().tolist(), merged["masks"], strict=True):
        assert mask.sum() == (box[2] - box[0]) * (box[3] - box[1]) and mask[0, box[1], box[0]] == 1
    assert len(detect_tiled(detect, _coordinate_image(240, 160), (2, 2), 0.25, 0.25, 2)["boxes"]) == 2


def test_the_whole_image_comes_first_and_the_source_keeps_a_tiles_worth_of_pixels() -> None:
    assert image_and_tiles(300, 100, None, 0.25) == [(0, 0, 300, 100)]
    assert image_and_tiles(300, 100, (3, 2), 0.25)[1:] == tile_windows(300, 100, (3, 2), 0.25)
    assert source_side(640, None) == 640 and source_side(640, (3, 2)) == 1920


def test_a_box_is_seen_by_the_tiles_it_shows_in_and_cut_at_their_edges() -> None:
    # 200 x 100 image; a box from x 80..120, y 10..30 straddles the left tile's edge at 100.
    box = Instance("a", 0.4, 0.1, 0.6, 0.3, polygons=((0.4, 0.1, 0.6, 0.1, 0.6, 0.3),))
    left = clip(box, (0, 0, 100, 100), 200, 100)
    assert left is not None and left.label == "a"
    assert (left.x0, left.y0, left.x1, left.y1) == pytest.approx((0.8, 0.1, 1.0, 0.3))
    assert left.polygons[0] == pytest.approx((0.8, 0.1, 1.0, 0.1, 1.0, 0.3))  # the far point moved to the edge
    assert clip(box, (0, 50, 100, 100), 200, 100) is None  # not in this tile at all
    sliver = Instance("a", 0.05, 0.1, 0.6, 0.3)  # 10..120 px: only 20 of 110 px in the right tile
    assert clip(sliver, (100, 0, 200, 100), 200, 100) is None


def _coloured(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (40, 90, 160)).save(path)
    return path


def test_torchvision_training_draws_each_image_and_each_of_its_tiles(tmp_path: Path) -> None:
    small = Instance("a", 0.05, 0.05, 0.15, 0.15)  # top left: in the whole image and the first tile only
    item = Item(_coloured(tmp_path / "x.png", (400, 200)), "x.png", 400, 200, (), (small,))
    whole = DetectionImages([item], ["a"], 100, masks=True)
    tiled = DetectionImages([item], ["a"], 100, masks=True, grid=(2, 2), overlap=0.25)
    assert len(whole) == 1 and len(tiled) == 5 and tiled.sources == [0] * 5
    assert whole[0][0].shape == (3, 50, 100)
    assert tiled[0][0].shape == (3, 100, 200)  # decoded at a tile's worth: twice the side
    image, target = tiled[1]
    assert image.shape == (3, 57, 114)
    assert target["boxes"].tolist() == [pytest.approx([10.0, 5.0, 30.0, 15.0])] and target["labels"].tolist() == [1]
    assert target["masks"].shape == (1, 57, 114) and target["masks"].sum() == pytest.approx(200, abs=40)
    for draw in (2, 3, 4):
        assert tiled[draw][1]["boxes"].shape == (0, 4) and tiled[draw][1]["masks"].shape[0] == 0


def test_the_yolo_folder_holds_each_image_and_its_tiles_in_both_splits(tmp_path: Path) -> None:
    small = Instance("a", 0.05, 0.05, 0.15, 0.15)
    item = Item(_coloured(tmp_path / "x.png", (400, 200)), "x.png", 400, 200, (), (small,))
    data = VersionData("d", 1, Task.DETECTION, ["a"], [item], [item])
    write_yolo_dataset(data, tmp_path / "yolo", [], grid=(2, 2), overlap=0.25)
    for split in ("train", "val"):
        images = sorted(p.name for p in (tmp_path / "yolo" / "images" / split).iterdir())
        assert images == ["000000-t0.jpg", "000000-t1.jpg", "000000-t2.jpg", "000000-t3.jpg", "000000.png"]
    labels = tmp_path / "yolo" / "labels" / "train"
    assert Image.open(tmp_path / "yolo" / "images" / "train" / "000000-t0.jpg").size == (229, 114)
    first = (labels / "000000-t0.txt").read_text().split()
    assert first[0] == "0" and [float(v) for v in first[1:]] == pytest.approx([0.175, 0.175, 0.175, 0.175], abs=0.01)
    assert (labels / "000000-t3.txt").read_text() == ""  # nothing in the bottom right: a background tile


def test_yolo_predictions_on_tiles_move_into_the_image_and_duplicates_merge() -> None:
    windows = image_and_tiles(200, 100, (2, 1), 0.0)  # whole, left half, right half
    whole = Prediction(detections=[Detection("a", 0.9, 0.1, 0.1, 0.3, 0.3)])
    left = Prediction(detections=[Detection("a", 0.8, 0.2, 0.1, 0.6, 0.3),  # the same object as whole's
                                  Detection("b", 0.5, 0.5, 0.5, 0.6, 0.6,
                                            polygons=((0.5, 0.5, 0.6, 0.5, 0.6, 0.6),))])
    right = Prediction(detections=[Detection("a", 0.7, 0.0, 0.0, 0.2, 0.2)])  # only a tile finds it
    merged = merge_predictions([whole, left, right], windows, 200, 100, 0.5, 100)
    found = sorted((d.label, d.score, round(d.x0, 3), round(d.y0, 3), round(d.x1, 3), round(d.y1, 3))
                   for d in merged.detections)
    assert found == [("a", 0.7, 0.5, 0.0, 0.6, 0.2), ("a", 0.9, 0.1, 0.1, 0.3, 0.3),
                     ("b", 0.5, 0.25, 0.5, 0.3, 0.6)]
    b = next(d for d in merged.detections if d.label == "b")
    assert b.polygons[0] == pytest.approx((0.25, 0.5, 0.3, 0.5, 0.3, 0.6))
    assert len(merge_predictions([whole, left, right], windows, 200, 100, 0.5, 2).detections) == 2
    assert merge_predictions([Prediction(), Prediction(), Prediction()], windows, 200, 100, 0.5, 9).detections == []
