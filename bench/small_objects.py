"""Does the small-object advisor's proposal find more of the small objects? Side by side, in one run, at equal time.

From the shared fridge photos (odFridgeObjects: cans, cartons, milk and water bottles) it cuts out every
labelled object and pastes them small (about ``--side`` pixels along their longer side) onto large canvases
whose background is another fridge photo, blurred; training and validation canvases take their objects
from different photos. After importing the set, it asks the advisor (`core.train.small_objects`) what the
dataset's statistics call for, then trains the same model from the same seed two ways:

- ``default``: only the model and the epochs set, what a job gets without the advice;
- ``advised``: the proposal added (tiles and/or larger sizes), with the epochs cut by the proposal's own
  cost figure so that both take about the same time.

It prints the advice, each side's mAP@0.5 on the validation canvases (scored whole, as serving scores them)
and wall time, and the advised/default ratios.

    .venv/bin/python bench/small_objects.py [--canvases 32] [--side 22] [--epochs 30] [--model yolov8n]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

from learning import DETECTION, kestrel, studio
from PIL import Image, ImageFilter

CANVAS = (640, 480)  # a photo the default YOLO size takes as it is: the objects stay as small as pasted


def cut_objects(annotations: Path) -> list[tuple[int, str, Image.Image]]:
    """(source photo, label, cut-out) for every labelled object of the fridge set."""
    out = []
    for n, line in enumerate(annotations.read_text().splitlines()):
        row = json.loads(line)
        with Image.open((annotations.parent / row["image_url"]).resolve()) as opened:
            photo = opened.convert("RGB")
        for box in row["label"]:
            w, h = photo.size
            out.append((n, box["label"], photo.crop((round(box["topX"] * w), round(box["topY"] * h),
                                                     round(box["bottomX"] * w), round(box["bottomY"] * h)))))
    return out


def build(folder: Path, annotations: Path, canvases: int, side: int, seed: int) -> tuple[Path, Path]:
    """train.jsonl and validation.jsonl over canvases with 3 to 5 small objects each (a quarter for validation)."""
    rng = random.Random(seed)
    objects = cut_objects(annotations)
    photos = sorted({n for n, _, _ in objects})
    held_out = set(photos[::4])  # validation canvases paste objects from these photos only
    backgrounds = sorted(annotations.parent.resolve().parent.glob("images/*.jpg"))
    (folder / "images").mkdir()
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    for k in range(canvases):
        split = "validation" if k % 4 == 0 else "train"
        pool = [o for o in objects if (o[0] in held_out) == (split == "validation")]
        with Image.open(rng.choice(backgrounds)) as opened:
            canvas = opened.convert("RGB").resize(CANVAS).filter(ImageFilter.GaussianBlur(6))
        labels, taken = [], []
        for _, label, cut in rng.sample(pool, rng.randint(3, 5)):
            scale = side * rng.uniform(0.8, 1.2) / max(cut.size)
            small = cut.resize((max(2, round(cut.width * scale)), max(2, round(cut.height * scale))),
                               Image.Resampling.LANCZOS)
            for _ in range(50):  # a free spot: pasted objects do not overlap
                x, y = rng.randrange(CANVAS[0] - small.width), rng.randrange(CANVAS[1] - small.height)
                spot = (x - 4, y - 4, x + small.width + 4, y + small.height + 4)
                if not any(a < spot[2] and spot[0] < c and b < spot[3] and spot[1] < d for a, b, c, d in taken):
                    break
            taken.append(spot)
            canvas.paste(small, (x, y))
            labels.append({"label": label, "topX": x / CANVAS[0], "topY": y / CANVAS[1],
                           "bottomX": (x + small.width) / CANVAS[0], "bottomY": (y + small.height) / CANVAS[1]})
        name = f"images/{k:03d}.png"
        canvas.save(folder / name)
        splits[split].append(json.dumps({"image_url": name, "label": labels}))
    files = folder / "train.jsonl", folder / "validation.jsonl"
    for file, rows in zip(files, splits.values(), strict=True):
        file.write_text("\n".join(rows) + "\n")
    print(f"{len(splits['train'])} training and {len(splits['validation'])} validation canvases of "
          f"{CANVAS[0]}x{CANVAS[1]}, objects about {side} px across", flush=True)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canvases", type=int, default=32)
    parser.add_argument("--side", type=int, default=22, help="pixels along a pasted object's longer side")
    parser.add_argument("--epochs", type=int, default=30, help="the default side's epochs")
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--batch", type=int, default=4, help="small batches: a few canvases still make steps")
    parser.add_argument("--lr", type=float, default=0.01, help="as the YOLO learning tests train from scratch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from core.base.tasks import Task
    from core.data.importer import ImportOptions, import_dataset
    from core.train.small_objects import assess
    from storage.db import session_scope
    from storage.repos import datasets

    with tempfile.TemporaryDirectory() as folder:
        settings, engine = studio(Path(folder) / "home")
        train, validation = build(Path(folder), DETECTION["odFridgeObjects"] / "annotations.jsonl",
                                  args.canvases, args.side, args.seed)
        import_dataset(train, ImportOptions("small", Task.DETECTION, validation_source=validation),
                       settings=settings, engine=engine)
        with session_scope(engine) as session:
            stats = datasets.get_version(session=session, name="small", version=1).stats
        seen = assess(stats, Task.DETECTION)
        if seen is None or not seen.proposal:
            print("the advisor finds nothing to advise: make the objects smaller (--side)")
            return
        print(f"advice: {seen.why}\nproposal: {seen.proposal}", flush=True)
        advised_epochs = max(1, round(args.epochs / seen.cost))
        common = {"model_name": args.model, "early_stopping": False, "seed": args.seed,
                  "training_batch_size": args.batch, "learning_rate": args.lr}
        runs: dict[str, tuple[Any, float]] = {}
        for way, overrides in (("default", {"number_of_epochs": args.epochs}),
                               ("advised", {"number_of_epochs": advised_epochs, **seen.proposal})):
            runs[way] = kestrel(settings, engine, "small", {**common, **overrides})
            result, seconds = runs[way]
            print(f"{way:>8}: {overrides}: mAP@0.5 {result.metrics['map_50']:.3f}, recall "
                  f"{result.metrics['recall']:.3f}, {seconds:.0f} s", flush=True)
    (default, default_s), (advised, advised_s) = runs["default"], runs["advised"]
    ratio = advised.metrics["map_50"] / default.metrics["map_50"] if default.metrics["map_50"] else float("inf")
    print(f"advised against default: mAP@0.5 {advised.metrics['map_50']:.3f} vs {default.metrics['map_50']:.3f} "
          f"({ratio:.2f}×), time {advised_s / default_s:.2f}×")


if __name__ == "__main__":
    main()
