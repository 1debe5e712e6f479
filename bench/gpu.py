"""Kestrel on a CUDA machine: the GPU paths the CPU tests cannot reach, with figures.

- packing: a 2-trial grid (resnet18 at the size Kestrel picks, fridge photos) measures a trial's peak GPU
  memory, one trial at a time; the same grid of 4 then runs packed onto the GPU(s) (`gpu_slots`), all at once
  where they fit. Prints each trial's place (``ran_on``), peak memory, seconds and accuracy, and both jobs'
  wall times.
- detectors: fasterrcnn_resnet18_fpn and yolov8n trials (AMP on CUDA) on the fridge boxes.
- ddp: with one GPU, ``devices: 2`` is refused by name and a 1-rank NCCL group trains a few DDP steps; with
  N > 1 GPUs the same timm trial on 1 and on N GPUs (wall time, accuracy).

    .venv/bin/python bench/gpu.py [--only packing detectors ddp] [--epochs 5]

Datasets come from ../shared/datasets, or KESTREL_SHARED_DATASETS where that folder is elsewhere.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from learning import CLASSIFICATION, DETECTION, studio, timed_job

GRID = {"model_name": "resnet18", "early_stopping": False}


def _trials(engine: Any, summary: dict[str, Any]) -> None:
    from storage.db import session_scope
    from storage.repos import trials

    for t in summary["trials"]:
        with session_scope(engine) as session:
            peak = (trials.get(session=session, trial_id=t["trial_id"]).metrics.get("memory") or {}).get("gpu_peak_mb")
        print(f"  trial {t['number']} {t['model_name']}: {t['status']}, {t['primary_metric_value'] or 0:.3f}, "
              f"{t['duration_s']:.0f} s, peak {peak} MiB, ran on {t['ran_on']}", flush=True)


def _classification_job(epochs: int, trials: int) -> dict[str, Any]:
    rates = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006][:trials]
    return {"type": "automl", "task": "image_classification", "primary_metric": "accuracy",
            "training_data": {"path": "azureml:fridge:1", "type": "mltable"},
            "training_parameters": {**GRID, "number_of_epochs": epochs}, "sweep": {"sampling_algorithm": "grid"},
            "search_space": [{"learning_rate": {"type": "choice", "values": rates}}],
            "limits": {"max_trials": trials, "max_concurrent_trials": trials}}


def packing(settings: Any, engine: Any, folder: Path, epochs: int) -> None:
    for trials in (2, 4):
        seconds, summary = timed_job(settings, engine, folder, _classification_job(epochs, trials))
        print(f"packing: {trials} trials (resnet18, {epochs} epochs, {trials} at once asked) in "
              f"{seconds:.0f} s; {summary['message']}", flush=True)
        _trials(engine, summary)


def detectors(settings: Any, engine: Any, folder: Path, epochs: int) -> None:
    body = {"type": "automl", "task": "image_object_detection", "primary_metric": "mean_average_precision",
            "training_data": {"path": "azureml:boxes:1", "type": "mltable"},
            "training_parameters": {"number_of_epochs": epochs, "early_stopping": False},
            "sweep": {"sampling_algorithm": "grid"},
            "search_space": [{"model_name": {"type": "choice", "values": ["fasterrcnn_resnet18_fpn", "yolov8n"]}}],
            "limits": {"max_trials": 2, "max_concurrent_trials": 1}}
    seconds, summary = timed_job(settings, engine, folder, body)
    print(f"detectors: 2 trials, {epochs} epochs each, in {seconds:.0f} s; {summary['message']}", flush=True)
    _trials(engine, summary)


def ddp(settings: Any, engine: Any, epochs: int) -> None:
    from core.base.errors import ConfigError
    from core.runs.trial import run_trial

    gpus = torch.cuda.device_count()
    overrides = {**GRID, "number_of_epochs": epochs}
    if gpus < 2:
        try:
            run_trial(settings=settings, engine=engine, dataset="fridge", version=None,
                      overrides={**overrides, "devices": 2})
            print("ddp: devices 2 on one GPU was NOT refused", flush=True)
        except ConfigError as exc:
            print(f"ddp: devices 2 on {gpus} GPU refused: {exc}", flush=True)
        print(f"ddp: a 1-rank NCCL group, {_nccl_steps()} DDP steps on cuda:0", flush=True)
        return
    for devices in (1, gpus):
        started = time.perf_counter()
        result = run_trial(settings=settings, engine=engine, dataset="fridge", version=None,
                           overrides={**overrides, "devices": devices})
        seconds = time.perf_counter() - started
        print(f"ddp: {devices} GPU(s), {epochs} epochs in {seconds:.1f} s, accuracy "
              f"{result.metrics['accuracy']:.3f}", flush=True)


def _nccl_steps(steps: int = 5) -> int:
    """DDP over NCCL as Kestrel wraps a model (`core.train.distributed`), world size 1: the backend and the
    device binding, without a second GPU."""
    from core.train import distributed

    distributed.join(0, 1, distributed.free_port(), "cuda:0")
    try:
        model = distributed.wrap(torch.nn.Linear(64, 4).cuda(), "cuda:0", partial_gradients=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            optimizer.zero_grad()
            model(torch.randn(32, 64, device="cuda")).square().mean().backward()
            optimizer.step()
        torch.cuda.synchronize()
        assert distributed.backend("cuda:0") == torch.distributed.get_backend() == "nccl"
        return steps
    finally:
        distributed.leave()


def main() -> None:
    from core.base.tasks import Task
    from core.data.importer import ImportOptions, import_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=["packing", "detectors", "ddp"])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU")
    names = [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs: {names}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings, engine = studio(Path(tmp) / "home")
        import_dataset(CLASSIFICATION["fridgeObjects_small150"], ImportOptions("fridge", Task.CLASSIFICATION),
                       settings=settings, engine=engine)
        import_dataset(DETECTION["odFridgeObjects"], ImportOptions("boxes", Task.DETECTION),
                       settings=settings, engine=engine)
        for step in args.only:
            started = time.perf_counter()
            try:
                if step == "packing":
                    packing(settings, engine, Path(tmp), args.epochs)
                elif step == "detectors":
                    detectors(settings, engine, Path(tmp), args.epochs)
                elif step == "ddp":
                    ddp(settings, engine, args.epochs)
            except Exception as exc:  # noqa: BLE001 — one step's failure is a finding; the others still run
                print(f"{step}: FAILED after {time.perf_counter() - started:.0f} s: {type(exc).__name__}: {exc}",
                      flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
