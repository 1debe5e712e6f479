"""Binary masks to polygons: shared by the mask-folder reader and COCO's RLE segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from core.data.records import Polygon

# Douglas-Peucker tolerance as a fraction of each contour's perimeter: small enough to keep
# the shape (well under a pixel's worth of box error on typical objects), large enough to
# turn a staircase of pixel corners into a handful of points.
EPSILON_FRACTION = 0.004
MIN_AREA_PX = 4.0  # specks of a few pixels are noise from painting or RLE edges, not objects


def mask_to_polygons(mask: np.ndarray, min_area: float = MIN_AREA_PX) -> list[Polygon]:
    """One normalised flat polygon (x1, y1, x2, y2, ...) per external contour of ``mask``.

    Holes are ignored: a polygon list describes outer outlines only. Components with fewer
    than 3 points after simplification or an area below ``min_area`` pixels are dropped.
    """
    height, width = mask.shape[:2]
    if height == 0 or width == 0:
        return []
    binary = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[Polygon] = []
    for contour in contours:
        if cv2.contourArea(contour) < min_area:
            continue
        epsilon = EPSILON_FRACTION * cv2.arcLength(contour, True)
        points = cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2)
        if len(points) < 3:
            continue
        polygons.append(tuple(
            float(v) for x, y in points for v in (x / width, y / height)
        ))
    return polygons


def polygon_extent(polygons: Sequence[Polygon]) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) around every point of ``polygons``."""
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    return min(xs), min(ys), max(xs), max(ys)


def limit_points(polygon: Sequence[float], max_points: int) -> tuple[float, ...]:
    """A normalised flat polygon simplified to at most ``max_points`` points (() if degenerate)."""
    outline = contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    epsilon = 0.001  # of the image side, grown until the polygon is short enough
    while len(contour) > max_points:
        contour = cv2.approxPolyDP(outline, epsilon, True)
        epsilon *= 1.5
    flat = tuple(round(min(max(float(v), 0.0), 1.0), 6) for v in contour.reshape(-1))
    return flat if len(flat) >= 6 else ()
