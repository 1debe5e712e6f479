"""Peak memory of the studio's CLI fed hostile input (issue 14, cases 1, 3 and 4), beside the same
command fed a harmless one: each hostile input is refused, and its peak stays near the harmless
peak instead of growing until the machine runs out. Case 5 (the endpoint) is bench/endpoint_memory.py.

Each command runs in a fresh process with its own KESTREL_HOME; its peak RSS comes from wait4().

    .venv/bin/python bench/hostile_memory.py [--workdir /tmp/kestrel-hostile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HEAD = "type: automl\ntask: image_classification\nprimary_metric: accuracy\n"
# Ten parameters of ten choices: 10^10 grid points in a few hundred bytes.
HUGE_GRID = ("sweep: {sampling_algorithm: grid}\nsearch_space:\n  - " + "\n    ".join(
    f"{name}: {{type: choice, values: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}" for name in (
        "number_of_epochs", "training_batch_size", "validation_batch_size", "warmup_cosine_lr_warmup_epochs",
        "step_lr_step_size", "early_stopping_patience", "early_stopping_delay", "evaluation_frequency",
        "layers_to_freeze", "gradient_accumulation_step")) + "\n")
SMALL_GRID = ("sweep: {sampling_algorithm: grid}\n"
              "search_space:\n  - {learning_rate: {type: choice, values: [0.1, 0.01]}}\n")


def alias_bomb() -> str:
    """Nine levels of nine aliases under ``tags``: a few hundred bytes standing for 9^10 strings."""
    lines = ["x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "tags:\n" + "".join(f"  {line}\n" for line in lines)


def peak_mb(args: list[str], home: Path) -> tuple[float, int, str]:
    """Peak RSS (MB), exit status and what the command said: its error, or its last line."""
    process = subprocess.Popen([sys.executable, "-m", "core.cli", *args, "--json"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "KESTREL_HOME": str(home)})
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.read(), process.stderr.read()  # a few KB each: no pipe fills while waiting
    _, status, usage = os.wait4(process.pid, 0)  # reaped here, for its peak RSS
    process.returncode = code = os.waitstatus_to_exitcode(status)
    try:
        report = json.loads(out)
        said = report["skipped"][0]["error"] if report.get("skipped") else f"accepted: {sorted(report)[:4]}"
    except ValueError:
        said = next((line for line in err.decode().splitlines() if line.startswith("error")), "")
    return usage.ru_maxrss / 1024, code, said[:110]


def dataset(folder: Path, image_url: str) -> Path:
    """A classification JSONL of ten small images, the first image_url replaced by ``image_url``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(10):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(folder / "images" / f"{i}.png")
        lines.append({"image_url": f"images/{i}.png", "label": "a" if i % 2 else "b"})
    lines[0]["image_url"] = image_url or lines[0]["image_url"]
    (folder / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder / "train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kestrel-hostile"))
    work = parser.parse_args().workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    home = work / "home"
    harmless = dataset(work / "harmless", "")
    peak_mb(["data", "import", str(harmless), "--name", "d"], home)  # a dataset the job files can name
    data = "training_data: {path: azureml:d:1, type: mltable}\n"
    files = {"harmless job": HEAD + data + SMALL_GRID, "1 huge grid": HEAD + data + HUGE_GRID,
             "4 alias bomb": HEAD + data + alias_bomb()}
    cases = []
    for name, text in files.items():
        (work / f"{name.replace(' ', '_')}.yml").write_text(text)
        cases.append((name, ["job", "submit", str(work / f"{name.replace(' ', '_')}.yml")]))
    cases += [("harmless import", ["data", "import", str(harmless), "--name", "h"]),
              ("3 /dev/zero image", ["data", "import", str(dataset(work / "zero", "/dev/zero")), "--name", "z"])]
    print(f"{'case':<20} {'peak MB':>8} {'exit':>5}  what it said")
    for name, args in cases:
        mb, code, last = peak_mb(args, home)
        print(f"{name:<20} {mb:8.0f} {code:5d}  {last}")


if __name__ == "__main__":
    main()
