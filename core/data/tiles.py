"""Tiles for small objects (SPEC §7 ``tile_grid_size``): each image cut into a grid of overlapping windows,
each window then resized to the model's input size, so objects grow by about the grid's count.

The same windows serve training (an image and its tiles are all training images), validation and
prediction (detections on the image and on its tiles, merged: `core.zoo.tiling`), for both detector
families. Torch-free: YOLO's dataset writer and the torchvision datasets both use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.data.records import Instance

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
# A box cut by a tile's edge stays in that tile when at least this much of its area shows (SAHI keeps a
# tenth; a quarter keeps slivers the model could not tell apart from background out of the targets).
MIN_VISIBLE = 0.25


def tile_windows(width: int, height: int, grid: tuple[int, int], overlap: float) -> list[Window]:
    """Pixel windows of a ``grid`` = (columns, rows) of tiles covering the image, neighbours overlapping
    by ``overlap`` of a tile's side."""
    def spans(size: int, count: int) -> list[tuple[int, int]]:
        tile = size / (count - (count - 1) * overlap)
        step = tile * (1 - overlap)
        return [(round(k * step), min(size, round(k * step + tile))) for k in range(count)]

    return [(x0, y0, x1, y1) for y0, y1 in spans(height, grid[1]) for x0, x1 in spans(width, grid[0])
            if x1 > x0 and y1 > y0]


def image_and_tiles(width: int, height: int, grid: tuple[int, int] | None, overlap: float) -> list[Window]:
    """The whole image's window first, then its tiles (none without a grid)."""
    return [(0, 0, width, height), *(tile_windows(width, height, grid, overlap) if grid else [])]


def source_side(max_size: int, grid: tuple[int, int] | None) -> int:
    """The longest side to keep an image at, so that a tile still has about ``max_size`` pixels across."""
    return max_size * max(grid) if grid else max_size


def clip(instance: Instance, window: Window, width: int, height: int) -> Instance | None:
    """``instance`` (coordinates relative to the whole image) as seen in ``window``, relative to the
    window; None when less than :data:`MIN_VISIBLE` of its box shows. Polygon points outside the window
    are moved onto its edge, as ultralytics clips segments."""
    x0, y0, x1, y1 = window
    left, top = max(instance.x0 * width, x0), max(instance.y0 * height, y0)
    right, bottom = min(instance.x1 * width, x1), min(instance.y1 * height, y1)
    area = (instance.x1 - instance.x0) * width * (instance.y1 - instance.y0) * height
    if right <= left or bottom <= top or (right - left) * (bottom - top) < MIN_VISIBLE * area:
        return None
    w, h = x1 - x0, y1 - y0

    def inside(polygon: Sequence[float]) -> tuple[float, ...]:
        xs = (min(max((v * width - x0) / w, 0.0), 1.0) for v in polygon[0::2])
        ys = (min(max((v * height - y0) / h, 0.0), 1.0) for v in polygon[1::2])
        return tuple(v for point in zip(xs, ys, strict=True) for v in point)

    return Instance(instance.label, (left - x0) / w, (top - y0) / h, (right - x0) / w, (bottom - y0) / h,
                    tuple(inside(p) for p in instance.polygons), instance.is_crowd)
