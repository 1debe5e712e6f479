"""Small builders of test data: images and annotation files written to a folder, and stored rows."""

from __future__ import annotations

import json
import random
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (32, 24), seed: int = 0, fmt: str = "PNG") -> Path:
    """A distinct image per seed (random pixels), so no two seeds collide as duplicates."""
    rng = random.Random(seed)
    image = Image.new("RGB", size)
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                   for _ in range(size[0] * size[1])])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt)
    return path


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines), encoding="utf-8")
    return path


def box(label: str, x0: float, y0: float, x1: float, y1: float, **extra: Any) -> dict[str, Any]:
    return {"label": label, "topX": x0, "topY": y0, "bottomX": x1, "bottomY": y1, "isCrowd": 0, **extra}


def classification_set(root: Path, per_class: dict[str, int]) -> Path:
    """Images plus a JSONL naming each image's class."""
    lines, seed = [], 0
    for label, n in per_class.items():
        for _ in range(n):
            write_image(root / "images" / f"{seed}.png", seed=seed)
            lines.append({"image_url": f"images/{seed}.png", "label": label})
            seed += 1
    return write_jsonl(root / "train.jsonl", lines)


def bright_dark_set(root: Path, count: int = 40) -> Path:
    """Two classes a model separates in one epoch: dark and bright noise images, 32 px (JSONL)."""
    lines = []
    for i in range(count):
        rng, bright = random.Random(i), i % 2 == 1
        low = 190 if bright else 0
        image = Image.new("RGB", (32, 32))
        image.putdata([tuple(rng.randrange(low, low + 65) for _ in range(3)) for _ in range(32 * 32)])
        (root / "images").mkdir(parents=True, exist_ok=True)
        image.save(root / "images" / f"{i}.png")
        lines.append({"image_url": f"images/{i}.png", "label": "bright" if bright else "dark"})
    return write_jsonl(root / "train.jsonl", lines)


def coco128_yolo_layout(shared: Path, root: Path) -> Path:
    """The shared coco128 YOLO labels in the standard layout: data.yaml beside images/ and labels/."""
    src = shared / "coco128"
    shutil.copytree(src / "train2017", root / "images" / "train2017")
    shutil.copytree(src / "lightly_coco128_yolo" / "object_detection" / "labels", root / "labels")
    config = (src / "lightly_coco128_yolo" / "object_detection" / "config.yaml").read_text()
    (root / "data.yaml").write_text(config.replace("val: images/val2017", "val: images/train2017"))
    return root


def check_scoring_answers(answers: list[dict[str, Any]], classes: list[str], *, polygons: bool,
                          max_points: int = 12) -> None:
    """Detection or segmentation answers in the SPEC §8 schema: normalised boxes of known classes with
    scores, and for segmentation normalised polygons of at most ``max_points`` points."""
    assert sum(len(a["boxes"]) for a in answers) > 0
    for answer in answers:
        assert set(answer) == {"filename", "boxes"}
        for found in answer["boxes"]:
            box = found["box"]
            assert 0 <= box["topX"] <= box["bottomX"] <= 1 and 0 <= box["topY"] <= box["bottomY"] <= 1
            assert found["label"] in classes and 0 < found["score"] <= 1
            assert ("polygon" in found) is polygons
    outlines = [p for a in answers for found in a["boxes"] for p in found.get("polygon", [])]
    assert bool(outlines) is polygons
    for polygon in outlines:
        assert 6 <= len(polygon) <= 2 * max_points and len(polygon) % 2 == 0
        assert all(0 <= v <= 1 for v in polygon)


def trained_artifact(data: Any, out_dir: Path, overrides: dict[str, Any]) -> Path:
    """A model trained in-process on ``data`` and saved as a trial saves it (weights + settings.json)."""
    from core.base.params import resolve_params
    from core.train.context import MemoryContext
    from core.zoo.base import SETTINGS_FILE
    from core.zoo.families import resolve

    params = resolve_params(data.task, overrides)
    family, spec = resolve(params.model_name or "", data.task, params)
    out_dir.mkdir(parents=True)
    trained = family.train(spec, data, params, MemoryContext(out_dir))
    (out_dir / SETTINGS_FILE).write_text(json.dumps({
        **trained.settings, "task": data.task.value, "classes": data.classes, "family": spec.family,
        "architecture": spec.architecture, "size": spec.size, "model_name": params.model_name}))
    return out_dir


def finished_trial(engine: Any, model: str, *, train_images: int, epochs: int, seconds: float,
                   status: str = "completed") -> None:
    """A trial of ``model`` that ran here before on the CPU, as a trial process records one."""
    from storage.db import session_scope
    from storage.repos import trials

    with session_scope(engine) as session:
        trial_id = trials.create(session=session, model_name=model, params={}, primary_metric="accuracy").id
        trials.start(session=session, trial_id=trial_id, device="cpu (2 threads)", pid=1, artifact_dir="",
                     software={}, train_images=train_images)
        trials.finish(session=session, trial_id=trial_id, status=status, metrics={}, primary_metric_value=0.5)
        row = trials.get(session=session, trial_id=trial_id)
        row.finished_at, row.epoch = row.started_at + timedelta(seconds=seconds), epochs
        session.add(row)
