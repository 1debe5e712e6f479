"""How long a trial will take on this machine, judged by the trials that already ran here.

A finished trial's duration over its epochs and training images is a speed (seconds per image per
epoch) that covers everything a trial does: loading, training, evaluating, saving. Its median over
recent trials of the same model on the same kind of device, times the new trial's images and epochs,
is the estimate. There is none before a model has run here once: a figure guessed from another
machine would mislead more than it helps. Torch-free, for the studio's pages.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session

from core.sweep.summary import duration_s
from storage.repos import trials
from storage.tables import Trial


@dataclass(frozen=True)
class Estimate:
    seconds: float
    trials: int  # how many earlier trials it is drawn from


def on_gpu(device: str) -> bool:
    """Whether a device as the worker names it ("GPU: …", "CPU, 2 cores") or a trial does ("cuda:0 (…)",
    "cpu (2 threads)") is a GPU."""
    return device.lower().startswith(("gpu", "cuda"))


def per_trial(*, session: Session, models: Sequence[str], device: str, train_images: int, epochs: int,
              sample: int = 10) -> dict[str, Estimate | None]:
    """Each model's expected duration of one trial on ``train_images`` images for ``epochs``; None for a
    model with no finished trial on this kind of device."""
    speeds: dict[str, list[float]] = {model: [] for model in models}
    for t in trials.trained(session=session):
        mine = speeds.get(t.model_name)
        if (mine is not None and len(mine) < sample and on_gpu(t.device) == on_gpu(device)
                and (speed := _seconds_per_image_epoch(t)) is not None):
            mine.append(speed)
    scale = max(1, train_images) * max(1, epochs)
    return {model: Estimate(statistics.median(s) * scale, len(s)) if s else None for model, s in speeds.items()}


def _seconds_per_image_epoch(trial: Trial) -> float | None:
    images = trial.metrics.get("train_images")
    took = duration_s(trial.started_at, trial.finished_at)
    if not isinstance(images, int) or images <= 0 or not took:
        return None
    return took / (images * trial.epoch)


def say(seconds: float) -> str:
    """A duration as a person reads it: "about 40 s", "about 12 min", "about 2.5 h"."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
