"""All SQLModel tables. Large files live under KESTREL_HOME and are referenced by path or hash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(default: Any = None) -> Any:
    return Field(default_factory=lambda: default() if callable(default) else default, sa_column=Column(JSON))


class Dataset(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class Datastore(SQLModel, table=True):
    """A local folder standing for a datastore of the reference: ``azureml://…/datastores/NAME/paths/P``
    in annotation files resolves to ``path / P``."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    path: str
    created_at: datetime = Field(default_factory=utcnow)


class DatasetVersion(SQLModel, table=True):
    """An immutable snapshot of a dataset: its images, labels, split and statistics."""

    __table_args__ = (UniqueConstraint("dataset_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True)
    version: int
    task: str
    format: str
    source: str
    classes: list[str] = _json(list)
    stats: dict[str, Any] = _json(dict)
    warnings: list[str] = _json(list)
    validation_fraction: float = 0.2
    image_count: int = 0
    annotation_count: int = 0
    validation_count: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class ImageItem(SQLModel, table=True):
    """One image of a dataset version; its bytes are the blob named by ``sha256``."""

    __table_args__ = (Index("ix_imageitem_version_position", "version_id", "position"),)
    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="datasetversion.id")
    position: int
    sha256: str = Field(index=True)
    file_name: str
    suffix: str
    width: int
    height: int
    split: str = "train"


class Annotation(SQLModel, table=True):
    """A class tag (no box) or an instance: a normalised xyxy box with an optional polygon."""

    id: int | None = Field(default=None, primary_key=True)
    image_id: int = Field(foreign_key="imageitem.id", index=True)
    label: str
    x0: float | None = None
    y0: float | None = None
    x1: float | None = None
    y1: float | None = None
    polygon: list[list[float]] | None = Field(default=None, sa_column=Column(JSON))
    is_crowd: bool = False


class ImportProblem(SQLModel, table=True):
    """An item that was not imported, with where it was and what to do about it."""

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="datasetversion.id", index=True)
    file: str
    line: int | None = None
    error: str
    fix: str = ""


class Job(SQLModel, table=True):
    """Long work queued for the worker: an import, an AutoML job, a batch scoring, an export."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = "automl"
    name: str = ""
    status: str = Field(default="queued", index=True)
    spec: dict[str, Any] = _json(dict)
    progress: float = 0.0
    message: str = ""
    error: str = ""
    cancel_requested: bool = False
    worker_id: str | None = None
    best_trial_id: int | None = None
    # Worker deaths while running this job with no progress in between (a poison job fails at a limit).
    crashes: int = 0
    crash_progress: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Trial(SQLModel, table=True):
    """One child run of a job: one configuration trained and evaluated."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    number: int = 0
    status: str = "queued"
    model_name: str = ""
    params: dict[str, Any] = _json(dict)
    metrics: dict[str, Any] = _json(dict)
    primary_metric: str = ""
    primary_metric_value: float | None = None
    device: str = ""
    epoch: int = 0  # of the last evaluation
    epoch_progress: float = 0.0  # epochs trained, fractional within the running one
    stop_reason: str = ""
    error: str = ""
    artifact_dir: str = ""
    pid: int | None = None
    heartbeat_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class MetricPoint(SQLModel, table=True):
    __table_args__ = (Index("ix_metricpoint_trial_name", "trial_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    trial_id: int = Field(foreign_key="trial.id")
    step: int
    name: str
    value: float
    created_at: datetime = Field(default_factory=utcnow)


class RegisteredModel(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    task: str
    created_at: datetime = Field(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="registeredmodel.id", index=True)
    version: int
    trial_id: int | None = Field(default=None, foreign_key="trial.id")
    metrics: dict[str, Any] = _json(dict)
    settings: dict[str, Any] = _json(dict)
    artifact_dir: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Endpoint(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    state: str = "creating"
    host: str = "127.0.0.1"
    port: int | None = None
    pid: int | None = None
    started_at: datetime | None = None  # when its server process was started (tells a reused pid apart)
    primary_key: str = ""
    secondary_key: str = ""
    traffic: dict[str, int] = _json(dict)
    # The review queue's settings ({"threshold": float, "quota": int}); empty: off (core.serving.review).
    review: dict[str, Any] = _json(dict)
    created_at: datetime = Field(default_factory=utcnow)


class ReviewItem(SQLModel, table=True):
    """An image an endpoint scored with low confidence, waiting for a person's labels (its bytes are the
    blob named by ``sha256``); ``prelabels`` is the model's answer in the studio's label form."""

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = Field(foreign_key="endpoint.id", index=True)
    deployment: str
    model_version_id: int | None = Field(default=None, foreign_key="modelversion.id")
    sha256: str = Field(index=True)
    width: int
    height: int
    confidence: float
    prelabels: list[dict[str, Any]] = _json(list)
    status: str = Field(default="pending", index=True)  # pending, added (to dataset_version_id), dismissed
    dataset_version_id: int | None = Field(default=None, foreign_key="datasetversion.id")
    created_at: datetime = Field(default_factory=utcnow)


class ScoreRecord(SQLModel, table=True):
    """How sure a deployment was of one image it scored: the endpoint page compares deployments by it."""

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = Field(foreign_key="endpoint.id", index=True)
    deployment: str
    confidence: float
    created_at: datetime = Field(default_factory=utcnow)


class Deployment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("endpoint_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = Field(foreign_key="endpoint.id", index=True)
    name: str
    model_version_id: int = Field(foreign_key="modelversion.id")
    # The reference's request_settings: a request still unanswered after this is refused (408); more
    # requests than this at once are refused (429). None: no limit.
    request_timeout_ms: int | None = None
    max_concurrent_requests: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class WorkerState(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    worker_id: str = Field(index=True, unique=True)
    pid: int
    lane: str = "all"  # the kinds of job it takes: storage.repos.workers.LANES
    device: str = ""
    current_job_id: int | None = None
    heartbeat_at: datetime = Field(default_factory=utcnow)
