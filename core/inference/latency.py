"""What a trained model costs to run on this machine, measured when its trial ends: the time to answer one
image and a batch (PyTorch, and ONNX Runtime where the model exports), the weights' size and the memory
the model takes. The job page plots the primary metric against it and marks the Pareto frontier
(`core.sweep.summary`)."""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

from core.inference.predict import load_predictor
from core.train.device import choose_device, describe
from core.zoo.base import WEIGHTS_FILE

log = logging.getLogger(__name__)
REPEATS = 5  # timed runs after one warm-up; the median is kept
SCORING_BATCH = 8  # images per request that the batch figure is measured with


def measure(artifact_dir: Path, images: Sequence[Image.Image], device: str = "cpu", *,
            onnx: bool = True) -> dict[str, Any]:
    """Milliseconds per image at batch 1 and at :data:`SCORING_BATCH`, the ONNX Runtime batch-1 time (None,
    with the reason, where export fails), the weights in MB and the memory the loaded model added."""
    process = psutil.Process()
    before = process.memory_info().rss
    device = choose_device(device)
    predictor = load_predictor(artifact_dir, device)
    one, batch = [images[0]], [images[i % len(images)] for i in range(SCORING_BATCH)]
    batch1_ms = _median_ms(lambda: predictor.predict(one))
    batch_ms = _median_ms(lambda: predictor.predict(batch)) / SCORING_BATCH
    memory_mb = max(0, process.memory_info().rss - before) / 2**20
    figures: dict[str, Any] = {
        "device": describe(device), "batch1_ms": round(batch1_ms, 2), "batch_size": SCORING_BATCH,
        "batch_ms_per_image": round(batch_ms, 2), "model_mb": round(_size_mb(artifact_dir), 2),
        "memory_mb": round(memory_mb, 1), "onnx_batch1_ms": None, "onnx_note": "not measured"}
    if onnx:
        figures.update(_onnx(artifact_dir, one))
    return figures


def _onnx(artifact_dir: Path, one: list[Image.Image]) -> dict[str, Any]:
    """Batch-1 time in ONNX Runtime of the model exported as `kestrel model export` does, fed an input of
    the shape its sidecar describes (values do not change the time of these models)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from core.inference.export import export_model, sidecar_path

    try:
        with tempfile.TemporaryDirectory() as folder:
            exported = export_model(artifact_dir, "onnx", Path(folder))
            spec = json.loads(sidecar_path(exported).read_text())["input"]
            sizes = {"batch": 1, "height": one[0].height, "width": one[0].width}
            shape = [d if isinstance(d, int) else sizes.get(d, 1) for d in spec["shape"]]
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(exported), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
            return {"onnx_batch1_ms": round(_median_ms(lambda: session.run(None, feed)), 2), "onnx_note": ""}
    except Exception as exc:  # an architecture the exporter cannot trace: PyTorch's figures stand alone
        log.info("no ONNX Runtime timing: %s", exc)
        return {"onnx_batch1_ms": None, "onnx_note": f"ONNX export failed ({type(exc).__name__})"}


def _median_ms(run: Callable[[], Any]) -> float:
    run()  # warm-up: lazy initialisation and caches
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _size_mb(artifact_dir: Path) -> float:
    weights = artifact_dir / WEIGHTS_FILE
    return weights.stat().st_size / 2**20 if weights.is_file() else 0.0
