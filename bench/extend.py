"""Is "Train N more epochs" worth having? Side by side, in one run: a trial of E epochs extended by E more
(`kestrel trial extend`), against one trial planned for 2E epochs from the start, on the same split, model
and seed, one after the other with all cores.

It prints each trial's primary-metric curve, the extension's best against the straight run's, and the
times: the first trial + its extension against the straight run. What it shows: whether stopping early
and training on later costs accuracy or time against having planned the longer run.

    .venv/bin/python bench/extend.py [--epochs 4] [--model resnet18] [--data fridgeObjects_small150]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from learning import CLASSIFICATION, load, studio


def trial(settings: Any, engine: Any, overrides: dict[str, Any], extends: int | None = None
          ) -> tuple[Any, float, list[tuple[int, float]]]:
    from core.runs.trial import run_trial
    from storage.db import session_scope
    from storage.repos import trials

    start = time.perf_counter()
    result = run_trial(settings=settings, engine=engine, dataset="bench", version=None, overrides=overrides,
                       extends=extends)
    took = time.perf_counter() - start
    with session_scope(engine) as session:
        curve = trials.curves(session=session, trial_id=result.trial_id)[result.primary_metric]
    return result, took, curve


def resolved(engine: Any, trial_id: int, epochs: int) -> dict[str, Any]:
    """What `kestrel trial extend` asks for: the first trial's every resolved parameter, more epochs."""
    from storage.db import session_scope
    from storage.repos import trials

    with session_scope(engine) as session:
        params = trials.get(session=session, trial_id=trial_id).metrics["manifest"]["params"]
    return {k: v for k, v in params.items() if v is not None} | {"number_of_epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="E: the first trial's epochs, and the extension's")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--data", default="fridgeObjects_small150", choices=sorted(CLASSIFICATION))
    args = parser.parse_args()
    from core.base.tasks import Task

    with tempfile.TemporaryDirectory() as folder:
        settings, engine = studio(Path(folder))
        load(settings, engine, "bench", CLASSIFICATION[args.data], Task.CLASSIFICATION)
        base = {"model_name": args.model, "early_stopping": False, "seed": 1}
        first, first_s, first_curve = trial(settings, engine, base | {"number_of_epochs": args.epochs})
        more, more_s, more_curve = trial(settings, engine, resolved(engine, first.trial_id, 2 * args.epochs),
                                         extends=first.trial_id)
        straight, straight_s, straight_curve = trial(settings, engine, base | {"number_of_epochs": 2 * args.epochs})
    metric = first.primary_metric
    print(f"{args.model} on {args.data}, {metric} per epoch (first trial {args.epochs} epochs, extended by "
          f"{args.epochs}; straight {2 * args.epochs}):")
    print(f"  first     : {' '.join(f'{v:.3f}' for _, v in first_curve)}")
    print(f"  extension : {' '.join(f'{v:.3f}' for _, v in more_curve)}  (epochs 1-{args.epochs} copied)")
    print(f"  straight  : {' '.join(f'{v:.3f}' for _, v in straight_curve)}")
    best = {name: r.metrics[metric] for name, r in (("first", first), ("extension", more), ("straight", straight))}
    print(f"best {metric}: first {best['first']:.3f}, extension {best['extension']:.3f}, straight "
          f"{best['straight']:.3f}; extension/straight {best['extension'] / best['straight']:.2f}x")
    print(f"time: first {first_s:.0f} s + extension {more_s:.0f} s = {first_s + more_s:.0f} s against straight "
          f"{straight_s:.0f} s ({(first_s + more_s) / straight_s:.2f}x)")


if __name__ == "__main__":
    main()
