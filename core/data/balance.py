"""Class imbalance: how uneven a dataset's classes are, and repeat-factor sampling (LVIS; Gupta et al., 2019),
the detectors' remedy that the recipe turns on when the ratio is high (`core.train.recipe`; classifiers get a
class-weighted loss instead). Torch-free: the importer and the wizard use the ratio too."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

IMBALANCE_RATIO = 5.0  # most images of one class over fewest of another: from here on, training compensates


def imbalance_ratio(per_class: Mapping[str, int]) -> float:
    """The largest class's count over the smallest's (1.0 with fewer than two classes)."""
    counts = [n for n in per_class.values() if n > 0]
    return max(counts) / min(counts) if len(counts) > 1 else 1.0


def images_per_class(items: Iterable[Any]) -> dict[str, int]:
    """How many images show each class (an image's tags and its instances' labels)."""
    counts: Counter[str] = Counter()
    for item in items:
        counts.update(set(item.tags) | {i.label for i in item.instances})
    return dict(counts)


def repeat_factors(items: Sequence[Any], ratio: float = IMBALANCE_RATIO) -> list[float]:
    """Each image's repeat factor. A class in a fraction f of the images has r = max(1, sqrt(t / f)), where t is
    the most frequent class's fraction over ``ratio`` (LVIS fixes t at 0.001 for its 1,203 classes; a small
    set needs it relative), so classes within ``ratio`` of the largest are not repeated; an image repeats as
    often as its rarest class asks."""
    frequency = {c: n / max(1, len(items)) for c, n in images_per_class(items).items()}
    if not frequency:
        return [1.0] * len(items)
    threshold = max(frequency.values()) / ratio
    per_class = {c: max(1.0, math.sqrt(threshold / f)) for c, f in frequency.items()}
    return [max((per_class[i.label] for i in item.instances), default=1.0) for item in items]


def repeats(factors: Sequence[float], seed: int) -> list[int]:
    """Whole copies per image: the factor's integer part, plus one more with the chance of its fraction."""
    rng = random.Random(seed)
    return [int(r) + (rng.random() < r - int(r)) for r in factors]
