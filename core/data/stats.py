"""Statistics of a dataset version, stored with it and drawn by the Datasets page."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from core.data.balance import IMBALANCE_RATIO, imbalance_ratio
from core.data.records import LabelledImage

MIN_IMAGES_PER_CLASS = 10
NAMED_SMALL_CLASSES = 12

MAX_BOX_SAMPLES = 2000  # enough for a scatter plot; keeps the stored JSON small


def compute_stats(items: Sequence[LabelledImage]) -> dict[str, Any]:
    images_per_class: Counter[str] = Counter()
    instances_per_class: Counter[str] = Counter()
    boxes_per_image: Counter[int] = Counter()
    widths: list[float] = []
    heights: list[float] = []
    labels: list[str] = []
    for item in items:
        images_per_class.update(set(item.tags) | {i.label for i in item.instances})
        instances_per_class.update(i.label for i in item.instances)
        boxes_per_image[len(item.instances)] += 1
        widths.extend(i.x1 - i.x0 for i in item.instances)
        heights.extend(i.y1 - i.y0 for i in item.instances)
        labels.extend(i.label for i in item.instances)
    step = max(1, len(widths) // MAX_BOX_SAMPLES)
    return {
        "images_per_class": dict(sorted(images_per_class.items())),
        "imbalance_ratio": round(imbalance_ratio(images_per_class), 2),
        "instances_per_class": dict(sorted(instances_per_class.items())),
        "boxes_per_image": {str(k): v for k, v in sorted(boxes_per_image.items())},
        "box_sizes": {"width": [round(w, 5) for w in widths[::step]],
                      "height": [round(h, 5) for h in heights[::step]], "label": labels[::step]},
        "image_sizes": dict(Counter(f"{i.width}x{i.height}" for i in items).most_common()),
        "splits": dict(Counter(i.split for i in items)),
    }


def version_warnings(images: int, per_class: Mapping[str, int]) -> list[str]:
    """The importer's warnings: too few images overall or per class, and imbalance."""
    warnings = []
    if images < MIN_IMAGES_PER_CLASS:
        warnings.append(f"only {images} images: a job needs at least {MIN_IMAGES_PER_CLASS}")
    counts = Counter(per_class)
    small = sorted((n, label) for label, n in counts.items() if n < MIN_IMAGES_PER_CLASS)
    if len(small) == 1:
        warnings.append(f"class {small[0][1]!r} has only {_images(small[0][0])}; 10–15 per class are recommended")
    elif small:  # one warning for them all: a list of seventy would bury everything else
        named = ", ".join(f"{label!r} {n}" for n, label in small[:NAMED_SMALL_CLASSES])
        more = f" and {len(small) - NAMED_SMALL_CLASSES} more" if len(small) > NAMED_SMALL_CLASSES else ""
        warnings.append(f"{len(small)} classes have fewer than {MIN_IMAGES_PER_CLASS} images ({named}{more}, "
                        "fewest first); 10–15 per class are recommended")
    if imbalance_ratio(counts) >= IMBALANCE_RATIO:
        (big, nb), (rare, ns) = counts.most_common()[0], counts.most_common()[-1]
        warnings.append(f"classes are imbalanced: {big!r} has {_images(nb)}, {rare!r} only {_images(ns)} "
                        f"({nb / ns:.0f}:1); trials compensate (a class-weighted loss for classifiers, repeat-factor "
                        "sampling for detectors) unless the job sets weighted_loss: 0 or repeat_factor_sampling: "
                        "false; images of the small classes help most")
    return warnings


def _images(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"
