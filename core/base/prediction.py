"""One prediction shape for every task, serialised to the SPEC §8 response schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    x0: float  # normalised xyxy
    y0: float
    x1: float
    y1: float
    polygons: tuple[tuple[float, ...], ...] = ()  # normalised flat polygons (segmentation)


@dataclass
class Prediction:
    filename: str = ""
    labels: list[str] = field(default_factory=list)  # classification: class names in `probs` order
    probs: list[float] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)

    def to_json(self, *, with_polygons: bool = False) -> dict[str, Any]:
        if self.probs:
            return {"filename": self.filename, "probs": self.probs, "labels": self.labels}
        boxes = []
        for d in self.detections:
            item: dict[str, Any] = {
                "box": {"topX": d.x0, "topY": d.y0, "bottomX": d.x1, "bottomY": d.y1},
                "label": d.label, "score": d.score,
            }
            if with_polygons:
                item["polygon"] = [list(p) for p in d.polygons]
            boxes.append(item)
        return {"filename": self.filename, "boxes": boxes}
