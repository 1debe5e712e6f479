"""Where a job's trial processes run (`core.sweep.orchestrator` decides which trial, when, with what share):

- ``local`` (the default): a child process of the worker on this machine, its output copied to the trial's
  console.log, killed by the kernel if the worker dies.
- ``ray`` (``KESTREL_EXECUTOR=ray``, the cluster at ``RAY_ADDRESS``): a Ray task on whichever node has the
  CPUs (and GPU) the trial asks for, running the same ``kestrel trial run ID`` there. Every node reaches
  the same database (a shared PostgreSQL: ``KESTREL_DATABASE_URL``) and the same KESTREL_HOME (a shared
  path), so progress, results and stop requests go through the database as they do locally: a trial
  stops itself at the job's cancel and at its time limit; a trial that does not is cancelled by force.

Both hand the orchestrator an object with Popen's ``poll`` and ``send_signal``, and where the trial runs.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.base.errors import KestrelError
from core.base.logfile import copy_output

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")
REPO = Path(__file__).resolve().parents[2]
# Settings a trial process on another node needs from the worker's environment.
PASSED_ON = ("KESTREL_", "HF_", "TORCH_HOME", "YOLO_", "OMP_NUM_THREADS")
GPU_SHARE = 0.85  # of a GPU's memory that trials packed onto it may take: the rest for CUDA's own and spikes


@dataclass(frozen=True)
class Slot:
    """Where one trial runs: a GPU (``gpu``) and a share of the CPU cores (``threads``)."""

    gpu: int | None = None
    threads: int | None = None


class TrialProcess(Protocol):
    where: str  # the node (host name, or Ray node) and the share it was given, as the leaderboard shows it

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


def executor() -> str:
    name = os.environ.get("KESTREL_EXECUTOR", "local").strip().lower() or "local"
    if name not in EXECUTORS:
        raise KestrelError(f"KESTREL_EXECUTOR={name!r} is not an executor; use one of {', '.join(EXECUTORS)}")
    return name


def share(slot: Slot) -> str:
    """"GPU 0, 4 CPU threads", "GPU 1" or "2 CPU threads"."""
    parts = ([f"GPU {slot.gpu}"] if slot.gpu is not None else []) + (
        [f"{slot.threads} CPU threads"] if slot.threads is not None else [])
    return ", ".join(parts)


class LocalTrial:
    """A trial process of this worker."""

    def __init__(self, args: list[str], slot: Slot, console: Path, max_log_bytes: int) -> None:
        command, env = [sys.executable, *args], os.environ.copy()
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
        if slot.threads is not None:
            env["OMP_NUM_THREADS"] = str(slot.threads)
        self.process, _ = _spawn(command, env, console, max_log_bytes)
        self.where = f"{platform.node()} · {share(slot)} · pid {self.process.pid}"

    def poll(self) -> int | None:
        return self.process.poll()

    def send_signal(self, sig: int) -> None:
        self.process.send_signal(sig)


class RayTrial:
    """A trial as a Ray task (`_run_on_node`); its exit status comes back as the task's result."""

    def __init__(self, args: list[str], slot: Slot, console: Path, max_log_bytes: int) -> None:
        import ray

        connect()
        env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ON)}
        if slot.threads is not None:
            env["OMP_NUM_THREADS"] = str(slot.threads)
        task = ray.remote(_run_on_node).options(num_cpus=slot.threads or 1, num_gpus=1 if slot.gpu is not None else 0,
                                                max_retries=0, name="kestrel-trial")
        self.ref = task.remote(args, env, str(console), max_log_bytes)
        self.where = f"Ray · {share(slot)}"  # the node is known once the task reports it (`node`)
        self.code: int | None = None

    def poll(self) -> int | None:
        import ray

        if self.code is None and ray.wait([self.ref], timeout=0)[0]:
            try:
                self.code, node = ray.get(self.ref)
                self.where = f"Ray node {node} · {self.where.split(' · ', 1)[1]}"
            except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.NodeDiedError):
                self.code = -signal.SIGKILL
            except ray.exceptions.RayTaskError as exc:
                log.error("the Ray task of a trial failed: %s", exc)
                self.code = 1
        return self.code

    def send_signal(self, sig: int) -> None:
        # The trial stops itself at the job's cancel (read from the database) and at its own time limit; what
        # is left is the last resort: the task and its trial process are ended by force.
        if sig == signal.SIGKILL:
            import ray

            ray.cancel(self.ref, force=True)


def start_trial(args: list[str], slot: Slot, console: Path, max_log_bytes: int) -> TrialProcess:
    kind = RayTrial if executor() == "ray" else LocalTrial
    return kind(args, slot, console, max_log_bytes)


def connect() -> None:
    """Join the Ray cluster at RAY_ADDRESS (once per worker process)."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if not address:
            raise KestrelError("KESTREL_EXECUTOR=ray needs RAY_ADDRESS (the head node, host:port, from `ray start "
                               "--head`)")
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)


def local_slots(wanted: int, cores: int, trial_mb: float | None) -> list[Slot]:
    """This machine's slots: its GPUs, each taking as many trials as fit (`gpu_slots`); on a CPU, up to one
    trial per core, sharing them out."""
    import torch

    gpus = [torch.cuda.get_device_properties(k).total_memory / 2**20 for k in range(torch.cuda.device_count())]
    if gpus:
        return gpu_slots(wanted, gpus, trial_mb, cores)
    n = max(1, min(wanted, cores))
    return [Slot(threads=max(1, cores // n)) for _ in range(n)]


def gpu_slots(wanted: int, gpu_mb: list[float], trial_mb: float | None, cores: int) -> list[Slot]:
    """Up to ``wanted`` trials over GPUs of ``gpu_mb`` MiB: as many on each as fit in GPU_SHARE of its memory
    at ``trial_mb`` a trial (the largest peak measured here for the job's models), spread across the GPUs
    first; one a GPU when nothing was measured (a guess that overcommits would fail trials out of memory).
    The trials share the ``cores`` out as well: each feeds its GPU from its own loader processes and threads,
    and four trials with every core each ran 8 times slower than one alone on an H200 (bench/gpu.py)."""
    fits = [max(1, int(total * GPU_SHARE // trial_mb)) if trial_mb else 1 for total in gpu_mb]
    places: list[int] = []
    for turn in range(max(fits, default=0)):
        places += [k for k, n in enumerate(fits) if turn < n]
    places = places[:max(1, wanted)]
    return [Slot(gpu=k, threads=max(1, cores // len(places))) for k in places]


def ray_slots(wanted: int) -> list[Slot]:
    """Up to ``wanted`` trials at once over the cluster: one GPU each where the cluster has GPUs, with a share
    of the CPUs for its loaders (as `gpu_slots` gives), else the cluster's CPUs shared out (Ray places each
    where its CPUs are free)."""
    import ray

    connect()
    return cluster_slots(wanted, [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")])


def cluster_slots(wanted: int, nodes: list[dict[str, float]]) -> list[Slot]:
    """`ray_slots` over the ``nodes``' resources (Ray's "CPU" and "GPU" counts, one dict a live node)."""
    if with_gpus := [r for r in nodes if r.get("GPU")]:
        gpus = sum(int(r["GPU"]) for r in with_gpus)
        per_gpu = min(int(r.get("CPU", 1) // r["GPU"]) for r in with_gpus)  # what every GPU's node can give
        return [Slot(gpu=k, threads=max(1, per_gpu)) for k in range(min(wanted, gpus))]
    cpus = int(sum(r.get("CPU", 0) for r in nodes)) or 1
    n = max(1, min(wanted, cpus))
    per_node = max(1, cpus // max(1, len(nodes)))  # a trial's threads must fit on one node
    return [Slot(threads=max(1, min(per_node, cpus // n))) for _ in range(n)]


def _run_on_node(args: list[str], env: dict[str, str], console: str, max_log_bytes: int) -> tuple[int, str]:
    """Runs inside the Ray task, on its node: the trial process, its output to the shared console.log."""
    import ray

    Path(console).parent.mkdir(parents=True, exist_ok=True)
    process, copier = _spawn([sys.executable, *args], {**os.environ, **env}, Path(console), max_log_bytes)
    code = process.wait()
    copier.join(timeout=10)
    return code, ray.get_runtime_context().get_node_id()[:8]


def _spawn(command: list[str], env: dict[str, str], console: Path, max_log_bytes: int
           ) -> tuple[subprocess.Popen[bytes], threading.Thread]:
    """A trial process that dies with its parent, its output copied to ``console`` (rotated)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                               preexec_fn=die_with_parent)
    assert process.stdout is not None
    return process, copy_output(process.stdout, console, max_log_bytes)


def die_with_parent() -> None:
    """Runs in the trial process before exec: on Linux, the kernel kills it when its parent (the worker, or
    the Ray worker running its task) dies, so no trial runs on unseen."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def placement(process: Any) -> dict[str, str]:
    return {"executor": "ray" if isinstance(process, RayTrial) else "local", "where": process.where}
