"""Does Kestrel's default trial learn as well as the plain alternative? Side by side, in one run.

For each dataset in ../shared/datasets that fits the task, it runs Kestrel's default trial (only the
model and the epochs set, everything else Kestrel's defaults: recipe, sizes, schedule) and a plain
reference on the same split, model, epochs and image size, one after the other with all cores:

- classification: a short timm script (AdamW + OneCycle, a horizontal flip, resize to the size
  Kestrel chose, batch 32, cross-entropy), the kind a person writes in ten minutes;
- YOLO detection: ultralytics' own trainer, ``YOLO.train`` with its defaults, on the YOLO folder
  Kestrel writes for the same split.

It prints each side's metric (accuracy; mAP50 from ultralytics' validator on both sides) and wall
time, and the Kestrel/peer ratios. Goals: accuracy ≥ 0.98×; YOLO mAP50 ≥ 0.95×, time ≤ 1.1×.

    .venv/bin/python bench/learning.py [--only classification yolo] [--epochs 15] [--yolo-epochs 40]
        [--yolo-img-size 256] [--device cuda] [--datasets odFridgeObjects] [--classification-data more.jsonl]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# ../shared/datasets beside the checkout, or KESTREL_SHARED_DATASETS where a copy of it lies elsewhere (a GPU machine)
SHARED = Path(os.environ.get("KESTREL_SHARED_DATASETS") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
CLASSIFICATION = {"fridgeObjects_small150": SHARED / "fridgeObjects_small150" / "annotations.jsonl"}
DETECTION = {"odFridgeObjects": SHARED / "odFridgeObjects_FairMOTformat" / "od_mltable",
             "coco128": SHARED / "coco128"}


def studio(home: Path) -> tuple[Any, Any]:
    os.environ["KESTREL_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an offline machine: timm's hub is not retried
    from storage.db import make_engine, upgrade
    from storage.settings import Settings

    settings = Settings()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    return settings, engine


def timed_job(settings: Any, engine: Any, folder: Path, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Submit the job ``body`` (a job YAML's content) and run it here: its wall time and `job_summary`."""
    import yaml

    from core.sweep.jobs import submit_job
    from core.sweep.orchestrator import run_job
    from core.sweep.summary import job_summary
    from storage.db import session_scope

    file = folder / f"job-{time.monotonic_ns()}.yml"
    file.write_text(yaml.safe_dump(body))
    started = time.perf_counter()
    job = submit_job(file, settings=settings, engine=engine)
    run_job(job, settings, engine)
    seconds = time.perf_counter() - started
    with session_scope(engine) as session:
        return seconds, job_summary(session=session, job_id=job.id)


def load(settings: Any, engine: Any, name: str, source: Path, task: Any) -> Any:
    from core.data.importer import ImportOptions, import_dataset
    from core.data.view import load_version
    from storage.artifacts import BlobStore
    from storage.db import session_scope

    import_dataset(source, ImportOptions(name, task), settings=settings, engine=engine)
    with session_scope(engine) as session:
        return load_version(session=session, blobs=BlobStore(settings.blobs_dir), name=name)


def kestrel(settings: Any, engine: Any, name: str, overrides: dict[str, Any]) -> tuple[Any, float]:
    from core.runs.trial import run_trial

    start = time.perf_counter()
    result = run_trial(settings=settings, engine=engine, dataset=name, version=None, overrides=overrides)
    return result, time.perf_counter() - start


def timm_script(data: Any, size: int, epochs: int, device: str, *, batch: int = 32, lr: float = 1e-3
                ) -> tuple[float, float]:
    """The plain script: best validation accuracy over its epochs, and its wall time."""
    import timm
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    normalise = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(), T.ToTensor(), normalise])
    val_tf = T.Compose([T.Resize((size, size)), T.ToTensor(), normalise])
    index = {c: i for i, c in enumerate(data.classes)}

    class Images(Dataset):
        def __init__(self, items: list[Any], tf: Any) -> None:
            self.items, self.tf = items, tf

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            with Image.open(self.items[i].path) as image:
                return self.tf(image.convert("RGB")), index[self.items[i].tags[0]]

    start = time.perf_counter()
    torch.manual_seed(0)
    train = DataLoader(Images(data.train, train_tf), batch_size=batch, shuffle=True, drop_last=True)
    val = DataLoader(Images(data.validation, val_tf), batch_size=64)
    model = timm.create_model("resnet18", num_classes=len(data.classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(train))
    best = 0.0
    for _ in range(epochs):
        model.train()
        for images, targets in train:
            images, targets = images.to(device), targets.to(device)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), targets).backward()
            optimizer.step()
            schedule.step()
        model.eval()
        right = 0
        with torch.inference_mode():
            for images, targets in val:
                right += int((model(images.to(device)).argmax(1).cpu() == targets).sum())
        best = max(best, right / len(data.validation))
    return best, time.perf_counter() - start


def yolo_train(data: Any, root: Path, model: str, epochs: int, img_size: int, device: str) -> tuple[float, float]:
    """ultralytics' own trainer at its defaults: its best mAP50, and its wall time."""
    from core.zoo.ultralytics_env import keep_threads, offline_ultralytics
    from core.zoo.ultralytics_family import write_yolo_dataset
    from core.zoo.yolo_predictor import yolo_device

    offline_ultralytics()
    from ultralytics import YOLO

    data_yaml = write_yolo_dataset(data, root / "data", [])
    start = time.perf_counter()
    with keep_threads():
        YOLO(f"{model}.yaml").train(data=str(data_yaml), epochs=epochs, imgsz=img_size, batch=16,
                                    device=yolo_device(device), workers=0 if device == "cpu" else 8,
                                    amp=device != "cpu", plots=False, verbose=False, seed=0,
                                    project=str(root), name="peer", exist_ok=True)
    return _best_map50(root / "peer" / "results.csv"), time.perf_counter() - start


def _best_map50(results_csv: Path) -> float:
    import csv

    if not results_csv.is_file():
        return 0.0
    with results_csv.open() as f:
        rows = list(csv.DictReader(f))
    return max((float(r["metrics/mAP50(B)"]) for r in rows), default=0.0)


def best_reported(engine: Any, trial_id: int, metric: str) -> float:
    from storage.db import session_scope
    from storage.repos import trials

    with session_scope(engine) as session:
        return max((v for _, v in trials.curves(session=session, trial_id=trial_id).get(metric, [])), default=0.0)


def line(what: str, ours: float, theirs: float, ours_s: float, theirs_s: float, metric: str) -> None:
    print(f"{what}: Kestrel {metric} {ours:.3f} in {ours_s:.0f} s; peer {theirs:.3f} in {theirs_s:.0f} s; "
          f"ratio {metric} {ours / theirs if theirs else float('nan'):.2f}×, time {ours_s / theirs_s:.2f}×",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=["classification", "yolo"])
    parser.add_argument("--epochs", type=int, default=15, help="classification epochs")
    # From scratch on two CPU cores, 10 epochs at 640 px learn nothing on either side; 40 at 256 px do (~3 min each).
    parser.add_argument("--yolo-epochs", type=int, default=40)
    parser.add_argument("--yolo-model", default="yolo11n")
    parser.add_argument("--yolo-img-size", type=int, default=256,
                        help="set on both sides (0: the size Kestrel picks)")
    parser.add_argument("--device", default="cpu", help="both sides train on it (cpu, cuda)")
    parser.add_argument("--datasets", nargs="+", help="only these (names above)")
    parser.add_argument("--classification-data", nargs="+", default=[], type=Path,
                        help="more multi-class datasets (JSONL files): data nobody tuned on")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}", flush=True)
    # Both sides' libraries are imported before any clock starts: the first run must not pay for them.
    import timm  # noqa: F401

    from core.runs import trial  # noqa: F401
    from core.zoo.ultralytics_env import offline_ultralytics

    offline_ultralytics()
    import ultralytics  # noqa: F401

    from core.base.tasks import Task

    with tempfile.TemporaryDirectory() as tmp:
        settings, engine = studio(Path(tmp) / "home")
        if "classification" in args.only:
            extra = {p.parent.name: p for p in args.classification_data}
            for name, source in (CLASSIFICATION | extra).items():
                if args.datasets and name not in args.datasets and name not in extra:
                    continue
                data = load(settings, engine, name, source, Task.CLASSIFICATION)
                if args.device != "cpu":  # CUDA loads its kernels at first use: not on the first side's clock
                    timm_script(data, 64, 1, args.device)
                result, took = kestrel(settings, engine, name, {"model_name": "resnet18", "device": args.device,
                                                                "number_of_epochs": args.epochs})
                size = int(_params(result)["training_crop_size"])
                theirs, their_s = timm_script(data, size, args.epochs, args.device)
                line(f"{name} resnet18 from scratch, {args.epochs} epochs, {size} px", result.metrics["accuracy"],
                     theirs, took, their_s, "accuracy")
        if "yolo" in args.only:
            for name, source in DETECTION.items():
                if args.datasets and name not in args.datasets:
                    continue
                data = load(settings, engine, name, source, Task.DETECTION)
                if args.device != "cpu":
                    yolo_train(data, Path(tmp) / f"warm-up-{name}", args.yolo_model, 1, 64, args.device)
                asked = {"model_name": args.yolo_model, "number_of_epochs": args.yolo_epochs, "device": args.device}
                result, took = kestrel(settings, engine, name, asked | (
                    {"img_size": args.yolo_img_size} if args.yolo_img_size else {}))
                size = int(_params(result)["img_size"])
                ours = best_reported(engine, result.trial_id, "map_50")
                theirs, their_s = yolo_train(data, Path(tmp) / f"yolo-{name}", args.yolo_model, args.yolo_epochs, size,
                                             args.device)
                line(f"{name} {args.yolo_model} from scratch, {args.yolo_epochs} epochs, {size} px", ours, theirs,
                     took, their_s, "mAP50")


def _params(result: Any) -> dict[str, Any]:
    import json

    return json.loads(Path(result.artifacts["params"]).read_text())


if __name__ == "__main__":
    main()
