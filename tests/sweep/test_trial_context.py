"""A job's trial judges itself at each report against its peers' stored curves, and sees the job's cancel."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.runs.trial import StorageContext
from core.sweep.termination import make_policy
from storage.db import session_scope
from storage.repos import jobs, trials


def _job_with_peers(engine, curves: dict[str, list[float]], finished: tuple[str, ...] = ()) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    """A job whose trials reported ``curves`` of accuracy (one value per evaluation)."""
    ids = {}
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="automl", name="j", spec={}).id
        for number, (name, values) in enumerate(curves.items()):
            trial = trials.create(session=session, job_id=job_id, number=number, model_name="m", params={},
                                  primary_metric="accuracy")
            for epoch, value in enumerate(values, start=1):
                trials.append_metrics(session=session, trial_id=trial.id, step=epoch * 2,  # evaluated every 2nd epoch
                                      metrics={"accuracy": value, "train_loss": 1.0})
            if name in finished:
                trials.finish(session=session, trial_id=trial.id, status="completed", metrics={},
                              primary_metric_value=values[-1])
            ids[name] = trial.id
    return job_id, ids


def _context(engine, job_id: int, trial_id: int, policy: dict | None, tmp_path: Path) -> StorageContext:  # type: ignore[no-untyped-def]
    return StorageContext(engine, trial_id, tmp_path, "cpu", job_id=job_id, primary_metric="accuracy",
                          policy=make_policy(policy))


def test_median_stopping_stops_a_trial_below_the_median_of_the_running_averages(engine, tmp_path):
    job_id, ids = _job_with_peers(engine, {"a": [0.6, 0.8, 0.9], "b": [0.5, 0.7, 0.8], "c": [0.4, 0.6, 0.7],
                                           "new": []})
    ctx = _context(engine, job_id, ids["new"], {"type": "median_stopping", "evaluation_interval": 1,
                                                "delay_evaluation": 2}, tmp_path)
    ctx.report(2, {"accuracy": 0.3})
    assert ctx.should_stop() is None  # interval 1 is within delay_evaluation
    ctx.report(4, {"accuracy": 0.5})
    # Peers' running averages at interval 2: 0.7, 0.6, 0.5 -> median 0.6; its best so far is 0.5.
    reason = ctx.should_stop()
    assert reason is not None and reason.startswith("median_stopping: best 0.5 is below the median 0.6 of 3"), reason


def test_median_stopping_lets_a_good_trial_go_on(engine, tmp_path):
    job_id, ids = _job_with_peers(engine, {"a": [0.6, 0.8], "b": [0.5, 0.7], "new": []})
    ctx = _context(engine, job_id, ids["new"], {"type": "median_stopping"}, tmp_path)
    for epoch, value in ((2, 0.7), (4, 0.9)):
        ctx.report(epoch, {"accuracy": value})
        assert ctx.should_stop() is None


def test_truncation_selection_cuts_the_lowest_percentage(engine, tmp_path):
    job_id, ids = _job_with_peers(engine, {"a": [0.9], "b": [0.8], "c": [0.7], "new": []}, finished=("a",))
    policy = {"type": "truncation_selection", "truncation_percentage": 25, "evaluation_interval": 1}
    low = _context(engine, job_id, ids["new"], policy, tmp_path)
    low.report(2, {"accuracy": 0.2})
    # Four trials at interval 1, 25% of them (one) cut: the lowest, 0.2.
    reason = low.should_stop()
    assert reason is not None and reason.startswith("truncation_selection: 0.2 is in the lowest 25% of 4 trials")
    middle = _context(engine, job_id, ids["c"], policy, tmp_path)
    middle.report(2, {"accuracy": 0.7})
    assert middle.should_stop() is None


@pytest.mark.parametrize("reports", [{"train_loss": 0.1}, {"accuracy": 0.9}])
def test_cancel_of_the_job_reaches_the_trial_and_reports_without_the_metric_judge_nothing(engine, tmp_path,
                                                                                         reports):
    job_id, ids = _job_with_peers(engine, {"a": [0.9], "new": []})
    ctx = _context(engine, job_id, ids["new"], {"type": "bandit", "slack_factor": 0.1}, tmp_path)
    ctx.report(2, reports)
    assert ctx.should_stop() is None
    with session_scope(engine) as session:
        jobs.claim_next(session=session, worker_id="w")
        jobs.request_cancel(session=session, job_id=job_id)
    ctx._polled = 0.0  # the flag is read at most once a second; do not wait for that here
    assert ctx.should_stop() == "canceled"


def test_undefined_metric_values_are_left_out_not_stored_as_errors(engine):
    job_id, ids = _job_with_peers(engine, {"new": []})
    with session_scope(engine) as session:
        trials.append_metrics(session=session, trial_id=ids["new"], step=1,
                              metrics={"accuracy": 0.5, "average_precision_score_weighted": float("nan")})
        trials.finish(session=session, trial_id=ids["new"], status="completed", metrics={},
                      primary_metric_value=float("nan"))
    with session_scope(engine) as session:
        assert trials.curves(session=session, trial_id=ids["new"]) == {"accuracy": [(1, 0.5)]}
        assert trials.get(session=session, trial_id=ids["new"]).primary_metric_value is None
