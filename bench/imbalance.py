"""Does the class-imbalance autopilot help the class it is for? Side by side, in one run, at equal budget.

From the shared fridge photos (4 classes, ~33 each) it builds a balanced validation split (every fourth
photo of each class) and a training split that keeps only ``--rare`` photos of one class (the rest of
the others): imbalanced well past the ratio of 5 at which the recipe steps in. The same model, epochs and
seeds then train three ways:

- ``none``: weighted_loss 0, what the job would get without the autopilot;
- ``auto``: nothing set, so the recipe's remedy (for a classifier, the loss weighted by the class weights,
  weighted_loss 2);
- ``sqrt``: weighted_loss 1, the square root of the class weights, the gentler remedy.

It prints, per way and seed, the rare class's recall, the mean recall of the others and accuracy, then the
means and the autopilot's ratio against none.

    .venv/bin/python bench/imbalance.py [--rare 4] [--epochs 10] [--seeds 0 1] [--model resnet18]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from learning import CLASSIFICATION, studio

WAYS = {"none": {"weighted_loss": 0}, "auto": {}, "sqrt": {"weighted_loss": 1}}


def split(source: Path, folder: Path, rare_class: str, rare: int) -> tuple[Path, Path]:
    """train.jsonl (imbalanced) and validation.jsonl (balanced) beside a link to the images."""
    lines = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    (folder / "small-150").symlink_to(source.parent / "small-150")
    train, validation, kept = [], [], defaultdict(int)
    for n, line in enumerate(sorted(lines, key=lambda x: x["image_url"])):
        if n % 4 == 0:
            validation.append(line)
        elif line["label"] != rare_class or kept[rare_class] < rare:
            kept[line["label"]] += 1
            train.append(line)
    files = folder / "train.jsonl", folder / "validation.jsonl"
    for file, rows in zip(files, (train, validation), strict=True):
        file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"training images per class: {dict(sorted(kept.items()))}; validation: {len(validation)} images")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rare", type=int, default=4, help="training photos kept of the rare class")
    parser.add_argument("--rare-class", default="milk_bottle")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--model", default="resnet18")
    args = parser.parse_args()
    from core.base.tasks import Task
    from core.data.importer import ImportOptions, import_dataset
    from core.runs.trial import run_trial

    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as folder:
        settings, engine = studio(Path(folder) / "home")
        train, validation = split(CLASSIFICATION["fridgeObjects_small150"], Path(folder), args.rare_class, args.rare)
        import_dataset(train, ImportOptions("imbalanced", Task.CLASSIFICATION, validation_source=validation),
                       settings=settings, engine=engine)
        for seed in args.seeds:
            for way, overrides in WAYS.items():
                result = run_trial(settings=settings, engine=engine, dataset="imbalanced", version=None,
                                   overrides={"model_name": args.model, "number_of_epochs": args.epochs,
                                              "early_stopping": False, "seed": seed, **overrides})
                scored = score(result, args.rare_class)
                results[way].append(scored)
                print(f"seed {seed} {way:>4}: rare recall {scored['rare']:.3f}, others {scored['others']:.3f}, "
                      f"accuracy {scored['accuracy']:.3f}")
    means = {way: {k: statistics.mean(r[k] for r in rows) for k in rows[0]} for way, rows in results.items()}
    for way, m in means.items():
        print(f"mean {way:>4}: rare recall {m['rare']:.3f}, others {m['others']:.3f}, accuracy {m['accuracy']:.3f}")
    none, auto = means["none"], means["auto"]
    print(f"autopilot against none: rare recall {auto['rare'] - none['rare']:+.3f}, accuracy "
          f"{auto['accuracy'] / none['accuracy']:.2f}x")


def score(result: Any, rare_class: str) -> dict[str, float]:
    evaluation = json.loads(Path(result.artifacts["evaluation"]).read_text())
    recall = {row["class"]: row["recall"] for row in evaluation["per_class"]}
    others = [v for c, v in recall.items() if c != rare_class]
    return {"rare": recall[rare_class], "others": statistics.mean(others), "accuracy": result.metrics["accuracy"]}


if __name__ == "__main__":
    main()
