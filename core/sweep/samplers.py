"""Sampling algorithms (random, grid, bayesian) behind one small ask/tell Sweeper over an in-memory optuna Study.

random   -> optuna RandomSampler(seed)
bayesian -> optuna TPESampler(seed, multivariate=True, group=True): group=True makes TPE model each
            conditional sub-space (one per model) on its own
grid     -> our own enumeration (space.iter_grid), walked lazily and served one by one in order; ask() returns
            None when it is spent

Higher metric is better (direction maximize). A restarted worker rebuilds the same sweep with
``Sweeper.restore([(params, value), ...])``; failed trials are passed with value None.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import optuna

from core.base.errors import ConfigError
from core.sweep.space import Space, encode, grid_size, iter_grid, normalize, sample

ALGORITHMS = ("random", "grid", "bayesian")


def make_sampler(algorithm: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The optuna sampler for a sampling algorithm (grid draws nothing from it: the Sweeper serves the grid)."""
    if algorithm in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "bayesian":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    raise ConfigError("sweep.sampling_algorithm", f"unknown sampling algorithm {algorithm!r}", ALGORITHMS)


class Sweeper:
    """ask() -> (number, params) | None; tell(number, value | None). Numbers are optuna trial numbers."""

    def __init__(self, space: Space, algorithm: str = "random", seed: int | None = None,
                 max_trials: int | None = None) -> None:
        if not space:
            raise ConfigError("search_space", "is empty; give at least one sub-space")
        self.space = normalize(space)
        self.algorithm = algorithm
        self.max_trials = max_trials
        sampler = make_sampler(algorithm, seed)
        self._grid: Iterator[dict[str, Any]] | None = None
        if algorithm == "grid":
            grid_size(self.space)  # refuses a non-choice axis now, as building the list used to
            # An iterator, not a list: a grid of millions of points would otherwise be built in full
            # before the first trial (and again after every worker restart).
            self._grid = iter_grid(self.space)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self._pending: dict[int, optuna.Trial] = {}
        self._served: list[dict[str, Any]] = []  # grid configs already run (restored or asked)

    @property
    def asked(self) -> int:
        """Trials asked for or restored; enqueued ones wait in the study until asked."""
        return sum(t.state != optuna.trial.TrialState.WAITING for t in self.study.trials)

    def ask(self) -> tuple[int, dict[str, Any]] | None:
        if self.max_trials is not None and self.asked >= self.max_trials:
            return None
        if self._grid is not None:
            config = next((c for c in self._grid if c not in self._served), None)  # restored points skip
            if config is None:
                return None
            self._served.append(config)
            encoded = encode(self.space, config)
            assert encoded is not None
            self.study.enqueue_trial(encoded[0])  # the trial records its grid point as ordinary optuna params
            trial = self.study.ask()
            params = sample(self.space, trial)
        else:
            trial = self.study.ask()
            params = sample(self.space, trial)
        self._pending[trial.number] = trial
        return trial.number, params

    def enqueue(self, params: Mapping[str, Any]) -> None:
        """Make a coming ask() return ``params``, a point of the space (AutoMode's known-good configurations)."""
        encoded = encode(self.space, params)
        if encoded is None:
            raise ValueError(f"{dict(params)} is not a point of the search space")
        self.study.enqueue_trial(encoded[0])

    def tell(self, number: int, value: float | None) -> None:
        """Report a trial's final metric; None (or NaN) marks it failed."""
        trial = self._pending.pop(number)
        if value is None or value != value:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, float(value))

    def reserve(self, params: Mapping[str, Any]) -> None:
        """A grid point a trial already holds (one queued to run again after a restart): asks skip it."""
        if self._grid is not None:
            self._served.append(dict(params))

    def restore(self, results: Iterable[tuple[Mapping[str, Any], float | None]]) -> int:
        """Add finished trials from before a restart; returns how many were taken (params outside the space skip)."""
        taken = 0
        for params, value in results:
            encoded = encode(self.space, params)
            if encoded is None:
                continue
            failed = value is None or value != value
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=encoded[0],
                    distributions=encoded[1],
                    value=None if failed else float(value),
                    state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
                )
            )
            if self._grid is not None:
                self._served.append(dict(params))
            taken += 1
        return taken
