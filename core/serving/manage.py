"""Endpoint and deployment bookkeeping shared by `kestrel endpoint …` and the studio: names, keys,
deployments and traffic, checked and written in the caller's transaction. Torch-free and process-free:
starting or stopping a server is core.serving.runner's job."""

from __future__ import annotations

import re
import secrets
from typing import Any

from sqlmodel import Session

from core.base.errors import ConfigError, NotFound
from core.inference.models import resolve
from core.serving.runner import scoring_uri
from storage.repos import models
from storage.tables import Deployment, Endpoint, ModelVersion

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
KEY_TYPES = ("primary", "secondary")


def check_name(value: str, what: str) -> str:
    """``value`` when it is a valid model, endpoint or deployment name; else a ConfigError at ``what``."""
    if not NAME.match(value):
        raise ConfigError(what, f"{value!r} is not a valid name; use letters, digits, '.', '_' and '-' (up to 63)")
    return value


def get_endpoint(session: Session, name: str, hint: str = "") -> Endpoint:
    row = models.get_endpoint(session=session, name=name)
    if row is None:
        raise NotFound(f"endpoint {name} does not exist" + hint)
    return row


def endpoint_info(session: Session, name: str) -> dict[str, Any]:
    """What `kestrel endpoint show` prints: URLs, state, process, traffic and deployments."""
    row = get_endpoint(session, name, "; `kestrel endpoint list` shows them")
    deployed = []
    for d in models.deployments(session=session, endpoint_id=row.id):
        version = session.get(ModelVersion, d.model_version_id)
        assert version is not None  # a foreign key
        model = models.model_of(session=session, version=version)
        deployed.append({"name": d.name, "model": f"{model.name}:{version.version}", "task": model.task})
    uri = scoring_uri(row.host, row.port)
    return {"name": row.name, "scoring_uri": uri, "openapi_uri": uri.replace("/score", "/docs"), "state": row.state,
            "port": row.port, "pid": row.pid, "traffic": row.traffic, "deployments": deployed}


def create_endpoint(*, session: Session, name: str) -> Endpoint:
    """A new endpoint row with two fresh keys; its server is started separately."""
    if models.get_endpoint(session=session, name=check_name(name, "NAME")) is not None:
        raise ConfigError("NAME", f"endpoint {name} exists already", hints=["kestrel endpoint show " + name])
    row = Endpoint(name=name, primary_key=secrets.token_urlsafe(32), secondary_key=secrets.token_urlsafe(32))
    session.add(row)
    session.flush()
    return row


def add_deployment(*, session: Session, endpoint: str, name: str, model: str) -> Deployment:
    """Deploy model version ``model`` (NAME[:VERSION]) as ``name`` behind ``endpoint``; the first deployment
    takes all traffic. The server loads its models at start, so restart it afterwards."""
    row = get_endpoint(session, endpoint, f"; create it with `kestrel endpoint create {endpoint}`")
    if any(d.name == name for d in models.deployments(session=session, endpoint_id=row.id)):
        raise ConfigError("--name", f"endpoint {endpoint} has a deployment {name} already")
    version = resolve(session, model)
    deployment = Deployment(endpoint_id=row.id, name=check_name(name, "--name"), model_version_id=version.id)
    session.add(deployment)
    if not row.traffic:
        row.traffic = {name: 100}
        session.add(row)
    session.flush()
    return deployment


def keys(session: Session, name: str) -> dict[str, str]:
    row = get_endpoint(session, name)
    return {"primary_key": row.primary_key, "secondary_key": row.secondary_key}


def regenerate_key(*, session: Session, name: str, key_type: str) -> dict[str, str]:
    """Replace the ``key_type`` key of ``name``; the old one stops working at the next request."""
    if key_type not in KEY_TYPES:
        raise ConfigError("--key-type", f"{key_type!r} is not a key", KEY_TYPES)
    row = get_endpoint(session, name)
    setattr(row, f"{key_type}_key", secrets.token_urlsafe(32))
    session.add(row)
    return keys(session, name)


def parse_traffic(text: str) -> dict[str, int]:
    """``blue=70,green=30`` as {deployment: percent}."""
    split: dict[str, int] = {}
    for part in text.split(","):
        dep, _, share = part.partition("=")
        if not share.strip().isdigit():
            raise ConfigError("--traffic", f"{part!r} is not DEPLOYMENT=PERCENT", hints=["blue=70,green=30"])
        split[dep.strip()] = int(share)
    return split


def check_traffic(split: dict[str, int]) -> dict[str, int]:
    if any(share < 0 for share in split.values()):
        raise ConfigError("--traffic", "a percentage cannot be negative")
    if sum(split.values()) > 100:
        raise ConfigError("--traffic", f"the percentages add up to {sum(split.values())}; at most 100")
    return split


def set_traffic(*, session: Session, name: str, split: dict[str, int]) -> None:
    """Split ``name``'s traffic by ``split`` (sum ≤ 100); the server reads it at the next request."""
    check_traffic(split)
    row = get_endpoint(session, name)
    known = {d.name for d in models.deployments(session=session, endpoint_id=row.id)}
    for dep in split:
        if dep not in known:
            raise ConfigError("--traffic", f"endpoint {name} has no deployment {dep!r}", sorted(known))
    row.traffic = split
    session.add(row)


def delete_rows(*, session: Session, name: str) -> None:
    """Delete endpoint ``name`` and its deployments (the models stay registered); stop its server first."""
    row = get_endpoint(session, name)
    for d in models.deployments(session=session, endpoint_id=row.id):
        session.delete(d)
    session.delete(row)
