"""Where starting weights come from: a user's file, a library's local cache, or the library's own
download when its host answers. The only module of the engine that may touch the network, and only
through the libraries' own download functions; with no weights to be had, callers train from scratch
and say so — before training (`WeightsStatus`, shown by the wizard and `job submit`) and after."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from core.base.errors import ConfigError

log = logging.getLogger(__name__)


CACHED, DOWNLOADABLE, UNAVAILABLE, USER = "cached", "downloadable", "unavailable", "user file"
SCRATCH_WARNING = "will train from scratch, expect much lower accuracy"
HOSTS = {"timm": "huggingface.co", "torchvision": "download.pytorch.org", "ultralytics": "github.com"}


@dataclass(frozen=True)
class WeightsStatus:
    """Where a model's starting weights will come from, known before it trains."""

    state: str  # CACHED, DOWNLOADABLE, UNAVAILABLE or USER
    where: str  # the file, the address, or why there are none

    @property
    def pretrained(self) -> bool:
        return self.state != UNAVAILABLE

    def sentence(self) -> str:
        if self.state == UNAVAILABLE:
            return f"pretrained: none — {SCRATCH_WARNING} ({self.where}; `kestrel weights import FILE " \
                   "--model NAME` or the studio's Weights page bring a file)"
        said = {DOWNLOADABLE: "will download", USER: "your file"}.get(self.state, self.state)
        return f"pretrained: {said} ({self.where})"


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
    if why := unreachable(HOSTS["timm"]):
        return None, f"not in the local cache and {why}"
    return "hub", ""


def timm_status(architecture: str) -> WeightsStatus:
    source, why = pretrained_source(architecture)
    if source is None:
        return WeightsStatus(UNAVAILABLE, why)
    if source == "hub":
        return WeightsStatus(DOWNLOADABLE, f"from {HOSTS['timm']}")
    return WeightsStatus(CACHED, source)


def user_status(params_file: str | None) -> WeightsStatus | None:
    """A file the job names (``checkpoint_path`` or ``pretrained_weights``) wins over any cache."""
    return WeightsStatus(USER, params_file) if params_file else None


_answers: dict[str, tuple[float, bool]] = {}


def offline() -> bool:
    """KESTREL_OFFLINE=1: the network is never asked, not even whether a weights host answers; weights come
    from the libraries' caches and people's files only (`kestrel doctor` lists what that leaves)."""
    return os.environ.get("KESTREL_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def unreachable(host: str) -> str | None:
    """Why ``host`` cannot be asked for weights ("… cannot be reached", "KESTREL_OFFLINE is set"); None
    when it answers."""
    if offline():
        return "KESTREL_OFFLINE is set"
    return None if reachable(host) else f"{host} cannot be reached"


def reachable(host: str, ttl_s: float = 60.0) -> bool:
    """Whether ``host`` answers on HTTPS, asked at most once a minute; offline, a name that does not
    resolve fails at once."""
    if offline():
        return False
    now = time.monotonic()
    asked = _answers.get(host)
    if asked is None or now - asked[0] > ttl_s:
        _answers[host] = asked = (now, _reachable(host))
    return asked[1]


def fetch_url(url: str, folder: Path) -> Path:
    """torch's own download of ``url`` into ``folder`` (torch's hub cache), checked by its hash."""
    from torch.hub import download_url_to_file

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(url).name
    download_url_to_file(url, str(target), hash_prefix=_hash_prefix(target.name), progress=False)
    return target


def fetch_ultralytics(file: Path) -> Path:
    """ultralytics' own download of a released ``*.pt`` into ``file`` (its weights folder)."""
    from ultralytics.utils.downloads import attempt_download_asset

    file.parent.mkdir(parents=True, exist_ok=True)
    return Path(attempt_download_asset(file))


def _hash_prefix(name: str) -> str | None:
    """torchvision names files ``<arch>-<sha256 prefix>.pth``."""
    stem = Path(name).stem
    prefix = stem.rpartition("-")[2]
    return prefix if len(prefix) >= 6 and all(c in "0123456789abcdef" for c in prefix) else None


def _reachable(host: str, timeout_s: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch state dict (loaded without running pickled code)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — a pickle with code, or no torch file at all
        raise ConfigError("weights", f"{path.name} is not a safetensors file or a plain torch state dict "
                          f"({type(exc).__name__}); save the model's state_dict() or use safetensors") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError("weights", f"{path.name} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def fitting(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: Path, model: str) -> int:
    """How many tensors of ``state`` fit ``own``; ConfigError when fewer than half of the model's do
    (another architecture's file)."""
    usable = sum(1 for k, v in state.items() if k in own and own[k].shape == v.shape)
    if usable < len(own) / 2:
        raise ConfigError("weights", f"{path.name} does not hold weights for {model}: {usable} of its "
                          f"{len(state)} tensors fit the model's {len(own)}; check --model")
    return usable


def load_weights_file(model: nn.Module, path: Path) -> str:
    """Load a user's weights (safetensors or a torch state dict) into ``model``, skipping what
    does not fit (typically the classifier); returns a notice naming what was skipped, or "".
    """
    if not path.is_file():
        raise ConfigError("training_parameters.pretrained_weights",
                          f"{path} is not a file; give the path of a .safetensors or .pth state dict")
    state = read_state(path)
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
