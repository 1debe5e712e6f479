"""Scale-out figures: a sweep on Ray with one node and with two (loopback), and one trial on one process and
on two with DDP. On this machine every node and process shares the same cores, so the figures show what the
machinery costs and that it spreads the work, not a speed-up a second machine would bring.

- Ray: a 4-trial grid (resnet18, 32 px, 2 epochs, 2 at once) with KESTREL_EXECUTOR=ray against a cluster of
  one node with one CPU, then of two nodes with one CPU each; the store is a throwaway PostgreSQL, as a
  cluster shares it. Then the same job with the local executor.
- DDP: the same timm trial (resnet18 on the shared fridge photos, 64 px) with devices 1 and 2.

    .venv/bin/python bench/scale_out.py [--only ray ddp] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from learning import CLASSIFICATION, studio, timed_job

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RAY = str(Path(sys.executable).parent / "ray")
TINY = {"model_name": "resnet18", "training_crop_size": 32, "validation_crop_size": 32,
        "validation_resize_size": 32, "training_batch_size": 16, "early_stopping": False}


def _ray(*args: str) -> None:
    subprocess.run([RAY, *args], check=True, capture_output=True)


def _cluster(nodes: int, port: int) -> None:
    common = ("--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--object-store-memory", "100000000")
    _ray("start", "--head", "--port", str(port), "--include-dashboard=false",
         "--temp-dir", tempfile.mkdtemp(prefix="ray-", dir="/tmp"), *common)
    for _ in range(nodes - 1):
        _ray("start", "--address", f"127.0.0.1:{port}", *common)


def _sweep(settings: Any, engine: Any, folder: Path, epochs: int) -> tuple[float, dict[str, Any]]:
    return timed_job(settings, engine, folder, {
        "type": "automl", "task": "image_classification", "primary_metric": "accuracy",
        "training_data": {"path": "azureml:fridge:1", "type": "mltable"},
        "training_parameters": {**TINY, "number_of_epochs": epochs}, "sweep": {"sampling_algorithm": "grid"},
        "search_space": [{"learning_rate": {"type": "choice", "values": [0.001, 0.002, 0.003, 0.004]}}],
        "limits": {"max_trials": 4, "max_concurrent_trials": 2}})


def ray_figures(epochs: int) -> None:
    import ray
    from throwaway_postgres import ThrowawayPostgres

    from core.base.tasks import Task
    from core.data.importer import ImportOptions, import_dataset

    server = ThrowawayPostgres().start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            os.environ["KESTREL_DATABASE_URL"] = server.url()
            settings, engine = studio(Path(folder) / "home")
            import_dataset(CLASSIFICATION["fridgeObjects_small150"], ImportOptions("fridge", Task.CLASSIFICATION),
                           settings=settings, engine=engine)
            for nodes in (1, 2):
                _cluster(nodes, port=6390 + nodes)
                os.environ.update({"KESTREL_EXECUTOR": "ray", "RAY_ADDRESS": f"127.0.0.1:{6390 + nodes}"})
                try:
                    seconds, summary = _sweep(settings, engine, Path(folder), epochs)
                finally:
                    ray.shutdown()
                    subprocess.run([RAY, "stop", "--force"], capture_output=True, check=False)
                where = sorted({t["ran_on"].split(" · ")[0] for t in summary["trials"]})
                print(f"Ray, {nodes} node(s) of 1 CPU: 4 trials in {seconds:.0f} s; ran on {where}; "
                      f"{summary['message']}", flush=True)
            os.environ["KESTREL_EXECUTOR"] = "local"
            seconds, summary = _sweep(settings, engine, Path(folder), epochs)
            print(f"local executor, 2 at once: 4 trials in {seconds:.0f} s; {summary['message']}", flush=True)
            engine.dispose()
    finally:
        os.environ.pop("KESTREL_DATABASE_URL", None)
        server.stop()


def ddp_figures(epochs: int) -> None:
    from core.base.tasks import Task
    from core.data.importer import ImportOptions, import_dataset
    from core.runs.trial import run_trial

    with tempfile.TemporaryDirectory() as folder:
        settings, engine = studio(Path(folder) / "home")
        import_dataset(CLASSIFICATION["fridgeObjects_small150"], ImportOptions("fridge", Task.CLASSIFICATION),
                       settings=settings, engine=engine)
        for devices in (1, 2):
            started = time.perf_counter()
            result = run_trial(settings=settings, engine=engine, dataset="fridge", version=None,
                               overrides={"model_name": "resnet18", "training_crop_size": 64,
                                          "validation_crop_size": 64, "validation_resize_size": 64,
                                          "number_of_epochs": epochs, "early_stopping": False, "devices": devices})
            seconds = time.perf_counter() - started
            print(f"DDP, {devices} process(es) on the CPU: {epochs} epochs in {seconds:.0f} s, accuracy "
                  f"{result.metrics['accuracy']:.3f}", flush=True)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=["ray", "ddp"])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if "ray" in args.only:
        ray_figures(args.epochs)
    if "ddp" in args.only:
        ddp_figures(args.epochs)


if __name__ == "__main__":
    main()
