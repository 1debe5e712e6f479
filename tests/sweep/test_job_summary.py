"""Jobs as the jobs list, `job show` and `job list` see them: a page of jobs in a fixed number of queries,
the facts of a job's file stored at submission, and `job list` paged with --limit and --offset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from sqlalchemy import event

from core.base.tasks import Task
from core.data.samples import write_sample
from core.sweep.summary import job_summaries, job_summary
from storage.db import session_scope
from storage.repos import jobs, trials

SWEEP_YAML = "type: automl\ntask: image_classification\nprimary_metric: accuracy\nlimits: {max_trials: 3}\n"
FACTS = {"task": "image_classification_multilabel", "primary_metric": "iou", "max_trials": 7, "timeout_minutes": 30}


def _sweeps(engine: Any, count: int, *, spec: dict[str, Any] | None = None) -> list[int]:
    """``count`` AutoML jobs of three finished trials each, as the worker stores them."""
    ids = []
    with session_scope(engine) as session:
        for k in range(count):
            job_id = jobs.enqueue(session=session, kind="automl", name=f"sweep {k}",
                                  spec=spec or {"yaml": SWEEP_YAML, "dataset": "pets", "version": 1}).id
            for number in range(3):
                trial = trials.create(session=session, job_id=job_id, number=number, model_name="resnet18",
                                      params={"learning_rate": 0.01 * (number + 1)}, primary_metric="accuracy")
                trials.finish(session=session, trial_id=trial.id, status="completed", primary_metric_value=0.5,
                              metrics={"final": {"accuracy": 0.5, "per_class": {"cat": 0.5}}})
            ids.append(job_id)
    return ids


def _statements(engine: Any, work: Callable[[], object]) -> int:
    """How many SQL statements ``work`` sends to the database."""
    sent: list[str] = []

    def count(_connection, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(sent)


def _page(engine: Any, **kwargs: int) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        return job_summaries(session=session, **kwargs)


def test_a_page_of_job_summaries_takes_as_many_queries_for_30_jobs_as_for_5(settings, engine):
    _sweeps(engine, 5)
    few = _statements(engine, lambda: _page(engine))
    _sweeps(engine, 25)
    many = _statements(engine, lambda: _page(engine))
    assert few == many <= 3
    assert len(_page(engine)) == 30


def test_each_summary_of_a_page_is_the_jobs_own_summary_newest_first(settings, engine):
    ids = _sweeps(engine, 4)
    page = _page(engine, limit=2, offset=1)
    assert [s["job_id"] for s in page] == [ids[2], ids[1]]
    with session_scope(engine) as session:
        alone = job_summary(session=session, job_id=ids[2])
    for summary in (page[0], alone):  # durations run to "now" while a job runs: compare the rest
        summary.pop("duration_s")
        for trial in summary["trials"]:
            trial.pop("duration_s")
    assert page[0] == alone
    assert (alone["task"], alone["max_trials"], alone["timeout_minutes"]) == ("image_classification", 3, None)
    assert [t["number"] for t in alone["trials"]] == [0, 1, 2]


def test_facts_stored_with_a_job_are_shown_without_reading_its_file(settings, engine, cli):
    (job_id,) = _sweeps(engine, 1, spec={"yaml": "task: [unclosed", "facts": FACTS, "dataset": "d", "version": 1})
    shown = cli.json("job", "show", str(job_id))
    assert {k: shown[k] for k in FACTS} == FACTS
    (broken,) = _sweeps(engine, 1, spec={"yaml": "task: [unclosed", "dataset": "d", "version": 1})
    assert cli.json("job", "show", str(broken))["task"] is None  # no facts and an unreadable file: nothing to say


def test_submit_stores_the_facts_of_the_job_file(cli, engine, tmp_path):
    data = write_sample(Task.CLASSIFICATION, tmp_path / "data", count=12, size=48)
    doc = {"type": "automl", "task": "image_classification", "primary_metric": "accuracy",
           "training_data": {"path": str(data), "type": "uri_file"}, "limits": {"max_trials": 4},
           "training_parameters": {"model_name": "resnet18"}}
    file = tmp_path / "job.yml"
    file.write_text(yaml.safe_dump(doc))
    job_id = cli.json("job", "submit", str(file))["job_id"]
    with session_scope(engine) as session:
        job = jobs.get(session=session, job_id=job_id)
        facts = job.spec["facts"]
        assert {k: facts[k] for k in ("task", "primary_metric", "max_trials", "timeout_minutes")} == {
            "task": "image_classification", "primary_metric": "accuracy", "max_trials": 4, "timeout_minutes": 10080}
        # Predicted before it starts, from the rough speeds (nothing ran here): a range of a factor of two.
        low, high = facts["predicted_range_s"]
        assert 0 < low < facts["predicted_s"] < high and abs(high - 4 * low) < 1 and facts["predicted_device"]
        stored = yaml.safe_load(job.spec["yaml"])
    assert stored["task"] == "image_classification" and stored["limits"]["timeout_minutes"] == 10080


def test_job_list_pages_with_limit_and_offset_newest_first(cli, engine):
    ids = _sweeps(engine, 7)
    listed = cli.json("job", "list")
    assert [j["job_id"] for j in listed["jobs"]] == ids[::-1] and listed["total"] == 7
    assert set(listed["jobs"][0]) == {"job_id", "kind", "name", "status", "progress", "message", "best_trial_id",
                                      "created_at"}
    assert [j["job_id"] for j in cli.json("job", "list", "--limit", "3")["jobs"]] == ids[:3:-1]
    assert [j["job_id"] for j in cli.json("job", "list", "--limit", "3", "--offset", "3")["jobs"]] == ids[3:0:-1]
    assert cli.json("job", "list", "--offset", "7")["jobs"] == []
    _, _, stderr = cli("job", "list", "--limit", "3")
    assert "--offset 3 shows older ones" in stderr
    code, _, _ = cli("job", "list", "--limit", "0", ok=False)
    assert code == 2
