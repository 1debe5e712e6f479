"""Hostile job files (issue 14, items 1, 4, 10 and 13): each is refused by name, with what to do,
before anything is stored, and what was stored before is left as it was. A job file comes from
anyone who can run ``kestrel job submit``; these are the files a careless or hostile one writes."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import select

from core.base.errors import ConfigError
from core.base.strict_yaml import MAX_YAML_NODES
from core.sweep import orchestrator
from core.sweep.jobspec import parse_job
from core.sweep.samplers import Sweeper
from core.sweep.space import grid_size, parse_space
from storage.db import session_scope
from storage.repos import jobs
from storage.tables import Dataset, Job

HEAD = "type: automl\ntask: image_classification\ntraining_data: {path: train, type: mltable}\n"
# Ten parameters of ten choices: 10^10 points in a few hundred bytes.
HUGE_GRID = {name: {"type": "choice", "values": list(range(1, 11))} for name in (
    "number_of_epochs", "training_batch_size", "validation_batch_size", "warmup_cosine_lr_warmup_epochs",
    "step_lr_step_size", "early_stopping_patience", "early_stopping_delay", "evaluation_frequency",
    "layers_to_freeze", "gradient_accumulation_step")}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Where job files are written, beside a small MLTable folder ``train`` they point at."""
    train = tmp_path / "jobs" / "train"
    train.mkdir(parents=True)
    (train / "MLTable").write_text("paths:\n  - file: ./train.jsonl\n")
    (train / "train.jsonl").write_text("")
    return train.parent


@pytest.fixture
def before(engine: Any) -> list[tuple[Any, ...]]:
    """A job stored before the hostile submit, whose row must come through it unchanged."""
    with session_scope(engine) as session:
        jobs.enqueue(session=session, kind="automl", name="earlier", spec={"yaml": HEAD, "dataset": "d",
                                                                         "version": 1})
    return _stored(engine)


def _stored(engine: Any) -> list[tuple[Any, ...]]:
    with session_scope(engine) as session:
        rows = [(j.id, j.name, j.status, j.spec, j.error) for j in session.exec(select(Job)).all()]
        return rows + [("datasets", len(session.exec(select(Dataset)).all()))]


def _submit_refused(cli: Any, file: Path) -> str:
    code, _, err = cli("job", "submit", str(file), ok=False)
    assert code == 2, err
    assert "Traceback" not in err
    return " ".join(err.split())


def _peak_mib(work: Any) -> float:
    tracemalloc.start()
    try:
        work()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1024**2


# -- 13: a loose schema ----------------------------------------------------------------------------------

def test_a_key_written_twice_is_refused_with_both_lines(cli, engine, folder, before):
    file = folder / "twice.yml"
    file.write_text(HEAD + "limits:\n  max_trials: 4\n  max_trials: 40\n")
    err = _submit_refused(cli, file)
    assert "twice.yml: limits.max_trials: is written twice (lines 5 and 6)" in err
    assert "keep the one you mean and delete the other" in err
    assert _stored(engine) == before


def test_a_key_written_twice_on_one_line_is_refused(folder):
    with pytest.raises(ConfigError) as info:
        parse_job(HEAD + "tags: {team: a, team: b}\n", folder)
    assert info.value.path == "tags.team" and "lines 4 and 4" in info.value.reason


def test_merge_keys_may_still_override_what_they_merge(folder):
    text = HEAD + "tags:\n  <<: {a: '1'}\n  a: '2'\n"
    assert parse_job(text, folder).tags == {"a": "2"}


@pytest.mark.parametrize("where", ["limits:\n  max_trials: true\n", "limits:\n  timeout_minutes: false\n",
                                  "limits:\n  trial_timeout_minutes: yes\n"])
def test_a_yes_no_value_is_not_a_count(cli, engine, folder, before, where):
    file = folder / "bool.yml"
    file.write_text(HEAD + where)
    err = _submit_refused(cli, file)
    field = where.split()[1].rstrip(":")
    assert f"bool.yml: limits.{field}:" in err
    assert f"a yes/no value is not a number; write a whole number, e.g. {field}: 10" in err
    assert _stored(engine) == before


def test_a_yes_no_value_is_not_an_evaluation_interval(folder):
    with pytest.raises(ConfigError) as info:
        parse_job(HEAD + "search_space: [{learning_rate: {type: uniform, min_value: 0.001, max_value: 0.1}}]\n"
                  "sweep:\n  early_termination: {type: median_stopping, evaluation_interval: true}\n", folder)
    assert info.value.path == "sweep.early_termination.evaluation_interval"


# -- 4: an alias bomb --------------------------------------------------------------------------------------

def _alias_bomb() -> str:
    """Nine levels of nine aliases under ``tags``: a few hundred bytes standing for 9^10 strings."""
    lines = ["x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_in_little_memory(cli, engine, folder, before):
    file = folder / "bomb.yml"
    # The anchors sit under a key the parser reads as a mapping, so only the expansion check stops them.
    file.write_text(HEAD + "tags:\n" + "".join(f"  {line}\n" for line in _alias_bomb().splitlines()))
    started = time.monotonic()
    err = _submit_refused(cli, file)
    assert time.monotonic() - started < 60  # most of it is importing the CLI; the refusal itself is ms
    assert "bomb.yml: tags.x" in err and f"expands to more than {MAX_YAML_NODES:,} values" in err
    assert "write the values out instead of aliasing aliases" in err
    assert _stored(engine) == before


def test_the_alias_bomb_check_is_bounded_in_time_and_memory(folder):
    text = HEAD + "tags:\n" + "".join(f"  {line}\n" for line in _alias_bomb().splitlines())

    def refuse() -> None:
        with pytest.raises(ConfigError):
            parse_job(text, folder)

    started = time.monotonic()
    peak = _peak_mib(refuse)
    print(f"alias bomb (9^10 values as written out): refused in {time.monotonic() - started:.3f} s, "
          f"peak {peak:.2f} MiB traced")
    assert peak < 20 and time.monotonic() - started < 5


def test_an_alias_bomb_inside_a_choice_call_is_refused(folder):
    levels = ["&x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = HEAD + f"search_space:\n  - model_name: 'choice([{', '.join(levels)}])'\n"
    with pytest.raises(ConfigError) as info:
        parse_job(text, folder)
    assert info.value.path == "search_space[0].model_name"
    assert f"choice(...): expands to more than {MAX_YAML_NODES:,} values" in str(info.value)


def test_an_alias_to_itself_is_refused(folder):
    with pytest.raises(ConfigError) as info:
        parse_job(HEAD + "tags: {a: &loop [x, *loop]}\n", folder)
    assert info.value.path == "tags.a[1]" and "refers to itself" in info.value.reason


def test_plain_anchors_and_aliases_still_work(folder):
    text = HEAD + ("limits: {max_trials: 4}\nsweep: {sampling_algorithm: grid}\nsearch_space:\n"
                   "  - &base {model_name: resnet18, learning_rate: {type: choice, values: [0.01, 0.1]}}\n"
                   "  - <<: *base\n    model_name: resnet34\n")
    job = parse_job(text, folder)
    assert [sub["model_name"] for sub in job.search_space] == ["resnet18", "resnet34"]


def test_nesting_too_deep_is_refused_by_name(folder):
    with pytest.raises(ConfigError) as info:
        parse_job(HEAD + "tags: " + "[" * 5000 + "]" * 5000 + "\n", folder)
    assert info.value.path == "job" and "nested too deeply" in info.value.reason


# -- 10: the job file's size -------------------------------------------------------------------------------

def test_a_job_file_over_the_size_limit_is_refused_before_it_is_read(cli, engine, settings, folder, before):
    file = folder / "big.yml"
    padding = "# " + "x" * 98 + "\n"
    file.write_text(HEAD + padding * (settings.max_job_file_bytes // len(padding) + 1))
    size = file.stat().st_size
    err = _submit_refused(cli, file)
    assert f"{file}: the job file is {size:,} bytes, over the limit of {settings.max_job_file_bytes:,} bytes" in err
    assert "raise the limit with KESTREL_MAX_JOB_FILE_BYTES" in err
    assert _stored(engine) == before


def test_the_job_file_limit_is_a_setting(cli, engine, folder, before, monkeypatch):
    monkeypatch.setenv("KESTREL_MAX_JOB_FILE_BYTES", "50")
    file = folder / "small.yml"
    file.write_text(HEAD)
    err = _submit_refused(cli, file)
    assert f"{len(HEAD.encode()):,} bytes, over the limit of 50 bytes" in err
    assert _stored(engine) == before


# -- 1: a huge grid ----------------------------------------------------------------------------------------

def test_a_grid_over_the_limit_is_refused_at_submit_with_its_count(cli, engine, settings, folder, before):
    file = folder / "grid.yml"
    file.write_text(HEAD + yaml.safe_dump({"limits": {"max_trials": 10}, "sweep": {"sampling_algorithm": "grid"},
                                           "search_space": [HUGE_GRID, {"learning_rate": 0.1}]}))
    err = _submit_refused(cli, file)
    assert (f"grid.yml: search_space: the grid has 10,000,000,001 points, over the limit of "
            f"{settings.max_grid_points:,} (KESTREL_MAX_GRID_POINTS)") in err
    assert "give fewer choices, or use sampling_algorithm: random or bayesian" in err
    assert _stored(engine) == before  # refused before its data was imported as a dataset


def test_grid_size_is_counted_without_building_the_grid():
    space = parse_space([HUGE_GRID] * 3)
    peak = _peak_mib(lambda: grid_size(space))
    print(f"grid of {grid_size(space):,} points counted in {peak:.3f} MiB traced")
    assert grid_size(space) == 3 * 10**10 and peak < 1


def test_a_grid_sweep_serves_its_first_points_without_building_the_rest():
    """A grid queued before the limit existed (or under a raised one) is walked, never built whole."""
    sweeper = Sweeper(parse_space([HUGE_GRID]), "grid", seed=0, max_trials=3)
    started = time.monotonic()
    asked = [sweeper.ask() for _ in range(4)]
    assert time.monotonic() - started < 5
    assert [a[1]["gradient_accumulation_step"] for a in asked[:3] if a] == [1, 2, 3] and asked[3] is None


def _running_huge_grid_job(engine: Any) -> Job:
    text = HEAD.replace("{path: train, type: mltable}", "azureml:gone:1") + yaml.safe_dump(
        {"limits": {"max_trials": 10}, "sweep": {"sampling_algorithm": "grid"}, "search_space": [HUGE_GRID]})
    with session_scope(engine) as session:
        jobs.enqueue(session=session, kind="automl", name="huge", spec={"yaml": text, "dataset": "gone",
                                                                      "version": 1})
    with session_scope(engine) as session:
        job = jobs.claim_next(session=session, worker_id="test-worker")
        assert job is not None
        session.expunge(job)
        return job


def _no_sweep(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the sweep was built for a canceled job")


def test_a_cancel_before_the_job_starts_is_honoured_before_the_sweep(settings, engine, monkeypatch):
    from core.worker.queue import Worker

    job = _running_huge_grid_job(engine)
    with session_scope(engine) as session:
        jobs.request_cancel(session=session, job_id=job.id)
    monkeypatch.setattr(orchestrator, "_sweeper", _no_sweep)
    Worker(settings, engine)._run_job(job)
    with session_scope(engine) as session:
        row = jobs.get(session=session, job_id=job.id)
        assert row.status == "canceled" and row.message == orchestrator.NOT_STARTED and not row.error


def test_a_cancel_while_the_job_is_set_up_is_honoured_before_the_sweep(settings, engine, monkeypatch):
    job = _running_huge_grid_job(engine)

    def capacity_while_canceled(wanted: int, trial_mb: float | None) -> orchestrator.Capacity:  # during setup
        with session_scope(engine) as session:
            jobs.request_cancel(session=session, job_id=job.id)
        return orchestrator.Capacity([orchestrator.Slot(threads=1)])

    monkeypatch.setattr(orchestrator.Capacity, "of_machine", staticmethod(capacity_while_canceled))
    monkeypatch.setattr(orchestrator, "_sweeper", _no_sweep)
    assert orchestrator.run_job(job, settings, engine) == orchestrator.NOT_STARTED


def test_a_job_naming_a_dataset_that_does_not_exist_is_refused_before_torch_is_loaded(settings, tmp_path):
    """A refusal comes in about two seconds instead of the ten that loading torch and timm takes."""
    import subprocess
    import sys

    file = tmp_path / "job.yml"
    file.write_text("type: automl\ntask: image_classification\ntraining_data: {path: azureml:nosuch:1, "
                    "type: mltable}\n")
    probe = ("import sys\nfrom pathlib import Path\nfrom core.base.errors import ConfigError\n"
             "from core.sweep.jobs import submit_job\nfrom storage.db import make_engine\n"
             "from storage.settings import Settings\nsettings = Settings()\n"
             "try:\n    submit_job(Path(sys.argv[1]), settings=settings, engine=make_engine(settings.db_url))\n"
             "except ConfigError as exc:\n    print(exc)\nprint('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe, str(file)], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == [
        "training_data.path: dataset nosuch:1 is not registered; did you mean 'kestrel data list'?", "False"], \
        done.stderr
