"""A job's finished trial timed on this machine (`core.inference.latency`), in the trial's own process right
after it trained, so that the job page can draw accuracy against latency. A timing is a bonus: when it
fails, the trial keeps its model and metrics and is left out of the chart."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from storage.artifacts import BlobStore
from storage.db import session_scope
from storage.repos import trials
from storage.settings import Settings

log = logging.getLogger(__name__)


def time_trial(result: Any, *, settings: Settings, engine: Engine, dataset: str, version: int) -> None:
    """Measure the model of ``result`` (a `TrialResult`) on up to a batch of the dataset's validation images
    and keep the figures on the trial's row (``metrics["latency"]``)."""
    if not settings.measure_latency or not result.epochs_run or "weights" not in result.artifacts:
        return
    from PIL import Image

    from core.data.view import load_version
    from core.inference.latency import SCORING_BATCH, measure

    try:
        with session_scope(engine) as session:
            data = load_version(session=session, blobs=BlobStore(settings.blobs_dir), name=dataset, version=version)
        with_images = [Image.open(item.path).convert("RGB") for item in (data.validation or data.train)[:SCORING_BATCH]]
        figures = measure(Path(result.artifacts["weights"]).parent, with_images, "auto")
    except Exception:  # a timing is a bonus (see the module's docstring)
        log.exception("trial %d: its model could not be timed", result.trial_id)
        return
    log.info("trial %d: %.1f ms an image at batch 1 on %s, %s ms in ONNX Runtime", result.trial_id,
             figures["batch1_ms"], figures["device"], figures["onnx_batch1_ms"])
    with session_scope(engine) as session:
        trials.set_metrics(session=session, trial_id=result.trial_id, key="latency", values=figures)
