"""The studio's submit: checked and queued without the model libraries; a model name only they know
is checked by the worker before its first trial."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.base.errors import ConfigError
from core.base.params import resolve_params
from core.base.tasks import Task
from core.sweep.jobs import submit_job
from core.sweep.orchestrator import run_job
from core.zoo.catalog import CANDIDATES, REFERENCE_NAMES
from storage.db import session_scope
from storage.repos import jobs, trials

ROOT = Path(__file__).resolve().parents[2]


def _job_file(folder: Path, data: Path, model: str) -> Path:
    path = folder / "job.yml"
    path.write_text(yaml.safe_dump({
        "type": "automl", "task": "image_classification", "training_data": {"path": str(data), "type": "uri_file"},
        "training_parameters": {"model_name": model, "number_of_epochs": 1}, "limits": {"max_trials": 1}}))
    return path


def test_every_catalog_name_is_one_the_model_libraries_train():
    """The quick path trusts the catalog's names; each must resolve for its task."""
    from core.zoo.families import resolve

    for task in Task:
        names = [*REFERENCE_NAMES[task], *(m for (t, _), ms in CANDIDATES.items() if t is task for m in ms)]
        for name in names:
            resolve(name, task, resolve_params(task, {"model_name": name}))


def test_submit_without_the_libraries_loads_no_torch(settings, tmp_path):
    from core.data.samples import write_sample

    data = write_sample(Task.CLASSIFICATION, tmp_path / "data", count=20, size=32)
    code = ("import sys\nfrom pathlib import Path\nfrom core.sweep.jobs import submit_job\n"
            "from storage.db import make_engine, upgrade\nfrom storage.settings import Settings\n"
            "s = Settings(); e = make_engine(s.db_url); upgrade(e, s)\n"
            f"job = submit_job(Path({str(_job_file(tmp_path, data, 'resnet18'))!r}), settings=s, engine=e, "
            "libraries=False)\nprint(job.id, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False"]


def test_a_name_only_the_libraries_could_check_fails_the_job_before_any_trial(settings, engine, tmp_path):
    from core.data.samples import write_sample

    data = write_sample(Task.CLASSIFICATION, tmp_path / "data", count=20, size=32)
    job = submit_job(_job_file(tmp_path, data, "resnet18x"), settings=settings, engine=engine, libraries=False)
    with pytest.raises(ConfigError, match="'resnet18x' is not a model for image_classification") as info:
        run_job(job, settings, engine)
    assert "resnet18" in info.value.hints
    with session_scope(engine) as session:
        assert trials.for_job(session=session, job_id=job.id) == []
        assert jobs.get(session=session, job_id=job.id).status == "queued"  # the worker marks it failed
    with pytest.raises(ConfigError, match="training_parameters.model_name"):  # the CLI still asks at once
        submit_job(_job_file(tmp_path, data, "resnet18x"), settings=settings, engine=engine)
