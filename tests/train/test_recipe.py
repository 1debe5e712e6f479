"""Defaults sized to the data and chosen by where the weights start: the recipe a trial trains with,
what it records, and the person's own settings winning over it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.base.tasks import Task
from core.data.records import Instance
from core.data.view import Item, VersionData
from core.runs.trial import trial_params
from core.train.recipe import ImageSizes, recipe
from core.zoo import weights as hub
from core.zoo.timm_family import make_criterion


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No weights anywhere: empty caches, no host answers."""
    from huggingface_hub import constants

    monkeypatch.setattr(hub, "reachable", lambda host: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))


def version(task: Task, size: tuple[int, int], images: int = 40) -> VersionData:
    tags = ("a",) if task in (Task.CLASSIFICATION, Task.MULTILABEL) else ()
    items = [Item(Path(f"{n}.png"), f"{n}.png", *size, tags, ()) for n in range(images)]
    return VersionData("d", 1, task, ["a", "b"], items, items[:4])


def test_32_pixel_images_from_scratch_train_at_32_with_the_scratch_recipe(engine):
    params, _, _, chosen = trial_params(engine, version(Task.CLASSIFICATION, (32, 32), 1400),
                                        {"model_name": "resnet18"})
    assert chosen.name == params.recipe == "from_scratch"
    assert (params.training_crop_size, params.validation_crop_size, params.validation_resize_size) == (32, 32, 32)
    assert (params.optimizer, params.learning_rate, params.label_smoothing) == ("adamw", 2e-3, 0.1)
    assert params.random_crop_min_scale == 0.5  # a 9-pixel crop of a digit shows no digit
    assert params.training_batch_size == 64  # 1,400 images: about 20 steps an epoch


def test_1000_pixel_images_train_at_the_reference_sizes(engine):
    classify, *_ = trial_params(engine, version(Task.CLASSIFICATION, (1000, 750)), {"model_name": "resnet18"})
    assert (classify.training_crop_size, classify.validation_resize_size) == (224, 256)
    detect, *_ = trial_params(engine, version(Task.DETECTION, (1500, 1000)),
                              {"model_name": "fasterrcnn_resnet18_fpn"})
    assert (detect.min_size, detect.max_size) == (600, 1333)
    yolo, *_ = trial_params(engine, version(Task.DETECTION, (1000, 1000)), {"model_name": "yolo11n"})
    assert yolo.img_size == 640


def test_small_images_are_never_upsampled_for_detection(engine):
    detect, *_ = trial_params(engine, version(Task.SEGMENTATION, (48, 40)), {"model_name": "maskrcnn_resnet18_fpn"})
    assert (detect.min_size, detect.max_size) == (32, 32)
    yolo, *_ = trial_params(engine, version(Task.DETECTION, (100, 70)), {"model_name": "yolov8n"})
    assert yolo.img_size == 96
    assert (yolo.optimizer, yolo.learning_rate) == ("adamw", round(0.002 * 5 / 6, 6))  # ultralytics' own


def test_from_scratch_early_stopping_waits_half_the_run(engine):
    for task, size, model in ((Task.CLASSIFICATION, (64, 64), "resnet18"), (Task.DETECTION, (320, 240), "yolo11n"),
                              (Task.DETECTION, (320, 240), "fasterrcnn_resnet18_fpn")):
        params, *_ = trial_params(engine, version(task, size), {"model_name": model, "number_of_epochs": 40})
        assert params.recipe == "from_scratch" and params.early_stopping_delay == 20, model
    short, *_ = trial_params(engine, version(Task.DETECTION, (320, 240)), {"model_name": "yolo11n",
                                                                           "number_of_epochs": 6})
    assert short.early_stopping_delay == 5  # the reference's default, never less


def test_settings_the_person_gave_win_over_the_recipe(engine):
    params, *_ = trial_params(engine, version(Task.CLASSIFICATION, (32, 32)), {
        "model_name": "resnet18", "optimizer": "sgd", "learning_rate": 0.05, "training_crop_size": 48})
    assert (params.optimizer, params.learning_rate, params.training_crop_size) == ("sgd", 0.05, 48)
    assert params.label_smoothing == 0.1 and params.validation_crop_size == 32  # the rest from the recipe


def test_with_pretrained_weights_the_reference_fine_tuning_defaults_stay(engine, tmp_path):
    weights = tmp_path / "resnet18.safetensors"
    params, *_ = trial_params(engine, version(Task.CLASSIFICATION, (300, 200)), {
        "model_name": "resnet18", "pretrained_weights": str(weights)})
    assert params.recipe == "fine_tune"
    assert (params.optimizer, params.learning_rate, params.label_smoothing) == ("sgd", 0.01, 0.0)
    assert params.training_crop_size == 192  # sizes follow the data either way


def test_the_recipe_can_be_chosen_outright(engine):
    params, *_ = trial_params(engine, version(Task.CLASSIFICATION, (64, 64)),
                              {"model_name": "resnet18", "recipe": "fine_tune"})
    assert params.recipe == "fine_tune" and params.optimizer == "sgd"


def test_multilabel_crops_keep_half_the_image_so_the_labelled_objects_stay():
    chosen = recipe(task=Task.MULTILABEL, family="timm", pretrained=True, images=ImageSizes(500, 660),
                    train_images=5000, classes=4, epochs=10)
    assert chosen.values["random_crop_min_scale"] == 0.5 and "label_smoothing" not in chosen.values


def test_unknown_image_sizes_leave_the_sizes_at_their_defaults():
    chosen = recipe(task=Task.DETECTION, family="torchvision", pretrained=False, images=ImageSizes.of([]),
                    train_images=10, classes=2, epochs=10)
    assert "min_size" not in chosen.values and chosen.values["optimizer"] == "adamw"


@pytest.mark.parametrize("multilabel", [False, True])
def test_label_smoothing_changes_the_loss(multilabel):
    logits = torch.tensor([[4.0, -4.0], [-3.0, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]]) if multilabel else torch.tensor([0, 1])
    plain = make_criterion(targets, 2, multilabel, 0)(logits, targets)
    smoothed = make_criterion(targets, 2, multilabel, 0, label_smoothing=0.2)(logits, targets)
    assert smoothed > plain * 2  # confident, right predictions now cost: the targets are no longer 0/1


def _imbalanced(task: Task, rare: int, common: int = 50) -> VersionData:
    """``common`` images of class a and ``rare`` of class b, as tags or as one box each."""
    def item(n: int, label: str) -> Item:
        if task is Task.CLASSIFICATION:
            return Item(Path(f"{n}.png"), f"{n}.png", 64, 64, (label,), ())
        return Item(Path(f"{n}.png"), f"{n}.png", 64, 64, (), (Instance(label, 0.1, 0.1, 0.5, 0.5),))

    items = [item(n, "a") for n in range(common)] + [item(common + n, "b") for n in range(rare)]
    return VersionData("d", 1, task, ["a", "b"], items, items[:4])


def test_imbalanced_classes_get_a_weighted_loss_or_repeat_factor_sampling_unless_the_job_says_no(engine):
    balanced, *_ = trial_params(engine, _imbalanced(Task.CLASSIFICATION, rare=20), {"model_name": "resnet18"})
    assert balanced.weighted_loss == 0  # 50:20 is within the ratio of 5
    weighted, *_, chosen = trial_params(engine, _imbalanced(Task.CLASSIFICATION, rare=5), {"model_name": "resnet18"})
    assert weighted.weighted_loss == 2 and chosen.values["weighted_loss"] == 2  # the trial log names it
    declined, *_ = trial_params(engine, _imbalanced(Task.CLASSIFICATION, rare=5),
                                {"model_name": "resnet18", "weighted_loss": 0})
    assert declined.weighted_loss == 0
    for model in ("yolov8n", "fasterrcnn_resnet18_fpn"):
        detect, *_ = trial_params(engine, _imbalanced(Task.DETECTION, rare=5), {"model_name": model})
        assert detect.repeat_factor_sampling and detect.weighted_loss == 0
        plain, *_ = trial_params(engine, _imbalanced(Task.DETECTION, rare=5),
                                 {"model_name": model, "repeat_factor_sampling": False})
        assert not plain.repeat_factor_sampling
