"""Pretrained weights for every family, with no network: what a library's download is asked for (a fake
stands in for it), a file in each cache found and used, an offline machine falling back to training
from scratch with a notice, and `kestrel weights` listing and importing."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from core.base.params import resolve_params
from core.base.tasks import Task
from core.zoo import ultralytics_weights
from core.zoo import weights as hub
from core.zoo.families import resolve
from core.zoo.pretrained import import_file, status
from core.zoo.timm_family import build_model as build_timm
from core.zoo.torchvision_family import InferenceSettings
from core.zoo.torchvision_family import build_model as build_detector
from core.zoo.ultralytics_env import offline_ultralytics
from core.zoo.ultralytics_family import _initial_weights
from core.zoo.ultralytics_weights import release_name


@pytest.fixture
def caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every library's cache empty and private to the test; no host answers unless a test says so."""
    from huggingface_hub import constants

    monkeypatch.setattr(hub, "reachable", lambda host: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.setattr(ultralytics_weights, "weights_dir", lambda: tmp_path / "yolo")
    return tmp_path


def online(monkeypatch: pytest.MonkeyPatch, *hosts: str) -> None:
    monkeypatch.setattr(hub, "reachable", lambda host: host in hosts)


def params(task: Task, model: str):  # type: ignore[no-untyped-def]
    return resolve_params(task, {"model_name": model})


# --- timm ------------------------------------------------------------------------------------------

def test_timm_offline_trains_from_scratch_and_says_so_before_and_after(caches):
    before = status("resnet18", Task.CLASSIFICATION).status
    assert before.state == "unavailable" and "will train from scratch" in before.sentence()
    _, notices = build_timm("resnet18", 3, params(Task.CLASSIFICATION, "resnet18"))
    assert "training from scratch" in notices[0] and "huggingface.co cannot be reached" in notices[0]


def test_timm_weights_are_downloadable_when_its_hub_answers(caches, monkeypatch):
    online(monkeypatch, "huggingface.co")
    assert status("resnet18", Task.CLASSIFICATION).status.state == "downloadable"


def test_an_imported_timm_file_lands_in_the_hugging_face_cache_and_is_used(caches, tmp_path):
    reference = timm.create_model("resnet18").state_dict()
    file = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(file))
    weights, tensors = import_file(file, "resnet18")
    assert weights.status.state == "cached" and weights.status.where.startswith(str(caches / "hf"))
    assert tensors == len(reference)
    model, notices = build_timm("resnet18", 3, params(Task.CLASSIFICATION, "resnet18"))
    assert notices == [] and torch.equal(model.state_dict()["conv1.weight"], reference["conv1.weight"])


def test_a_pickle_that_would_run_code_is_refused(caches, tmp_path):
    file = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": Path("/")}, file)  # a non-tensor object
    with pytest.raises(Exception, match="evil.pth.*plain torch state dict"):
        import_file(file, "resnet18")


def test_weights_of_another_architecture_are_refused_naming_the_model(caches, tmp_path):
    file = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("mobilenetv2_100").state_dict().items()}, str(file))
    with pytest.raises(Exception, match="does not hold weights for resnet18.*--model"):
        import_file(file, "resnet18")


# --- torchvision -----------------------------------------------------------------------------------

def test_torchvision_downloads_into_torchs_hub_cache_and_starts_from_it(caches, monkeypatch):
    online(monkeypatch, "download.pytorch.org")
    backbone = torchvision.models.resnet18().state_dict()
    asked: list[str] = []

    def fake_download(url: str, folder: Path) -> Path:
        asked.append(url)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(backbone, folder / Path(url).name)
        return folder / Path(url).name

    monkeypatch.setattr(hub, "fetch_url", fake_download)
    before = status("fasterrcnn_resnet18_fpn", Task.DETECTION).status
    assert before.state == "downloadable" and before.where.endswith("/resnet18-f37072fd.pth")
    p = params(Task.DETECTION, "fasterrcnn_resnet18_fpn")
    model, notices = build_detector("fasterrcnn_resnet18_fpn", 2, InferenceSettings.from_params(p), p)
    assert asked == [before.where] and notices == []
    assert torch.equal(model.backbone.body.conv1.weight, backbone["conv1.weight"])
    assert status("fasterrcnn_resnet18_fpn", Task.DETECTION).status.state == "cached"


def test_torchvision_offline_trains_from_scratch_with_a_notice(caches):
    p = params(Task.SEGMENTATION, "maskrcnn_resnet18_fpn")
    _, notices = build_detector("maskrcnn_resnet18_fpn", 2, InferenceSettings.from_params(p), p)
    assert "download.pytorch.org cannot be reached; training from scratch" in notices[0]


# --- ultralytics -----------------------------------------------------------------------------------

def _yolo_checkpoint(file: Path, architecture: str) -> dict[str, torch.Tensor]:
    offline_ultralytics()
    from ultralytics.nn import tasks as nets

    net = nets.DetectionModel(nets.yaml_model_load(f"{architecture}.yaml"), verbose=False)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net}, file)  # the shape of ultralytics' own checkpoints
    return net.state_dict()


def test_ultralytics_downloads_the_matching_pt_into_its_weights_folder(caches, monkeypatch):
    online(monkeypatch, "github.com")
    asked: list[Path] = []

    def fake_download(file: Path) -> Path:
        asked.append(file)
        _yolo_checkpoint(file, "yolo11n")
        return file

    monkeypatch.setattr(hub, "fetch_ultralytics", fake_download)
    family, spec = resolve("yolo11n", Task.DETECTION, params(Task.DETECTION, "yolo11n"))
    assert family.weights(spec, params(Task.DETECTION, "yolo11n")).state == "downloadable"
    notices: list[str] = []
    tensors = _initial_weights(spec, params(Task.DETECTION, "yolo11n"), notices)
    assert asked == [caches / "yolo" / "yolo11n.pt"] and notices == [] and tensors


def test_ultralytics_offline_trains_from_scratch_with_a_notice(caches):
    family, spec = resolve("yolov8n-seg", Task.SEGMENTATION, params(Task.SEGMENTATION, "yolov8n-seg"))
    notices: list[str] = []
    assert _initial_weights(spec, params(Task.SEGMENTATION, "yolov8n-seg"), notices) is None
    assert "yolov8n-seg.pt" in notices[0] and "training from scratch" in notices[0]


def test_release_names_follow_ultralytics_assets():
    assert release_name("yolov5m") == "yolov5mu.pt"
    assert release_name("yolo11n-seg") == "yolo11n-seg.pt"


# --- the command line ------------------------------------------------------------------------------

def test_weights_list_and_import_from_the_command_line(caches, cli, tmp_path):
    rows = {r["model"]: r for r in cli.json("weights", "list")}
    assert {"resnet18", "yolov5", "fasterrcnn_resnet50_fpn", "maskrcnn_resnet18_fpn", "yolo11n-seg"} <= set(rows)
    assert {r["state"] for r in rows.values()} == {"unavailable"}
    file = tmp_path / "yolo11n.pt"
    _yolo_checkpoint(file, "yolo11n")
    _, _, stderr = cli("weights", "import", file, "--model", "yolo11n")
    assert "pickle" in stderr  # the person is told what they trust
    assert {r["model"]: r for r in cli.json("weights", "list")}["yolo11n"]["state"] == "cached"
    code, _, stderr = cli("weights", "import", tmp_path / "missing.pt", "--model", "yolo11n", ok=False)
    assert code == 2 and "missing.pt is not a file" in stderr
