"""Search spaces: a list of sub-spaces (one per model, conditional), each {param: fixed value | Distribution}.

Distribution semantics follow the reference (Azure ML sweep distributions, CLI v2 ``type:`` names):

- ``choice(values)``               one of ``values``
- ``uniform(min_value, max_value)``  uniform on [min, max]
- ``loguniform(min_value, max_value)`` ``exp(uniform(min, max))`` — the bounds are *exponents*
- ``normal(mu, sigma)``            normal distribution
- ``lognormal(mu, sigma)``         ``exp(normal(mu, sigma))``
- ``quniform(min_value, max_value, q)``   ``round(uniform(min, max) / q) * q``
- ``qloguniform(min_value, max_value, q)`` ``round(exp(uniform(min, max)) / q) * q``
- ``randint(upper)``               integer in [0, upper)

optuna only draws the underlying numbers: every sampler (random, TPE) sees a categorical
``__subspace__`` first and then namespaced parameters ``"<index>:<param>"``, so sub-spaces never clash and
TPE's ``group=True`` learns each conditional space separately. Normal draws go through the inverse CDF of a
uniform number, so optuna never needs an unbounded distribution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from core.base.errors import ConfigError
from core.sweep.distributions import is_distribution, parse_entry

SUBSPACE = "__subspace__"
_EPS = 1e-9  # keeps the inverse normal CDF finite
_PRIMITIVE = (type(None), bool, int, float, str)

@dataclass(frozen=True)
class Draw:
    """How to draw one parameter: a parsed distribution's ``type`` and its arguments, keyed by the
    reference's YAML names. Parsing and validation live in `core.sweep.distributions`."""

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)


SubSpace = Mapping[str, Any]  # param -> fixed value | distribution
Space = Sequence[SubSpace]


def parse_space(raw: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The reference's YAML ``search_space`` list -> sub-spaces of parsed distributions and fixed values."""
    subs = [raw] if isinstance(raw, Mapping) else raw
    return [{name: parse_entry(value, f"search_space[{i}].{name}") for name, value in sub.items()}
            for i, sub in enumerate(subs)]


def _spec(value: Any) -> Any:
    if isinstance(value, Draw):
        return value
    if is_distribution(value):
        data = value.to_data()
        return Draw(data.pop("type"), data)
    return value


def normalize(space: Space) -> list[dict[str, Any]]:
    """Sub-spaces with every distribution as a Draw."""
    return [{name: _spec(value) for name, value in sub.items()} for sub in space]


def _name(index: int, param: str) -> str:
    return f"{index}:{param}"


def _primitive(values: Sequence[Any]) -> bool:
    return all(isinstance(value, _PRIMITIVE) for value in values)


def _quantize(x: float, q: Any) -> float | int:
    value = round(x / q) * q
    if isinstance(q, int) and not isinstance(q, bool):
        return int(value)
    return float(value)


def _optuna_distribution(dist: Draw) -> BaseDistribution:
    """The optuna distribution of the underlying number we ask optuna for."""
    a = dist.args
    if dist.kind == "choice":
        values = list(a["values"])
        return CategoricalDistribution(values if _primitive(values) else list(range(len(values))))
    if dist.kind in ("uniform", "loguniform", "quniform", "qloguniform"):
        return FloatDistribution(float(a["min_value"]), float(a["max_value"]))
    if dist.kind in ("normal", "lognormal"):
        return FloatDistribution(_EPS, 1 - _EPS)
    return IntDistribution(0, int(a["upper"]) - 1)  # randint


def _decode(dist: Draw, raw: Any) -> Any:
    """optuna's number -> the parameter value."""
    a = dist.args
    kind = dist.kind
    if kind == "choice":
        values = list(a["values"])
        return raw if _primitive(values) else values[raw]
    if kind == "uniform":
        return float(raw)
    if kind == "loguniform":
        return math.exp(raw)
    if kind in ("normal", "lognormal"):
        x = NormalDist(float(a["mu"]), float(a["sigma"])).inv_cdf(raw)
        return math.exp(x) if kind == "lognormal" else x
    if kind == "quniform":
        return _quantize(raw, a["q"])
    if kind == "qloguniform":
        return _quantize(math.exp(raw), a["q"])
    return int(raw)  # randint


def _encode(dist: Draw, value: Any) -> Any:
    """Parameter value -> optuna's number (inverse of _decode); raises ValueError when it cannot belong."""
    a = dist.args
    kind = dist.kind
    if kind == "choice":
        values = list(a["values"])
        if value not in values:
            raise ValueError(value)
        return value if _primitive(values) else values.index(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(value)
    if kind == "randint":
        if value != int(value) or not 0 <= value < int(a["upper"]):
            raise ValueError(value)
        return int(value)
    if kind in ("normal", "lognormal"):
        if kind == "lognormal":
            if value <= 0:
                raise ValueError(value)
            value = math.log(value)
        u = NormalDist(float(a["mu"]), float(a["sigma"])).cdf(value)
        return min(max(u, _EPS), 1 - _EPS)
    lo, hi = float(a["min_value"]), float(a["max_value"])
    x = float(value)
    if kind in ("loguniform", "qloguniform"):
        if x <= 0:
            if kind == "loguniform":
                raise ValueError(value)
            return lo  # qloguniform may round down to 0
        x = math.log(x)
    if kind in ("uniform", "loguniform") and not lo - 1e-9 <= x <= hi + 1e-9:
        raise ValueError(value)
    return min(max(x, lo), hi)  # quantized values may sit just outside the bounds


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high)


def sample(space: Space, trial: optuna.Trial) -> dict[str, Any]:
    """Draw one configuration: first a sub-space, then its parameters (namespaced so sub-spaces never clash)."""
    if not space:
        raise ConfigError("search_space", "is empty; give at least one sub-space")
    space = normalize(space)
    index = trial.suggest_categorical(SUBSPACE, list(range(len(space))))
    params: dict[str, Any] = {}
    for param, value in space[index].items():
        if isinstance(value, Draw):
            params[param] = _decode(value, _suggest(trial, _name(index, param), _optuna_distribution(value)))
        else:
            params[param] = value
    return params


def encode(space: Space, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, BaseDistribution]] | None:
    """Finished params -> (optuna params, optuna distributions) of the first sub-space they fit; None if none."""
    space = normalize(space)
    for index, sub in enumerate(space):
        if set(sub) != set(params):
            continue
        raw: dict[str, Any] = {SUBSPACE: index}
        dists: dict[str, BaseDistribution] = {SUBSPACE: CategoricalDistribution(list(range(len(space))))}
        try:
            for param, spec in sub.items():
                if isinstance(spec, Draw):
                    raw[_name(index, param)] = _encode(spec, params[param])
                    dists[_name(index, param)] = _optuna_distribution(spec)
                elif params[param] != spec:
                    raise ValueError(param)
        except ValueError:
            continue
        return raw, dists
    return None


def _axes(index: int, sub: SubSpace) -> tuple[list[str], list[list[Any]]]:
    """A normalized sub-space's parameter names and, for each, the values the grid walks."""
    names = list(sub)
    axes: list[list[Any]] = []
    for param in names:
        spec = sub[param]
        if isinstance(spec, Draw):
            if spec.kind != "choice":
                raise ConfigError(
                    f"search_space[{index}].{param}",
                    f"grid sampling needs choice distributions, got {spec.kind!r}",
                    ["choice"],
                )
            axes.append(list(spec.args["values"]))
        else:
            axes.append([spec])
    return names, axes


def grid_size(space: Space) -> int:
    """How many points ``grid`` has, counted from the lengths of the choices: a job file can describe
    billions of points in a few lines, so the count must never build them."""
    return sum(math.prod(len(axis) for axis in _axes(i, sub)[1]) for i, sub in enumerate(normalize(space)))


def iter_grid(space: Space) -> Iterator[dict[str, Any]]:
    """The points of ``grid`` one at a time, in the same order: a sweep serves at most max_trials of
    them, so it never needs to hold the whole product in memory."""
    for index, sub in enumerate(normalize(space)):
        names, axes = _axes(index, sub)
        for combo in itertools.product(*axes):
            yield dict(zip(names, combo))


def grid(space: Space) -> list[dict[str, Any]]:
    """Every configuration of every sub-space, in order: the cartesian product of its choices."""
    return list(iter_grid(space))
