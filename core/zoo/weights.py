"""Where starting weights come from: a user's file, a library's local cache, or the hub when it
answers. The only module of the engine that may touch the network, and only to let a library
use its own hub; with no weights to be had, callers train from scratch and say so."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from core.errors import ConfigError

log = logging.getLogger(__name__)


def pretrained_source(architecture: str) -> tuple[str | None, str]:
    """Where timm's pretrained weights can come from: a cached file, "hub", or None and why.

    The hub is only tried when it answers: offline, timm retries it for ~46 s per file, and
    setting HF_HUB_OFFLINE after huggingface_hub is imported does not help.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.get_pretrained_cfg(architecture)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return None, "timm publishes none"
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.split("@")[0]
        for name in (cfg.hf_hub_filename or "model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, name)
            if isinstance(cached, str):
                return cached, ""
    if cfg.url:
        cached_url = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if cached_url.is_file():
            return str(cached_url), ""
    if constants.is_offline_mode():
        return None, "not in the local cache and HF_HUB_OFFLINE is set"
    if not _reachable("huggingface.co"):
        return None, "not in the local cache and huggingface.co cannot be reached"
    return "hub", ""


def _reachable(host: str, timeout_s: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load_weights_file(model: nn.Module, path: Path) -> str:
    """Load a user's weights (safetensors or a torch state dict) into ``model``, skipping what
    does not fit (typically the classifier); returns a notice naming what was skipped, or "".
    """
    if not path.is_file():
        raise ConfigError("training_parameters.pretrained_weights",
                          f"{path} is not a file; give the path of a .safetensors or .pth state dict")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):  # common checkpoint wrappers
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError("training_parameters.pretrained_weights",
                          f"none of the {len(state)} tensors in {path.name} fit this architecture")
    model.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    log.info("loaded %d tensors from %s; kept initial values for %s", len(usable), path,
             ", ".join(skipped) or "none")
    return f"weights from {path.name}: {len(skipped)} tensors did not fit and start fresh " \
           f"({', '.join(skipped[:4])}{', ...' if len(skipped) > 4 else ''})" if skipped else ""
