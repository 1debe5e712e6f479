"""The job queue: claims are exclusive across processes, cancel and orphan recovery behave."""

from __future__ import annotations

import multiprocessing

from storage.db import make_engine, session_scope
from storage.repos import jobs


def _claim_all(url: str, worker: str, out) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    claimed = []
    while True:
        with session_scope(engine) as session:
            job = jobs.claim_next(session=session, worker_id=worker)
            if job is None:
                break
            claimed.append(job.id)
    out.put(claimed)


def test_two_workers_never_claim_the_same_job(engine, settings):
    with session_scope(engine) as session:
        ids = [jobs.enqueue(session=session, kind="automl", name=f"j{i}", spec={}).id for i in range(40)]
    queue = multiprocessing.get_context("spawn").Queue()
    workers = [multiprocessing.get_context("spawn").Process(target=_claim_all, args=(settings.db_url, w, queue))
               for w in ("a", "b")]
    for w in workers:
        w.start()
    claimed = queue.get(timeout=60) + queue.get(timeout=60)
    for w in workers:
        w.join(timeout=30)
    assert sorted(claimed) == ids


def test_claims_go_oldest_first_and_by_kind(engine):
    with session_scope(engine) as session:
        first = jobs.enqueue(session=session, kind="import", name="i", spec={}).id
        second = jobs.enqueue(session=session, kind="automl", name="a", spec={"x": 1}).id
    with session_scope(engine) as session:
        job = jobs.claim_next(session=session, worker_id="w", kinds=("automl",))
        assert (job.id, job.status, job.worker_id, job.spec) == (second, "running", "w", {"x": 1})
        assert jobs.claim_next(session=session, worker_id="w").id == first
        assert jobs.claim_next(session=session, worker_id="w") is None


def test_cancel_stops_a_queued_job_at_once_and_flags_a_running_one(engine):
    with session_scope(engine) as session:
        queued = jobs.enqueue(session=session, kind="automl", name="q", spec={}).id
        running = jobs.enqueue(session=session, kind="automl", name="r", spec={}).id
    with session_scope(engine) as session:
        jobs.claim_next(session=session, worker_id="w")  # takes the older one: queued -> running
        jobs.claim_next(session=session, worker_id="w")
        session.get(jobs.Job, queued).status = "queued"  # put the first back in the queue
    with session_scope(engine) as session:
        assert jobs.request_cancel(session=session, job_id=queued).status == "canceled"
        assert jobs.request_cancel(session=session, job_id=running).status == "running"
        assert jobs.is_cancel_requested(session=session, job_id=running)


def test_jobs_of_a_dead_worker_return_to_the_queue(engine):
    with session_scope(engine) as session:
        a = jobs.enqueue(session=session, kind="automl", name="a", spec={}).id
        b = jobs.enqueue(session=session, kind="automl", name="b", spec={}).id
        jobs.claim_next(session=session, worker_id="dead")
        jobs.claim_next(session=session, worker_id="alive")
    with session_scope(engine) as session:
        assert jobs.requeue_orphans(session=session, live_workers={"alive"}, max_crashes=2) == ([a], [])
        assert jobs.get(session=session, job_id=a).status == "queued"
        assert jobs.get(session=session, job_id=b).status == "running"
