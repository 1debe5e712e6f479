"""Batch scoring: a model over a folder of images, a labelled file (JSONL, MLTable, COCO, …) or a
registered dataset version, writing one SPEC §8 answer per line; labelled data also gets the task's
metrics report, computed as in training. Also the worker's side of the Test-score page: a few uploaded
images answered (and explained) as an endpoint answers them, kept in the job's folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from core.base.errors import InputError
from core.base.prediction import Prediction
from core.base.tasks import Task
from core.data.formats import detect_format, get_format
from core.data.records import Problem
from core.data.validate import SUFFIX_BY_FORMAT, ItemError, check_image, clean_labels, open_image
from core.data.view import Item, load_version
from core.inference.predict import answer_json, predict_json
from core.metrics.classification import classification_metrics
from core.metrics.detection import detection_metrics
from core.zoo.base import Predictor
from storage.artifacts import BlobStore, write_atomic
from storage.db import session_scope
from storage.settings import Settings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
BATCH = 16
ANSWERS_FILE, SKIPPED_FILE, IMAGES_FOLDER = "answers.json", "skipped.json", "images"


@dataclass
class Source:
    items: list[Item]
    labelled: bool
    skipped: list[dict[str, Any]]


def read_source(path_or_ref: str, task: Task, settings: Settings, engine: Any) -> Source:
    """The images to score: a path (folder of images, or any labelled format) or a dataset ``NAME:VERSION``."""
    path = Path(path_or_ref).expanduser()
    if not path.exists():
        name, _, number = path_or_ref.removeprefix("azureml:").partition(":")
        with session_scope(engine) as session:
            data = load_version(session=session, blobs=BlobStore(settings.blobs_dir), name=name,
                                version=int(number) if number.isdigit() else None)
        return Source(data.train + data.validation, True, [])
    if path.is_dir() and not _has_labels(path):
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(str(path), "holds no images", "point at a folder of JPEG/PNG files or a labelled file")
        return Source([Item(f, str(f.relative_to(path)), 0, 0, (), ()) for f in files], False, [])
    items, skipped = [], []
    for record in get_format(detect_format(path)).read(path):
        if isinstance(record, Problem):
            skipped.append(record.as_dict())
            continue
        try:
            width, height, _ = check_image(record.image.read_bytes(), settings.max_image_pixels)
            tags, instances = clean_labels(record, task, width, height)
        except (ItemError, OSError) as exc:
            skipped.append({"file": record.origin, "line": record.line, "error": f"{record.name}: {exc}",
                            "fix": getattr(exc, "fix", "")})
            continue
        items.append(Item(record.image, record.name, width, height, tags, instances))
    return Source(items, True, skipped)


def _has_labels(folder: Path) -> bool:
    try:
        detect_format(folder)
    except Exception:  # a plain folder of images is no labelled format
        return False
    return True


def score(predictor: Predictor, source: Source, out: Path,
          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write ``out`` (JSONL, one answer per image); returns the report, with metrics when labelled."""
    predictions: list[Prediction] = []
    lines = []
    for start in range(0, len(source.items), BATCH):
        chunk = source.items[start:start + BATCH]
        images = []
        for item in chunk:
            with Image.open(item.path) as image:
                images.append(ImageOps.exif_transpose(image).convert("RGB"))
        batch = predictor.predict(images)
        predictions += batch
        lines += [json.dumps(answer) for answer in predict_json(_Replay(predictor, batch), images,
                                                                  [item.name for item in chunk])]
        if progress:
            progress(min(start + BATCH, len(source.items)), len(source.items))
    write_atomic(out, ("\n".join(lines) + "\n").encode())
    report: dict[str, Any] = {"images": len(source.items), "predictions": str(out), "skipped": source.skipped}
    if source.labelled and source.items:
        flat, details = _metrics(predictor, source.items, predictions)
        report["metrics"], report["evaluation"] = flat, details
        report["metrics_file"] = str(out.with_name(out.stem + "_metrics.json"))
        write_atomic(Path(report["metrics_file"]), json.dumps({"metrics": flat, **details}, indent=2).encode())
    return report


@dataclass
class _Replay:
    """Hands back predictions already made, so predict_json formats them without a second forward pass."""

    inner: Predictor
    made: list[Prediction]

    @property
    def task(self) -> Task:
        return self.inner.task

    @property
    def classes(self) -> list[str]:
        return self.inner.classes

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        return self.made


def _metrics(predictor: Predictor, items: list[Item], predictions: list[Prediction]
             ) -> tuple[dict[str, float], dict[str, Any]]:
    classes = list(predictor.classes)
    if predictor.task in (Task.CLASSIFICATION, Task.MULTILABEL):
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({t for item in items for t in item.tags if t not in index})
        if unknown:
            raise InputError("labels", f"the model does not know the classes {unknown}", "score data of its classes")
        probs = torch.tensor([p.probs for p in predictions])
        if predictor.task is Task.MULTILABEL:
            targets = torch.zeros(len(items), len(classes))
            for row, item in enumerate(items):
                targets[row, [index[t] for t in item.tags]] = 1
        else:
            targets = torch.tensor([index[item.tags[0]] for item in items])
        return classification_metrics(probs, targets, classes, predictor.task is Task.MULTILABEL)
    return detection_metrics(items, predictions, classes, masks=predictor.task is Task.SEGMENTATION)


@dataclass(frozen=True)
class ImagesToScore:
    """Uploaded images to answer: their names as uploaded (each answer's ``filename``), where they lie,
    and the SPEC §9 ``xai_parameters`` when every image is to be explained too."""

    names: list[str]
    paths: list[Path]
    xai: dict[str, Any] | None = None


def score_images(predictor: Predictor, request: ImagesToScore, out_dir: Path, *, max_pixels: int,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Answer each image as an endpoint would and keep, in ``out_dir``: ``answers.json`` (the list of
    answers), ``images/`` (the images answered, ``0000.png``… in the answers' order) and ``skipped.json``
    (images that could not be read: file, problem, fix). Returns the counts; none readable is an InputError."""
    answers, skipped = [], []
    for k, (name, path) in enumerate(zip(request.names, request.paths, strict=True)):
        try:
            data = path.read_bytes()
            image = open_image(data, max_pixels)
            suffix = SUFFIX_BY_FORMAT[image.format or ""]
            image = ImageOps.exif_transpose(image).convert("RGB")
        except (ItemError, OSError) as exc:
            skipped.append({"file": name, "problem": str(exc), "fix": getattr(exc, "fix", "upload it again")})
        else:
            answers += answer_json(predictor, [image], [name], [request.xai])
            write_atomic(out_dir / IMAGES_FOLDER / f"{len(answers) - 1:04d}{suffix}", data)
        if progress:
            progress(k + 1, len(request.names))
    if not answers:
        raise InputError("the uploaded images", "none could be read: " + "; ".join(
            f"{s['file']}: {s['problem']}" for s in skipped), "upload JPEG or PNG images")
    write_atomic(out_dir / SKIPPED_FILE, json.dumps(skipped, indent=2).encode())
    write_atomic(out_dir / ANSWERS_FILE, json.dumps(answers).encode())
    return {"images": len(answers), "skipped": skipped}
