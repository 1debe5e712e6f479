"""Job files (SPEC §3): the reference's YAMLs parse, refusals name the YAML field path, and
``to_yaml`` round-trips. The files in jobs/ are copied from the seeds with their data paths
unchanged; each test creates those paths as small MLTable folders under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.base.errors import ConfigError
from core.base.tasks import Task
from core.sweep.distributions import Choice, Normal, QUniform, RandInt, Uniform
from core.sweep.jobspec import DataRef, JobSpec, parse_job

JOBS = Path(__file__).parent / "jobs"


def _mltable(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLTable").write_text("paths:\n  - file: ./train.jsonl\n")
    (folder / "train.jsonl").write_text("")
    return folder


def _with_data(text: str, base: Path) -> str:
    doc = yaml.safe_load(text)
    for key in ("training_data", "validation_data"):
        if isinstance(doc.get(key), dict):
            _mltable(base / doc[key]["path"])
    return text


@pytest.fixture
def base(tmp_path: Path) -> Path:
    _mltable(tmp_path / "train")
    return tmp_path


def _job(base: Path, **extra: object) -> JobSpec:
    doc = {"type": "automl", "task": "image_classification", "training_data": {"path": "train", "type": "mltable"}}
    doc.update(extra)
    return parse_job(yaml.safe_dump(doc), base)


def _refused(base: Path, **extra: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _job(base, **extra)
    return info.value


@pytest.mark.parametrize("name", sorted(p.name for p in JOBS.glob("*.yml")))
def test_seed_jobs_parse_and_round_trip(name: str, tmp_path: Path) -> None:
    text = _with_data((JOBS / name).read_text(), tmp_path)
    job = parse_job(text, tmp_path)
    assert job.training_data.path is not None and job.training_data.path.is_dir()
    again = parse_job(job.to_yaml(), tmp_path / "elsewhere")  # local paths are written absolute
    assert again == job


def test_intel_jobs_read_as_the_reference_means(tmp_path: Path) -> None:
    auto = parse_job(_with_data((JOBS / "intel_automode.yml").read_text(), tmp_path), tmp_path)
    assert (auto.task, auto.primary_metric, auto.mode) == (Task.CLASSIFICATION, "accuracy", "automode")
    assert auto.schema_ and auto.compute == "azureml:gpu-cluster" and auto.log_verbosity == "debug"
    assert auto.limits.max_trials == 5 and auto.limits.timeout_minutes == 10080
    sweep = parse_job(_with_data((JOBS / "intel_model_sweep.yml").read_text(), tmp_path), tmp_path)
    assert sweep.mode == "sweep" and sweep.limits.max_concurrent_trials == 10
    assert sweep.search_space[0]["model_name"] == Choice(values=("vitb16r224", "vitl16r224", "seresnext",
                                                                 "resnet50", "resnet152", "mobilenetv2"))
    et = sweep.sweep.early_termination
    assert (et.type, et.evaluation_interval, et.slack_factor, et.delay_evaluation) == ("bandit", 2, 0.2, 6)
    assert sweep.params.early_stopping is True and sweep.training_parameters == {"early_stopping": True,
                                                                                 "evaluation_frequency": 1}


def test_detection_sweep_and_incremental_single(tmp_path: Path) -> None:
    det = parse_job(_with_data((JOBS / "detection_sweep.yml").read_text(), tmp_path), tmp_path)
    assert det.search_space[1]["learning_rate"] == Uniform(min_value=0.0001, max_value=0.001)
    assert det.params.advanced("apply_mosaic_for_yolo") is False and len(det.search_space) == 2
    single = parse_job(_with_data((JOBS / "incremental_single.yml").read_text(), tmp_path), tmp_path)
    assert single.mode == "single" and single.primary_metric == "mean_average_precision"
    assert single.params.checkpoint_run_id == "target_checkpoint_run_id" and single.params.model_name == "yolov5"


def test_modes(base: Path) -> None:
    assert _job(base, training_parameters={"model_name": "resnet50"}).mode == "single"
    assert _job(base, limits={"max_trials": 10}).mode == "automode"
    space = [{"model_name": {"type": "choice", "values": ["resnet50"]}}]
    assert _job(base, limits={"max_trials": 4}, search_space=space).mode == "sweep"
    assert _job(base, search_space=space).mode == "single"


def test_distributions_and_string_forms(base: Path) -> None:
    job = _job(base, limits={"max_trials": 3}, search_space=[{
        "learning_rate": "uniform(0.001, 0.01)", "optimizer": "choice('sgd', 'adam')", "momentum": 0.8,
        "weight_decay": {"type": "loguniform", "min_value": -9, "max_value": -4},
        "warmup_cosine_lr_cycles": {"type": "normal", "mu": 0.4, "sigma": 0.1},
        "number_of_epochs": {"type": "quniform", "min_value": 5, "max_value": 20, "q": 5},
        "layers_to_freeze": {"type": "randint", "upper": 4}}])
    sub = job.search_space[0]
    assert sub["learning_rate"] == Uniform(min_value=0.001, max_value=0.01)
    assert sub["optimizer"] == Choice(values=("sgd", "adam")) and sub["momentum"] == 0.8
    assert sub["weight_decay"].type == "loguniform" and isinstance(sub["warmup_cosine_lr_cycles"], Normal)
    assert isinstance(sub["number_of_epochs"], QUniform) and sub["layers_to_freeze"] == RandInt(upper=4)
    assert parse_job(job.to_yaml(), base) == job


def test_registered_datasets(base: Path) -> None:
    assert _job(base, training_data={"path": "azureml:fridge:3", "type": "mltable"}).training_data == \
        DataRef(name="fridge", version="3")
    assert _job(base, training_data={"path": "azureml:fridge@latest", "type": "mltable"}).training_data == \
        DataRef(name="fridge")
    job = _job(base, validation_data={"path": "fridge:2", "type": "mltable"}, validation_data_size=0.2)
    assert job.validation_data == DataRef(name="fridge", version="2")
    assert parse_job(job.to_yaml(), base) == job


def test_capped_and_defaults(base: Path) -> None:
    job = _job(base, limits={"max_trials": 2, "max_concurrent_trials": 4, "max_nodes": 4})
    assert (job.limits.max_trials, job.limits.max_concurrent_trials) == (2, 2)
    assert _job(base, task="image_classification_multilabel").primary_metric == "iou"
    assert _job(base, primary_metric="auc_weighted").primary_metric == "AUC_weighted"
    assert _job(base, sweep={"sampling_algorithm": "Grid"}).sampling_algorithm == "grid"
    assert _job(base, compute=1234, tags={"n": 1}).compute == "1234"


@pytest.mark.parametrize(("extra", "path", "needle"), [
    ({"primary_metrc": "accuracy"}, "primary_metrc", "primary_metric"),
    ({"type": "command"}, "type", "automl"),
    ({"task": "image_clasification"}, "task", "image_classification"),
    ({"primary_metric": "mean_average_precision"}, "primary_metric", "AUC_weighted"),
    ({"training_data": {"path": "nowhere", "type": "mltable"}}, "training_data.path", "does not exist"),
    ({"training_data": {"type": "mltable"}}, "training_data.path", "required"),
    ({"validation_data": {"path": "train", "type": "csv"}}, "validation_data.type", "uri_folder"),
    ({"validation_data_size": 1.5}, "validation_data_size", "between 0 and 1"),
    ({"limits": {"max_trials": 0}}, "limits.max_trials", "greater than or equal to 1"),
    ({"limits": {"max_trial": 3}}, "limits.max_trial", "max_trials"),
    ({"training_parameters": {"learning_rat": 0.1}}, "training_parameters.learning_rat", "learning_rate"),
    ({"training_parameters": {"optimizer": "rmsprop"}}, "training_parameters.optimizer", "adamw"),
    ({"sweep": {"sampling_algorithm": "hyperband"}}, "sweep.sampling_algorithm", "bayesian"),
    ({"sweep": {"early_termination": {"type": "bandit"}}}, "sweep.early_termination.slack_factor", "exactly one"),
    ({"sweep": {"early_termination": {"type": "bandit", "slack_factor": 0.1, "slack_amount": 0.2}}},
     "sweep.early_termination.slack_factor", "exactly one"),
    ({"sweep": {"early_termination": {"type": "truncation_selection"}}},
     "sweep.early_termination.truncation_percentage", "required"),
    ({"sweep": {"early_termination": {"type": "median_stopping", "evaluation_interval": 0}}},
     "sweep.early_termination.evaluation_interval", "greater than or equal to 1"),
    ({"sweep": {"sampling_algorithm": "grid"}, "search_space": [{"learning_rate": "uniform(0.01, 0.1)"}]},
     "search_space[0].learning_rate", "choice"),
    ({"search_space": [{"model_name": "resnet50"}, {"learning_rat": 0.1}]}, "search_space[1].learning_rat",
     "learning_rate"),
    ({"search_space": [{"learning_rate": {"type": "uniform", "min_value": 0.1, "max_value": 0.01}}]},
     "search_space[0].learning_rate.min_value", "below max_value"),
    ({"search_space": [{"learning_rate": {"type": "uniform", "min_value": 0.1}}]},
     "search_space[0].learning_rate.max_value", "required"),
    ({"search_space": [{"learning_rate": {"type": "unifrom", "min_value": 0.1}}]},
     "search_space[0].learning_rate.type", "uniform"),
    ({"search_space": [{"optimizer": {"type": "choice", "values": ["sgd", "rmsprop"]}}]},
     "search_space[0].optimizer.values[1]", "rmsprop"),
])
def test_refusals_name_the_field(base: Path, extra: dict, path: str, needle: str) -> None:
    err = _refused(base, **extra)
    assert err.path == path, str(err)
    assert needle in str(err), str(err)


def test_unknown_top_level_key_gets_a_hint(base: Path) -> None:
    err = _refused(base, serach_space=[])
    assert err.path == "serach_space" and "search_space" in err.hints and "limits" in err.allowed


SEED_004_PIPELINE = """\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline

description: intel_image_class_cnn pipeline

display_name: intel_image_class_cnn
experiment_name: intel_image_class_cnn

settings:
  default_datastore: azureml:workspaceblobstore
  default_compute: azureml:gpu-cluster

jobs:
  tensorflow_cnn:
    inputs:
      training_data:
        type: uri_file
        path: azureml:IntelImageClassification-train:4
        mode: ro_mount
    type: command
    component: file:../components/intel_image_class_cnn/component.yaml
"""


@pytest.mark.parametrize("kind", ["pipeline", "command", "sweep"])
def test_jobs_that_run_own_code_are_refused_saying_what_kestrel_runs_instead(kind: str, base: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_job(SEED_004_PIPELINE.replace("type: pipeline", f"type: {kind}"), base)
    assert info.value.path == "type" and info.value.allowed == ["automl"]
    assert f"'{kind}' jobs " in str(info.value) and "type: automl" in str(info.value)


def test_cloud_only_keys_are_accepted_with_a_notice_and_node_count_is_refused_above_one(base: Path) -> None:
    job = _job(base, compute="azureml:gpu-cluster", resources={"instance_type": "Standard_NC6"},
               properties={"node_count_per_trial": 1, "owner": "team-a"})
    assert job.notices == [
        "compute 'azureml:gpu-cluster' does not apply here: the job runs on this machine's worker",
        "resources.instance_type does not apply here: trials use this machine's GPUs or CPU cores",
        "properties.owner is kept with the job but changes nothing here"]
    assert parse_job(job.to_yaml(), base) == job
    err = _refused(base, properties={"node_count_per_trial": 4})
    assert err.path == "properties.node_count_per_trial" and "4 machines per trial" in str(err)
    assert any("max_concurrent_trials" in hint for hint in err.hints)
