"""The review queue (images an endpoint scored with low confidence, waiting for a person's labels) and the
confidence of every scored image, per deployment, that the endpoint page compares."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlmodel import Session, col, delete, func, select

from storage.tables import Endpoint, ReviewItem, ScoreRecord

PENDING, ADDED, DISMISSED = "pending", "added", "dismissed"
KEEP_SCORES = 5000  # confidences kept per endpoint: the newest; enough for the comparison, bounded on disk


def add(*, session: Session, endpoint_id: int, deployment: str, model_version_id: int | None, sha256: str,
        size: tuple[int, int], confidence: float, prelabels: list[dict[str, Any]]) -> bool:
    """Queue an image for review unless it waits there already; whether it was queued. The caller keeps the
    queue within its quota (`pending_count`)."""
    if session.exec(select(ReviewItem.id).where(ReviewItem.endpoint_id == endpoint_id, ReviewItem.status == PENDING,
                                                ReviewItem.sha256 == sha256)).first() is not None:
        return False
    session.add(ReviewItem(endpoint_id=endpoint_id, deployment=deployment, model_version_id=model_version_id,
                           sha256=sha256, width=size[0], height=size[1], confidence=confidence,
                           prelabels=prelabels))
    return True


def pending_count(*, session: Session, endpoint_id: int) -> int:
    return int(session.exec(select(func.count(col(ReviewItem.id))).where(ReviewItem.endpoint_id == endpoint_id,
                                                                        ReviewItem.status == PENDING)).one())


def pending(*, session: Session, endpoint_id: int) -> list[ReviewItem]:
    """The queue, least confident first."""
    return list(session.exec(select(ReviewItem).where(ReviewItem.endpoint_id == endpoint_id,
                                                      ReviewItem.status == PENDING)
                             .order_by(col(ReviewItem.confidence), col(ReviewItem.id))).all())


def pending_counts(*, session: Session) -> dict[str, int]:
    """Endpoint name -> images waiting for review, for endpoints with any."""
    rows = session.exec(select(Endpoint.name, func.count(col(ReviewItem.id)))
                        .join(ReviewItem, col(ReviewItem.endpoint_id) == col(Endpoint.id))
                        .where(ReviewItem.status == PENDING).group_by(col(Endpoint.name))).all()
    return {name: int(count) for name, count in rows}


def settle(*, session: Session, ids: Iterable[int], status: str, version_id: int | None = None) -> None:
    """Mark queued images as added to dataset version ``version_id``, or dismissed."""
    for row in session.exec(select(ReviewItem).where(col(ReviewItem.id).in_(list(ids)))).all():
        row.status, row.dataset_version_id = status, version_id
        session.add(row)


def record_scores(*, session: Session, endpoint_id: int, deployment: str, confidences: Sequence[float]) -> None:
    """Keep the confidence of each image a deployment scored; past KEEP_SCORES per endpoint, the oldest go."""
    session.add_all(ScoreRecord(endpoint_id=endpoint_id, deployment=deployment, confidence=c) for c in confidences)
    session.flush()
    cut = session.exec(select(ScoreRecord.id).where(ScoreRecord.endpoint_id == endpoint_id)
                       .order_by(col(ScoreRecord.id).desc()).offset(KEEP_SCORES).limit(1)).first()
    if cut is not None:
        session.exec(delete(ScoreRecord).where(col(ScoreRecord.endpoint_id) == endpoint_id,
                                               col(ScoreRecord.id) <= cut))


def confidences(*, session: Session, endpoint_id: int, last: int = 1000) -> dict[str, list[float]]:
    """Deployment -> the confidences of its newest scored images (of the endpoint's ``last``), oldest first."""
    rows = session.exec(select(ScoreRecord.deployment, ScoreRecord.confidence)
                        .where(ScoreRecord.endpoint_id == endpoint_id)
                        .order_by(col(ScoreRecord.id).desc()).limit(last)).all()
    out: dict[str, list[float]] = defaultdict(list)
    for deployment, confidence in reversed(rows):
        out[deployment].append(confidence)
    return dict(out)


def blobs(*, session: Session) -> set[str]:
    """The blobs queued images hold (kept by the blob sweep while they are pending)."""
    return set(session.exec(select(ReviewItem.sha256).where(ReviewItem.status == PENDING)).all())


def forget_endpoint(*, session: Session, endpoint_id: int) -> None:
    """An endpoint being deleted: its queue and its confidences go with it."""
    session.exec(delete(ReviewItem).where(col(ReviewItem.endpoint_id) == endpoint_id))
    session.exec(delete(ScoreRecord).where(col(ScoreRecord.endpoint_id) == endpoint_id))
