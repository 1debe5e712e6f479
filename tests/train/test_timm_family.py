"""timm classification end to end (train, save, reload, predict) and the loop's behaviours:
optimizers and schedules, accumulation, early stopping, stop requests, resume, seeds,
pretrained weights, weighted loss, layer freezing, metrics — and learning that is real."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from core.base.params import TrainingParams, resolve_params
from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.loaders import classification_datasets
from core.data.samples import write_sample
from core.data.view import VersionData, load_version
from core.metrics.classification import classification_metrics, samples_iou
from core.train.context import MemoryContext
from core.train.device import use_all_cores
from core.train.loop import (
    CHECKPOINT_FILE,
    RESUME_FILE,
    EarlyStopping,
    Evaluation,
    FitSetup,
    child_layers,
    fit,
    freeze_layers,
    keep_resume_state,
    train_one_epoch,
)
from core.train.optim import build_optimizer, build_scheduler
from core.zoo.base import SETTINGS_FILE, WEIGHTS_FILE
from core.zoo.timm_family import TimmFamily, build_model, make_criterion
from storage.artifacts import BlobStore
from storage.db import make_engine, session_scope, upgrade
from storage.settings import Settings

TINY = {"model_name": "test_resnet", "number_of_epochs": 2, "training_batch_size": 16,
        "validation_batch_size": 32, "training_crop_size": 32, "validation_crop_size": 32,
        "validation_resize_size": 32, "early_stopping": False}


@pytest.fixture(scope="module", autouse=True)
def threads_and_no_network():
    """Train with every core, as a trial does, unless the machine is already busy: two torch
    threads beside another busy process run 10-60x slower (ENVIRONMENT.md), one thread does not.
    Never let a test reach the model hub."""
    from huggingface_hub import constants

    before = torch.get_num_threads()
    if use_all_cores() > 1 and os.getloadavg()[0] >= 1.0:
        torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        yield
    torch.set_num_threads(before)


def _version(tmp: Path, task: Task, count: int, size: int) -> VersionData:
    """A shapes sample imported into its own home (shared by the tests of this module)."""
    settings = Settings(home=tmp / "home")
    settings.home.mkdir(parents=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    jsonl = write_sample(task, tmp / "sample", count=count, size=size)
    import_dataset(jsonl, ImportOptions("shapes", task), settings=settings, engine=engine)
    with session_scope(engine) as session:
        data = load_version(session=session, blobs=BlobStore(settings.blobs_dir), name="shapes")
    engine.dispose()
    return data


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> VersionData:
    return _version(tmp_path_factory.mktemp("shapes"), Task.CLASSIFICATION, 45, 40)


@pytest.fixture(scope="module")
def multilabel_shapes(tmp_path_factory) -> VersionData:
    return _version(tmp_path_factory.mktemp("multilabel"), Task.MULTILABEL, 45, 40)


def _train(data: VersionData, tmp_path: Path, ctx: MemoryContext | None = None, **overrides):
    params = resolve_params(data.task, TINY, overrides)
    family = TimmFamily()
    spec = family.resolve(params.model_name or "", params, data.task)
    ctx = ctx or MemoryContext(tmp_path / "out")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return family.train(spec, data, params, ctx), ctx, spec


def _write_settings(out_dir: Path, trained, data: VersionData, spec) -> None:
    """What core.runs.trial writes beside the weights."""
    (out_dir / SETTINGS_FILE).write_text(json.dumps({
        **trained.settings, "task": data.task.value, "classes": data.classes, "family": spec.family,
        "architecture": spec.architecture, "size": spec.size, "model_name": spec.display_name}))


# --- trials through the family ---------------------------------------------------------------

def test_multiclass_trial_reports_each_epoch_and_its_model_reloads_to_predict(shapes, tmp_path):
    trained, ctx, spec = _train(shapes, tmp_path, weighted_loss=2)
    assert [step for step, _ in ctx.reports] == [1, 2]
    # Within-epoch progress after each batch: rising, some mid-epoch, ending at the last epoch.
    assert ctx.positions == sorted(ctx.positions) and ctx.positions[-1] == 2.0
    assert any(0 < p % 1 for p in ctx.positions)
    point = ctx.reports[-1][1]
    for name in ("train_loss", "val_loss", "accuracy", "precision_score_macro", "recall_score_weighted",
                 "f1_score_macro", "AUC_macro", "AUC_weighted", "log_loss",
                 "average_precision_score_macro"):
        assert math.isfinite(point[name]), name
    assert trained.epochs_run == 2 and trained.weights == ctx.out_dir / WEIGHTS_FILE
    assert trained.settings == {"valid_resize_size": 32, "valid_crop_size": 32}
    # The crash checkpoint and best weights' copy gone; the last state kept to extend the trial.
    assert sorted(p.name for p in ctx.out_dir.iterdir()) == [WEIGHTS_FILE, RESUME_FILE]
    assert trained.resume_epoch == 2
    evaluation = json.loads(json.dumps(trained.evaluation, allow_nan=False))
    assert [row["class"] for row in evaluation["per_class"]] == shapes.classes
    assert len(evaluation["confusion_matrix"]["matrix"]) == 3
    assert all(len(c["fpr"]) <= 101 for c in evaluation["roc_curves"].values())

    _write_settings(ctx.out_dir, trained, shapes, spec)
    predictor = TimmFamily().load(ctx.out_dir, "cpu")
    images = [Image.new("RGB", (50, 40), "white"), Image.new("L", (30, 30), 128)]
    answers = [p.to_json() for p in predictor.predict(images)]
    assert [set(a) for a in answers] == [{"filename", "probs", "labels"}] * 2
    assert all(a["labels"] == shapes.classes and abs(sum(a["probs"]) - 1) < 1e-5 for a in answers)


def test_multilabel_trial_reports_iou_and_predicts_independent_probabilities(multilabel_shapes, tmp_path):
    trained, ctx, spec = _train(multilabel_shapes, tmp_path, number_of_epochs=1,
                                multilabel_threshold=0.4, weighted_loss=1)
    point = ctx.reports[-1][1]
    assert 0 <= point["iou"] <= 1 and "val_loss" in point and "train_loss" in point
    assert all(f"f1_score_label_{name}" in point for name in multilabel_shapes.classes)
    assert trained.settings["multilabel_threshold"] == 0.4
    assert "matrices" in trained.evaluation["confusion_matrix"]
    _write_settings(ctx.out_dir, trained, multilabel_shapes, spec)
    predictor = TimmFamily().load(ctx.out_dir, "cpu")
    (answer,) = predictor.predict([Image.new("RGB", (40, 40), "red")])
    assert answer.labels == multilabel_shapes.classes and all(0 <= p <= 1 for p in answer.probs)
    assert predictor.threshold == 0.4


def test_same_seed_gives_the_same_metrics(shapes, tmp_path):
    first, _, _ = _train(shapes, tmp_path / "a", seed=7, number_of_epochs=1)
    second, _, _ = _train(shapes, tmp_path / "b", seed=7, number_of_epochs=1)
    assert first.metrics == second.metrics


def test_a_stop_request_keeps_the_finished_epochs_and_skips_validation_before_the_first(shapes, tmp_path):
    ctx = MemoryContext(tmp_path / "out", stop_reason="canceled")
    trained, ctx, _ = _train(shapes, tmp_path, ctx, number_of_epochs=5)
    # Nothing finished: no validation to wait for (core.runs.trial then keeps no model and says why).
    assert trained.epochs_run == 0 and ctx.reports == [] and trained.metrics == {}

    class StopAfterFirstReport(MemoryContext):
        def report(self, step: int, metrics: Mapping[str, float]) -> None:
            super().report(step, metrics)
            self.stop_reason = "early_terminated"

    trained, ctx, _ = _train(shapes, tmp_path / "policy", StopAfterFirstReport(tmp_path / "policy"),
                             number_of_epochs=5)
    assert trained.epochs_run == 1 and [s for s, _ in ctx.reports] == [1]


def test_layers_to_freeze_follows_the_reference_layer_lists():
    params = resolve_params(Task.CLASSIFICATION, TINY, {"layers_to_freeze": 2})
    model, _ = build_model("resnet18", 3, params)
    assert child_layers(model, head=model.get_classifier()) == ["conv1", "bn1", "layer1", "layer2",
                                                                "layer3", "layer4"]
    vit, _ = build_model("test_vit", 3, params)
    layers = child_layers(vit, head=vit.get_classifier())
    assert layers[:3] == ["patch_embed", "blocks.0", "blocks.1"] and "head" not in layers
    assert freeze_layers(vit, layers, 2) == ["patch_embed", "blocks.0"]
    frozen = {n for n, p in vit.named_parameters() if not p.requires_grad}
    assert {"cls_token", "pos_embed", "blocks.0.attn.qkv.weight"} <= frozen
    assert not any(n.startswith(("blocks.1.", "head.")) for n in frozen)
    assert len(build_optimizer(vit.parameters(), params).param_groups[0]["params"]) == \
        sum(p.requires_grad for p in vit.parameters())


# --- weights -----------------------------------------------------------------------------------

def test_pretrained_weights_from_a_file_are_loaded_except_the_head(tmp_path):
    source = build_model("test_resnet", 1000, TrainingParams())[0].state_dict()
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth"):
        if path.suffix == ".pth":
            torch.save({"state_dict": source}, path)
        else:
            save_file({k: v.contiguous() for k, v in source.items()}, path)
        model, notices = build_model("test_resnet", 3, TrainingParams(pretrained_weights=str(path)))
        assert torch.equal(model.state_dict()["conv1.0.weight"], source["conv1.0.weight"])
        assert len(notices) == 1 and "fc.weight" in notices[0] and "scratch" not in notices[0]
    with pytest.raises(Exception, match="pretrained_weights"):
        build_model("test_resnet", 3, TrainingParams(pretrained_weights=str(tmp_path / "nope.pt")))


def test_unavailable_library_weights_mean_training_from_scratch_with_a_notice(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    started = time.monotonic()
    model, notices = build_model("resnet18", 3, TrainingParams())
    assert time.monotonic() - started < 10  # no 46 s of hub retries
    assert len(notices) == 1 and "training from scratch" in notices[0]
    assert model.get_classifier().out_features == 3


def test_library_weights_in_the_local_cache_are_used_without_network(monkeypatch, tmp_path):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--timm--test_resnet.r160_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (cache / "models--timm--test_resnet.r160_in1k" / "refs").mkdir()
    (cache / "models--timm--test_resnet.r160_in1k" / "refs" / "main").write_text("abc")
    source = build_model("test_resnet", 1000, TrainingParams())[0].state_dict()
    save_file({k: v.contiguous() for k, v in source.items()}, snapshot / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    model, notices = build_model("test_resnet", 3, TrainingParams())
    assert notices == []
    assert torch.equal(model.state_dict()["conv1.0.weight"], source["conv1.0.weight"])


def test_weighted_loss_follows_the_reference_numbering():
    targets = torch.tensor([0] * 8 + [1] * 2)  # class 1 is four times rarer
    assert make_criterion(targets, 2, False, 0).weight is None
    full = make_criterion(targets, 2, False, 2).weight
    root = make_criterion(targets, 2, False, 1).weight
    assert full[1] / full[0] == pytest.approx(4.0) and root[1] / root[0] == pytest.approx(2.0)
    hot = torch.tensor([[1.0, 0.0]] * 8 + [[1.0, 1.0]] * 2)
    assert make_criterion(hot, 2, True, 2).pos_weight.tolist() == pytest.approx([0.0, 4.0])


# --- the loop on small synthetic problems --------------------------------------------------------

def _linear_problem(batches: int, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 3, generator=gen), torch.randn(size, 1, generator=gen))
            for _ in range(batches)]


def _mse(model: nn.Module, batch) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch[0]), batch[1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["warmup_cosine", "step"])
def test_each_optimizer_and_schedule_takes_a_step(optimizer, schedule):
    params = TrainingParams(optimizer=optimizer, learning_rate_scheduler=schedule, learning_rate=0.1,
                            number_of_epochs=3, warmup_cosine_lr_warmup_epochs=1, step_lr_step_size=1)
    model = nn.Linear(3, 1)
    before = model.weight.detach().clone()
    opt = build_optimizer(model.parameters(), params)
    sched = build_scheduler(opt, params, steps_per_epoch=2)
    loss = train_one_epoch(model, _linear_problem(2), _mse, opt, sched, "cpu", 1, None, lambda: None)
    assert math.isfinite(loss) and not torch.equal(before, model.weight)
    # After one epoch: warmup done (full rate), or the step schedule's first decay.
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 if schedule == "warmup_cosine" else 0.05)


def test_warmup_cosine_follows_the_reference_formula():
    params = TrainingParams(learning_rate=0.1, number_of_epochs=5, warmup_cosine_lr_warmup_epochs=1)
    opt = build_optimizer(nn.Linear(1, 1).parameters(), params)
    sched = build_scheduler(opt, params, steps_per_epoch=10)
    for step in range(50):
        expected = (step + 1) / 10 if step < 10 else \
            0.5 * (1 + math.cos(2 * math.pi * 0.45 * (step - 10) / 40))
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * expected)
        opt.step()
        sched.step()


def test_gradient_accumulation_equals_one_larger_batch():
    small = _linear_problem(4, size=4)
    large = [(torch.cat([small[i][0], small[i + 1][0]]), torch.cat([small[i][1], small[i + 1][1]]))
             for i in (0, 2)]
    results = []
    for loader, accumulation in ((small, 2), (large, 1)):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        train_one_epoch(model, loader, _mse, opt, sched, "cpu", accumulation, None, lambda: None)
        results.append((model.weight.detach().clone(), sched.last_epoch))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert results[0][1] == results[1][1] == 2  # two optimizer steps each


def _flat_setup(metric: float = 0.5) -> FitSetup:
    return FitSetup(nn.Linear(3, 1), _linear_problem(2), _mse,
                    lambda model: Evaluation({"val_loss": 1.0, "accuracy": metric}), "accuracy")


def test_early_stopping_stops_a_flat_run_after_delay_and_patience(tmp_path):
    params = TrainingParams(number_of_epochs=20, early_stopping_patience=2, early_stopping_delay=3)
    result = fit(_flat_setup(), params, MemoryContext(tmp_path))
    assert result.stop_reason == "early_stopping" and result.epochs_run == 5  # epochs 4, 5 stale
    stopper = EarlyStopping(patience=1, delay=0)
    assert [stopper.update(e, v) for e, v in enumerate([0.1, 0.3, 0.2], 1)] == [False, False, True]


def test_evaluation_frequency_evaluates_on_the_cadence_and_at_the_last_epoch(tmp_path):
    ctx = MemoryContext(tmp_path)
    fit(_flat_setup(), TrainingParams(number_of_epochs=5, evaluation_frequency=2,
                                      early_stopping=False), ctx)
    assert [step for step, _ in ctx.reports] == [2, 4, 5]


def test_a_checkpoint_loads_safely_and_resumes_after_its_epoch(tmp_path):
    class StopAfterFirstReport(MemoryContext):
        def report(self, step: int, metrics: Mapping[str, float]) -> None:
            super().report(step, metrics)
            self.stop_reason = "canceled"

    params = TrainingParams(number_of_epochs=4, early_stopping=False)
    stopped = StopAfterFirstReport(tmp_path)
    first = fit(_flat_setup(), params, stopped)
    assert first.epochs_run == 1
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 1 and {"model", "optimizer", "scheduler"} <= set(state)
    ctx = MemoryContext(tmp_path, reports=stopped.reports)  # what was recorded lives on, as in the database
    second = fit(_flat_setup(), params, ctx)
    assert [step for step, _ in ctx.reports] == [1, 2, 3, 4] and second.epochs_run == 4



def test_an_extension_goes_on_with_the_optimizer_state_and_the_schedule_planned_longer(tmp_path):
    """Two epochs, then more from the kept resume state: after epoch 3 the optimizer has taken every step
    of the three epochs, and the learning rate is where a run planned for four epochs from the start has it
    (not restarted, not the two-epoch schedule's near-zero end)."""
    class StopAfterThird(MemoryContext):
        def report(self, step: int, metrics: Mapping[str, float]) -> None:
            super().report(step, metrics)
            self.stop_reason = "canceled" if step == 3 else None

    def setup() -> FitSetup:
        torch.manual_seed(0)
        return FitSetup(nn.Linear(3, 1), _linear_problem(3), _mse,
                        lambda model: Evaluation({"val_loss": 1.0, "accuracy": 0.5}), "accuracy")

    short = TrainingParams(number_of_epochs=2, optimizer="adamw", learning_rate=0.1, early_stopping=False,
                           warmup_cosine_lr_warmup_epochs=0)
    longer = short.model_copy(update={"number_of_epochs": 4})
    first, extension, straight = tmp_path / "first", tmp_path / "extension", tmp_path / "straight"
    for folder in (first, extension, straight):
        folder.mkdir()
    fit(setup(), short, MemoryContext(first))
    keep_resume_state(first)
    assert (first / RESUME_FILE).is_file() and not (first / CHECKPOINT_FILE).exists()
    (extension / CHECKPOINT_FILE).write_bytes((first / RESUME_FILE).read_bytes())
    ctx = StopAfterThird(extension)
    assert fit(setup(), longer, ctx).epochs_run == 3 and [step for step, _ in ctx.reports] == [3]
    assert ctx.positions[0] >= 2  # progress counts on from the first trial's epochs
    fit(setup(), longer, StopAfterThird(straight))
    extended, planned = (torch.load(f / CHECKPOINT_FILE, weights_only=True)["optimizer"]
                         for f in (extension, straight))
    steps = [int(s["step"]) for s in extended["state"].values()]
    assert steps == [int(s["step"]) for s in planned["state"].values()] == [9, 9]  # 3 epochs x 3 batches
    assert extended["param_groups"][0]["lr"] == pytest.approx(planned["param_groups"][0]["lr"])
    two_epochs_end = torch.load(first / RESUME_FILE, weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert extended["param_groups"][0]["lr"] > 5 * two_epochs_end
    resumed = MemoryContext(extension, reports=ctx.reports)  # and the extension itself resumes after a crash
    assert fit(setup(), longer, resumed).epochs_run == 4 and [s for s, _ in resumed.reports] == [3, 4]


def test_an_epoch_once_reported_is_never_trained_again_after_a_crash(tmp_path):
    class KilledAfterSecondReport(MemoryContext):
        def report(self, step: int, metrics: Mapping[str, float]) -> None:
            super().report(step, metrics)
            if step == 2:
                raise KeyboardInterrupt  # the process dies right after the studio saw epoch 2

    params = TrainingParams(number_of_epochs=3, early_stopping=False)
    killed = KilledAfterSecondReport(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        fit(_flat_setup(), params, killed)
    ctx = MemoryContext(tmp_path, reports=killed.reports)
    resumed = fit(_flat_setup(), params, ctx)
    assert resumed.epochs_run == 3 and [step for step, _ in ctx.reports] == [1, 2, 3]
    # Killed after the last report: the run is over; its best result comes back and nothing retrains.
    again = MemoryContext(tmp_path, reports=list(ctx.reports))
    result = fit(_flat_setup(), params, again)
    assert again.reports == ctx.reports and result.epochs_run == 3
    assert (result.best_epoch, result.metrics) == (resumed.best_epoch, resumed.metrics)


def test_an_epoch_checkpointed_but_not_yet_reported_is_reported_on_resume(tmp_path):
    class KilledBeforeSecondReport(MemoryContext):
        def report(self, step: int, metrics: Mapping[str, float]) -> None:
            if step == 2:
                raise KeyboardInterrupt  # dies after epoch 2's checkpoint, before the studio saw epoch 2
            super().report(step, metrics)

    params = TrainingParams(number_of_epochs=3, early_stopping=False)
    killed = KilledBeforeSecondReport(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        fit(_flat_setup(), params, killed)
    ctx = MemoryContext(tmp_path, reports=killed.reports)
    resumed = fit(_flat_setup(), params, ctx)
    assert resumed.epochs_run == 3 and [step for step, _ in ctx.reports] == [1, 2, 3]  # epoch 2 not lost


# --- metrics and data ----------------------------------------------------------------------------

def test_samples_iou_counts_an_empty_prediction_of_an_empty_truth_as_perfect():
    preds = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    truth = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 1]])
    assert samples_iou(preds, truth) == pytest.approx((1 + 1 + 1 / 3) / 3)


def test_multiclass_metrics_on_a_hand_checked_example():
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    flat, evaluation = classification_metrics(probs, torch.tensor([0, 1, 1, 2]), ["a", "b", "c"],
                                              multilabel=False)
    assert flat["accuracy"] == 0.75
    assert flat["precision_score_macro"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert flat["recall_score_weighted"] == pytest.approx(0.75)
    assert flat["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.3)
                                               + math.log(0.7)) / 4)
    assert evaluation["confusion_matrix"]["matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert [row["support"] for row in evaluation["per_class"]] == [1, 2, 1]
    json.dumps(evaluation, allow_nan=False)


def test_cached_images_are_decoded_once_at_the_size_the_transforms_need(shapes):
    params = resolve_params(Task.CLASSIFICATION, TINY, {"validation_resize_size": 24,
                                                        "training_crop_size": 20})
    train, validation = classification_datasets(shapes, params, multilabel=False)
    assert len(train) == len(shapes.train) and len(validation) == len(shapes.validation)
    assert all(i.dtype == torch.uint8 and min(i.shape[1:]) == 24 for i in train.images)
    image, target = train[0]
    assert image.shape == (3, 20, 20) and image.dtype == torch.float32 and target.dtype == torch.long
    assert validation[0][0].shape == (3, 32, 32)
    off = params.model_copy(update={"advanced_settings": '{"apply_automl_train_augmentations": false}'})
    plain, _ = classification_datasets(shapes, off, multilabel=False)
    assert torch.equal(plain[0][0], plain[0][0])  # nothing random left


# --- learning is real ----------------------------------------------------------------------------

# test_resnet (0.4 M parameters) from scratch, SPEC §5 augmentations on. Measured on the 2-core
# machine: accuracy >= 0.9 by epoch 12-24 of 40 for seeds 0-3 (best 0.98-1.0), ~20 s idle.
LEARN = {"model_name": "test_resnet", "number_of_epochs": 40, "training_batch_size": 32,
         "optimizer": "adamw", "learning_rate": 0.003, "early_stopping": False}


def test_classification_learns_the_shapes(tmp_path_factory):
    data = _version(tmp_path_factory.mktemp("learn"), Task.CLASSIFICATION, 300, 48)
    started = time.monotonic()
    trained, ctx, _ = _train(data, tmp_path_factory.mktemp("run"), **LEARN, training_crop_size=40,
                             validation_crop_size=40, validation_resize_size=40)
    assert ctx.reports[0][1]["accuracy"] < 0.8  # it starts near chance (1/3)
    assert trained.metrics["accuracy"] >= 0.9, [round(r[1]["accuracy"], 2) for r in ctx.reports]
    print(f"classification: accuracy {trained.metrics['accuracy']:.3f} in "
          f"{time.monotonic() - started:.1f} s")


def test_multilabel_learns_the_shapes(tmp_path_factory):
    data = _version(tmp_path_factory.mktemp("learn-ml"), Task.MULTILABEL, 300, 64)
    # Predicting every label for every image already scores mean(|labels|) / 3 ≈ 0.67 IoU here.
    truth = torch.stack([torch.tensor([c in i.tags for c in data.classes]) for i in data.validation])
    all_labels = samples_iou(torch.ones_like(truth), truth)
    started = time.monotonic()
    trained, ctx, _ = _train(data, tmp_path_factory.mktemp("run"), **LEARN, training_crop_size=56,
                             validation_crop_size=56, validation_resize_size=56)
    assert trained.metrics["iou"] >= max(0.8, all_labels + 0.1), [round(r[1]["iou"], 2)
                                                                 for r in ctx.reports]
    print(f"multilabel: iou {trained.metrics['iou']:.3f} (all labels {all_labels:.3f}) in "
          f"{time.monotonic() - started:.1f} s")
