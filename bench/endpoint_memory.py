"""Peak memory of an endpoint server for a decompression-bomb request (issue 14, case 5).

Deploys a tiny classifier behind a real endpoint and sends one JSON request holding ``--images`` copies of
an 8,000×8,000 1-bit PNG (a few KB each on the wire, 64 Mpx each decoded). It runs twice: with the default
``KESTREL_MAX_REQUEST_PIXELS`` (refused from the image headers) and with the bound lifted, which decodes
everything as the server did before the bound existed. Prints the HTTP status and the server's peak
resident memory (Linux VmHWM) before and after the request.

    .venv/bin/python bench/endpoint_memory.py [--images 12]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIDE = 8000
UNBOUNDED = str(10**15)


def kestrel(home: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    answer = subprocess.run([sys.executable, "-m", "core.cli", *args, "--json"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "KESTREL_HOME": str(home), **(env or {})}, check=False)
    if answer.returncode != 0:
        sys.exit(f"kestrel {' '.join(args)} failed:\n{answer.stderr[-2000:]}")
    return json.loads(answer.stdout)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def bomb_request(images: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (SIDE, SIDE)).save(buffer, "PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return json.dumps({"input_data": {"columns": ["image"], "data": [encoded] * images}}).encode()


def measure(home: Path, body: bytes, key: str, limit: str | None) -> None:
    info = kestrel(home, "endpoint", "restart", "bench", env={"KESTREL_MAX_REQUEST_PIXELS": limit} if limit else None)
    before = peak_rss_mb(info["pid"])
    answer = httpx.post(info["scoring_uri"], content=body, timeout=600,
                        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    after = peak_rss_mb(info["pid"])
    label = "bound lifted (as before)" if limit else "default bound"
    print(f"{label:26s} HTTP {answer.status_code}  peak RSS {before:7.0f} MB -> {after:7.0f} MB "
          f"(+{after - before:.0f} MB)")
    if answer.status_code != 200:
        print(f"{'':26s} {answer.json()['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    from core.base.tasks import Task
    from core.data.samples import write_sample

    folder = Path(tempfile.mkdtemp())
    home = folder / "home"
    try:
        jsonl = write_sample(Task.CLASSIFICATION, folder / "shapes", count=16, size=64)
        kestrel(home, "data", "import", str(jsonl), "--name", "shapes")
        trial = kestrel(home, "train", "--data", "shapes", "--model", "test_resnet", "--set", "number_of_epochs=1",
                        "--set", "training_crop_size=32", "--set", "validation_crop_size=32",
                        "--set", "validation_resize_size=32")
        kestrel(home, "model", "register", "--trial", str(trial["trial_id"]), "--name", "bench")
        kestrel(home, "endpoint", "create", "bench")
        kestrel(home, "deployment", "create", "--endpoint", "bench", "--name", "blue", "--model", "bench:1")
        key = kestrel(home, "endpoint", "keys", "bench")["primary_key"]
        body = bomb_request(args.images)
        print(f"{args.images} PNGs of {SIDE}×{SIDE} 1-bit: {len(body):,} bytes on the wire, "
              f"{args.images * SIDE * SIDE:,} pixels decoded")
        measure(home, body, key, None)
        measure(home, body, key, UNBOUNDED)
        kestrel(home, "endpoint", "delete", "bench")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
