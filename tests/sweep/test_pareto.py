"""The Pareto leaderboard: each finished trial's model timed on this machine, the frontier of primary metric
against latency flagged in `job show --json`, drawn on the job page, and a frontier trial registered in a click."""

from __future__ import annotations

from pathlib import Path

import yaml
from factories import bright_dark_set
from streamlit.testing.v1 import AppTest

from core.sweep.summary import pareto

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TINY = {"number_of_epochs": 1, "training_crop_size": 32, "validation_crop_size": 32, "validation_resize_size": 32,
        "training_batch_size": 8, "early_stopping": False, "optimizer": "adamw"}


def test_the_frontier_keeps_the_trials_no_other_beats_on_both():
    points = {1: (0.90, 10.0), 2: (0.80, 5.0), 3: (0.85, 12.0), 4: (0.90, 11.0), 5: (0.70, 5.0)}
    assert pareto(points) == {1, 2}  # 3 and 4 lose to 1; 5 loses to 2
    assert pareto({7: (0.5, 1.0)}) == {7} and pareto({}) == set()


def test_finished_trials_are_timed_flagged_drawn_and_a_frontier_one_registered(cli, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("KESTREL_MEASURE_LATENCY", "1")
    data = bright_dark_set(tmp_path / "data", count=24)
    file = tmp_path / "job.yml"
    file.write_text(yaml.safe_dump({
        "type": "automl", "task": "image_classification", "display_name": "timed",
        "training_data": {"path": str(data), "type": "uri_file"}, "training_parameters": TINY,
        "search_space": [{"model_name": {"type": "choice", "values": ["resnet18", "mobilenetv2"]}}],
        "sweep": {"sampling_algorithm": "grid"}, "limits": {"max_trials": 2}}))
    summary = cli.json("job", "submit", str(file), "--wait")
    assert summary["status"] == "completed"
    for trial in summary["trials"]:
        latency = trial["latency"]
        assert latency["batch1_ms"] > 0 and latency["batch_ms_per_image"] > 0 and latency["batch_size"] == 8
        assert latency["model_mb"] > 1 and latency["onnx_batch1_ms"] > 0, latency  # both export to ONNX
        assert isinstance(trial["pareto"], bool)
    points = {t["trial_id"]: (t["primary_metric_value"], t["latency"]["batch1_ms"]) for t in summary["trials"]}
    assert {t["trial_id"] for t in summary["trials"] if t["pareto"]} == pareto(points) != set()

    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/jobs.py")
    at.query_params["job"] = str(summary["job_id"])
    at.run()
    assert not at.exception
    assert any(h.value == "Accuracy against latency" for h in at.subheader)
    frontier = at.selectbox(key=f"pareto-pick-{summary['job_id']}")
    assert len(frontier.options) == len(pareto(points)) and frontier.value in pareto(points)
    assert all(" ms" in label and " MB" in label for label in frontier.options)
    at.button(key=f"pareto-register-{summary['job_id']}").click().run()
    assert not at.exception
    [said] = [s.value for s in at.success]
    assert said.startswith(f"Registered as **timed-trial-{frontier.value}:1**")
    assert cli.json("model", "show", f"timed-trial-{frontier.value}:1")["trial_id"] == frontier.value
