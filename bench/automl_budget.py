"""The budget of AutoML jobs on a real dataset: the pre-flight estimate against the time taken, and AutoMode
against one default trial given the same time.

Pre-flight: four jobs that end on their own (not by a timeout), run one after another in one KESTREL_HOME,
so that later estimates draw on the trials that ran before them, as on a person's machine. For each it
prints the time predicted at submission with its range, the time the job took, their ratio, and whether
it fell in the range. Goal: within ±25% once a model has run here (a first run is a rough guess).

Both run as `kestrel job submit … --wait --json` in a fresh KESTREL_HOME on the shared
fridgeObjects classification set (150 images, 4 classes): the AutoMode job gets
``limits.timeout_minutes = BUDGET`` and up to 20 trials; the single trial gets the task's default
model and the same budget as its trial timeout (a trial stopped by its timeout keeps its best
model). Prints both best primary-metric values. Goal: AutoMode ≥ the single run.

    .venv/bin/python bench/automl_budget.py [--only preflight|automode] [--minutes 5] [--data PATH]
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


def preflight(base: dict) -> None:
    plan = [("resnet18", 3, 1), ("resnet18", 6, 1), ("mobilenetv2", 2, 2), ("mobilenetv2", 4, 1)]
    print("pre-flight: predicted at submission against the time the job took (same home, one after another)")
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        home.mkdir()
        for number, (model, epochs, trials) in enumerate(plan, start=1):
            space = [{"learning_rate": {"type": "choice", "values": [0.001, 0.003][:trials]}}] if trials > 1 else None
            job = {**base, "experiment_name": f"preflight-{number}", "limits": {"max_trials": trials},
                   "training_parameters": {"model_name": model, "number_of_epochs": epochs},
                   **({"search_space": space, "sweep": {"sampling_algorithm": "grid"}} if space else {})}
            summary, _ = run(job, home)
            predicted, (low, high), took = summary["predicted_s"], summary["predicted_range_s"], summary["duration_s"]
            inside = "in range" if low <= took <= high else "OUT of range"
            print(f"  {model:12s} {epochs} epochs × {trials} trial(s): predicted {predicted:6.0f} s "
                  f"({low:.0f}–{high:.0f}), took {took:6.0f} s, actual/predicted {took / predicted:.2f} ({inside}; "
                  f"{'within' if abs(took / predicted - 1) <= 0.25 else 'beyond'} ±25%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--only", choices=["preflight", "automode"])
    args = parser.parse_args()
    base = {"type": "automl", "task": "image_classification", "primary_metric": "accuracy",
            "training_data": {"path": str(args.data.resolve()), "type": "mltable"}}
    if args.only != "automode":
        preflight(base)
    if args.only == "preflight":
        return
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
