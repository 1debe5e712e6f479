"""Training throughput through Kestrel's data pipeline against the model alone.

For each model it prints end-to-end training images/s (our cached dataset, loader, loss,
optimizer step), the same model's images/s on synthetic batches already in memory, and their
ratio (goal ≥ 0.9: decode once, cache resized images, keep the device busy). For YOLO it
prints our trial's seconds per epoch against ultralytics' own trainer on the same data and
settings (goal ≤ 1.1×).

    .venv/bin/python bench/train_throughput.py [--device cpu|cuda] [--only resnet18 fasterrcnn yolo]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from core.base.params import resolve_params
from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.data.view import VersionData, load_version
from core.train.device import loader_workers
from storage.artifacts import BlobStore
from storage.db import make_engine, session_scope, upgrade
from storage.settings import Settings

EPOCHS = 3


def sample_data(home: Path, task: Task, count: int, size: int) -> VersionData:
    os.environ["KESTREL_HOME"] = str(home)
    settings = Settings()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    name = f"bench-{task.value}"
    import_dataset(write_sample(task, home / "src" / task.value, count=count, size=size),
                   ImportOptions(name, task, validation_fraction=0.1), settings=settings, engine=engine)
    with session_scope(engine) as session:
        return load_version(session=session, blobs=BlobStore(settings.blobs_dir), name=name)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def images_per_s(step: Callable[[Any], int], batches: Callable[[], Iterable[Any]], device: str) -> float:
    """Images/s over EPOCHS passes of ``batches()``, after one warm-up pass."""
    for batch in batches():
        step(batch)
    _sync(device)
    start, images = time.perf_counter(), 0
    for _ in range(EPOCHS):
        for batch in batches():
            images += step(batch)
    _sync(device)
    return images / (time.perf_counter() - start)


def classification(home: Path, device: str) -> tuple[str, float, float]:
    from core.data.loaders import classification_datasets, make_loader
    from core.train.optim import build_optimizer
    from core.zoo.timm_family import create_model

    params = resolve_params(Task.CLASSIFICATION, {
        "training_crop_size": 64, "validation_crop_size": 64, "validation_resize_size": 64,
        "training_batch_size": 32})
    data = sample_data(home, Task.CLASSIFICATION, 320, 64)
    train_set, _ = classification_datasets(data, params, multilabel=False)
    model = create_model("resnet18", len(data.classes)).to(device).train()
    optimizer = build_optimizer(model.parameters(), params)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        images, targets = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), targets).backward()
        optimizer.step()
        return len(images)

    loader = make_loader(train_set, 32, shuffle=True, workers=loader_workers(params.number_of_workers, device), seed=0,
                         pin_memory=device.startswith("cuda"))  # as the trial loads
    pipeline = images_per_s(step, lambda: loader, device)
    synthetic_batch = (torch.randn(32, 3, 64, 64, device=device),
                       torch.randint(0, len(data.classes), (32,), device=device))
    synthetic = images_per_s(step, lambda: [synthetic_batch] * len(loader), device)
    return "resnet18 64×64 batch 32", pipeline, synthetic


def detector(home: Path, device: str) -> tuple[str, float, float]:
    from core.data.detection_loaders import detection_datasets, detection_loader
    from core.train.optim import build_optimizer
    from core.zoo.torchvision_family import InferenceSettings, build_detector, detection_loss

    params = resolve_params(Task.DETECTION, {"min_size": 128, "max_size": 128, "training_batch_size": 4})
    data = sample_data(home, Task.DETECTION, 40, 128)
    train_set, _ = detection_datasets(data.train, data.validation, data.classes, params, masks=False)
    model = build_detector("fasterrcnn_resnet18_fpn", len(data.classes),
                           InferenceSettings.from_params(params)).to(device).train()
    optimizer = build_optimizer(model.parameters(), params)

    def step(batch: tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]) -> int:
        images = [i.to(device) for i in batch[0]]
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch[1]]
        optimizer.zero_grad(set_to_none=True)
        detection_loss(model, (images, targets)).backward()
        optimizer.step()
        return len(images)

    loader = detection_loader(train_set, 4, shuffle=True, workers=loader_workers(params.number_of_workers, device),
                              seed=0, pin_memory=device.startswith("cuda"))
    batches = [next(iter(loader))]  # one real batch held in memory: the model alone
    held = ([i.to(device) for i in batches[0][0]], [{k: v.to(device) for k, v in t.items()}
                                                     for t in batches[0][1]])
    pipeline = images_per_s(step, lambda: loader, device)
    synthetic = images_per_s(step, lambda: [held] * len(loader), device)
    return "fasterrcnn_resnet18_fpn 128 px batch 4", pipeline, synthetic


def yolo(home: Path, device: str) -> tuple[float, float]:
    from core.train.context import MemoryContext
    from core.zoo.ultralytics_env import offline_ultralytics
    from core.zoo.ultralytics_family import UltralyticsFamily, write_yolo_dataset

    data = sample_data(home, Task.DETECTION, 64, 128)
    params = resolve_params(Task.DETECTION, {
        "model_name": "yolov8n", "img_size": 128, "training_batch_size": 16, "number_of_epochs": 5,
        "learning_rate": 0.01, "device": device})
    family = UltralyticsFamily()
    spec = family.resolve("yolov8n", params, Task.DETECTION)
    start = time.perf_counter()
    family.train(spec, data, params, MemoryContext(home / "ours", device))
    ours = (time.perf_counter() - start) / params.number_of_epochs

    offline_ultralytics()
    from ultralytics import YOLO

    data_yaml = write_yolo_dataset(data, home / "theirs-data", [])
    start = time.perf_counter()
    YOLO("yolov8n.yaml").train(data=str(data_yaml), epochs=params.number_of_epochs, imgsz=128,
                               batch=16, nbs=16, lr0=0.01, optimizer="SGD", cos_lr=True, seed=0,
                               deterministic=True, amp=device.startswith("cuda"), workers=0,
                               device=0 if device.startswith("cuda") else "cpu", plots=False,
                               verbose=False, project=str(home / "theirs"), exist_ok=True)
    theirs = (time.perf_counter() - start) / params.number_of_epochs
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="+", default=["resnet18", "fasterrcnn", "yolo"])
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if "resnet18" in args.only:
            name, pipeline, synthetic = classification(Path(tmp) / "cls", args.device)
            print(f"{name}: pipeline {pipeline:.0f} img/s, synthetic {synthetic:.0f} img/s, "
                  f"ratio {pipeline / synthetic:.2f}")
        if "fasterrcnn" in args.only:
            name, pipeline, synthetic = detector(Path(tmp) / "det", args.device)
            print(f"{name}: pipeline {pipeline:.1f} img/s, in-memory batches {synthetic:.1f} img/s, "
                  f"ratio {pipeline / synthetic:.2f}")
        if "yolo" in args.only:
            ours, theirs = yolo(Path(tmp) / "yolo", args.device)
            print(f"yolov8n 128 px, 58 train images: our trial {ours:.2f} s/epoch, ultralytics "
                  f"{theirs:.2f} s/epoch, ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
