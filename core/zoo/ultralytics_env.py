"""ultralytics imported with every network path closed, and its thread count kept (see ENVIRONMENT.md,
"Ultralytics offline"). Call `offline_ultralytics()` before any ultralytics import."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path


class _Stderr:
    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "neptune", "raytune", "tensorboard", "wandb")


def offline_ultralytics() -> None:
    """Import ultralytics with every network path closed (see ENVIRONMENT.md, "Ultralytics offline")."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no DNS check at import, no downloads
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")  # never pip-install a missing requirement
    import logging

    import matplotlib
    from PIL import Image
    from ultralytics.utils import LOGGER, SETTINGS, USER_CONFIG_DIR, patches

    # Its import replaces PIL's Image.open with a wrapper that, on a file PIL cannot identify, imports
    # pi-heif (not ours, never installed offline): a file that is no image would then fail as a
    # ModuleNotFoundError instead of being refused as one, in every caller. We take no HEIF.
    Image.open = patches._image_open

    # Its console lines go to stderr (stdout carries `--json` answers), looked up at each write
    # so a replaced sys.stderr (a test runner's) is followed.
    for handler in LOGGER.handlers:
        if type(handler) is logging.StreamHandler and not isinstance(handler.stream, _Stderr):
            handler.setStream(_Stderr())

    if SETTINGS.get("sync"):
        SETTINGS.update({"sync": False})  # no analytics events
    # Its experiment-tracker callbacks (MLflow writes ./mlruns into the working folder when mlflow is
    # installed; the others call their servers) are off for Kestrel's runs: Kestrel records the run itself.
    # Set in memory only, so the person's own ultralytics settings file is left as it is.
    for tracker in INTEGRATIONS:
        if SETTINGS.get(tracker):
            dict.__setitem__(SETTINGS, tracker, False)
    # Dataset checks and plots want Arial and download it when missing; any TTF named so will do.
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (USER_CONFIG_DIR / name).exists() and font.exists():
            shutil.copyfile(font, USER_CONFIG_DIR / name)


def fonts() -> list[Path]:
    """The fonts ultralytics would download for its plots, each in place (copied from matplotlib's)."""
    offline_ultralytics()
    from ultralytics.utils import USER_CONFIG_DIR

    return [USER_CONFIG_DIR / name for name in ("Arial.ttf", "Arial.Unicode.ttf")]


@contextlib.contextmanager
def keep_threads() -> Iterator[None]:
    """ultralytics sets torch to min(8, cores - 1) threads on CPU, for good; keep the caller's count."""
    import torch
    from ultralytics.utils import torch_utils

    threads = torch.get_num_threads()
    torch_utils.NUM_THREADS = threads
    try:
        yield
    finally:
        torch.set_num_threads(threads)
