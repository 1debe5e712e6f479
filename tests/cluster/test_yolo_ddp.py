"""YOLO on several GPUs trains in DDP processes ultralytics starts itself, from a pickle of the trainer and its
callbacks. No GPU is needed to check Kestrel's side of it: the callbacks and the trial's context survive the
pickle, rank 0 reports to the database from its own process, a stop waits for the epoch's end, and the trial
process takes over rank 0's epochs and notices afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.runs.trial import run_trial
from core.train.context import MemoryContext
from core.zoo.ultralytics_family import STATE_FILE, _Bridge
from storage.db import session_scope
from storage.repos import trials


def _trainer(epoch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(epoch=epoch, nb=4, stop=False, tloss=[0.5, 0.25], last="missing.pt",
                           metrics={"metrics/mAP50(B)": 0.4, "metrics/mAP50-95(B)": 0.2, "val/box_loss": 1.0})


def test_in_ddp_rank_0_reports_and_stops_at_the_epochs_end_and_the_other_ranks_keep_quiet(tmp_path, monkeypatch):
    ctx = MemoryContext(tmp_path)
    bridge = _Bridge(ctx, Task.DETECTION, "voc", ["a notice"])
    monkeypatch.setenv("RANK", "1")
    trainer = _trainer()
    ctx.stop_reason = "canceled"
    bridge.on_batch_end(trainer)
    bridge.on_fit_epoch_end(trainer)
    assert ctx.positions == [] and ctx.reports == [] and not trainer.stop  # rank 1 waits for rank 0's word

    monkeypatch.setenv("RANK", "0")
    bridge.on_batch_end(trainer)
    assert bridge.stop_reason == "canceled" and not trainer.stop  # leaving mid-epoch would hang the other ranks
    bridge.on_fit_epoch_end(trainer)
    assert trainer.stop and ctx.reports[0][0] == 1 and ctx.reports[0][1]["map_50"] == pytest.approx(0.4)
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {
        "epochs_run": 1, "stop_reason": "canceled", "notices": ["a notice"]}

    monkeypatch.delenv("RANK")  # one process: a stop takes effect at the next batch
    alone = _Bridge(MemoryContext(tmp_path, stop_reason="canceled"), Task.DETECTION, "voc", [])
    trainer = _trainer()
    alone.on_batch_end(trainer)
    assert trainer.stop


def test_a_yolo_trial_trained_by_ultralytics_ddp_processes_reports_from_them(settings, engine, tmp_path,
                                                                             monkeypatch):
    from ultralytics.engine.trainer import BaseTrainer

    original = BaseTrainer.train

    def as_on_two_gpus(self: BaseTrainer) -> None:
        # What ultralytics decides for device "0,1": train in processes started by torch.distributed.run
        # from a pickle of this trainer. Here one rank, on the CPU.
        self.ddp, self.world_size = True, 1
        original(self)

    monkeypatch.setattr(BaseTrainer, "train", as_on_two_gpus)
    jsonl = write_sample(Task.DETECTION, tmp_path / "data", count=10, size=64)
    import_dataset(jsonl, ImportOptions("shapes", Task.DETECTION), settings=settings, engine=engine)
    result = run_trial(settings=settings, engine=engine, dataset="shapes", version=None,
                       overrides={"model_name": "yolov8n", "number_of_epochs": 2, "img_size": 64,
                                  "training_batch_size": 4})
    assert result.status == "completed" and result.epochs_run == 2
    log = Path(result.artifacts["log"]).read_text()
    assert "torch.distributed.run" in log  # ultralytics' DDP launch, not training in this process
    with session_scope(engine) as session:
        curve = trials.curves(session=session, trial_id=result.trial_id)["map_50"]
    assert [step for step, _ in curve] == [1, 2]  # reported by rank 0, from its own process
    assert any("training from scratch" in n for n in result.notices)  # the trial's notices came back
