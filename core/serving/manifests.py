"""Endpoint and deployment files in the reference's managed online schema (what `az ml online-endpoint
create --file` and `az ml online-deployment create --file` read), for `kestrel endpoint create --file`
and `kestrel deployment create --file`.

What applies on this machine is used; what only a cloud has (instance types, probes, scale settings) is
accepted with a notice, so a person's files work unchanged; anything else is refused by name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.base.errors import ConfigError
from core.base.strict_yaml import load_yaml

MAX_FILE_BYTES = 256 * 1024  # a few hundred bytes in practice

ENDPOINT_USED = ("$schema", "name", "auth_mode", "description", "tags")
ENDPOINT_CLOUD = ("identity", "public_network_access", "traffic", "mirror_traffic", "kind", "compute")
DEPLOYMENT_USED = ("$schema", "name", "endpoint_name", "model", "request_settings", "description", "tags", "type")
DEPLOYMENT_CLOUD = ("instance_type", "instance_count", "liveness_probe", "readiness_probe", "scale_settings",
                    "app_insights_enabled", "egress_public_network_access", "environment_variables",
                    "data_collector", "code_configuration", "environment", "resources", "private_network_connection")
REQUEST_SETTINGS = ("request_timeout_ms", "max_concurrent_requests_per_instance", "max_queue_wait_ms")
CLOUD_WHY = {
    "code_configuration": "Kestrel serves the model with its own scorer; your scoring script is not run",
    "environment": "Kestrel serves from its own Python environment",
    "traffic": "set it once deployments exist: `kestrel endpoint update NAME --traffic blue=100`",
    "instance_count": "one server process serves each endpoint here",
}


@dataclass(frozen=True)
class EndpointFile:
    name: str
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DeploymentFile:
    name: str
    endpoint: str
    model: str
    request_timeout_ms: int | None = None
    max_concurrent_requests: int | None = None
    notices: list[str] = field(default_factory=list)


def read_endpoint_file(path: Path) -> EndpointFile:
    doc = _read(path)
    notices = _check_keys(doc, path, ENDPOINT_USED, ENDPOINT_CLOUD)
    auth = str(doc.get("auth_mode", "key")).lower()
    if auth != "key":
        notices.append(f"auth_mode {auth!r}: Kestrel endpoints take keys (`kestrel endpoint keys NAME`)")
    return EndpointFile(_text(doc, "name", path), notices)


def read_deployment_file(path: Path) -> DeploymentFile:
    doc = _read(path)
    notices = _check_keys(doc, path, DEPLOYMENT_USED, DEPLOYMENT_CLOUD)
    model = doc.get("model")
    if not isinstance(model, str):
        raise ConfigError(f"{path.name}: model", "give a registered model version",
                          hints=["azureml:NAME:VERSION", "azureml:NAME@latest",
                                 "register a folder first with `kestrel model register`"])
    settings = doc.get("request_settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{path.name}: request_settings", "must be a mapping", list(REQUEST_SETTINGS))
    for key in settings:
        if key not in REQUEST_SETTINGS:
            raise ConfigError(f"{path.name}: request_settings.{key}", "unknown key", list(REQUEST_SETTINGS),
                              difflib.get_close_matches(str(key), REQUEST_SETTINGS, n=2))
    if "max_queue_wait_ms" in settings:
        notices.append("request_settings.max_queue_wait_ms does not apply here: requests wait in one queue, "
                       "bounded by request_timeout_ms")
    return DeploymentFile(
        _text(doc, "name", path), _text(doc, "endpoint_name", path), model,
        _count(settings, "request_timeout_ms", path), _count(settings, "max_concurrent_requests_per_instance", path),
        notices)


def _read(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(path.name, f"is {path.stat().st_size:,} bytes; an endpoint or deployment file is a "
                              "few hundred")
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--file", f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(path.name, "is not UTF-8 text; save it as UTF-8") from None
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc.path}", exc.reason, exc.allowed, exc.hints) from None
    if not isinstance(doc, dict):
        raise ConfigError(path.name, "must be a YAML mapping with at least name")
    return doc


def _check_keys(doc: dict[str, Any], path: Path, used: tuple[str, ...], cloud: tuple[str, ...]) -> list[str]:
    notices = []
    for key in doc:
        if key in cloud:
            why = CLOUD_WHY.get(key, "it only applies in a cloud; here the server runs on this machine")
            notices.append(f"{key} does not apply here: {why}")
        elif key not in used:
            known = [*used, *cloud]
            raise ConfigError(f"{path.name}: {key}", "unknown key", known,
                              difflib.get_close_matches(str(key), known, n=2))
    return notices


def _text(doc: dict[str, Any], key: str, path: Path) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path.name}: {key}", "required: a name of letters, digits, '.', '_' and '-'")
    return value


def _count(settings: dict[str, Any], key: str, path: Path) -> int | None:
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path.name}: request_settings.{key}", f"{value!r} must be a whole number, 1 or more")
    return value
