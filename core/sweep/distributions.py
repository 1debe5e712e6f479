"""Search-space distributions of the reference's CLI v2 sweep syntax (SPEC §3).

A search-space entry is either a fixed value or one of::

    {type: choice, values: [...]}                      choice(a, b, ...)
    {type: uniform|loguniform, min_value, max_value}   uniform(lo, hi)
    {type: normal|lognormal, mu, sigma}                normal(mu, sigma)
    {type: quniform|qloguniform, min_value, max_value, q}
    {type: randint, upper}                             randint(upper)

As in the reference, ``loguniform``/``qloguniform`` bounds and ``lognormal`` parameters are in
log space (the sampled value is ``exp(uniform(min_value, max_value))``); ``randint`` draws from
``0 .. upper-1``. Sampling itself lives in ``core.sweep.samplers``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from core.base.errors import ConfigError, config_error


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Choice(_Dist):
    type: Literal["choice"] = "choice"
    values: tuple[Any, ...]

    @model_validator(mode="after")
    def _check(self) -> Choice:
        if not self.values:
            raise ValueError("values: give at least one value")
        return self


class Uniform(_Dist):
    type: Literal["uniform", "loguniform"] = "uniform"
    min_value: float
    max_value: float

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        if not self.min_value < self.max_value:
            raise ValueError("min_value: must be below max_value")
        return self


class Normal(_Dist):
    type: Literal["normal", "lognormal"] = "normal"
    mu: float
    sigma: float

    @model_validator(mode="after")
    def _check(self) -> Normal:
        if not self.sigma > 0:
            raise ValueError("sigma: must be > 0")
        return self


class QUniform(_Dist):
    type: Literal["quniform", "qloguniform"] = "quniform"
    min_value: float
    max_value: float
    q: int | float  # an integer step gives integer values (e.g. min_size)

    @model_validator(mode="after")
    def _check(self) -> QUniform:
        if not self.min_value < self.max_value:
            raise ValueError("min_value: must be below max_value")
        if not self.q > 0:
            raise ValueError("q: must be > 0")
        return self


class RandInt(_Dist):
    type: Literal["randint"] = "randint"
    upper: int

    @model_validator(mode="after")
    def _check(self) -> RandInt:
        if self.upper < 1:
            raise ValueError("upper: must be >= 1")
        return self


Distribution = Choice | Uniform | Normal | QUniform | RandInt
KINDS: dict[str, type[_Dist]] = {
    "choice": Choice, "uniform": Uniform, "loguniform": Uniform, "normal": Normal, "lognormal": Normal,
    "quniform": QUniform, "qloguniform": QUniform, "randint": RandInt,
}
# positional arguments of the string form, e.g. ``uniform(0.001, 0.01)``
_POSITIONAL = {Uniform: ("min_value", "max_value"), Normal: ("mu", "sigma"),
               QUniform: ("min_value", "max_value", "q"), RandInt: ("upper",)}
_CALL = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$", re.S)


def is_distribution(value: Any) -> bool:
    return isinstance(value, Choice | Uniform | Normal | QUniform | RandInt)


def parse_entry(value: Any, path: str) -> Any:
    """A search-space entry: a Distribution, or the fixed value itself. Errors name ``path``."""
    if isinstance(value, str) and (m := _CALL.match(value)) and m.group(1).lower() in KINDS:
        return _from_call(m.group(1).lower(), m.group(2), path)
    if not isinstance(value, dict) or "type" not in value:
        return value  # a fixed value
    kind = str(value["type"]).lower()
    if kind not in KINDS:
        raise ConfigError(f"{path}.type", f"unknown distribution {value['type']!r}", list(KINDS),
                          difflib.get_close_matches(kind, list(KINDS), n=2))
    return _build(KINDS[kind], {**value, "type": kind}, path)


def _from_call(kind: str, inner: str, path: str) -> Distribution:
    import yaml

    from core.base.strict_yaml import load_yaml

    try:  # strict: the arguments are a job file's text too, and could hide an alias bomb
        args = load_yaml(f"[{inner}]")
    except ConfigError as exc:
        raise ConfigError(path, f"{kind}(...): {exc.reason}") from None
    except RecursionError:
        raise ConfigError(path, f"the arguments of {kind}(...) are nested too deeply to read") from None
    except yaml.YAMLError:
        raise ConfigError(path, f"cannot read the arguments of {kind}({inner})",
                          hints=["choice(0.1, 0.2)", "uniform(0.001, 0.01)"]) from None
    cls = KINDS[kind]
    if cls is Choice:
        return _build(Choice, {"type": kind, "values": args}, path)
    names = _POSITIONAL[cls]
    if len(args) != len(names):
        raise ConfigError(path, f"{kind}() takes {len(names)} arguments ({', '.join(names)}), got {len(args)}")
    return _build(cls, {"type": kind, **dict(zip(names, args))}, path)


def _build(cls: type[_Dist], data: dict[str, Any], path: str) -> Any:
    try:
        return cls(**data)
    except ValidationError as exc:
        raise config_error(exc, path, list(cls.model_fields), f" for a {data['type']} distribution") from None
