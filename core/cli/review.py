"""`kestrel review …`: the active-learning loop from the command line. An endpoint keeps the images it scored
with low confidence (opt-in); they are labelled (the model's answer as pre-labels), added to the model's
dataset as a new version, and the model is trained on from its checkpoint on it. The new model then deploys
beside the old one as a canary (`kestrel deployment create --traffic 10`), and `kestrel endpoint show`
compares the two deployments' confidence on new requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from core.base.errors import ConfigError
from core.cli.common import JsonFlag, app, open_storage, out, reports_errors, session_scope

review_app = typer.Typer(help="Images endpoints scored with low confidence: review, add to a dataset, retrain.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")
Ids = Annotated[str, typer.Option("--ids", help="Review item ids, comma-separated (`kestrel review list`).")]


def _emit(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, default=str)) if as_json else out.print(text)


def _ids(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError("--ids", f"{text!r} is not a comma-separated list of review item ids", hints=["3,4,7"])
    return [int(p) for p in parts]


@review_app.command("on")
@reports_errors
def review_on(
    endpoint: str,
    threshold: Annotated[float, typer.Option(help="Keep images scored with less confidence than this (0-1).")] = 0.5,
    quota: Annotated[int, typer.Option(help="Keep at most this many images waiting for review.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Keep the images ENDPOINT scores below a confidence threshold for review (from its next request)."""
    from core.serving.manage import set_review

    _, engine = open_storage()
    with session_scope(engine) as session:
        set_review(session=session, name=endpoint, threshold=threshold, quota=quota)
    _emit({"endpoint": endpoint, "review": {"threshold": threshold, "quota": quota}}, as_json,
          f"endpoint {endpoint} keeps images scored below {threshold} for review (at most {quota} waiting)")


@review_app.command("off")
@reports_errors
def review_off(endpoint: str, as_json: JsonFlag = False) -> None:
    """Stop keeping images for review; those already waiting stay."""
    from core.serving.manage import set_review

    _, engine = open_storage()
    with session_scope(engine) as session:
        set_review(session=session, name=endpoint, threshold=None)
    _emit({"endpoint": endpoint, "review": None}, as_json, f"endpoint {endpoint} keeps no more images for review")


@review_app.command("list")
@reports_errors
def review_list(endpoint: str, as_json: JsonFlag = False) -> None:
    """The images waiting for review, least confident first, with the model's answer as pre-labels."""
    from core.data.reviewed import queued

    _, engine = open_storage()
    with session_scope(engine) as session:
        rows = [{"id": r.id, "deployment": r.deployment, "confidence": r.confidence, "size": [r.width, r.height],
                 "prelabels": r.prelabels, "created_at": r.created_at} for r in queued(session, endpoint)]
    _emit({"endpoint": endpoint, "items": rows}, as_json, "\n".join(
        f"{r['id']:>5}  {r['deployment']:<12} confidence {r['confidence']:.3f}  "
        f"{', '.join(p['label'] for p in r['prelabels']) or '(nothing found)'}" for r in rows) or "the queue is empty")


@review_app.command("add")
@reports_errors
def review_add(
    endpoint: str,
    ids: Annotated[str | None, typer.Option("--ids", help="Review item ids, comma-separated; all when not given.")]
    = None,
    labels: Annotated[Path | None, typer.Option(help="A JSON file {id: [{label, box, polygons}, …]} of corrected "
                                                     "labels; other images keep the model's pre-labels.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add queued images to the dataset their model trained on, as its next version (training split)."""
    from core.data.relabel import EditedLabel
    from core.data.reviewed import add_reviewed, queued
    from storage.tables import Dataset

    given: dict[int, list[dict[str, Any]]] = {}
    if labels is not None:
        try:
            given = {int(k): v for k, v in json.loads(labels.read_text(encoding="utf-8")).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError("--labels", f"{labels} is not a JSON object of review item id -> labels: {exc}") from None
    _, engine = open_storage()
    with session_scope(engine) as session:
        waiting = {int(r.id or 0): r.prelabels for r in queued(session, endpoint)}
        chosen = _ids(ids) if ids else sorted(waiting)
        try:
            edits = {k: [EditedLabel.from_json(x).annotation() for x in given.get(k, waiting.get(k, []))]
                     for k in chosen}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("--labels", f"a label in {labels} is not {{label, box, polygons}}: {exc}") from None
        saved = add_reviewed(session=session, endpoint=endpoint, labels=edits)
        assert saved is not None or not edits
        dataset = session.get(Dataset, saved.dataset_id) if saved else None
        result = {"endpoint": endpoint, "added": chosen, "dataset": dataset.name if dataset else None,
                  "version": saved.version if saved else None}
    _emit(result, as_json, f"added {len(chosen)} image(s) as {result['dataset']} version {result['version']}"
          if saved else "nothing waits for review")


@review_app.command("dismiss")
@reports_errors
def review_dismiss(endpoint: str, ids: Ids, as_json: JsonFlag = False) -> None:
    """Take images out of the queue without adding them anywhere."""
    from core.data.reviewed import add_reviewed

    _, engine = open_storage()
    with session_scope(engine) as session:
        add_reviewed(session=session, endpoint=endpoint, labels={}, dismissed=_ids(ids))
    _emit({"endpoint": endpoint, "dismissed": _ids(ids)}, as_json, f"dismissed {ids}")


@review_app.command("retrain")
@reports_errors
def review_retrain(
    endpoint: str,
    deployment: Annotated[str | None, typer.Option(help="Whose model to train on; the one taking most traffic "
                                                        "when not given.")] = None,
    version: Annotated[int | None, typer.Option(help="The dataset version to train on; the latest when not given.")]
    = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of the new trial; the first trial's when not given.")]
    = None,
    wait: Annotated[bool, typer.Option(help="Wait for the trial; runs it here when no worker is up.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train the deployed model on from its checkpoint on its dataset's latest version (a one-trial job)."""
    from core.cli.jobs import queued_job
    from core.sweep.rerun import submit_endpoint_retrain
    from storage.repos import trials

    settings, engine = open_storage()
    job = queued_job(submit_endpoint_retrain(endpoint=endpoint, deployment=deployment, version=version, epochs=epochs,
                                          settings=settings, engine=engine), wait, as_json, settings, engine)
    with session_scope(engine) as session:
        trial = next(iter(trials.for_job(session=session, job_id=job.id)), None)
        result = {"job_id": job.id, "trial": trial.id if trial else None, "status": trial.status if trial else "queued",
                  "metric": trial.primary_metric if trial else None,
                  "value": trial.primary_metric_value if trial else None}
    _emit(result, as_json, f"trial {result['trial']}: {result['metric']} {result['value']:.4f}"
          if result["value"] is not None else f"job {job.id} queued")
