"""ultralytics' released weights (``*.pt``) for the YOLO configs: where ultralytics keeps them, whether
they are there or can be downloaded, and a person's copy checked and put there."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from core.base.errors import ConfigError
from core.zoo import weights as hub
from core.zoo.ultralytics_env import offline_ultralytics
from core.zoo.weights import CACHED, DOWNLOADABLE, HOSTS, UNAVAILABLE, WeightsStatus, fitting


def release_name(architecture: str) -> str:
    """The ``*.pt`` file ultralytics publishes for a config (its YOLOv5 weights are the "u" ones)."""
    return re.sub(r"^(yolov5[nsmlx])(?=-|$)", r"\1u", architecture) + ".pt"


def weights_dir() -> Path:
    """ultralytics' weights folder (its settings' ``weights_dir``), where its downloads go."""
    offline_ultralytics()
    from ultralytics.utils import SETTINGS

    return Path(SETTINGS["weights_dir"])


def weights_file(architecture: str) -> Path:
    """Where ultralytics keeps (and downloads) the released weights of ``architecture``."""
    return weights_dir() / release_name(architecture)


def weights_status(architecture: str) -> WeightsStatus:
    file = weights_file(architecture)
    if file.is_file():
        return WeightsStatus(CACHED, str(file))
    if why := hub.unreachable(HOSTS["ultralytics"]):
        return WeightsStatus(UNAVAILABLE, f"{file.name} is not in ultralytics' weights folder ({file.parent}) "
                             f"and {why}")
    return WeightsStatus(DOWNLOADABLE, f"{file.name} from ultralytics' releases")


def import_weights(architecture: str, file: Path) -> tuple[Path, int]:
    """A person's ultralytics ``.pt`` (a pickle: loaded only because they chose to import it), checked
    against the architecture and put in ultralytics' weights folder."""
    offline_ultralytics()
    from ultralytics.nn import tasks as nets

    if file.suffix != ".pt":
        raise ConfigError("weights", f"{file.name}: ultralytics reads only its own .pt checkpoints; give the "
                          f"file as released (e.g. {release_name(architecture)}), or a .safetensors model to a "
                          "job as training_parameters.pretrained_weights")
    state = read_checkpoint(file)
    net = (nets.SegmentationModel if architecture.endswith("-seg") else nets.DetectionModel)
    usable = fitting(net(nets.yaml_model_load(f"{architecture}.yaml"), verbose=False).state_dict(), state, file,
                     architecture)
    target = weights_file(architecture)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    return target, usable


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The float tensors of a Kestrel model (safetensors) or of an ultralytics checkpoint."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    from ultralytics.nn.tasks import load_checkpoint

    # ultralytics checkpoints are pickles: load_checkpoint runs torch.load(weights_only=False).
    # We accept that only for a file the person named (a job's parameter, an explicit import) or
    # one ultralytics' own download put in its weights folder; our own models are safetensors.
    model, _ = load_checkpoint(path)
    return {k: v.float() for k, v in model.state_dict().items()}
