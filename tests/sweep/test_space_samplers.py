"""Search spaces (every distribution, conditional sub-spaces, grid) and the ask/tell Sweeper."""

from __future__ import annotations

import math

import optuna
import pytest

from core.base.errors import ConfigError
from core.sweep.samplers import Sweeper, make_sampler
from core.sweep.space import encode, grid, parse_space, sample

ALL_KINDS = parse_space(
    [
        {
            "model_name": {"type": "choice", "values": ["alpha"]},
            "c": {"type": "choice", "values": ["sgd", "adam", "adamw"]},
            "u": {"type": "uniform", "min_value": 0.0001, "max_value": 0.01},
            "lu": {"type": "loguniform", "min_value": -6, "max_value": -2},
            "n": {"type": "normal", "mu": 10, "sigma": 2},
            "ln": {"type": "lognormal", "mu": 0, "sigma": 1},
            "qu": {"type": "quniform", "min_value": 2, "max_value": 30, "q": 4},
            "qlu": {"type": "qloguniform", "min_value": 0, "max_value": 3, "q": 0.5},
            "ri": {"type": "randint", "upper": 5},
            "fixed": 7,
        },
        {
            "model_name": "beta",
            "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
            "sizes": {"type": "choice", "values": [[600, 800], [1024]]},
            "lr": {"type": "uniform", "min_value": 0.1, "max_value": 0.2},
        },
    ]
)
ALPHA = set(ALL_KINDS[0])
BETA = set(ALL_KINDS[1])


def check(params: dict) -> None:
    """Each config belongs to exactly one sub-space and every value lies within its distribution."""
    if params["model_name"] == "alpha":
        assert set(params) == ALPHA
        assert params["c"] in ("sgd", "adam", "adamw")
        assert 0.0001 <= params["u"] <= 0.01
        assert math.exp(-6) <= params["lu"] <= math.exp(-2)
        assert isinstance(params["n"], float) and math.isfinite(params["n"])
        assert params["ln"] > 0
        assert params["qu"] % 4 == 0 and 0 <= params["qu"] <= 32 and isinstance(params["qu"], int)
        assert math.isclose(params["qlu"] / 0.5, round(params["qlu"] / 0.5)) and 0 <= params["qlu"] <= 20.5
        assert params["ri"] in range(5) and isinstance(params["ri"], int)
        assert params["fixed"] == 7
    else:
        assert params["model_name"] == "beta" and set(params) == BETA
        assert params["optimizer"] in ("sgd", "adam")
        assert params["sizes"] in ([600, 800], [1024])
        assert 0.1 <= params["lr"] <= 0.2


def run(algorithm: str, n: int, seed: int = 0) -> list[dict]:
    sweeper = Sweeper(ALL_KINDS, algorithm, seed=seed)
    configs = []
    for _ in range(n):
        number, params = sweeper.ask()
        configs.append(params)
        sweeper.tell(number, params.get("u", params.get("lr")))
    return configs


def test_every_distribution_samples_within_bounds() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = []
    for _ in range(300):
        params = sample(ALL_KINDS, study.ask())
        check(params)
        seen.append(params)
    alpha = [p for p in seen if p["model_name"] == "alpha"]
    assert len(alpha) > 100 and len(seen) - len(alpha) > 100
    normals = [p["n"] for p in alpha]
    assert 9 < sum(normals) / len(normals) < 11  # mu
    assert {p["ri"] for p in alpha} == set(range(5))
    assert {p["c"] for p in alpha} == {"sgd", "adam", "adamw"}


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_random_and_bayesian_honour_sub_spaces(algorithm: str) -> None:
    configs = run(algorithm, 30)
    for params in configs:
        check(params)
    assert {p["model_name"] for p in configs} == {"alpha", "beta"}


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_seeds_reproduce(algorithm: str) -> None:
    assert run(algorithm, 15, seed=5) == run(algorithm, 15, seed=5)
    assert run(algorithm, 15, seed=5) != run(algorithm, 15, seed=6)


GRID = parse_space(
    [
        {"model_name": "a", "lr": {"type": "choice", "values": [0.1, 0.01]}, "size": {"type": "choice",
                                                                                       "values": ["s", "m"]}},
        {"model_name": {"type": "choice", "values": ["b"]}, "opt": {"type": "choice", "values": ["sgd", "adam",
                                                                                                  "adamw"]}},
    ]
)


def test_grid_is_exactly_the_product() -> None:
    configs = grid(GRID)
    assert len(configs) == 2 * 2 + 3
    assert configs[:4] == [
        {"model_name": "a", "lr": 0.1, "size": "s"},
        {"model_name": "a", "lr": 0.1, "size": "m"},
        {"model_name": "a", "lr": 0.01, "size": "s"},
        {"model_name": "a", "lr": 0.01, "size": "m"},
    ]
    assert configs[4:] == [{"model_name": "b", "opt": o} for o in ("sgd", "adam", "adamw")]


def test_grid_refuses_non_choice() -> None:
    with pytest.raises(ConfigError, match="grid sampling needs choice"):
        grid(ALL_KINDS)
    with pytest.raises(ConfigError):
        Sweeper(ALL_KINDS, "grid")


def test_grid_sweeper_serves_its_grid_then_none() -> None:
    sweeper = Sweeper(GRID, "grid")
    served = []
    while (asked := sweeper.ask()) is not None:
        number, params = asked
        served.append(params)
        sweeper.tell(number, None if number == 2 else 0.5)
    assert served == grid(GRID)
    assert sweeper.ask() is None


def test_grid_restore_continues() -> None:
    sweeper = Sweeper(GRID, "grid")
    done = [(params, 0.1 * i) for i, params in enumerate(grid(GRID)[:3])]
    assert sweeper.restore(done) == 3
    rest = []
    while (asked := sweeper.ask()) is not None:
        rest.append(asked[1])
        sweeper.tell(asked[0], 1.0)
    assert rest == grid(GRID)[3:]


def test_grid_resumed_skips_the_points_of_trials_queued_to_run_again() -> None:
    """After a restart, a trial lost with its worker runs again with its own point: no new trial gets it."""
    sweeper = Sweeper(GRID, "grid", max_trials=len(grid(GRID)) - 1)  # as the orchestrator: less the queued
    sweeper.restore([(grid(GRID)[0], 0.5)])
    sweeper.reserve(grid(GRID)[1])
    rest = []
    while (asked := sweeper.ask()) is not None:
        rest.append(asked[1])
        sweeper.tell(asked[0], 1.0)
    assert rest == grid(GRID)[2:]


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_restore_continues(algorithm: str) -> None:
    first = Sweeper(ALL_KINDS, algorithm, seed=1)
    finished = []
    for i in range(12):
        number, params = first.ask()
        value = None if i == 4 else params.get("u", params.get("lr"))
        first.tell(number, value)
        finished.append((params, value))
    again = Sweeper(ALL_KINDS, algorithm, seed=1, max_trials=20)
    assert again.restore(finished + [({"model_name": "nope"}, 1.0)]) == 12
    assert len(again.study.trials) == 12
    assert again.study.best_value == max(v for _, v in finished if v is not None)
    more = []
    while (asked := again.ask()) is not None:
        number, params = asked
        assert number >= 12
        check(params)
        more.append(params)
        again.tell(number, 0.0)
    assert len(more) == 8


def test_encode_round_trips_sampled_values() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=9))
    for _ in range(50):
        trial = study.ask()
        params = sample(ALL_KINDS, trial)
        encoded = encode(ALL_KINDS, params)
        assert encoded is not None
        assert encoded[0]["__subspace__"] == trial.params["__subspace__"]
        for name, raw in encoded[0].items():
            if name.endswith((":u", ":lu", ":n", ":ln", ":lr")):
                assert math.isclose(raw, trial.params[name], rel_tol=1e-6, abs_tol=1e-9)


def test_unknown_algorithm() -> None:
    with pytest.raises(ConfigError, match="sampling algorithm"):
        make_sampler("hyperband", 0)
