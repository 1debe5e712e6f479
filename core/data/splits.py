"""The validation split: stratified by class, seeded, so the same data always splits the same."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence

from core.data.records import LabelledImage


def _labels(item: LabelledImage) -> list[str]:
    return list(item.tags) or [i.label for i in item.instances]


def assign_splits(items: Sequence[LabelledImage], fraction: float, seed: int = 0) -> None:
    """Mark round(fraction × n) images as validation, in proportion to each stratum.

    An image's stratum is its rarest label, so rare classes reach the validation set too.
    """
    for item in items:
        item.split = "train"
    if fraction <= 0 or len(items) < 2:
        return
    frequency = Counter(label for item in items for label in set(_labels(item)))
    strata: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in items:
        labels = _labels(item)
        strata[min(labels, key=lambda lab: (frequency[lab], lab)) if labels else ""].append(item)
    target = min(max(1, round(fraction * len(items))), len(items) - 1)
    # Largest-remainder apportionment of the target over the strata.
    quotas = {key: fraction * len(group) for key, group in strata.items()}
    counts = {key: int(q) for key, q in quotas.items()}
    by_remainder = sorted(strata, key=lambda k: (-(quotas[k] - counts[k]), k))
    for key in by_remainder[: max(0, target - sum(counts.values()))]:
        counts[key] += 1
    rng = random.Random(seed)
    for key in sorted(strata):
        group = list(strata[key])
        rng.shuffle(group)
        for item in group[: counts[key]]:
            item.split = "validation"
