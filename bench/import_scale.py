"""Import 1,000 and 10,000 generated 640×480 JPEGs; print images/s and peak memory for each.

Each size is imported in a fresh process so its peak RSS is its own. Import time should grow
linearly with the count, and memory should not grow with the pixel data (images are decoded
one at a time and only their labels are kept).

    .venv/bin/python bench/import_scale.py [--sizes 1000 10000] [--workdir /tmp/kestrel-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "ring")


def generate(folder: Path, count: int) -> Path:
    """``count`` distinct 640×480 JPEGs (gradient, shapes) and a classification JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
        draw = ImageDraw.Draw(image)
        x, y = 40 + (i * 37) % 500, 40 + (i * 53) % 340
        draw.ellipse((x, y, x + 60 + i % 40, y + 60), fill=(i % 256, (i // 256) % 256, 120))
        draw.text((10, 10), f"#{i}", fill=(255, 255, 0))
        name = f"img{i:05d}.jpg"
        image.save(folder / name, quality=85)
        lines.append(json.dumps({"image_url": name, "label": CLASSES[i % len(CLASSES)]}))
    jsonl = folder / "annotations.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    return jsonl


def _memory_mb(field: str) -> float:
    # VmHWM (peak) starts afresh with each exec, unlike ru_maxrss, which Linux carries over.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(jsonl: Path, home: Path) -> None:
    os.environ["KESTREL_HOME"] = str(home)
    from core.data.importer import ImportOptions, import_dataset
    from storage.db import make_engine, upgrade
    from storage.settings import Settings

    settings = Settings()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    before_mb = _memory_mb("VmHWM")
    start = time.perf_counter()
    report = import_dataset(jsonl, ImportOptions("bench"), settings=settings, engine=engine)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": report["images"], "seconds": seconds,
                      "rss_before_mb": before_mb, "rss_peak_mb": _memory_mb("VmHWM")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kestrel-bench"))
    parser.add_argument("--child", nargs=2, metavar=("JSONL", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return
    print(f"{'images':>8} {'seconds':>8} {'images/s':>9} {'RSS before MB':>14} {'peak RSS MB':>12}"
          f" {'pixel data MB':>14}")
    for size in args.sizes:
        data = args.workdir / f"data-{size}"
        jsonl = data / "annotations.jsonl"
        if not jsonl.exists():
            generate(data, size)
        home = args.workdir / f"home-{size}"
        shutil.rmtree(home, ignore_errors=True)
        result = subprocess.run([sys.executable, __file__, "--child", str(jsonl), str(home)],
                                check=True, capture_output=True, text=True)
        r = json.loads(result.stdout.strip().splitlines()[-1])
        pixels_mb = size * 640 * 480 * 3 / 1e6
        print(f"{r['images']:>8} {r['seconds']:>8.1f} {r['images'] / r['seconds']:>9.0f} "
              f"{r['rss_before_mb']:>14.0f} {r['rss_peak_mb']:>12.0f} {pixels_mb:>14.0f}")


if __name__ == "__main__":
    main()
