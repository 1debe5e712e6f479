"""AutoMode against one default trial, each given the same time budget, on a real dataset.

Both run as `kestrel job submit … --wait --json` in a fresh KESTREL_HOME on the shared
fridgeObjects classification set (150 images, 4 classes): the AutoMode job gets
``limits.timeout_minutes = BUDGET`` and up to 20 trials; the single trial gets the task's default
model and the same budget as its trial timeout (a trial stopped by its timeout keeps its best
model). Prints both best primary-metric values. Goal: AutoMode ≥ the single run.

    .venv/bin/python bench/automl_budget.py [--minutes 5] [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DATA = (SHARED if SHARED.is_dir() else Path("/work/shared/datasets")) / "fridgeObjects_small150"


def run(job: dict, home: Path) -> tuple[dict, float]:
    file = home.parent / f"{job['experiment_name']}.yml"
    file.write_text(yaml.safe_dump(job))
    started = time.monotonic()
    answer = subprocess.run([sys.executable, "-m", "core.cli", "job", "submit", str(file), "--wait", "--json"],
                            capture_output=True, text=True, env={**os.environ, "KESTREL_HOME": str(home)}, check=False,
                            cwd=ROOT)
    if answer.returncode != 0:
        sys.exit(f"{job['experiment_name']} failed:\n{answer.stderr[-3000:]}")
    return json.loads(answer.stdout), time.monotonic() - started


def best(summary: dict) -> tuple[float, str]:
    trial = next(t for t in summary["trials"] if t["trial_id"] == summary["best_trial_id"])
    return trial["primary_metric_value"], trial["model_name"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    base = {"type": "automl", "task": "image_classification", "primary_metric": "accuracy",
            "training_data": {"path": str(args.data.resolve()), "type": "mltable"}}
    jobs = {
        "automode": {**base, "experiment_name": "automode",
                     "limits": {"max_trials": 20, "timeout_minutes": args.minutes}},
        "single": {**base, "experiment_name": "single",
                   "limits": {"max_trials": 1, "timeout_minutes": args.minutes,
                              "trial_timeout_minutes": args.minutes}},
    }
    print(f"budget {args.minutes} min each on {args.data}")
    results = {}
    for name, job in jobs.items():
        with tempfile.TemporaryDirectory() as folder:
            home = Path(folder) / "home"
            home.mkdir()
            summary, seconds = run(job, home)
        value, model = best(summary)
        results[name] = value
        print(f"{name:9s} best accuracy {value:.4f} ({model}); {len(summary['trials'])} trials, "
              f"{seconds / 60:.1f} min, {summary['message']}")
    verdict = "meets" if results["automode"] >= results["single"] else "misses"
    print(f"AutoMode {results['automode']:.4f} vs single default trial {results['single']:.4f}: {verdict} the goal")


if __name__ == "__main__":
    main()
