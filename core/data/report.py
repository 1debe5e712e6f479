"""A dataset version as people and `--json` see it: counts, classes, split and skipped items."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from core.base.errors import InputError
from core.base.tasks import Task, spec
from storage.repos.datasets import problems
from storage.tables import Dataset, DatasetVersion

MIN_IMAGES_FOR_JOB = 10


def version_report(*, session: Session, version: DatasetVersion) -> dict[str, Any]:
    dataset = session.get(Dataset, version.dataset_id)
    per_class = version.stats.get(
        "instances_per_class" if spec(Task(version.task)).has_instances else "images_per_class", {})
    return {
        "name": dataset.name if dataset else "",
        "version": version.version,
        "task": version.task,
        "format": version.format,
        "source": version.source,
        "images": version.image_count,
        "classes": {c: per_class.get(c, 0) for c in version.classes},
        "annotations": version.annotation_count,
        "validation_images": version.validation_count,
        "skipped": [{"file": p.file, "line": p.line, "error": p.error, "fix": p.fix}
                    for p in problems(session=session, version_id=version.id)],
        "warnings": version.warnings,
        "stats": version.stats,
        "created_at": version.created_at.isoformat(),
    }


def require_trainable(version: DatasetVersion, name: str) -> None:
    """Refuse to start a job on a version with fewer valid images than a job needs."""
    if version.image_count < MIN_IMAGES_FOR_JOB:
        raise InputError(f"{name}:{version.version}",
                         f"has {version.image_count} valid images; a job needs at least "
                         f"{MIN_IMAGES_FOR_JOB}", "add images and import a new version")
