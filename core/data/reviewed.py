"""The review queue's images, labelled by a person, as the next version of the dataset the endpoint's model
trained on: its latest version plus these images in the training split (`core.data.relabel`). Torch-free:
the Labelling page and `kestrel review add` call it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlmodel import Session

from core.base.errors import KestrelError, NotFound
from core.data.relabel import relabel_version
from storage.repos import datasets, models, reviews, trials
from storage.repos.datasets import NewAnnotation, NewImage
from storage.tables import DatasetVersion, Endpoint, ModelVersion, ReviewItem


@dataclass(frozen=True)
class Origin:
    """Where a deployment's model came from: its trial and the dataset version that trained it."""

    trial_id: int
    dataset: str
    version: int


def origin(*, session: Session, model_version_id: int | None) -> Origin:
    """The trial and training data of a registered model version; KestrelError when it has none (a model
    imported from a file, or registered before trials kept manifests)."""
    model = session.get(ModelVersion, model_version_id) if model_version_id is not None else None
    trial = trials.get(session=session, trial_id=model.trial_id) if model and model.trial_id else None
    data = ((trial.metrics or {}).get("manifest") or {}).get("dataset") if trial else None
    if trial is None or not data:
        raise KestrelError("the deployed model has no trial with a recorded dataset to train on from; "
                           "label the images on the Labelling page and start a job with checkpoint_run_id")
    return Origin(int(trial.id or 0), str(data["name"]), int(data["version"]))


def endpoint_row(session: Session, name: str) -> Endpoint:
    row = models.get_endpoint(session=session, name=name)
    if row is None:
        raise NotFound(f"endpoint {name} does not exist; `kestrel endpoint list` shows them")
    return row


def queued(session: Session, endpoint: str) -> list[ReviewItem]:
    return reviews.pending(session=session, endpoint_id=int(endpoint_row(session, endpoint).id or 0))


def add_reviewed(*, session: Session, endpoint: str, labels: Mapping[int, Sequence[NewAnnotation]],
                 dismissed: Iterable[int] = ()) -> DatasetVersion | None:
    """Queued images ``labels`` names (review item id -> its labels) as the next version of their model's
    dataset, in the training split; those and the ``dismissed`` ones leave the queue. None when only
    images were dismissed. Raises KestrelError for an id not waiting in this endpoint's queue, and for
    images whose models trained on different datasets (add them one model at a time)."""
    waiting = {int(row.id or 0): row for row in queued(session, endpoint)}
    if unknown := sorted({*labels, *dismissed} - set(waiting)):
        raise NotFound(f"review items {unknown} are not waiting in endpoint {endpoint}'s queue; "
                       f"`kestrel review list {endpoint}` shows the queue")
    reviews.settle(session=session, ids=dismissed, status=reviews.DISMISSED)
    if not labels:
        return None
    sources = {origin(session=session, model_version_id=waiting[k].model_version_id).dataset for k in labels}
    if len(sources) != 1:
        raise KestrelError(f"the images come from models trained on different datasets ({sorted(sources)}); "
                           "add those of one deployment at a time")
    latest = datasets.get_version(session=session, name=sources.pop())
    if latest is None:
        raise NotFound("the dataset the deployed model trained on was deleted; import it again first")
    added = [NewImage(waiting[k].sha256, f"review/{endpoint}-{k}.png", ".png", waiting[k].width, waiting[k].height,
                      "train", list(labels[k])) for k in sorted(labels)]
    saved = relabel_version(session=session, version_id=int(latest.id or 0), edits={}, added=added,
                            source=f"{len(added)} image(s) from endpoint {endpoint}'s review queue")
    reviews.settle(session=session, ids=labels, status=reviews.ADDED, version_id=saved.id)
    return saved
