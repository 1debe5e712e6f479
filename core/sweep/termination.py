"""Early termination policies (the reference's bandit, median_stopping, truncation_selection). Pure, no I/O.

Every policy answers ``should_stop(trial_id, history, finished=()) -> reason | None`` for the trial's latest
report, where ``history`` maps every trial of the sweep to its reported ``[(step, value), ...]`` (step = the
interval count: each report of the primary metric is one interval) and ``finished`` names trials that have
ended. Higher metric is better everywhere.

When a policy is applied (Azure ML BanditPolicy docs, azureml-sdk-for-r ``bandit_policy`` / azureml
hyperdrive reference: "If specified, the policy applies every multiple of evaluation_interval that is greater
than or equal to delay_evaluation"): at steps with ``step % evaluation_interval == 0 and step >=
delay_evaluation``. An evaluation_interval of 0 (the azure-ai-ml default) is read as 1.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from core.base.errors import ConfigError
from core.base.registry import Registry
from core.runs.stopping import History, Policy

policies: Registry[type] = Registry("early termination policy")


def make_policy(config: Mapping[str, Any] | None) -> Policy | None:
    """The policy of a job's ``sweep.early_termination`` (a checked mapping with ``type``), or None."""
    if not config:
        return None
    args = {k: v for k, v in config.items() if k != "type" and v is not None}
    return policies.get(config["type"])(**args)


def _upto(curve: Sequence[tuple[int, float]], step: int) -> list[float]:
    return [value for s, value in curve if s <= step]


def _latest(curve: Sequence[tuple[int, float]]) -> tuple[int, float] | None:
    return max(curve, key=lambda point: point[0]) if curve else None


@dataclass(frozen=True, kw_only=True)
class _Schedule:
    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def _check_schedule(self, field: str) -> None:
        if self.evaluation_interval < 0 or self.delay_evaluation < 0:
            raise ConfigError(f"sweep.early_termination.{field}", "evaluation_interval and delay_evaluation are >= 0")

    def evaluates(self, step: int) -> bool:
        return step % max(self.evaluation_interval, 1) == 0 and step >= self.delay_evaluation

    def eligible_step(self, trial_id: Hashable, history: History) -> int | None:
        """The trial's latest reported step when the policy is to judge it there, else None."""
        latest = _latest(history.get(trial_id, ()))
        return latest[0] if latest is not None and self.evaluates(latest[0]) else None


@policies.register("bandit")
@dataclass(frozen=True, kw_only=True)
class BanditPolicy(_Schedule):
    """Stop a trial whose best value so far falls outside the slack of the best trial at this interval.

    Reference (Azure ML hyperdrive BanditPolicy / azureml-sdk-for-r bandit_policy): "Any run that doesn't fall
    within the slack factor or slack amount of the evaluation metric with respect to the best performing run
    will be terminated" — with slack_factor 0.2 and the best run at 0.8 after N intervals, a run whose best Y
    has Y * (1 + 0.2) < 0.8 is cancelled; with slack_amount 0.2, a run below 0.8 - 0.2 is cancelled. The
    SDK's example: "Any run whose best metric is less than (1 / (1 + 0.1)) or 91% of the best performing
    run will be terminated". "Best performing run after N intervals" = the highest value any trial
    reported at step <= N.
    """

    slack_factor: float | None = None
    slack_amount: float | None = None

    def __post_init__(self) -> None:
        self._check_schedule("bandit")
        if (self.slack_factor is None) == (self.slack_amount is None):
            raise ConfigError("sweep.early_termination.bandit", "give exactly one of slack_factor or slack_amount")
        if (self.slack_factor or 0) < 0 or (self.slack_amount or 0) < 0:
            raise ConfigError("sweep.early_termination.bandit", "slack must be >= 0")

    def should_stop(self, trial_id: Hashable, history: History, finished: Collection[Hashable] = ()) -> str | None:
        step = self.eligible_step(trial_id, history)
        if step is None:
            return None
        own = max(_upto(history[trial_id], step))
        best = max(v for curve in history.values() for v in _upto(curve, step))
        if self.slack_factor is not None:
            threshold = best / (1 + self.slack_factor)
            if own < threshold:
                return (f"bandit: {own:.4g} is below the best {best:.4g} / (1 + {self.slack_factor:g})"
                        f" = {threshold:.4g} at interval {step}")
            return None
        assert self.slack_amount is not None
        threshold = best - self.slack_amount
        if own < threshold:
            return (f"bandit: {own:.4g} is below the best {best:.4g} - {self.slack_amount:g}"
                    f" = {threshold:.4g} at interval {step}")
        return None


@policies.register("median_stopping")
@dataclass(frozen=True, kw_only=True)
class MedianStoppingPolicy(_Schedule):
    """Stop a trial whose best value so far is below the median of the other trials' running averages.

    Reference (Azure ML MedianStoppingPolicy: "based on running averages of primary metrics reported by the
    runs ... stops runs whose primary metric value is worse than the median of the averages"; STYLE §1.10:
    "a run's best value up to interval N against the median of all runs' running averages"; Golovin et al.,
    Google Vizier, 2017). Running average of a trial at N = mean of its values reported at steps <= N. Other
    trials that reported nothing by N do not count; with no other trial there is nothing to compare.
    """

    def __post_init__(self) -> None:
        self._check_schedule("median_stopping")

    def should_stop(self, trial_id: Hashable, history: History, finished: Collection[Hashable] = ()) -> str | None:
        step = self.eligible_step(trial_id, history)
        if step is None:
            return None
        own = max(_upto(history[trial_id], step))
        averages = []
        for other, curve in history.items():
            values = _upto(curve, step)
            if other != trial_id and values:
                averages.append(sum(values) / len(values))
        if not averages:
            return None
        middle = median(averages)
        if own < middle:
            return (f"median_stopping: best {own:.4g} is below the median {middle:.4g} of {len(averages)}"
                    f" other trials' running averages at interval {step}")
        return None


@policies.register("truncation_selection")
@dataclass(frozen=True, kw_only=True)
class TruncationSelectionPolicy(_Schedule):
    """Stop a trial that ranks in the lowest truncation_percentage % of trials at this interval.

    Reference (Azure ML TruncationSelectionPolicy: "cancels a percentage of lowest performing runs at each
    evaluation interval. Runs are compared using the primary metric"; e.g. truncation_percentage 20,
    delay 5: "The run terminates at interval 5 if its performance at interval 5 is in the lowest 20% of
    performance of all runs at interval 5"; exclude_finished_jobs: whether finished jobs are left out of the
    comparison). Compared: trials that reached this interval (value = their last report at or before it) and,
    unless exclude_finished_jobs, finished trials (their last value at or before it). The lowest
    floor(n * pct / 100) are cut; a trial is cut when it is strictly below the lowest survivor, so ties at the
    boundary survive and never more than that share is stopped.
    """

    truncation_percentage: int = 0
    exclude_finished_jobs: bool = False

    def __post_init__(self) -> None:
        self._check_schedule("truncation_selection")
        if not 1 <= self.truncation_percentage <= 99:
            raise ConfigError("sweep.early_termination.truncation_percentage", "must be between 1 and 99")

    def should_stop(self, trial_id: Hashable, history: History, finished: Collection[Hashable] = ()) -> str | None:
        step = self.eligible_step(trial_id, history)
        if step is None:
            return None
        values: dict[Hashable, float] = {}
        for other, curve in history.items():
            done = other in finished and other != trial_id
            if done and self.exclude_finished_jobs:
                continue
            reached = _latest(curve)
            if reached is None or (reached[0] < step and not done):
                continue
            at = [(s, v) for s, v in curve if s <= step]
            if at:
                values[other] = max(at, key=lambda point: point[0])[1]
        ranked = sorted(values.values())
        cut = len(ranked) * self.truncation_percentage // 100
        if cut == 0:
            return None
        own = values[trial_id]
        survivor = ranked[cut]
        if own < survivor:
            return (f"truncation_selection: {own:.4g} is in the lowest {self.truncation_percentage}% of"
                    f" {len(ranked)} trials at interval {step} (below {survivor:.4g}, {cut} cut)")
        return None
