"""A trial on several devices (``devices`` > 1) with torch DDP, for the families that train in
`core.train.loop` (timm, torchvision): this process is rank 0 and trains as any trial does; helper
processes (ranks 1..N-1) load the same dataset version and parameters and take part in `fit` only
(`core.train.distributed`). YOLO uses ultralytics' own DDP instead (`core.zoo.ultralytics_family`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from core.base.errors import ConfigError
from core.base.params import TrainingParams
from core.data.view import VersionData
from core.train import distributed
from core.train.context import MemoryContext, TrialContext
from core.zoo.base import ModelFamily, ModelSpec, TrainedModel

log = logging.getLogger(__name__)
IN_LOOP = ("timm", "torchvision")  # the families whose training runs in core.train.loop.fit
JOIN_S = 60.0  # how long rank 0 waits for a helper to exit after training


def train(family: ModelFamily, model: ModelSpec, data: VersionData, params: TrainingParams,
          ctx: TrialContext) -> TrainedModel:
    """``family.train`` on ``params.devices`` processes (one when 1, or for a family with its own DDP)."""
    world = params.devices
    if world == 1 or family.name not in IN_LOOP:
        return family.train(model, data, params, ctx)
    if ctx.device.startswith("cuda") and torch.cuda.device_count() < world:
        raise ConfigError("training_parameters.devices", f"{world} devices asked for; this machine has "
                          f"{torch.cuda.device_count()} GPU(s)", hints=[str(torch.cuda.device_count())])
    # The processes share the cores: on a CPU they train with them, on GPUs their loaders run there.
    threads = max(1, torch.get_num_threads() // world)
    torch.set_num_threads(threads)
    environment = {k: v for k, v in os.environ.items() if k.startswith("KESTREL_")}
    port, helpers = distributed.start(world, _helper, (environment, data.name, data.version,
                                                       params.model_dump(mode="json"), str(ctx.out_dir), ctx.device,
                                                       threads))
    distributed.join(0, world, port, ctx.device)
    log.info("DDP: %d processes (%s), %d CPU thread(s) each%s", world, distributed.backend(ctx.device), threads,
             ", one GPU each" if ctx.device.startswith("cuda") else "")
    try:
        return family.train(model, data, params, ctx)
    finally:
        distributed.leave()
        for helper in helpers:
            helper.join(JOIN_S)
            if helper.exitcode != 0:
                log.warning("DDP rank %s ended with status %s", helper.name, helper.exitcode)
                helper.kill()


def _helper(rank: int, world: int, port: int, environment: dict[str, str], dataset: str, version: int,
            resolved: dict[str, Any], out_dir: str, device: str, threads: int) -> None:
    """A helper rank, in a process of its own: the same data, parameters and model; `fit` only."""
    os.environ.update(environment)
    from core.data.view import load_version
    from core.zoo.families import resolve
    from storage.artifacts import BlobStore
    from storage.db import make_engine, session_scope
    from storage.settings import Settings

    torch.set_num_threads(threads)
    settings = Settings()
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        data = load_version(session=session, blobs=BlobStore(settings.blobs_dir), name=dataset, version=version)
    engine.dispose()
    params = TrainingParams.model_validate(resolved)
    family, model = resolve(params.model_name or "", data.task, params)
    mine = distributed.rank_device(device, rank)
    distributed.join(rank, world, port, mine)
    try:
        family.train(model, data, params, MemoryContext(Path(out_dir), mine))
    except distributed.HelperDone:
        pass
    finally:
        distributed.leave()
