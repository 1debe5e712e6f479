"""Offline, proven: the whole loop — import, train, register, deploy, score, explain — on a machine whose
network ends at loopback. Every process the test starts (the CLI, the trial it spawns, the endpoint's
server) refuses connections and name lookups beyond loopback and writes each attempt down
(netguard/sitecustomize.py); with KESTREL_OFFLINE=1 there must be none, and without it only the
pretrained-weights hosts may be asked."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from core.zoo.weights import HOSTS

ROOT = Path(__file__).resolve().parents[2]
GUARD = Path(__file__).parent / "netguard"
SHARED = ROOT.parent / "shared" / "datasets"
FRIDGE = (SHARED if SHARED.is_dir() else Path("/work/shared/datasets")) / "fridgeObjects_small150"


class Guarded:
    """``kestrel …`` in a process of its own behind the network guard."""

    def __init__(self, home: Path, log: Path, *, offline: bool) -> None:
        self.log = log
        self.env = {**os.environ, "KESTREL_HOME": str(home), "KESTREL_NETGUARD_LOG": str(log),
                    "PYTHONPATH": os.pathsep.join([str(GUARD), str(ROOT)])}
        self.env.pop("KESTREL_DATABASE_URL", None)
        self.env.pop("KESTREL_OFFLINE", None)
        if offline:
            self.env["KESTREL_OFFLINE"] = "1"

    def __call__(self, *args: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "core.cli", *args, "--json"], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, f"kestrel {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    def attempts(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


def test_the_guard_refuses_and_records_a_connection_beyond_loopback(tmp_path):
    kestrel = Guarded(tmp_path / "home", tmp_path / "net.log", offline=True)
    code = ("import socket\ntry:\n    socket.create_connection(('example.org', 443), timeout=2)\n"
            "except OSError as e:\n    print(type(e).__name__)")
    result = subprocess.run([sys.executable, "-c", code], env=kestrel.env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "gaierror"
    assert [a["kind"] for a in kestrel.attempts()] == ["lookup"]


def test_the_whole_loop_runs_offline_and_asks_the_network_nothing(tmp_path):
    kestrel = Guarded(tmp_path / "home", tmp_path / "net.log", offline=True)
    doctor = kestrel("doctor")
    assert doctor["offline"] is True and doctor["database"]["url"].startswith("sqlite:///")
    assert {w["state"] for w in doctor["weights"]} <= {"cached", "unavailable", "user file"}
    assert all("KESTREL_OFFLINE is set" in w["where"] for w in doctor["weights"] if w["state"] == "unavailable")
    assert {row["state"] for row in doctor["network"]} <= {"in place", "off"}

    imported = kestrel("data", "import", str(FRIDGE), "--name", "fridge")
    assert imported["images"] == 134
    job_file = tmp_path / "job.yml"
    job_file.write_text(yaml.safe_dump({
        "type": "automl", "task": "image_classification", "training_data": {"path": "azureml:fridge:1",
                                                                           "type": "mltable"},
        "training_parameters": {"model_name": "resnet18", "number_of_epochs": 1, "training_crop_size": 32,
                                "validation_crop_size": 32, "validation_resize_size": 32,
                                "training_batch_size": 16},
        "limits": {"max_trials": 1, "timeout_minutes": 20}}))
    job = kestrel("job", "submit", str(job_file), "--wait")
    assert job["status"] == "completed", job
    assert "will train from scratch" in json.dumps(job["pretrained"])  # said before training, not fetched
    registered = kestrel("model", "register", "--job", str(job["job_id"]), "--name", "fridge-model")
    assert registered["version"] == 1
    kestrel("endpoint", "create", "offline-ep")
    try:
        deployed = kestrel("deployment", "create", "--endpoint", "offline-ep", "--name", "blue",
                           "--model", "fridge-model:1")
        key = kestrel("endpoint", "keys", "offline-ep")["primary_key"]
        photo = base64.b64encode(sorted((FRIDGE / "small-150").iterdir())[0].read_bytes()).decode()
        request = json.dumps({"image_base64": photo, "model_explainability": True,
                              "xai_parameters": {"xai_algorithm": "guided_gradcam", "visualizations": True}})
        answer = httpx.post(deployed["scoring_uri"], json={"input_data": {"columns": ["image"], "data": [request]}},
                            headers={"Authorization": f"Bearer {key}"}, timeout=120)
        assert answer.status_code == 200, answer.text
        [scored] = answer.json()
        assert sorted(scored["labels"]) == ["can", "carton", "milk_bottle", "water_bottle"]
        assert abs(sum(scored["probs"]) - 1) < 1e-4 and base64.b64decode(scored["visualizations"])[:4] == b"\x89PNG"
    finally:
        kestrel("endpoint", "delete", "offline-ep")
    assert kestrel.attempts() == []  # the trial, the server and every command: nothing beyond loopback


def test_without_offline_mode_only_the_weights_hosts_are_asked(tmp_path):
    """Without KESTREL_OFFLINE a weights host is asked whether it answers (here refused at once), nothing else."""
    kestrel = Guarded(tmp_path / "home", tmp_path / "net.log", offline=False)
    listed = kestrel("weights", "list")
    assert {w["state"] for w in listed} <= {"cached", "unavailable"}
    asked = {a["address"].strip("'") for a in kestrel.attempts()}
    assert asked and asked <= set(HOSTS.values()), asked
