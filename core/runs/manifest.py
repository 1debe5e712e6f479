"""A trial's reproducibility manifest: everything that decides its result — the data's content and split,
every resolved parameter, the seed, the software, the device and the weights it started from — written
beside its weights (``manifest.json``) and kept on its row, so that a re-run can be started from it and a
difference between two runs can be explained."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from core.base.params import TrainingParams
from core.data.view import Item, VersionData
from core.zoo.base import ModelSpec
from core.zoo.weights import WeightsStatus

MANIFEST_FILE = "manifest.json"
SOFTWARE = ("torch", "torchvision", "timm", "ultralytics", "kestrel")


def build(data: VersionData, params: TrainingParams, model: ModelSpec, weights: WeightsStatus,
          device: str) -> dict[str, Any]:
    return {
        "dataset": {"name": data.name, "version": data.version, "task": data.task.value, "classes": data.classes,
                    "content_sha256": _content_hash([*data.train, *data.validation]),
                    "split_sha256": _split_hash(data), "train_images": len(data.train),
                    "validation_images": len(data.validation)},
        "params": params.model_dump(mode="json"),
        "seed": params.seed,
        "model": {"family": model.family, "architecture": model.architecture},
        "weights": {"state": weights.state, "where": weights.where, "sha256": file_sha256(weights.where)},
        "software": software(),
        "python": platform.python_version(),
        "device": device,
        "threads": torch.get_num_threads(),
    }


def software() -> dict[str, str]:
    versions = {}
    for package in SOFTWARE:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _content_hash(items: list[Item]) -> str:
    """The images (their blobs are named by content) and their labels, in a stable order."""
    digest = hashlib.sha256()
    for line in sorted(_item_line(item) for item in items):
        digest.update(line.encode())
    return digest.hexdigest()


def _split_hash(data: VersionData) -> str:
    digest = hashlib.sha256()
    for split, items in (("train", data.train), ("validation", data.validation)):
        for name in sorted(item.path.name for item in items):
            digest.update(f"{split}\t{name}\n".encode())
    return digest.hexdigest()


def _item_line(item: Item) -> str:
    boxes = ";".join(f"{i.label},{i.x0:.6f},{i.y0:.6f},{i.x1:.6f},{i.y1:.6f},{i.polygons!r},{i.is_crowd}"
                     for i in item.instances)
    return f"{item.path.name}\t{','.join(sorted(item.tags))}\t{boxes}\n"


def file_sha256(where: str | Path) -> str | None:
    path = Path(where)
    if not str(where) or not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
