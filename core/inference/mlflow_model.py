"""MLflow model folders, the form Azure's AutoML gives its models (``mlflow-model/``): a Kestrel model
exported this way loads with ``mlflow.pyfunc.load_model(DIR)`` and serves with MLflow's own tools, and
such a folder is registered back with `kestrel model register --path DIR`.

The folder holds ``MLmodel`` (the ``python_function`` flavour, whose loader is this module), the
environment files MLflow reads (``conda.yaml``, ``python_env.yaml``, ``requirements.txt``) and ``data/``:
the model's own files (weights and ``settings.json``, as a registered version keeps them). Writing needs
no MLflow. ``predict`` takes a DataFrame with an ``image`` column (base64 text or bytes), as Azure's
AutoML models do, and answers a DataFrame with one row per image, in the endpoint's schema (SPEC §8).
"""

from __future__ import annotations

import base64
import io
import platform
import shutil
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from core.base.errors import ConfigError
from core.zoo.base import SETTINGS_FILE

MLMODEL = "MLmodel"
DATA = "data"
LOADER = __name__
REQUIREMENTS = ("kestrel", "torch", "torchvision", "timm", "ultralytics", "pillow", "pandas")


def write_mlflow_model(artifact_dir: Path, out_dir: Path, *, metadata_: dict[str, Any]) -> Path:
    """Write the model in ``artifact_dir`` as an MLflow model folder ``out_dir`` (new or empty)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError("--out", f"{out_dir} is not empty; an MLflow model needs a folder of its own")
    shutil.copytree(artifact_dir, out_dir / DATA, dirs_exist_ok=False)
    python = platform.python_version()
    pins = [f"{name}=={_version(name)}" for name in REQUIREMENTS if _version(name)]
    mlmodel = {
        "artifact_path": "mlflow-model",
        "flavors": {"python_function": {"loader_module": LOADER, "data": DATA, "python_version": python,
                                        "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}}},
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "metadata": {"kestrel": metadata_},
    }
    (out_dir / MLMODEL).write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    (out_dir / "requirements.txt").write_text("\n".join(pins) + "\n")
    (out_dir / "python_env.yaml").write_text(yaml.safe_dump(
        {"python": python, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]}, sort_keys=False))
    (out_dir / "conda.yaml").write_text(yaml.safe_dump(
        {"name": "kestrel-model", "channels": ["conda-forge"],
         "dependencies": [f"python={python}", "pip", {"pip": pins}]}, sort_keys=False))
    return out_dir


def read_mlflow_model(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The model files inside MLflow folder ``folder`` (one Kestrel exported) and its Kestrel metadata."""
    file = folder / MLMODEL
    if not file.is_file():
        raise ConfigError("--path", f"{folder} has no {MLMODEL} file: it is not an MLflow model folder")
    doc = yaml.safe_load(file.read_text()) or {}
    flavour = (doc.get("flavors") or {}).get("python_function") or {}
    if flavour.get("loader_module") != LOADER:
        raise ConfigError("--path", f"{folder} is an MLflow model of another kind "
                          f"(loader {flavour.get('loader_module')!r}); Kestrel registers the MLflow models it "
                          "exported (`kestrel model export NAME:VERSION --format mlflow`)")
    data = folder / str(flavour.get("data", DATA))
    if not (data / SETTINGS_FILE).is_file():
        raise ConfigError("--path", f"{data} lacks {SETTINGS_FILE}; export the model again")
    return data, (doc.get("metadata") or {}).get("kestrel") or {}


def _load_pyfunc(data_path: str) -> _PyFunc:
    """MLflow's entry point for the ``python_function`` flavour."""
    from core.inference.predict import load_predictor

    return _PyFunc(load_predictor(Path(data_path)))


class _PyFunc:
    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd
        from PIL import Image, ImageOps

        from core.inference.predict import answer_json

        column = model_input["image"] if isinstance(model_input, pd.DataFrame) else model_input
        images = []
        for value in column:
            raw = value if isinstance(value, bytes) else base64.b64decode("".join(str(value).split()))
            with Image.open(io.BytesIO(raw)) as image:
                images.append(ImageOps.exif_transpose(image).convert("RGB"))
        names = [f"image_{i}" for i in range(len(images))]
        answers = answer_json(self.predictor, images, names, [None] * len(images))
        return pd.DataFrame([{k: v for k, v in a.items() if k != "filename"} for a in answers])


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""
