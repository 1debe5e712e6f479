"""Trials across machines on Ray: a local Ray cluster of two nodes on loopback (a head and a second node, one
CPU each), the job's state in PostgreSQL as a real cluster would share it; a small sweep submitted with
KESTREL_EXECUTOR=ray runs each trial once, on both nodes, and ends as the same job run locally does."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import bright_dark_set

from storage.db import session_scope
from storage.repos import trials

RAY = str(Path(sys.executable).parent / "ray")
TINY = {"model_name": "resnet18", "number_of_epochs": 1, "training_crop_size": 32, "validation_crop_size": 32,
        "validation_resize_size": 32, "training_batch_size": 8, "early_stopping": False, "optimizer": "adamw"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ray(*args: str) -> None:
    done = subprocess.run([RAY, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray head and a second node on this machine, one CPU each; their address."""
    port = _free_port()
    common = ("--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--object-store-memory", "100000000")
    # A short folder: Ray's socket paths must fit in 107 characters.
    _ray("start", "--head", "--port", str(port), "--include-dashboard=false",
         "--temp-dir", tempfile.mkdtemp(prefix="ray-", dir="/tmp"), *common)
    try:
        _ray("start", "--address", f"127.0.0.1:{port}", *common)
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()  # this process joined as the job's driver
        subprocess.run([RAY, "stop", "--force"], capture_output=True, check=False)


def _job(cli, data: Path, folder: Path) -> dict:  # type: ignore[no-untyped-def]
    import yaml

    space = [{"learning_rate": {"type": "choice", "values": [0.001, 0.002]}}]
    file = folder / "job.yml"
    file.write_text(yaml.safe_dump({
        "type": "automl", "task": "image_classification", "primary_metric": "accuracy",
        "training_data": {"path": str(data), "type": "uri_file"}, "training_parameters": TINY,
        "sweep": {"sampling_algorithm": "grid"}, "search_space": space,
        "limits": {"max_trials": 2, "max_concurrent_trials": 2}}))
    return cli.json("job", "submit", str(file), "--wait")


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_sweep_runs_each_trial_once_across_two_ray_nodes_as_it_runs_locally(cli, engine, cluster, database,
                                                                              tmp_path, monkeypatch):
    data = bright_dark_set(tmp_path / "data", count=16)
    local = _job(cli, data, tmp_path)
    monkeypatch.setenv("KESTREL_EXECUTOR", "ray")
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    on_ray = _job(cli, data, tmp_path)
    assert on_ray["status"] == local["status"] == "completed"
    # The same result, in the same shape: one trial per grid point, each completed once, the best named.
    assert set(on_ray) == set(local) and len(on_ray["trials"]) == len(local["trials"]) == 2
    assert re.sub(r"\d[\d.]*", "N", on_ray["message"]) == re.sub(r"\d[\d.]*", "N", local["message"])
    assert sorted(t["params"]["learning_rate"] for t in on_ray["trials"]) == [0.001, 0.002]
    assert all(t["status"] == "completed" and set(t) == set(local["trials"][0]) for t in on_ray["trials"])
    assert [t["executor"] for t in on_ray["trials"]] == ["ray", "ray"]
    assert [t["executor"] for t in local["trials"]] == ["local", "local"]
    places = [t["ran_on"] for t in on_ray["trials"]]
    nodes = {re.match(r"Ray node (\w+) · 1 CPU threads", p).group(1) for p in places}  # type: ignore[union-attr]
    assert len(nodes) == 2, places  # one CPU a node: the two trials at once took one node each
    with session_scope(engine) as session:  # each ran once: no relaunch, one report per epoch
        for t in on_ray["trials"]:
            assert t["relaunches"] == 0
            assert [step for step, _ in trials.curves(session=session, trial_id=t["trial_id"])["accuracy"]] == [1]
    logs = cli.json("job", "logs", str(on_ray["job_id"]))["trials"]
    assert all("epoch 1: " in text for text in logs.values()), logs
    assert os.environ["KESTREL_DATABASE_URL"].startswith("postgresql")
