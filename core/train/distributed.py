"""One trial across several processes with torch DDP (``devices`` > 1): one process per GPU (NCCL), or on a
CPU machine several processes sharing its cores (gloo), which proves the same code path.

The trial's own process is rank 0: it evaluates, checkpoints and reports as a single-process trial does.
`start` spawns ranks 1..N-1 as helpers that build the same data and model and run the same `fit`
(`core.train.loop`): each trains on its shard of every epoch (`shard`), gradients are averaged by DDP, and
rank 0's word decides when to stop (`agreed`), so every rank leaves the epoch loop at the same batch.
A helper ends when `fit` is done (`HelperDone`): saving and scoring the model are rank 0's.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger(__name__)
StopCheck = Callable[[], str | None]


class HelperDone(Exception):
    """Raised in a helper rank when `fit` has finished: the rest of a family's training is rank 0's."""


def group() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a distributed trial."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def backend(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def join(rank: int, world: int, port: int, device: str) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(backend(device), rank=rank, world_size=world)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rank_device(device: str, rank: int) -> str:
    """Rank ``rank``'s device: its own GPU, or the CPU."""
    return f"cuda:{rank}" if device.startswith("cuda") else device


def start(world: int, target: Callable[..., None], args: tuple[Any, ...]) -> tuple[int, list[Any]]:
    """Spawn ranks 1..world-1 running ``target(rank, world, port, *args)``; returns the port (rank 0, the
    caller, joins with `join` on it) and the helper processes."""
    import torch.multiprocessing as mp

    port = free_port()
    context = mp.get_context("spawn")  # CUDA cannot be forked
    helpers = [context.Process(target=target, args=(rank, world, port, *args), daemon=True,
                               name=f"kestrel-rank-{rank}") for rank in range(1, world)]
    for helper in helpers:
        helper.start()
    return port, helpers


def wrap(model: nn.Module, device: str, partial_gradients: bool) -> nn.Module:
    """The model in DDP; with ``partial_gradients`` (parameters a step may leave without a gradient), DDP looks
    for them each step rather than wait for them (a traversal of the graph a step, so only when needed)."""
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=partial_gradients)


class _Shard(Sampler[int]):
    """Every ``world``-th index of what ``base`` draws, from ``rank`` on; padded with the first indices so
    that every rank takes as many batches (all ranks draw the same order: their samplers are seeded alike)."""

    def __init__(self, base: Any, rank: int, world: int) -> None:
        self.base, self.rank, self.world = base, rank, world

    def __len__(self) -> int:
        return math.ceil(len(self.base) / self.world)

    def __iter__(self) -> Iterator[int]:
        order = list(iter(self.base))
        order += order[:len(self) * self.world - len(order)]
        return iter(order[self.rank::self.world])


def shard(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """``loader`` (a training loader) drawing only rank ``rank``'s share of each epoch; as the training loader
    does (`core.data.loaders.make_loader`), never a last batch of a single image, on which BatchNorm fails."""
    sampler = _Shard(loader.sampler, rank, world)
    batch = loader.batch_size or 1
    single = len(sampler) > 1 and len(sampler) % batch == 1
    return DataLoader(loader.dataset, batch_size=batch, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, drop_last=loader.drop_last or single,
                      pin_memory=loader.pin_memory, persistent_workers=loader.num_workers > 0)


def agreed(decide: StopCheck) -> StopCheck:
    """A stop check every rank answers alike: rank 0 asks ``decide``, the others take its answer."""
    def check() -> str | None:
        return agree(decide() if dist.get_rank() == 0 else None)
    return check


def agree(value: str | None) -> str | None:
    """Rank 0's ``value``, on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
