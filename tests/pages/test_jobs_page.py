"""The Jobs page, run headless with AppTest against jobs and trials stored as the worker stores them."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from storage.db import session_scope
from storage.repos import jobs, trials

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
