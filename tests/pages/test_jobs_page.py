"""The Jobs page, run headless with AppTest against jobs and trials stored as the worker stores them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from storage.db import session_scope
from storage.repos import jobs, trials

pytestmark = pytest.mark.both_databases  # the studio's pages work on PostgreSQL too

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _job(engine, values: list[float | None]) -> int:  # type: ignore[no-untyped-def]
    """A running sweep whose trials reported ``values`` (None: a failed trial)."""
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="automl", name="fridge sweep",
                              spec={"dataset": "fridge", "version": 1}).id
        jobs.claim_next(session=session, worker_id="w")
        for number, value in enumerate(values):
            trial = trials.create(session=session, job_id=job_id, number=number, model_name="resnet18",
                                  params={"model_name": "resnet18", "learning_rate": 0.001 * (number + 1)},
                                  primary_metric="accuracy")
            trials.append_metrics(session=session, trial_id=trial.id, step=1, metrics={"accuracy": value or 0.0})
            trials.finish(session=session, trial_id=trial.id, status="completed" if value is not None else "failed",
                          metrics={}, primary_metric_value=value, error="" if value is not None else "boom")
        best = trials.best(trials.for_job(session=session, job_id=job_id))
        jobs.progress(session=session, job_id=job_id, fraction=0.5, message="3 of 6 trials finished",
                      best_trial_id=best.id if best else None)
    return job_id


def _open(job_id: int | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/jobs.py")
    if job_id is not None:
        at.query_params["job"] = str(job_id)
    return at.run()


def test_no_jobs_says_how_to_start_one(settings) -> None:  # type: ignore[no-untyped-def]
    at = _open()
    assert not at.exception
    assert any("No jobs yet" in i.value for i in at.info)


def test_leaderboard_ranks_trials_marks_the_best_and_charts_them(settings, engine) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(engine, [0.6, 0.9, None])
    at = _open(job_id)
    assert not at.exception
    board = at.dataframe[1].value  # [0] is the job list
    assert list(board["accuracy"])[:2] == [0.9, 0.6] and board["accuracy"].isna().iloc[2]
    assert board["best"].iloc[0] == "★" and board["learning_rate"].iloc[0] == 0.002
    assert "boom" in board["note"].iloc[2]
    assert len(at.get("plotly_chart")) == 2  # metric per trial, parallel coordinates
    assert "3 of 6 trials finished" in at.get("progress")[0].proto.text


def test_cancel_from_the_page_sets_the_jobs_flag(settings, engine) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(engine, [0.5])
    at = _open(job_id)
    at.button(key=f"cancel-{job_id}").click().run()
    with session_scope(engine) as session:
        assert jobs.is_cancel_requested(session=session, job_id=job_id)


JOB_YAML = """\
type: automl
task: image_classification
primary_metric: accuracy
limits:
  max_trials: 4
  timeout_minutes: 60
"""


def _sweep(engine, statuses: list[str], *, finish_job: bool) -> int:  # type: ignore[no-untyped-def]
    """A sweep of four at most, with one trial per status in ``statuses``, as the worker stores them."""
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="automl", name="pets sweep",
                              spec={"yaml": JOB_YAML, "dataset": "pets", "version": 1}).id
        jobs.claim_next(session=session, worker_id="w")
        for number, status in enumerate(statuses):
            trial = trials.create(session=session, job_id=job_id, number=number, model_name="resnet18",
                                  params={"model_name": "resnet18", "learning_rate": 0.01}, primary_metric="accuracy")
            trials.start(session=session, trial_id=trial.id, device="cpu", pid=1, artifact_dir="", software={})
            if status != "running":
                value = None if status == "failed" else 0.5 + number / 10
                final = {"accuracy": value, "f1_score_macro": 0.4 + number / 10} if value is not None else {}
                trials.finish(session=session, trial_id=trial.id, status=status, primary_metric_value=value,
                              metrics={"final": {**final, "per_class": {"cat": 0.5}}},
                              stop_reason="bandit" if status == "early_terminated" else "")
        best = trials.best(trials.for_job(session=session, job_id=job_id))
        if finish_job:
            jobs.finish(session=session, job_id=job_id, status="completed", best_trial_id=best.id if best else None)
    return job_id


def test_job_list_shows_task_status_trials_best_metric_and_links_to_the_job(settings, engine) -> None:  # type: ignore[no-untyped-def]
    job_id = _sweep(engine, ["completed", "completed", "failed"], finish_job=True)
    at = _open()
    assert not at.exception
    row = at.dataframe[0].value.iloc[0]
    assert row["job"] == f"jobs?job={job_id}" and row["name"] == "pets sweep"
    assert row["task"] == "image_classification" and row["status"].endswith("completed")
    assert row["trials"] == "3 / 4" and row["best"] == 0.6 and row["primary metric"] == "accuracy"
    assert not pd.isna(row["started"]) and row["duration"].endswith("s")


def test_job_page_header_counts_trials_by_state_and_shows_time_left(settings, engine) -> None:  # type: ignore[no-untyped-def]
    job_id = _sweep(engine, ["running", "completed", "early_terminated", "failed"], finish_job=False)
    at = _open(job_id)
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    assert (shown["Running"], shown["Done"], shown["Stopped early"], shown["Failed"]) == ("1", "1", "1", "1")
    assert shown["Elapsed"].endswith("s") and shown["Time left"].startswith(("59m", "1h"))


def test_leaderboard_has_other_metrics_duration_trial_links_and_a_highlighted_best_row(settings, engine) -> None:  # type: ignore[no-untyped-def]
    job_id = _sweep(engine, ["completed", "early_terminated", "failed"], finish_job=True)
    at = _open(job_id)
    board = at.dataframe[1].value
    assert list(board["accuracy"])[:2] == [0.6, 0.5] and list(board["f1_score_macro"])[:2] == [0.5, 0.4]
    assert "per_class" not in board.columns and board["duration (s)"].notna().all()
    assert board["trial"].str.fullmatch(r"trial\?trial=\d+").all() and board["best"].iloc[0] == "★"
    assert board["status"].iloc[0].endswith("early_terminated") and board["note"].iloc[0] == "bandit"
    assert "#d1e7dd" in at.dataframe[1].proto.arrow_data.styler.styles


def test_a_malformed_or_unknown_job_in_the_address_is_explained_not_raised(settings, engine) -> None:  # type: ignore[no-untyped-def]
    at = _open()
    at.query_params["job"] = "abc"
    at.run()
    assert not at.exception and any("not a job id" in w.value for w in at.warning)
    assert "job" not in at.query_params
    at = _open(999)
    assert not at.exception and any("does not exist" in i.value for i in at.info)


def test_an_import_job_is_listed_without_task_or_trials_and_a_deleted_job_is_explained(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        jobs.enqueue(session=session, kind="import", name="import pets", spec={"path": "/tmp/pets.zip"})
    at = _open(999)
    assert not at.exception and any("does not exist" in i.value for i in at.info)
    row = at.dataframe[0].value.iloc[0]
    assert row["kind"] == "import" and row["task"] == "" and row["trials"] == "" and pd.isna(row["best"])
    assert row["status"].endswith("queued") and row["duration"] == ""


def test_the_best_models_test_metrics_show_beside_its_validation_metrics(settings, engine) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(engine, [0.6, 0.9])
    with session_scope(engine) as session:
        job = jobs.get(session=session, job_id=job_id)
        job.spec = {**job.spec, "test_data": "fridge-test:1"}
        session.add(job)
        trials.set_metrics(session=session, trial_id=job.best_trial_id, key="final",
                           values={"accuracy": 0.9, "log_loss": 0.3})
        trials.set_metrics(session=session, trial_id=job.best_trial_id, key="test",
                           values={"accuracy": 0.75, "log_loss": 0.5})
    at = _open(job_id)
    assert not at.exception
    assert any("Best model on the test data" in m.value and "fridge-test:1" in m.value for m in at.markdown)
    table = next(d.value for d in at.dataframe if "test" in d.value.columns)
    assert table.to_dict("list") == {"metric": ["accuracy", "log_loss"], "test": [0.75, 0.5],
                                     "validation": [0.9, 0.3]}


def _queue(engine, count: int, **spec: object) -> list[int]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return [jobs.enqueue(session=session, kind="automl", name=f"job {k}", spec=dict(spec)).id
                for k in range(count)]


def _listed(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["job"])


def test_the_list_shows_fifty_jobs_a_page_newest_first_and_page_two_the_older_ones(settings, engine) -> None:  # type: ignore[no-untyped-def]
    ids = _queue(engine, 55)
    at = _open()
    assert not at.exception
    assert _listed(at) == [f"jobs?job={i}" for i in ids[:4:-1]]
    picker = next(s for s in at.selectbox if s.label == "Job")
    assert len(picker.options) == 50 and picker.value == ids[-1]  # the shown page's jobs only
    at.number_input(key="jobs-page").set_value(2).run()
    assert not at.exception
    assert _listed(at) == [f"jobs?job={i}" for i in ids[4::-1]]
    assert any("Jobs 51–55 of 55" in c.value for c in at.caption)


def test_a_job_in_the_address_is_shown_from_any_page(settings, engine) -> None:  # type: ignore[no-untyped-def]
    ids = _queue(engine, 55)
    at = _open(ids[0])
    assert not at.exception
    assert next(s for s in at.selectbox if s.label == "Job").value == ids[0]
    assert at.subheader[0].value == f"Job {ids[0]}: job 0"


def test_facts_stored_with_a_job_are_listed_even_when_its_file_cannot_be_read(settings, engine) -> None:  # type: ignore[no-untyped-def]
    _queue(engine, 1, yaml="task: [unclosed", facts={"task": "image_object_detection", "max_trials": 5,
                                                       "primary_metric": "mean_average_precision",
                                                       "timeout_minutes": 30})
    row = _open().dataframe[0].value.iloc[0]
    assert row["task"] == "image_object_detection" and row["trials"] == "0 / 5"
    assert row["primary metric"] == "mean_average_precision"


def test_an_unchanged_list_is_not_read_again(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import Engine, event

    _sweep(engine, ["completed", "completed"], finish_job=True)
    reads: list[str] = []

    def seen(_connection, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if "trial.job_id IN" in statement:  # the list's one query of its jobs' trials
            reads.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        at = _open()
        assert len(reads) == 1
        at.run()
        assert len(reads) == 1
        _sweep(engine, ["completed"], finish_job=True)
        at.run()
        assert len(reads) == 2 and len(at.dataframe[0].value) == 2
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


def test_a_running_trial_shows_its_latest_metric_and_how_far_it_has_trained(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="automl", name="live", spec={
            "dataset": "fridge", "version": 1, "facts": {"task": "image_classification", "primary_metric": "accuracy",
                                                         "max_trials": 2, "timeout_minutes": 60}}).id
        jobs.claim_next(session=session, worker_id="w")
        trial = trials.create(session=session, job_id=job_id, number=0, model_name="resnet18",
                              params={"model_name": "resnet18"}, primary_metric="accuracy")
        trials.start(session=session, trial_id=trial.id, device="CPU", pid=1, artifact_dir="", software={}, epochs=4)
        trials.append_metrics(session=session, trial_id=trial.id, step=1, metrics={"accuracy": 0.7, "val_loss": 0.9})
        trials.progress(session=session, trial_id=trial.id, epochs=1.5)
    at = _open(job_id)
    assert not at.exception
    board = at.dataframe[1].value
    assert board["accuracy"].iloc[0] == 0.7 and board["val_loss"].iloc[0] == 0.9  # not None after epoch 1
    assert board["trained"].iloc[0] == 1.5 / 4
    bar = at.get("progress")[0].proto
    assert bar.text == "running" and bar.value == int(100 * 1.5 / 4 / 2)  # half-way through 1 of 2 trials


def test_a_finished_job_sets_its_time_against_the_time_predicted_before_it_started(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from storage.tables import Job, utcnow

    with session_scope(engine) as session:
        job = Job(kind="automl", name="timed", status="completed", started_at=utcnow() - timedelta(seconds=110),
                  finished_at=utcnow(), spec={"dataset": "d", "version": 1, "facts": {
                      "task": "image_classification", "primary_metric": "accuracy", "max_trials": 1,
                      "timeout_minutes": 60, "predicted_s": 100.0, "predicted_range_s": [80.0, 125.0]}})
        session.add(job)
        session.flush()
        job_id = job.id
    at = _open(job_id)
    assert not at.exception
    said = next(c.value for c in at.caption if c.value.startswith("Predicted before it started"))
    assert said == ("Predicted before it started: 1m 40s (likely 1m 20s to 2m 05s); it took 1m 50s, +10% against "
                    "the prediction, within the range.")
