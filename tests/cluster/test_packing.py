"""Trials packed onto GPUs by the memory a trial of the job's models was measured to take here, and where each
trial ran shown on the leaderboard (no GPU is needed to check the arithmetic)."""

from __future__ import annotations

from core.sweep.jobspec import parse_job
from core.sweep.launchers import GPU_SHARE, Slot, cluster_slots, gpu_slots, local_slots, share
from core.sweep.orchestrator import _models
from storage.db import session_scope
from storage.repos import trials


def test_as_many_trials_share_a_gpu_as_fit_spread_across_gpus_first():
    # Two 24 GiB GPUs, about 6 GB a trial: three fit in GPU_SHARE of each.
    assert int(24576 * GPU_SHARE // 6000) == 3
    slots = gpu_slots(8, [24576, 24576], 6000, cores=16)
    assert [s.gpu for s in slots] == [0, 1, 0, 1, 0, 1]
    assert gpu_slots(3, [24576, 24576], 6000, cores=16) == [Slot(gpu=0, threads=5), Slot(gpu=1, threads=5),
                                                             Slot(gpu=0, threads=5)]
    # unmeasured: one a GPU, each with half the cores
    assert gpu_slots(4, [24576, 24576], None, cores=16) == [Slot(gpu=0, threads=8), Slot(gpu=1, threads=8)]
    assert gpu_slots(4, [8000], 30000, cores=2) == [Slot(gpu=0, threads=2)]  # larger than the GPU: still one


def test_trials_on_one_gpu_share_the_cores_and_say_so():
    slots = gpu_slots(4, [143771], 304, cores=16)  # four resnet18 trials of 304 MiB on an H200
    assert slots == [Slot(gpu=0, threads=4)] * 4
    assert share(slots[0]) == "GPU 0, 4 CPU threads"
    assert gpu_slots(8, [16000], 4000, cores=2) == [Slot(gpu=0, threads=1)] * 3  # never fewer than one thread
    assert share(Slot(threads=2)) == "2 CPU threads" and share(Slot(gpu=1)) == "GPU 1"


def test_without_a_gpu_the_cores_are_shared_out(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)  # also on a machine with GPUs
    assert local_slots(2, 4, None) == [Slot(threads=2), Slot(threads=2)]
    assert local_slots(8, 2, 5000) == [Slot(threads=1), Slot(threads=1)]


def test_the_measured_peak_of_the_jobs_models_sizes_the_share(engine):
    with session_scope(engine) as session:
        for model, peak, status in (("yolov8n", 3000, "completed"), ("yolov8n", 4200, "completed"),
                                    ("resnet50", 9000, "completed"), ("yolov8n", 20000, "failed")):
            row = trials.create(session=session, model_name=model, params={}, primary_metric="map")
            trials.finish(session=session, trial_id=row.id, status=status, metrics={}, primary_metric_value=0.5)
            trials.set_metrics(session=session, trial_id=row.id, key="memory", values={"gpu_peak_mb": peak})
        assert trials.gpu_peak_mb(session=session, models=["yolov8n"]) == 4200  # failed trials do not count
        assert trials.gpu_peak_mb(session=session, models=["yolov8n", "resnet50"]) == 9000
        assert trials.gpu_peak_mb(session=session, models=["vit_b16"]) is None


def test_the_models_a_job_file_names(tmp_path):
    spec = parse_job("type: automl\ntask: image_classification\n"
                     "training_data: {path: 'azureml:shapes:1', type: mltable}\n"
                     "training_parameters: {model_name: resnet18}\nlimits: {max_trials: 4}\n"
                     "sweep: {sampling_algorithm: random}\nsearch_space:\n"
                     "  - model_name: {type: choice, values: [resnet50, vit_b16]}\n"
                     "  - model_name: mobilenetv3_large_100\n", tmp_path)
    assert _models(spec) == ["mobilenetv3_large_100", "resnet18", "resnet50", "vit_b16"]


def test_on_a_ray_cluster_a_trial_takes_a_gpu_and_its_share_of_that_nodes_cpus():
    head, gpu_node = {"CPU": 4.0}, {"CPU": 8.0, "GPU": 2.0}  # Ray's resources of two live nodes
    assert cluster_slots(3, [head, gpu_node]) == [Slot(gpu=0, threads=4), Slot(gpu=1, threads=4)]
    assert cluster_slots(1, [head, gpu_node]) == [Slot(gpu=0, threads=4)]
    assert cluster_slots(4, [{"CPU": 1.0}, {"CPU": 1.0}]) == [Slot(threads=1), Slot(threads=1)]  # no GPU
