"""Endpoint latency and throughput against the same model's forward pass in-process.

Trains a small classifier (one epoch on the procedural shapes, scored at ``--crop`` px), registers
and deploys it behind a real endpoint, then sends raw image bytes at concurrency 1, 8 and 32 and
prints p50/p95 latency, requests/s and errors, beside the in-process ``predictor.predict`` p50.
Goal: p50 at concurrency 1 ≤ 1.2× the in-process forward; no errors under load.

    .venv/bin/python bench/endpoint.py [--model resnet18] [--crop 224] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def kestrel(home: Path, *args: str) -> dict:
    answer = subprocess.run([sys.executable, "-m", "core.cli", *args, "--json"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "KESTREL_HOME": str(home)}, check=False)
    if answer.returncode != 0:
        sys.exit(f"kestrel {' '.join(args)} failed:\n{answer.stderr[-2000:]}")
    return json.loads(answer.stdout)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    from core.data.samples import write_sample
    from core.tasks import Task

    folder = Path(tempfile.mkdtemp())
    home = folder / "home"
    try:
        jsonl = write_sample(Task.CLASSIFICATION, folder / "shapes", count=30, size=256)
        kestrel(home, "data", "import", str(jsonl), "--name", "shapes")
        trial = kestrel(home, "train", "--data", "shapes", "--model", args.model, "--set", "number_of_epochs=1",
                        "--set", "training_crop_size=64", "--set", f"validation_crop_size={args.crop}",
                        "--set", f"validation_resize_size={args.crop + args.crop // 7}")
        kestrel(home, "model", "register", "--trial", str(trial["trial_id"]), "--name", "bench")
        kestrel(home, "endpoint", "create", "bench")
        info = kestrel(home, "deployment", "create", "--endpoint", "bench", "--name", "blue", "--model", "bench:1")
        key = kestrel(home, "endpoint", "keys", "bench")["primary_key"]
        image_file = sorted((folder / "shapes" / "images").iterdir())[0]
        body = image_file.read_bytes()

        from core.predict import load_predictor

        predictor = load_predictor(Path(trial["artifacts"]["weights"]).parent)  # the device the endpoint uses
        image = Image.open(image_file).convert("RGB")
        predictor.predict([image])  # warm-up
        forward = []
        for _ in range(50):
            start = time.perf_counter()
            predictor.predict([image])
            forward.append(time.perf_counter() - start)
        raw = statistics.median(forward)
        del predictor
        print(f"{args.model} at {args.crop} px: in-process forward p50 {raw * 1000:.1f} ms")

        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}
        with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
            def one(_: int) -> tuple[float, int]:
                start = time.perf_counter()
                status = client.post(info["scoring_uri"], content=body, headers=headers).status_code
                return time.perf_counter() - start, status

            for _ in range(5):
                one(0)  # warm-up
            print("concurrency   p50 ms   p95 ms   req/s   errors")
            p50_one = 0.0
            for concurrency in (1, 8, 32):
                started = time.perf_counter()
                with ThreadPoolExecutor(concurrency) as pool:
                    results = list(pool.map(one, range(args.requests)))
                wall = time.perf_counter() - started
                latencies = [t for t, _ in results]
                errors = sum(status != 200 for _, status in results)
                p50 = percentile(latencies, 0.5)
                p50_one = p50_one or p50
                print(f"{concurrency:11d} {p50 * 1000:8.1f} {percentile(latencies, 0.95) * 1000:8.1f} "
                      f"{len(results) / wall:7.1f} {errors:8d}")
        ratio = p50_one / raw
        print(f"p50 at concurrency 1 / in-process forward = {ratio:.2f} (goal ≤ 1.2: "
              f"{'met' if ratio <= 1.2 else 'missed'})")
        kestrel(home, "endpoint", "delete", "bench")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
