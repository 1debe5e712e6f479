"""The worker's "score" and "export" jobs (queued by the Test-score and Models pages) run for real on a tiny
registered classifier: answers in the scoring schema with the model's labels, explanations when asked,
unreadable images named, staged uploads removed, exported files that agree with PyTorch."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.inference.export import check_parity
from core.inference.models import register, resolve
from core.runs.trial import run_trial
from core.worker.queue import Worker
from storage.db import make_engine, session_scope
from storage.repos import jobs
from storage.settings import Settings

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, template_db: Path, one_thread: None) -> Iterator[dict[str, Any]]:
    """Model ``shapes:1``: a 1-epoch test_resnet on 16 shapes at 32 px; and images to upload."""
    root = tmp_path_factory.mktemp("studio-jobs")
    settings = Settings(home=root / "home")
    settings.home.mkdir()
    shutil.copyfile(template_db, settings.home / "kestrel.db")
    engine = make_engine(settings.db_url)
    jsonl = write_sample(Task.CLASSIFICATION, root / "shapes", count=16, size=64)
    import_dataset(jsonl, ImportOptions("shapes", Task.CLASSIFICATION), settings=settings, engine=engine)
    trial = run_trial(settings=settings, engine=engine, dataset="shapes", version=None,
                      overrides={"model_name": "test_resnet", "number_of_epochs": 1, "training_batch_size": 8,
                                 "training_crop_size": 32, "validation_crop_size": 32, "validation_resize_size": 32})
    register(settings=settings, engine=engine, name="shapes", trial_id=trial.trial_id)
    yield {"settings": settings, "engine": engine, "images": sorted((root / "shapes" / "images").iterdir())}
    engine.dispose()


def _run(home: dict[str, Any], kind: str, spec: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Queue one job, let an in-process worker run the queue, and return the job as it ended."""
    with session_scope(home["engine"]) as session:
        job_id = jobs.enqueue(session=session, kind=kind, name=kind, spec=spec).id
    assert Worker(home["settings"], home["engine"]).run(once=True) == 1
    with session_scope(home["engine"]) as session:
        return jobs.get(session=session, job_id=job_id)


def _staged(settings: Settings, files: dict[str, bytes]) -> dict[str, Any]:
    """Uploads staged as the Test-score page stages them."""
    root = settings.staging_dir / "upload-1"
    root.mkdir(parents=True)
    images = []
    for k, (name, data) in enumerate(files.items()):
        (root / f"{k:04d}.png").write_bytes(data)
        images.append({"name": name, "path": str(root / f"{k:04d}.png")})
    return {"images": images, "staging": str(root)}


def test_a_score_job_answers_and_explains_each_readable_image(home: dict[str, Any]) -> None:
    settings = home["settings"]
    first, second = (p.read_bytes() for p in home["images"][:2])
    files = {"a.png": first, "notes.png": b"not pixels", "b.png": second}
    staged = _staged(settings, files)
    xai = {"xai_algorithm": "integrated_gradients", "n_steps": 4, "visualizations": True}
    job = _run(home, "score", {"model": "shapes:1", **staged, "xai": xai})
    assert job.status == "completed", job.error
    assert job.message == "scored 2 image(s) with shapes:1, 1 could not be read" and job.progress == 1.0
    folder = settings.job_dir(job.id)
    answers = json.loads((folder / "answers.json").read_text())
    assert [a["filename"] for a in answers] == ["a.png", "b.png"]
    for answer in answers:
        assert answer["labels"] == CLASSES and abs(sum(answer["probs"]) - 1) < 1e-4
        assert isinstance(answer["visualizations"], str) and len(answer["visualizations"]) > 100
    # The answered images are kept beside the answers, in their order; the unreadable one is named.
    assert [p.read_bytes() for p in sorted((folder / "images").iterdir())] == [files["a.png"], files["b.png"]]
    skipped = json.loads((folder / "skipped.json").read_text())
    assert [s["file"] for s in skipped] == ["notes.png"] and "not an image" in skipped[0]["problem"]
    assert not Path(staged["staging"]).exists()


def test_a_score_job_of_a_missing_model_or_only_broken_images_fails_saying_why(home: dict[str, Any]) -> None:
    settings = home["settings"]
    staged = _staged(settings, {"a.png": home["images"][0].read_bytes()})
    job = _run(home, "score", {"model": "shapes:7", **staged, "xai": None})
    assert job.status == "failed" and "model 'shapes:7' not found" in job.error
    assert not Path(staged["staging"]).exists()
    staged = _staged(settings, {"notes.png": b"not pixels"})
    job = _run(home, "score", {"model": "shapes:1", **staged, "xai": None})
    assert job.status == "failed" and "none could be read: notes.png: not an image" in job.error


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".torchscript")])
def test_an_export_job_writes_a_model_that_agrees_with_pytorch(home: dict[str, Any], fmt: str, suffix: str) -> None:
    job = _run(home, "export", {"model": "shapes:1", "format": fmt})
    assert job.status == "completed", job.error
    folder = home["settings"].job_dir(job.id)
    assert sorted(p.name for p in folder.iterdir()) == [f"model{suffix}", f"model{suffix}.json"]
    sidecar = json.loads((folder / f"model{suffix}.json").read_text())
    assert sidecar["format"] == fmt and sidecar["classes"] == CLASSES
    with session_scope(home["engine"]) as session:
        artifact_dir = Path(resolve(session, "shapes:1").artifact_dir)
    assert check_parity(folder / f"model{suffix}", artifact_dir).ok


def test_an_export_to_an_unknown_format_fails_naming_the_formats(home: dict[str, Any]) -> None:
    job = _run(home, "export", {"model": "shapes:1", "format": "tflite"})
    assert job.status == "failed" and "onnx" in job.error and "torchscript" in job.error
