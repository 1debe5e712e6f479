"""What an endpoint keeps of what it scores, for the active-learning loop: every image's confidence (the
endpoint page compares deployments by it) and, where the endpoint asks for it, the images scored below a
confidence threshold, queued with the model's answer as editable pre-labels for the Labelling page.

Confidence is how sure the answer is: a classifier's top probability; for multi-label, its least certain
label (the probability of whichever side of 0.5 it chose); a detector's best box score, 0 when it found
nothing. The recording runs on a thread of its own, after the answer is sent: a request never waits for it.
Torch-free.
"""

from __future__ import annotations

import io
import logging
import queue
import statistics
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy import Engine

from core.base.tasks import Task
from core.data.relabel import polygon_extent
from storage.artifacts import BlobStore
from storage.db import session_scope
from storage.repos import reviews

log = logging.getLogger(__name__)
# Boxes scored below this are left out of the pre-labels (the person draws what was missed); a queued image's
# best box is often below it, so the cut is half the best score where that is lower.
PRELABEL_SCORE = 0.25
MAX_PRELABELS = 20
LOW = 0.5  # `summary` counts the images a deployment answered with less confidence than this


@dataclass(frozen=True)
class Policy:
    """An endpoint's review settings: images scored below ``threshold`` are queued while fewer than
    ``quota`` wait."""

    threshold: float
    quota: int

    @classmethod
    def of(cls, review: Mapping[str, Any] | None) -> Policy | None:
        return cls(float(review["threshold"]), int(review["quota"])) if review else None


def confidence(answer: Mapping[str, Any], task: Task) -> float:
    if "probs" in answer:
        probs = [float(p) for p in answer["probs"]]
        if task is Task.MULTILABEL:
            return min((max(p, 1 - p) for p in probs), default=0.0)
        return max(probs, default=0.0)
    return max((float(b["score"]) for b in answer.get("boxes", [])), default=0.0)


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """A deployment's confidences on its recent requests, as the endpoint page and `endpoint show` give them."""
    ordered = sorted(values)
    return {"images": len(ordered), "mean": round(statistics.fmean(ordered), 4) if ordered else 0.0,
            "median": round(statistics.median(ordered), 4) if ordered else 0.0,
            "low": round(sum(v < LOW for v in ordered) / len(ordered), 4) if ordered else 0.0}


def prelabels(answer: Mapping[str, Any], task: Task) -> list[dict[str, Any]]:
    """The answer as labels the studio edits (`core.data.relabel.EditedLabel.as_json`)."""
    if "probs" in answer:
        pairs = sorted(zip(answer["probs"], answer["labels"], strict=True), reverse=True)
        chosen = [label for p, label in pairs if p >= 0.5] if task is Task.MULTILABEL else [pairs[0][1]]
        return [{"label": label, "box": None, "polygons": []} for label in chosen]
    boxes = sorted(answer.get("boxes", []), key=lambda b: -float(b["score"]))
    cut = min(PRELABEL_SCORE, float(boxes[0]["score"]) / 2) if boxes else 0.0
    out: list[dict[str, Any]] = []
    for found in boxes[:MAX_PRELABELS]:
        if float(found["score"]) < cut:
            continue
        box = found["box"]
        corners = [box["topX"], box["topY"], box["bottomX"], box["bottomY"]]
        polygons = [list(p) for p in found.get("polygon") or () if len(p) >= 6]
        if task is Task.SEGMENTATION and polygons:  # one label per polygon, as the canvas edits them
            out += [{"label": found["label"], "box": list(polygon_extent([p])), "polygons": [p]} for p in polygons]
        else:
            out.append({"label": found["label"], "box": corners, "polygons": []})
    return out


@dataclass
class _Scored:
    deployment: str
    model_version_id: int | None
    task: Task
    images: list[Image.Image]
    answers: list[dict[str, Any]]
    policy: Policy | None


class Recorder:
    """Records scored images on a thread of its own (database writes and PNG encoding stay off the
    request's path); a failure is logged and the endpoint goes on scoring."""

    def __init__(self, engine: Engine, endpoint_id: int, blobs: BlobStore) -> None:
        self.engine, self.endpoint_id, self.blobs = engine, endpoint_id, blobs
        self.waiting: queue.SimpleQueue[_Scored | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="review-recorder", daemon=True)
        self.thread.start()

    def record(self, deployment: str, model_version_id: int | None, task: Task, images: Sequence[Image.Image],
               answers: Sequence[dict[str, Any]], policy: Policy | None) -> None:
        self.waiting.put(_Scored(deployment, model_version_id, task, list(images), list(answers), policy))

    def close(self) -> None:
        self.waiting.put(None)
        self.thread.join(timeout=10)

    def _serve(self) -> None:
        while (scored := self.waiting.get()) is not None:
            try:
                self._record(scored)
            except Exception:  # noqa: BLE001 — recording must never stop the endpoint
                log.exception("recording scored images of deployment %s failed", scored.deployment)

    def _record(self, scored: _Scored) -> None:
        sure = [confidence(answer, scored.task) for answer in scored.answers]
        policy = scored.policy
        with session_scope(self.engine) as session:
            reviews.record_scores(session=session, endpoint_id=self.endpoint_id, deployment=scored.deployment,
                                  confidences=sure)
            low = sorted((k for k, c in enumerate(sure) if policy and c < policy.threshold), key=sure.__getitem__)
            if not low or policy is None:
                return
            room = policy.quota - reviews.pending_count(session=session, endpoint_id=self.endpoint_id)
            for k in low[:max(0, room)]:  # the least sure first, while the queue has room
                sha256, _ = self.blobs.put(_png(scored.images[k]))
                reviews.add(session=session, endpoint_id=self.endpoint_id, deployment=scored.deployment,
                            model_version_id=scored.model_version_id, sha256=sha256, size=scored.images[k].size,
                            confidence=sure[k], prelabels=prelabels(scored.answers[k], scored.task))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
