"""Model export: ONNX files that onnxruntime runs as PyTorch does, TorchScript files that torch.jit.load
runs as PyTorch does, YOLO through ultralytics' exporter with no network, sidecars that are enough to use
the file without Kestrel, and clear refusals. Tiny models trained for one epoch from scratch."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from factories import trained_artifact
from PIL import Image
from safetensors.torch import load_file, save_file

from core.base.errors import ConfigError, InputError
from core.base.tasks import Task
from core.inference.export import BOX_RTOL, PROBS_ATOL, check_parity, export_model, sidecar_path
from core.zoo.base import SETTINGS_FILE, WEIGHTS_FILE
from core.zoo.families import family_named

# One epoch from scratch, at the smallest sizes each family trains at.
TINY = {
    "test_resnet": {"number_of_epochs": 1, "training_batch_size": 16, "training_crop_size": 32,
                    "validation_crop_size": 32, "validation_resize_size": 36},
    "fasterrcnn_resnet18_fpn": {"number_of_epochs": 1, "training_batch_size": 4, "min_size": 64,
                                "max_size": 64, "box_score_threshold": 0.001},
    # Ten detections, not 100: Mask R-CNN pastes each mask in a Python loop (2.6 s an image for 100).
    "maskrcnn_resnet18_fpn": {"number_of_epochs": 1, "training_batch_size": 4, "min_size": 64,
                              "max_size": 64, "box_score_threshold": 0.001, "box_detections_per_image": 10},
    "yolov8n": {"number_of_epochs": 1, "training_batch_size": 8, "img_size": 64, "box_score_threshold": 0.001},
}


@pytest.fixture(scope="module")
def datasets(sample_versions: Any) -> dict[str, Any]:
    return sample_versions("export", {"classification": (Task.CLASSIFICATION, 20, 40),
                                      "detection": (Task.DETECTION, 10, 64),
                                      "segmentation": (Task.SEGMENTATION, 10, 64)})


@pytest.fixture(scope="module")
def trained(datasets: dict[str, Any], one_thread: None, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Path]:
    """Artifact folders as a trial leaves them (weights + settings.json), by model name."""
    from huggingface_hub import constants

    root = tmp_path_factory.mktemp("artifacts")
    plan = {"test_resnet": "classification", "fasterrcnn_resnet18_fpn": "detection",
            "maskrcnn_resnet18_fpn": "segmentation", "yolov8n": "detection"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", True)  # never reach the model hub
        return {name: _train(datasets[data], name, root / name) for name, data in plan.items()}


def _train(data: Any, model_name: str, out_dir: Path) -> Path:
    return trained_artifact(data, out_dir, {"model_name": model_name, "early_stopping": False, **TINY[model_name]})


def _images(data: Any, count: int = 3) -> list[Image.Image]:
    return [Image.open(item.path) for item in (data.validation or data.train)[:count]]


@pytest.fixture(scope="module")
def no_network():  # type: ignore[no-untyped-def]
    """Every socket connection (and DNS lookup, as ultralytics' online check uses) recorded and refused."""
    connects: list[Any] = []

    def refuse(*args: Any) -> None:
        connects.append(args[-1])
        raise OSError("network is off in tests")

    with pytest.MonkeyPatch.context() as patch:
        for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "getaddrinfo")):
            patch.setattr(owner, name, refuse)
        yield connects


# --- classification -------------------------------------------------------------------------------

def test_classifier_onnx_agrees_with_pytorch_in_onnxruntime(trained: dict[str, Path], datasets: dict[str, Any],
                                                            tmp_path: Path) -> None:
    exported = export_model(trained["test_resnet"], "onnx", tmp_path)
    assert exported == tmp_path / "model.onnx" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.onnx", "model.onnx.json"]  # nothing half-written left behind
    parity = check_parity(exported, trained["test_resnet"], _images(datasets["classification"], 5))
    assert parity.ok, parity
    assert parity.tolerances == {"probs": PROBS_ATOL}
    assert parity.differences["probs"] <= PROBS_ATOL


def test_the_sidecar_is_enough_to_run_the_onnx_file_without_kestrel(
        trained: dict[str, Path], datasets: dict[str, Any], tmp_path: Path) -> None:
    exported = export_model(trained["test_resnet"], "onnx", tmp_path)
    sidecar = json.loads(sidecar_path(exported).read_text())
    data = datasets["classification"]
    assert sidecar["classes"] == data.classes and sidecar["format"] == "onnx" and sidecar["opset"] >= 11
    spec = sidecar["input"]
    assert spec["shape"] == ["batch", 3, 32, 32] and [o["name"] for o in sidecar["outputs"]] == ["probs"]
    # What a user would write from the sidecar alone: resize, centre crop, scale, normalise.
    images = _images(data, 4)
    batch = []
    for image in images:
        rgb = image.convert("RGB")
        scale = 36 / min(rgb.size)
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BILINEAR)
        left, top = (rgb.width - 32) // 2, (rgb.height - 32) // 2
        pixels = np.asarray(rgb.crop((left, top, left + 32, top + 32)), dtype=np.float32) / 255
        batch.append(((pixels - spec["mean"]) / spec["std"]).transpose(2, 0, 1))
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probs"], {spec["name"]: np.stack(batch).astype(np.float32)})
    predictor = family_named("timm").load(trained["test_resnet"], "cpu")
    expected = np.array([p.probs for p in predictor.predict(images)])
    # Resampling differs a little from torchvision's antialiased resize; the classes and sums do not.
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and np.abs(probs - expected).max() < 0.05


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_classifier_torchscript_loads_with_torch_jit_and_agrees(trained: dict[str, Path], datasets: dict[str, Any],
                                                               tmp_path: Path) -> None:
    exported = export_model(trained["test_resnet"], "torchscript", tmp_path)
    assert exported.name == "model.torchscript" and sidecar_path(exported).is_file()
    module = torch.jit.load(str(exported))
    predictor = family_named("timm").load(trained["test_resnet"], "cpu")
    batch = predictor.preprocess(_images(datasets["classification"], 3))
    with torch.inference_mode():
        assert torch.allclose(module(batch), predictor.model(batch).softmax(dim=1), atol=PROBS_ATOL)
    assert check_parity(exported, trained["test_resnet"], _images(datasets["classification"])).ok


def test_parity_check_notices_a_model_that_differs(trained: dict[str, Path], tmp_path: Path) -> None:
    exported = export_model(trained["test_resnet"], "onnx", tmp_path / "export")
    other = shutil.copytree(trained["test_resnet"], tmp_path / "other")
    weights = load_file(other / WEIGHTS_FILE)
    save_file({k: v + 0.05 if v.is_floating_point() else v for k, v in weights.items()}, other / WEIGHTS_FILE)
    parity = check_parity(exported, other)
    assert not parity.ok and parity.differences["probs"] > PROBS_ATOL


# --- torchvision detection ------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", ["fasterrcnn_resnet18_fpn", "maskrcnn_resnet18_fpn"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_detector_export_agrees_with_pytorch(trained: dict[str, Path], datasets: dict[str, Any], tmp_path: Path,
                                             model_name: str, fmt: str) -> None:
    exported = export_model(trained[model_name], fmt, tmp_path)
    data = datasets["segmentation" if model_name.startswith("mask") else "detection"]
    images = _images(data)
    images.append(images[0].resize((80, 56)))  # another size than the one it was exported at
    parity = check_parity(exported, trained[model_name], images)
    assert parity.ok, parity
    assert parity.differences["boxes"] <= BOX_RTOL and parity.differences["labels"] == 0
    names = [o["name"] for o in json.loads(sidecar_path(exported).read_text())["outputs"]]
    assert names == ["boxes", "scores", "labels"] + (["masks"] if model_name.startswith("mask") else [])


def test_detector_onnx_finds_what_the_predictor_finds(trained: dict[str, Path], datasets: dict[str, Any],
                                                       tmp_path: Path) -> None:
    exported = export_model(trained["fasterrcnn_resnet18_fpn"], "onnx", tmp_path)
    sidecar = json.loads(sidecar_path(exported).read_text())
    image = _images(datasets["detection"], 1)[0]
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
    boxes, scores, labels = session.run(None, {sidecar["input"]["name"]: pixels})
    (prediction,) = family_named("torchvision").load(trained["fasterrcnn_resnet18_fpn"], "cpu").predict([image])
    assert len(prediction.detections) == len(scores) > 0
    assert np.allclose(sorted(d.score for d in prediction.detections), np.sort(scores), atol=1e-4)
    best = prediction.detections[0]  # found among the ONNX detections (near-equal scores may swap places)
    normalised = boxes / np.array([image.width, image.height] * 2)
    k = int(np.abs(normalised - [best.x0, best.y0, best.x1, best.y1]).max(axis=1).argmin())
    assert np.abs(normalised[k] - [best.x0, best.y0, best.x1, best.y1]).max() < 1e-3
    assert sidecar["classes"][labels[k]] == best.label and scores[k] == pytest.approx(best.score, abs=1e-4)


# --- YOLO -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_yolo_exports_through_ultralytics_offline(trained: dict[str, Path], datasets: dict[str, Any],
                                                  no_network: list[Any], tmp_path: Path, fmt: str) -> None:
    threads = torch.get_num_threads()
    exported = export_model(trained["yolov8n"], fmt, tmp_path)
    assert no_network == [] and torch.get_num_threads() == threads
    assert sorted(p.name for p in tmp_path.iterdir()) == [exported.name, exported.name + ".json"]
    sidecar = json.loads(sidecar_path(exported).read_text())
    assert sidecar["exporter"] == "ultralytics" and sidecar["input"]["shape"] == [1, 3, 64, 64]
    parity = check_parity(exported, trained["yolov8n"], _images(datasets["detection"]))
    assert parity.ok, parity
    if fmt == "onnx":
        session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
        (output0,) = session.run(None, {"images": np.zeros((1, 3, 64, 64), dtype=np.float32)})
        assert output0.shape[:2] == (1, 4 + len(sidecar["classes"]))
        assert session.get_modelmeta().custom_metadata_map["names"] == str(dict(enumerate(sidecar["classes"])))


# --- refusals -------------------------------------------------------------------------------------

def test_an_unsupported_format_is_refused_naming_the_supported_ones(trained: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"format: cannot export to 'tflite' \(allowed: onnx, torchscript\)"):
        export_model(trained["test_resnet"], "tflite", tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'onnx'"):
        export_model(trained["test_resnet"], "ONNX", tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_folder_without_a_model_or_of_an_unknown_family_is_refused(trained: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no settings.json"):
        export_model(tmp_path, "onnx", tmp_path / "out")
    foreign = shutil.copytree(trained["test_resnet"], tmp_path / "foreign")
    settings = json.loads((foreign / SETTINGS_FILE).read_text())
    (foreign / SETTINGS_FILE).write_text(json.dumps({**settings, "family": "keras"}))
    with pytest.raises(ConfigError, match=r"'keras' cannot be exported .*allowed: timm, torchvision, ultralytics"):
        export_model(foreign, "onnx", tmp_path / "out")
    with pytest.raises(InputError, match="neither an ONNX nor a TorchScript"):
        check_parity(trained["test_resnet"] / WEIGHTS_FILE, trained["test_resnet"])
