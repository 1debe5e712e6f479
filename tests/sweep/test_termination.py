"""Early termination policies on synthetic learning curves (higher is better)."""

from __future__ import annotations

import pytest

from core.base.errors import ConfigError
from core.sweep.termination import BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy, policies


def curve(values: list[float], start: int = 1) -> list[tuple[int, float]]:
    return [(start + i, v) for i, v in enumerate(values)]


def first_stop(policy, trial_id, history) -> tuple[int, str] | None:
    """Replay the trial's reports one by one (others fully reported) and return the first stop."""
    full = history[trial_id]
    for i in range(1, len(full) + 1):
        partial = {**history, trial_id: full[:i]}
        reason = policy.should_stop(trial_id, partial)
        if reason:
            return full[i - 1][0], reason
    return None


GOOD = curve([0.5, 0.6, 0.65, 0.7, 0.72, 0.74, 0.75, 0.76, 0.77, 0.78])
BAD = curve([0.1, 0.12, 0.15, 0.18, 0.2, 0.21, 0.22, 0.23, 0.24, 0.25])
OK = curve([0.45, 0.55, 0.6, 0.66, 0.69, 0.70, 0.71, 0.72, 0.73, 0.74])


def test_registry_names() -> None:
    assert policies.get("bandit") is BanditPolicy
    assert policies.get("median_stopping") is MedianStoppingPolicy
    assert policies.get("truncation_selection") is TruncationSelectionPolicy
    with pytest.raises(ConfigError):
        policies.get("bandits")


def test_bandit_stops_a_bad_trial_at_the_first_eligible_step() -> None:
    policy = policies.get("bandit")(slack_factor=0.2, evaluation_interval=2, delay_evaluation=5)
    stop = first_stop(policy, "bad", {"good": GOOD, "bad": BAD})
    assert stop is not None
    step, reason = stop
    assert step == 6  # first multiple of 2 that is >= 5
    assert reason.startswith("bandit:")
    assert "0.21" in reason and "0.74" in reason and "(1 + 0.2)" in reason and "0.6167" in reason


def test_bandit_never_evaluates_before_delay_or_off_interval() -> None:
    policy = BanditPolicy(slack_factor=0.1, evaluation_interval=3, delay_evaluation=4)
    history = {"good": GOOD, "bad": BAD}
    for n in range(1, 11):
        reason = policy.should_stop("bad", {**history, "bad": BAD[:n]})
        assert (reason is not None) == (n in (6, 9)), n


def test_bandit_delay_equal_to_step_is_eligible() -> None:
    policy = BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=3)
    assert policy.should_stop("bad", {"good": GOOD, "bad": BAD[:2]}) is None
    assert policy.should_stop("bad", {"good": GOOD, "bad": BAD[:3]}) is not None


def test_bandit_compares_with_the_best_up_to_that_step() -> None:
    # best at step 2 is 0.6 (GOOD's later 0.78 does not count yet): 0.55 >= 0.6 / 1.1, not stopped
    policy = BanditPolicy(slack_factor=0.1, evaluation_interval=1)
    assert policy.should_stop("ok", {"good": GOOD, "ok": OK[:2]}) is None
    # with slack_amount 0.01 the same trial is outside 0.6 - 0.01
    reason = BanditPolicy(slack_amount=0.01).should_stop("ok", {"good": GOOD, "ok": OK[:2]})
    assert reason is not None and "0.55" in reason and "0.6 - 0.01" in reason and "0.59" in reason


def test_bandit_slack_amount_variant() -> None:
    policy = BanditPolicy(slack_amount=0.1, evaluation_interval=2, delay_evaluation=2)
    assert first_stop(policy, "ok", {"good": GOOD, "ok": OK}) is None  # always within 0.1 of the best
    step, reason = first_stop(policy, "bad", {"good": GOOD, "ok": OK, "bad": BAD})
    assert step == 2 and "0.12" in reason and "0.6 - 0.1" in reason


def test_bandit_never_stops_a_good_trial() -> None:
    policy = BanditPolicy(slack_factor=0.2, evaluation_interval=1)
    history = {"good": GOOD, "ok": OK, "bad": BAD}
    assert first_stop(policy, "good", history) is None
    assert first_stop(policy, "ok", history) is None
    assert policy.should_stop("alone", {"alone": BAD}) is None  # the best trial is never outside its own slack


def test_bandit_needs_exactly_one_slack() -> None:
    with pytest.raises(ConfigError):
        BanditPolicy()
    with pytest.raises(ConfigError):
        BanditPolicy(slack_factor=0.1, slack_amount=0.1)


def test_median_stops_a_below_median_trial_and_not_a_top_one() -> None:
    history = {"good": GOOD, "ok": OK, "bad": BAD, "mid": curve([0.3, 0.4, 0.5, 0.55, 0.6, 0.6, 0.6, 0.6])}
    policy = MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=3)
    step, reason = first_stop(policy, "bad", history)
    assert step == 3
    assert reason.startswith("median_stopping:") and "0.15" in reason and "3 other trials" in reason
    assert first_stop(policy, "good", history) is None
    assert first_stop(policy, "ok", history) is None


def test_median_uses_best_value_against_running_averages() -> None:
    # others' running averages at step 4: (0.1+0.2+0.3+0.4)/4 = 0.25 and (0.3)*4/4 = 0.3 -> median 0.275
    others = {"a": curve([0.1, 0.2, 0.3, 0.4]), "b": curve([0.3, 0.3, 0.3, 0.3])}
    policy = MedianStoppingPolicy(evaluation_interval=4)
    peaked = curve([0.28, 0.1, 0.1, 0.1])  # best 0.28 > 0.275 though its latest value is low
    assert policy.should_stop("x", {**others, "x": peaked}) is None
    low = curve([0.2, 0.1, 0.1, 0.27])
    reason = policy.should_stop("x", {**others, "x": low})
    assert reason is not None and "0.27 is below the median 0.275" in reason
    assert policy.should_stop("x", {**others, "x": low[:3]}) is None  # off interval
    assert policy.should_stop("x", {"x": low}) is None  # nobody to compare with


def test_truncation_stops_the_bottom_share_only() -> None:
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    history = {f"t{i}": curve([v / 2, v]) for i, v in enumerate(values)}
    policy = TruncationSelectionPolicy(truncation_percentage=30, evaluation_interval=2)
    stopped = [t for t in history if policy.should_stop(t, history)]
    assert stopped == ["t0", "t1", "t2"]
    reason = policy.should_stop("t0", history)
    assert reason.startswith("truncation_selection:") and "lowest 30%" in reason and "10 trials" in reason
    assert "0.1" in reason and "0.4" in reason
    # step 1 is off the interval
    early = {t: c[:1] for t, c in history.items()}
    assert not [t for t in early if policy.should_stop(t, early)]


def test_truncation_waits_for_delay_and_enough_trials() -> None:
    history = {"a": curve([0.1, 0.1]), "b": curve([0.9, 0.9])}
    assert TruncationSelectionPolicy(truncation_percentage=20).should_stop("a", history) is None  # 2 * 20% < 1
    assert TruncationSelectionPolicy(truncation_percentage=50).should_stop("a", history) is not None
    assert TruncationSelectionPolicy(truncation_percentage=50, delay_evaluation=3).should_stop("a", history) is None
    with pytest.raises(ConfigError):
        TruncationSelectionPolicy(truncation_percentage=0)


def test_truncation_ties_and_finished_trials() -> None:
    tied = {"a": curve([0.5]), "b": curve([0.5]), "c": curve([0.5]), "d": curve([0.5])}
    assert not [t for t in tied if TruncationSelectionPolicy(truncation_percentage=50).should_stop(t, tied)]
    # a finished trial that ended at step 1 still counts unless exclude_finished_jobs
    history = {"done": curve([0.9]), "x": curve([0.3, 0.4]), "y": curve([0.6, 0.7])}
    keep = TruncationSelectionPolicy(truncation_percentage=50)
    assert keep.should_stop("y", history, finished={"done"}) is None
    assert keep.should_stop("x", history, finished={"done"}) is not None
    assert keep.should_stop("x", history) is not None  # unfinished "done" has not reached step 2: x vs y only
    excluded = TruncationSelectionPolicy(truncation_percentage=50, exclude_finished_jobs=True)
    assert excluded.should_stop("x", history, finished={"done"}) is not None
    assert excluded.should_stop("y", history, finished={"done"}) is None
    behind = {"done": curve([0.1]), "y": curve([0.6, 0.7])}
    assert keep.should_stop("y", behind, finished={"done"}) is None
    assert excluded.should_stop("y", behind, finished={"done"}) is None  # alone: nothing to cut
