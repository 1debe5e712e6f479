"""The job file of SPEC §3: the reference's CLI v2 AutoML image job YAML, parsed into frozen
models. Every refusal is a ConfigError whose path is the YAML field path (``limits.max_trials``,
``search_space[0].learning_rate.min_value``) and says what is allowed.

A job file comes from anyone who can run ``kestrel job submit``, so it is read with
`core.base.strict_yaml` (no key twice, no alias bomb) and its counts refuse yes/no values."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo

from core.base.errors import ConfigError, config_error
from core.base.params import TrainingParams, check_names, resolve_params
from core.base.strict_yaml import load_yaml
from core.base.tasks import Task, parse_task, spec
from core.sweep.distributions import Choice, is_distribution, parse_entry

_CLASSIFICATION_METRICS = ["accuracy", "AUC_weighted", "average_precision_score_weighted",
                           "norm_macro_recall", "precision_score_weighted"]
PRIMARY_METRICS: dict[Task, list[str]] = {
    Task.CLASSIFICATION: _CLASSIFICATION_METRICS,
    Task.MULTILABEL: ["iou", *_CLASSIFICATION_METRICS],
    Task.DETECTION: ["mean_average_precision"],
    Task.SEGMENTATION: ["mean_average_precision"],
}
_REGISTERED = re.compile(r"^(?:azureml:)?(?P<name>[A-Za-z0-9_.\-]+)(?:(?::(?P<version>[A-Za-z0-9_.\-]+))|@latest)?$")
_REMOTE = ("azureml://", "http://", "https://", "wasbs://", "abfss://", "adl://")


def _no_bool(value: Any, info: ValidationInfo) -> Any:
    """YAML reads ``true`` as a boolean, which pydantic would take as 1: a count or a time must be a number."""
    if isinstance(value, bool):
        raise ValueError(f"a yes/no value is not a number; write a whole number, e.g. {info.field_name}: 10")
    return value


Count = Annotated[int, BeforeValidator(_no_bool)]
MaybeCount = Annotated[int | None, BeforeValidator(_no_bool)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DataRef(_Frozen):
    """A local MLTable/file/folder (``path``, absolute) or a registered dataset (``name`` + ``version``;
    version None means latest)."""

    type: Literal["mltable", "uri_file", "uri_folder"] = "mltable"
    path: Path | None = None
    name: str | None = None
    version: str | None = None

    @property
    def is_registered(self) -> bool:
        return self.name is not None

    def to_data(self) -> dict[str, Any]:
        if self.name is None:
            return {"path": str(self.path), "type": self.type}
        ref = f"azureml:{self.name}:{self.version}" if self.version else f"azureml:{self.name}@latest"
        return {"path": ref, "type": self.type}


class Limits(_Frozen):
    max_trials: Count = Field(1, ge=1, le=1000)
    max_concurrent_trials: Count = Field(1, ge=1, le=100)
    timeout_minutes: Count = Field(10080, ge=1)  # 7 days
    trial_timeout_minutes: MaybeCount = Field(None, ge=1)
    max_nodes: MaybeCount = Field(None, ge=1)  # accepted and ignored: one local machine


class EarlyTermination(_Frozen):
    type: Literal["bandit", "median_stopping", "truncation_selection"]
    evaluation_interval: Count = Field(1, ge=1)
    delay_evaluation: Count = Field(0, ge=0)
    slack_factor: float | None = Field(None, gt=0)
    slack_amount: float | None = Field(None, gt=0)
    truncation_percentage: MaybeCount = Field(None, ge=1, le=99)


class Sweep(_Frozen):
    sampling_algorithm: Literal["random", "grid", "bayesian"] = "random"
    early_termination: EarlyTermination | None = None


class JobSpec(_Frozen):
    schema_: str | None = None  # ``$schema`` in the YAML
    type: Literal["automl"] = "automl"
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    experiment_name: str | None = None
    tags: dict[str, str] = {}
    log_verbosity: str | None = None
    compute: str | None = None  # where the reference runs it; local here, kept for the record
    task: Task
    primary_metric: str
    target_column_name: str | None = None
    training_data: DataRef
    validation_data: DataRef | None = None
    validation_data_size: float | None = None
    test_data: DataRef | None = None  # scored with the best trial's model once the trials end
    limits: Limits = Limits()
    training_parameters: dict[str, Any] = {}  # as written in the YAML
    params: TrainingParams  # training_parameters resolved over the task's defaults
    sweep: Sweep | None = None
    search_space: tuple[dict[str, Any], ...] = ()  # per sub-space: name -> Distribution | fixed value
    outputs: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None

    @property
    def notices(self) -> list[str]:
        """What the file asks that does not apply on this machine: accepted, and said."""
        said = []
        if self.compute:
            said.append(f"compute {self.compute!r} does not apply here: the job runs on this machine's worker")
        for key in sorted(self.resources or {}):
            said.append(f"resources.{key} does not apply here: trials use this machine's GPUs or CPU cores")
        for key in sorted(set(self.properties or {}) - {"node_count_per_trial"}):
            said.append(f"properties.{key} is kept with the job but changes nothing here")
        return said

    @property
    def mode(self) -> Literal["single", "automode", "sweep"]:
        """single: one trial (a search space, if any, is sampled once); automode: the system picks
        models and hyperparameters; sweep: trials sampled from ``search_space``."""
        if self.limits.max_trials == 1:
            return "single"
        return "sweep" if self.search_space else "automode"

    @property
    def sampling_algorithm(self) -> str:
        return self.sweep.sampling_algorithm if self.sweep else "random"

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"$schema": self.schema_, "type": self.type}
        for key in ("name", "display_name", "description", "experiment_name", "tags", "log_verbosity",
                    "compute", "task", "primary_metric", "target_column_name"):
            out[key] = getattr(self, key)
        out["task"] = self.task.value
        out["training_data"] = self.training_data.to_data()
        out["validation_data"] = self.validation_data.to_data() if self.validation_data else None
        out["validation_data_size"] = self.validation_data_size
        out["test_data"] = self.test_data.to_data() if self.test_data else None
        out["limits"] = self.limits.model_dump(mode="json", exclude_none=True)
        out["training_parameters"] = dict(self.training_parameters)
        out["sweep"] = self.sweep.model_dump(mode="json", exclude_none=True) if self.sweep else None
        out["search_space"] = [{k: v.to_data() if is_distribution(v) else v for k, v in sub.items()}
                               for sub in self.search_space]
        out["outputs"], out["resources"], out["properties"] = self.outputs, self.resources, self.properties
        return {k: v for k, v in out.items() if v not in (None, {}, [])}

    def to_yaml(self) -> str:
        """An equivalent job file (local data paths written absolute): ``parse_job(to_yaml()) == self``."""
        return yaml.safe_dump(self.to_data(), sort_keys=False, allow_unicode=True)


# Job types of the reference that run a person's own code, and what to do in Kestrel instead.
OTHER_JOB_TYPES = {
    "pipeline": "run your own training code step by step; Kestrel runs AutoML jobs (type: automl): write the "
                "pipeline's AutoML step (task, training_data, limits) as a job file of its own",
    "command": "run your own script; Kestrel runs AutoML jobs (type: automl): run the script with python "
               "directly, or describe the task and data in an AutoML job",
    "sweep": "tune your own script; in Kestrel a type: automl job with sweep: and search_space: tunes the "
             "zoo's models",
}
TOP_LEVEL = ["$schema", *[k for k in JobSpec.model_fields if k not in ("schema_", "params")]]


def parse_job(yaml_text: str, base_dir: Path) -> JobSpec:
    """Parse and check a job file; local data paths are resolved against ``base_dir``."""
    try:
        doc = load_yaml(yaml_text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("job", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:  # the parser itself recurses once per level
        raise ConfigError("job", "nested too deeply to read; a job file needs a few levels") from None
    if not isinstance(doc, dict):
        raise ConfigError("job", "must be a YAML mapping with at least type, task and training_data")
    if doc.get("type") in OTHER_JOB_TYPES:
        raise ConfigError("type", f"{doc['type']!r} jobs {OTHER_JOB_TYPES[doc['type']]}", ["automl"])
    for key in doc:
        if key not in TOP_LEVEL:
            raise ConfigError(str(key), "unknown job key", TOP_LEVEL,
                              difflib.get_close_matches(str(key), TOP_LEVEL, n=3))
    if doc.get("type") != "automl":
        raise ConfigError("type", f"{doc.get('type')!r} is not supported", ["automl"])
    if "task" not in doc:
        raise ConfigError("task", "required", [t.value for t in Task])
    task = parse_task(str(doc["task"]))
    metric = _primary_metric(task, doc.get("primary_metric"))
    if "training_data" not in doc:
        raise ConfigError("training_data", "required: {path: ./train-mltable-folder, type: mltable}")
    size = doc.get("validation_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int | float) or not 0 < size < 1):
        raise ConfigError("validation_data_size", f"{size!r} must be a fraction between 0 and 1, e.g. 0.2")
    limits = _model(Limits, doc.get("limits") or {}, "limits")
    if limits.max_concurrent_trials > limits.max_trials:  # the reference caps it, silently
        limits = limits.model_copy(update={"max_concurrent_trials": limits.max_trials})
    raw_params = _mapping(doc.get("training_parameters") or {}, "training_parameters")
    check_names(raw_params)
    sweep = _sweep(doc["sweep"]) if doc.get("sweep") is not None else None
    space = _search_space(doc.get("search_space"), sweep)
    tags = _mapping(doc.get("tags") or {}, "tags")
    text = {k: None if doc.get(k) is None else str(doc[k])
            for k in ("name", "display_name", "description", "experiment_name", "log_verbosity", "compute",
                      "target_column_name")}
    return JobSpec(
        schema_=doc.get("$schema"), task=task, primary_metric=metric, **text,
        tags={str(k): str(v) for k, v in tags.items()},
        training_data=_data_ref(doc["training_data"], "training_data", base_dir),
        validation_data=_data_ref(doc["validation_data"], "validation_data", base_dir)
        if doc.get("validation_data") is not None else None,
        test_data=_data_ref(doc["test_data"], "test_data", base_dir) if doc.get("test_data") is not None else None,
        validation_data_size=size, limits=limits, training_parameters=raw_params,
        params=resolve_params(task, raw_params), sweep=sweep, search_space=space,
        outputs=_mapping(doc["outputs"], "outputs") if doc.get("outputs") is not None else None,
        resources=_mapping(doc["resources"], "resources") if doc.get("resources") is not None else None,
        properties=_properties(doc.get("properties")),
    )


def _properties(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    properties = _mapping(value, "properties")
    nodes = properties.get("node_count_per_trial", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ConfigError("properties.node_count_per_trial", f"{nodes!r} must be a whole number of machines, 1 or more")
    if nodes > 1:
        raise ConfigError("properties.node_count_per_trial", f"{nodes} machines per trial: Kestrel trains a trial "
                          "on one machine, on its GPUs or its CPU",
                          hints=["leave properties.node_count_per_trial out (or 1)",
                                 "training_parameters.devices: N trains one trial on N GPUs of one machine",
                                 "limits.max_concurrent_trials runs several trials at once instead"])
    return {str(k): v for k, v in properties.items()}


def _primary_metric(task: Task, value: Any) -> str:
    allowed = PRIMARY_METRICS[task]
    if value is None:
        return spec(task).primary_metric
    for name in allowed:  # the reference's spelling wins; accept any case
        if str(value).lower() == name.lower():
            return name
    raise ConfigError("primary_metric", f"{value!r} is not a primary metric of {task.value}", allowed,
                      difflib.get_close_matches(str(value), allowed, n=2))


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping, got {type(value).__name__}")
    return value


def _model(cls: type[BaseModel], data: Any, path: str) -> Any:
    """Build ``cls`` from ``data``; pydantic's first complaint becomes a ConfigError at ``path.field``."""
    data = _mapping(data, path)
    try:
        return cls(**data)
    except ValidationError as exc:
        raise config_error(exc, path, list(cls.model_fields)) from None


def _data_ref(value: Any, path: str, base_dir: Path) -> DataRef:
    if isinstance(value, str):
        value = {"path": value}
    value = _mapping(value, path)
    for key in value:
        if key not in ("path", "type"):
            raise ConfigError(f"{path}.{key}", "unknown key", ["path", "type"],
                              difflib.get_close_matches(str(key), ["path", "type"]))
    kind = str(value.get("type", "mltable")).lower()
    if kind not in ("mltable", "uri_file", "uri_folder"):
        raise ConfigError(f"{path}.type", f"{value.get('type')!r} is not a data type", ["mltable", "uri_file",
                                                                                      "uri_folder"])
    raw = value.get("path")
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{path}.path", "required: a local folder or a registered dataset NAME:VERSION",
                          hints=["./data/train-mltable-folder", "azureml:my-images:1"])
    raw = raw.strip()
    if raw.startswith(_REMOTE):
        raise ConfigError(f"{path}.path", f"{raw!r}: remote storage is not reachable here",
                          ["a local path", "azureml:NAME:VERSION", "azureml:NAME@latest", "NAME:VERSION"])
    local = (base_dir / Path(raw).expanduser()).resolve()
    if local.exists():
        return DataRef(type=kind, path=local)
    if registered := registered_dataset(raw):
        return DataRef(type=kind, name=registered[0], version=registered[1])
    raise ConfigError(f"{path}.path", f"{raw!r} does not exist (looked in {local})",
                      ["a local path", "azureml:NAME:VERSION", "azureml:NAME@latest", "NAME:VERSION"])


def registered_dataset(raw: str) -> tuple[str, str | None] | None:
    """Name and version (None for the latest) of ``azureml:NAME:VERSION``, ``azureml:NAME@latest``,
    ``azureml:NAME`` or ``NAME:VERSION``; None for anything else (a path)."""
    m = _REGISTERED.match(raw.strip())
    if m and (raw.strip().startswith("azureml:") or m.group("version")):
        return m.group("name"), m.group("version")
    return None


def _sweep(value: Any) -> Sweep:
    value = dict(_mapping(value, "sweep"))
    if isinstance(value.get("sampling_algorithm"), str):
        value["sampling_algorithm"] = value["sampling_algorithm"].lower()
    policy = value.pop("early_termination", None)
    sweep = _model(Sweep, value, "sweep")
    if policy is None:
        return sweep
    policy = dict(_mapping(policy, "sweep.early_termination"))
    if isinstance(policy.get("type"), str):
        policy["type"] = policy["type"].lower()
    path = "sweep.early_termination"
    if "type" not in policy:
        raise ConfigError(f"{path}.type", "required", ["bandit", "median_stopping", "truncation_selection"])
    et = _model(EarlyTermination, policy, path)
    slack = [k for k in ("slack_factor", "slack_amount") if getattr(et, k) is not None]
    if et.type == "bandit" and len(slack) != 1:
        raise ConfigError(f"{path}.slack_factor", "bandit needs exactly one of slack_factor or slack_amount",
                          ["slack_factor", "slack_amount"], hints=["slack_factor: 0.2"])
    if et.type != "bandit" and slack:
        raise ConfigError(f"{path}.{slack[0]}", f"only bandit takes {slack[0]}")
    if et.type == "truncation_selection" and et.truncation_percentage is None:
        raise ConfigError(f"{path}.truncation_percentage", "required for truncation_selection (1..99)",
                          hints=["truncation_percentage: 20"])
    if et.type != "truncation_selection" and et.truncation_percentage is not None:
        raise ConfigError(f"{path}.truncation_percentage", "only truncation_selection takes it")
    return sweep.model_copy(update={"early_termination": et})


def _search_space(value: Any, sweep: Sweep | None) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if isinstance(value, dict):  # one sub-space written without the list
        value = [value]
    if not isinstance(value, list):
        raise ConfigError("search_space", "must be a list of sub-spaces (parameter name -> distribution)")
    algorithm = sweep.sampling_algorithm if sweep else "random"
    space = []
    for i, sub in enumerate(value):
        path = f"search_space[{i}]"
        sub = _mapping(sub, path)
        check_names(sub, path)
        entries = {}
        for name, raw in sub.items():
            entry = parse_entry(raw, f"{path}.{name}")
            _check_values(name, entry, f"{path}.{name}")
            if algorithm == "grid" and is_distribution(entry) and not isinstance(entry, Choice):
                raise ConfigError(f"{path}.{name}", f"grid sampling needs choice distributions, not {entry.type}",
                                  ["choice"], hints=[f"{{type: choice, values: [...]}} for {name}"])
            entries[name] = entry
        space.append(entries)
    # The reference limits bayesian sampling to one sub-space; ours (optuna's TPE with the sub-space
    # as its first, categorical choice) takes conditional spaces like random and grid do.
    return tuple(space)


def _check_values(name: str, entry: Any, path: str) -> None:
    """Fixed values and choice values must be valid values of the parameter."""
    values = list(entry.values) if isinstance(entry, Choice) else [] if is_distribution(entry) else [entry]
    for j, one in enumerate(values):
        try:
            TrainingParams(**{name: one})
        except ValidationError as exc:
            where = f"{path}.values[{j}]" if isinstance(entry, Choice) else path
            raise ConfigError(where, f"{one!r} is not valid: {exc.errors()[0]['msg']}") from None
