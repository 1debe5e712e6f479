"""Which device a trial trains on, and how many CPU threads it may use."""

from __future__ import annotations

import os

import torch


def choose_device(requested: str = "auto") -> str:
    """CUDA when present, else Apple MPS, else CPU; an explicit request must be available."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        from core.base.errors import ConfigError

        raise ConfigError("training_parameters.device", "cuda was asked for, but no CUDA GPU is "
                          "visible", ["auto", "cpu", "cuda", "mps"])
    return requested


def machine() -> str:
    """What trains here, as the studio's sidebar names it: the GPUs, else the usable CPU cores."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"GPU: {', '.join(names)}"
    return f"CPU, {cpu_cores()} cores"


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def use_all_cores(limit: int | None = None) -> int:
    """Give torch every core this process may use, or ``limit`` of them when trials share the
    machine (libraries like ultralytics lower it, so trials set it again)."""
    cores = max(1, min(limit or cpu_cores(), cpu_cores()))
    torch.set_num_threads(cores)
    return cores


def loader_workers(requested: int, device: str) -> int:
    """Loader processes for a trial: ``requested`` when set; else none on a CPU (they would take the training's
    cores) and up to 8 of the trial's threads on a GPU, which one process decoding and augmenting starves
    (bench/train_throughput.py on an H200: resnet18 at 64 px took 782 images/s from such a loader, 4487 from
    memory)."""
    if requested or not device.startswith("cuda"):
        return requested
    return min(8, torch.get_num_threads())


def describe(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device if device != "cpu" else f"cpu ({torch.get_num_threads()} threads)"
