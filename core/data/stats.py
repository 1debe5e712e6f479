"""Statistics of a dataset version, stored with it and drawn by the Datasets page."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from core.data.records import LabelledImage

MAX_BOX_SAMPLES = 2000  # enough for a scatter plot; keeps the stored JSON small


def compute_stats(items: Sequence[LabelledImage]) -> dict[str, Any]:
    images_per_class: Counter[str] = Counter()
    instances_per_class: Counter[str] = Counter()
    boxes_per_image: Counter[int] = Counter()
    widths: list[float] = []
    heights: list[float] = []
    for item in items:
        images_per_class.update(set(item.tags) | {i.label for i in item.instances})
        instances_per_class.update(i.label for i in item.instances)
        boxes_per_image[len(item.instances)] += 1
        widths.extend(i.x1 - i.x0 for i in item.instances)
        heights.extend(i.y1 - i.y0 for i in item.instances)
    step = max(1, len(widths) // MAX_BOX_SAMPLES)
    return {
        "images_per_class": dict(sorted(images_per_class.items())),
        "instances_per_class": dict(sorted(instances_per_class.items())),
        "boxes_per_image": {str(k): v for k, v in sorted(boxes_per_image.items())},
        "box_sizes": {"width": [round(w, 5) for w in widths[::step]],
                      "height": [round(h, 5) for h in heights[::step]]},
        "image_sizes": dict(Counter(f"{i.width}x{i.height}" for i in items).most_common()),
        "splits": dict(Counter(i.split for i in items)),
    }
