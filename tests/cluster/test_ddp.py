"""One trial across processes with torch DDP, on the CPU with gloo (the code path a GPU machine runs with NCCL):
each rank trains on its shard and DDP averages the gradients, so two ranks train exactly as one process on
the two shards' batches together; a timm and a torchvision trial with ``devices: 2`` train end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.base.params import resolve_params
from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.runs.trial import run_trial
from core.train import distributed
from core.train.context import MemoryContext
from core.train.loop import Evaluation, FitSetup, fit

PARAMS = {"optimizer": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "learning_rate": 0.1,
          "number_of_epochs": 2, "early_stopping": False, "learning_rate_scheduler": "step"}


def test_a_shard_is_every_worlds_index_and_all_ranks_take_as_many_batches():
    loader = DataLoader(TensorDataset(torch.arange(7)), batch_size=2, shuffle=False)
    shards = [distributed.shard(loader, rank, 2) for rank in (0, 1)]
    drawn = [[int(i) for (batch,) in shard for i in batch] for shard in shards]
    assert drawn == [[0, 2, 4, 6], [1, 3, 5, 0]]  # padded with the first index: the same number of batches
    assert len(shards[0]) == len(shards[1]) == 2
    five = distributed.shard(DataLoader(TensorDataset(torch.arange(10)), batch_size=4), 0, 2)
    assert [len(batch) for (batch,) in five] == [4]  # never a last batch of one image (BatchNorm fails on it)


def _setup(batch: int) -> FitSetup:
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)
    model = nn.Linear(3, 1)

    def loss(net: nn.Module, pair: list[torch.Tensor]) -> torch.Tensor:
        return nn.functional.mse_loss(net(pair[0]), pair[1])

    def evaluate(net: nn.Module) -> Evaluation:
        with torch.no_grad():
            error = float(nn.functional.mse_loss(net(x), y))
        return Evaluation({"val_loss": error, "score": -error})

    return FitSetup(model, loader, loss, evaluate, "score")


def _rank(rank: int, world: int, port: int, out_dir: str) -> None:
    """A helper rank of the equivalence test (spawned: a module-level function)."""
    distributed.join(rank, world, port, "cpu")
    try:
        fit(_setup(batch=2), resolve_params(Task.CLASSIFICATION, PARAMS), MemoryContext(Path(out_dir)))
    except distributed.HelperDone:
        pass
    finally:
        distributed.leave()


def test_two_ranks_train_exactly_as_one_process_on_both_shards_batches(tmp_path):
    params = resolve_params(Task.CLASSIFICATION, PARAMS)
    alone = _setup(batch=4)  # batches {0..3} and {4..7}: what the two ranks' batches of 2 make together
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    fit(alone, params, MemoryContext(tmp_path / "one"))
    port, helpers = distributed.start(2, _rank, (str(tmp_path / "two"),))
    distributed.join(0, 2, port, "cpu")
    try:
        together = _setup(batch=2)
        ctx = MemoryContext(tmp_path / "two")
        result = fit(together, params, ctx)
    finally:
        distributed.leave()
        for helper in helpers:
            helper.join(60)
    assert [h.exitcode for h in helpers] == [0]
    assert result.epochs_run == 2 and [step for step, _ in ctx.reports] == [1, 2]  # rank 0 alone reports
    for mine, theirs in zip(together.model.state_dict().values(), alone.model.state_dict().values(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6), (mine, theirs)
    untrained = _setup(batch=4).model.state_dict()["weight"]
    assert not torch.allclose(together.model.state_dict()["weight"], untrained)  # it did train


@pytest.mark.parametrize(("task", "model", "sizes"), [
    (Task.CLASSIFICATION, "test_resnet", {"training_crop_size": 32, "validation_crop_size": 32,
                                          "validation_resize_size": 32}),
    (Task.DETECTION, "fasterrcnn_resnet18_fpn", {"min_size": 64, "max_size": 64}),
])
def test_a_trial_with_two_devices_trains_on_two_processes(settings, engine, tmp_path, task, model, sizes):
    jsonl = write_sample(task, tmp_path / "data", count=12, size=64)
    import_dataset(jsonl, ImportOptions("shapes", task), settings=settings, engine=engine)
    result = run_trial(settings=settings, engine=engine, dataset="shapes", version=None,
                       overrides={"model_name": model, "number_of_epochs": 1, "training_batch_size": 4,
                                  "devices": 2, **sizes})
    assert result.status == "completed" and result.epochs_run == 1
    assert result.metrics[result.primary_metric] >= 0
    log = Path(result.artifacts["log"]).read_text()
    assert "DDP: 2 processes (gloo), 1 CPU thread(s) each" in log
    assert "ended with status" not in log  # the helper rank exited cleanly
