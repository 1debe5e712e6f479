"""The training loop shared by the families that drive their own torch models (timm, torchvision).

Plain functions with explicit arguments, torchvision-references style: `train_one_epoch` runs
one pass with gradient accumulation and CUDA AMP; `fit` runs epochs, evaluates on a cadence,
reports through the `TrialContext`, keeps the best weights, checkpoints, and stops on request
or by early stopping. A family supplies the model, the loader, a loss function
``loss_fn(model, batch) -> scalar`` and an ``evaluate(model) -> Evaluation``; batches may be any
nesting of tuples, lists and dicts of tensors (detection targets included).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from core.base.errors import KestrelError
from core.base.params import TrainingParams
from core.train import distributed
from core.train.context import TrialContext
from core.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], torch.Tensor]
StopCheck = Callable[[], str | None]
# Written at every evaluated epoch before it is reported, so an epoch the studio shows as finished is
# never trained again after a crash (about 0.5 s for resnet18 with AdamW's state on two cores).
CHECKPOINT_FILE = "checkpoint.pt"  # last state, to resume after a crash (with BEST_FILE)
BEST_FILE = "best.pt"  # best weights so far, written when they change
# A finished trial's last checkpoint (weights, optimizer and schedule state), kept so that it can be
# extended by more epochs (`kestrel trial extend`): about 2-3x the model's size on disk.
RESUME_FILE = "resume.pt"


@dataclass
class Evaluation:
    metrics: dict[str, float]  # flat, must hold "val_loss" and the primary metric
    details: dict[str, Any] = field(default_factory=dict)  # per-class tables, curves (JSON)


@dataclass
class FitSetup:
    """What a family hands the loop."""

    model: nn.Module
    train_loader: Iterable[Any]  # must have len()
    loss_fn: LossFn
    evaluate: Callable[[nn.Module], Evaluation]
    primary_metric: str  # higher is better
    # Some parameters may get no gradient in a step (a Mask R-CNN batch without positives leaves its mask head
    # out): DDP is told to expect it (`core.train.distributed.wrap`).
    partial_gradients: bool = False


@dataclass
class FitResult:
    metrics: dict[str, float]  # the best evaluation's metrics
    details: dict[str, Any]
    best_epoch: int
    epochs_run: int  # completed epochs
    stop_reason: str | None  # the context's reason, "early_stopping", or None (all epochs ran)
    checkpoint_epoch: int = 0  # the epoch the last checkpoint ends with (0: none was written)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) so a trial can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def child_layers(model: nn.Module, *, head: nn.Module | None = None,
                 expand: Collection[str] = ("blocks",)) -> list[str]:
    """The model's freezable layers, in definition order, as module-name prefixes.

    A layer is a top-level child that owns parameters; a child named in ``expand`` (a stack of
    blocks, e.g. a ViT's ``blocks``) counts child by child; ``head`` (the classifier) is never
    one. For timm ResNets this gives the reference's list: conv1, bn1, layer1 … layer4.
    """
    layers = []
    for name, child in model.named_children():
        if head is not None and any(m is head for m in child.modules()):
            continue
        if not any(True for _ in child.parameters()):
            continue
        if name in expand:
            layers += [f"{name}.{sub}" for sub, block in child.named_children()
                       if any(True for _ in block.parameters())]
        else:
            layers.append(name)
    return layers


def freeze_layers(model: nn.Module, layers: Sequence[str], n: int) -> list[str]:
    """Stop training the first ``n`` of ``layers`` (``layers_to_freeze``); returns those frozen.

    When the layers are top-level, parameters owned by the model itself (a ViT's cls_token,
    pos_embed) belong to the stem and freeze with the first layer. Frozen BatchNorm layers still
    update their running statistics (as with requires_grad alone anywhere).
    """
    frozen = list(layers[:n])
    if not frozen:
        return []
    prefixes = tuple(f"{name}." for name in frozen)
    with_root = "." not in frozen[0]
    for name, parameter in model.named_parameters():
        if name.startswith(prefixes) or (with_root and "." not in name):
            parameter.requires_grad_(False)
    return frozen


def to_device(batch: Any, device: str) -> Any:
    """Tensors anywhere in nested tuples, lists and dicts, moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def train_one_epoch(model: nn.Module, loader: Iterable[Any], loss_fn: LossFn, optimizer: Optimizer,
                    scheduler: LRScheduler, device: str, accumulation: int,
                    amp: torch.amp.GradScaler | None, should_stop: StopCheck,
                    progress: Callable[[float], None] = lambda fraction: None) -> float:
    """One pass over ``loader``; the mean batch loss (NaN when stopped before the first batch).

    Steps the optimizer (and the per-step scheduler) every ``accumulation`` batches and after
    the last batch; ``amp`` is the CUDA GradScaler for mixed precision, or None for float32.
    Checks ``should_stop`` before every batch and returns early when it gives a reason; tells
    ``progress`` the fraction of the epoch done after each.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total, batches, count = 0.0, 0, len(loader)  # type: ignore[arg-type]
    for index, batch in enumerate(loader):
        if should_stop():
            break
        with torch.autocast(device_type=device.split(":")[0], enabled=amp is not None):
            loss = loss_fn(model, to_device(batch, device))
        if not torch.isfinite(loss):
            raise KestrelError(f"training diverged: the loss is {loss.item()} at batch {index + 1}; "
                               "lower learning_rate or raise gradient_accumulation_step")
        scaled = loss / accumulation  # the sum over a group is the mean over the larger batch
        (amp.scale(scaled) if amp is not None else scaled).backward()
        total, batches = total + loss.item(), batches + 1
        if (index + 1) % accumulation == 0 or index + 1 == count:
            _step(optimizer, amp)
            scheduler.step()
        progress((index + 1) / count)
    return total / batches if batches else math.nan


def _step(optimizer: Optimizer, amp: torch.amp.GradScaler | None) -> None:
    if amp is None:
        optimizer.step()
    else:
        amp.step(optimizer)
        amp.update()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` evaluations without improvement of a higher-is-better metric.

    Evaluations at or before epoch ``delay`` never count against patience (the reference's
    early_stopping_delay), though they may set the best value.
    """

    patience: int
    delay: int
    best: float = -math.inf
    stale: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record an evaluation's value; True when training should stop."""
        if value > self.best:
            self.best, self.stale = value, 0
        elif epoch > self.delay:
            self.stale += 1
        return self.stale >= self.patience


@dataclass
class _Best:
    value: float = -math.inf
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] | None = None


def fit(setup: FitSetup, params: TrainingParams, ctx: TrialContext, *, resume: bool = True) -> FitResult:
    """Train ``setup.model`` for ``params.number_of_epochs``; the model ends with the best weights.

    Evaluates every ``evaluation_frequency`` epochs and after the last, reporting
    ``train_loss``, ``val_loss`` and the metrics at each; stops when ``ctx.should_stop()`` gives
    a reason or early stopping fires (stopped before the first epoch ended: no evaluation, no
    metrics, ``epochs_run`` 0). With ``resume``, continues from ``ctx.out_dir``'s
    checkpoint when one is there: after a crash, as if nothing happened; from another trial's
    checkpoint planned for fewer epochs (an extension), with its weights and optimizer state, the
    schedule planned again for the new number of epochs, and best weights and early stopping counted
    afresh. Freeze layers before calling: only trainable parameters are optimised.
    """
    model, device = setup.model.to(ctx.device), ctx.device
    # Across processes (`core.train.distributed`): each rank trains on its shard through DDP and stops when
    # rank 0 says so; rank 0 alone evaluates, checkpoints and reports.
    rank, world = distributed.group()
    loader = distributed.shard(setup.train_loader, rank, world) if world > 1 else setup.train_loader
    net = distributed.wrap(model, device, setup.partial_gradients) if world > 1 else model
    should_stop = distributed.agreed(ctx.should_stop) if world > 1 else ctx.should_stop
    steps = math.ceil(len(loader) / params.gradient_accumulation_step)  # type: ignore[arg-type]
    optimizer = build_optimizer(model.parameters(), params)
    scheduler = build_scheduler(optimizer, params, steps)
    amp = torch.amp.GradScaler("cuda") if device.startswith("cuda") else None
    stopper = EarlyStopping(params.early_stopping_patience, params.early_stopping_delay)
    best, epoch_done, reason = _Best(), 0, None
    checkpoints = _Checkpoints(ctx.out_dir, (model, optimizer, scheduler, amp), stopper, best)
    if resume and (ctx.out_dir / CHECKPOINT_FILE).is_file():
        state = torch.load(ctx.out_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        epoch_done = checkpoints.epoch = int(state["epoch"])
        if state.get("epochs", params.number_of_epochs) == params.number_of_epochs:
            _restore(state, ctx.out_dir, model, optimizer, scheduler, amp, stopper, best)
            log.info("resuming after epoch %d", epoch_done)
            if report := state.get("report"):  # killed between the checkpoint and its report: say it now (once)
                ctx.report(int(report["step"]), dict(report["metrics"]))
        else:
            scheduler = _extend(state, model, optimizer, amp, params, steps)
            log.info("continuing after epoch %d for %d more epochs (the learning-rate schedule planned for %d)",
                     epoch_done, params.number_of_epochs - epoch_done, params.number_of_epochs)
    checkpoints.best_epoch = best.epoch
    for epoch in range(epoch_done + 1, params.number_of_epochs + 1):
        train_loss = train_one_epoch(net, loader, setup.loss_fn, optimizer, scheduler,
                                     device, params.gradient_accumulation_step, amp, should_stop,
                                     lambda fraction, done=epoch - 1: ctx.progress(done + fraction))
        reason = should_stop()
        if reason is None:
            epoch_done = epoch
        due = epoch % params.evaluation_frequency == 0 or epoch == params.number_of_epochs
        # A stopped trial still leaves a scored model: evaluate once if it never was. Before its first
        # epoch ended there is nothing worth scoring, and a full validation would only delay the stop.
        if rank == 0 and ((due and reason is None)
                          or (reason is not None and best.weights is None and epoch_done > checkpoints.epoch)):
            value, point = _evaluate(setup, epoch, train_loss, best)
            if reason is None and params.early_stopping and stopper.update(epoch, value):
                log.info("early stopping after epoch %d: no %s improvement in %d evaluations",
                         epoch, setup.primary_metric, params.early_stopping_patience)
                reason = "early_stopping"
            last = reason is not None or epoch == params.number_of_epochs
            if last or checkpoints.due():
                checkpoints.save(epoch_done, params.number_of_epochs, (epoch, point))
            ctx.report(epoch, point)
            reason = reason or ctx.should_stop()  # the report may have triggered a termination policy
            if reason is not None and checkpoints.epoch < epoch_done:  # where the trial ends, for an extension
                checkpoints.save(epoch_done, params.number_of_epochs, (epoch, point))
        if world > 1:
            reason = distributed.agree(reason)
        if reason is not None:
            break
    if rank != 0:
        raise distributed.HelperDone()
    if best.weights is not None:
        model.load_state_dict(best.weights)
    return FitResult(best.metrics, best.details, best.epoch, epoch_done, reason, checkpoints.epoch)


def _evaluate(setup: FitSetup, epoch: int, train_loss: float, best: _Best) -> tuple[float, dict[str, float]]:
    """Evaluate and keep the weights if best so far; returns the primary metric's value and the point
    to report."""
    evaluation = setup.evaluate(setup.model)
    value = evaluation.metrics[setup.primary_metric]
    point = ({"train_loss": train_loss} if math.isfinite(train_loss) else {}) | evaluation.metrics
    if value > best.value or best.weights is None:
        best.value, best.epoch = value, epoch
        best.metrics, best.details = dict(evaluation.metrics), evaluation.details
        best.weights = {k: v.detach().to("cpu", copy=True) for k, v in setup.model.state_dict().items()}
    return value, point


Training = tuple[nn.Module, Optimizer, LRScheduler, torch.amp.GradScaler | None]


class _Checkpoints:
    """The trial's checkpoint (and its best weights so far), written after an evaluation when writing it has
    taken at most a tenth of the time since the last one, and always where training ends. On two cores
    resnet18's (weights and AdamW state, 135 MB) took 0.35 s, a seventh of an epoch of the fridge photos;
    a crash now redoes at most about ten times that. `epoch`: the epochs the checkpoint holds."""

    SHARE = 0.1

    def __init__(self, out_dir: Path, training: Training, stopper: EarlyStopping, best: _Best) -> None:
        self.out_dir, self.training, self.stopper, self.best = out_dir, training, stopper, best
        self.epoch = self.best_epoch = 0
        self.cost, self.written = 0.0, -math.inf

    def due(self) -> bool:
        return time.monotonic() - self.written >= self.cost / self.SHARE

    def save(self, epoch: int, planned: int, report: tuple[int, dict[str, float]]) -> None:
        started = time.monotonic()
        if self.best.weights is not None and self.best.epoch != self.best_epoch:
            _save_atomic(self.best.weights, self.out_dir / BEST_FILE)
            self.best_epoch = self.best.epoch
        _save_checkpoint(self.out_dir, epoch, planned, self.training, self.stopper, self.best, report)
        self.epoch, self.written = epoch, time.monotonic()
        self.cost = self.written - started


def _save_checkpoint(out_dir: Path, epoch: int, planned: int, training: Training, stopper: EarlyStopping,
                     best: _Best, report: tuple[int, dict[str, float]]) -> None:
    """Tensors, numbers and plain containers only: it loads with ``weights_only=True``. ``planned`` is the
    trial's number of epochs (another number on loading means an extension); ``report`` is the evaluation
    about to be reported, said again on resume in case the process died before it was."""
    model, optimizer, scheduler, amp = training
    state: dict[str, Any] = {
        "epoch": epoch, "epochs": planned, "report": {"step": report[0], "metrics": report[1]},
        "early_stopping": {"best": stopper.best, "stale": stopper.stale},
        "best": {"value": best.value, "epoch": best.epoch, "metrics": best.metrics, "details": best.details},
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "amp": amp.state_dict() if amp is not None else {}}
    _save_atomic(state, out_dir / CHECKPOINT_FILE)


def _restore(state: dict[str, Any], out_dir: Path, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
             amp: torch.amp.GradScaler | None, stopper: EarlyStopping, best: _Best) -> None:
    """Everything as it was when ``state`` was saved, to go on after a crash."""
    _restore_training(state, model, optimizer, amp)
    scheduler.load_state_dict(state["scheduler"])
    stopper.best, stopper.stale = state["early_stopping"]["best"], state["early_stopping"]["stale"]
    saved = state["best"]
    best.value, best.epoch, best.metrics, best.details = (saved["value"], saved["epoch"],
                                                          saved["metrics"], saved["details"])
    if (out_dir / BEST_FILE).is_file():
        best.weights = torch.load(out_dir / BEST_FILE, map_location="cpu", weights_only=True)


def _extend(state: dict[str, Any], model: nn.Module, optimizer: Optimizer, amp: torch.amp.GradScaler | None,
            params: TrainingParams, steps: int) -> LRScheduler:
    """Weights and optimizer state from ``state``, and a schedule planned for ``params.number_of_epochs``
    standing where ``state``'s epoch ends: the learning rate a trial planned that long from the start
    would have there (as ultralytics does when it trains a finished run on), not the old schedule's
    end, where the rate is near zero and more epochs would learn little."""
    _restore_training(state, model, optimizer, amp)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"]  # the recursive schedules start from the base rate
    scheduler = build_scheduler(optimizer, params, steps)
    with warnings.catch_warnings():  # "step() before optimizer.step()": the optimizer stepped in the first trial
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(int(state["epoch"]) * steps):
            scheduler.step()
    return scheduler


def _restore_training(state: dict[str, Any], model: nn.Module, optimizer: Optimizer,
                      amp: torch.amp.GradScaler | None) -> None:
    if "model" not in state:
        raise KestrelError("the checkpoint holds no training state (it was written before Kestrel kept one "
                           "after the last epoch); it cannot be trained on")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if amp is not None and state["amp"]:
        amp.load_state_dict(state["amp"])


def keep_resume_state(out_dir: Path) -> None:
    """Once the family has saved the final weights: the last checkpoint becomes the trial's resume state
    (:data:`RESUME_FILE`), the best weights' copy goes."""
    if (out_dir / CHECKPOINT_FILE).is_file():
        os.replace(out_dir / CHECKPOINT_FILE, out_dir / RESUME_FILE)
    (out_dir / BEST_FILE).unlink(missing_ok=True)


def _save_atomic(obj: Any, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)
