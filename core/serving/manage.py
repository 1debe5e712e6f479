"""Endpoint and deployment bookkeeping shared by `kestrel endpoint …` and the studio: names, keys,
deployments and traffic, checked and written in the caller's transaction. Torch-free and process-free:
starting, stopping or checking on a server is core.serving.runner's job.

Keys are stored sealed (storage.secrets): the database alone never reveals one."""

from __future__ import annotations

import re
import secrets
from typing import Any

from sqlmodel import Session

from core.base.errors import ConfigError, KestrelError, NotFound
from core.inference.models import resolve
from core.serving import runner
from core.serving.review import summary
from storage import secrets as sealed
from storage.repos import models, reviews
from storage.settings import Settings
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
        deployed.append({"name": d.name, "model": f"{model.name}:{version.version}", "task": model.task,
                         "request_settings": {"request_timeout_ms": d.request_timeout_ms,
                                              "max_concurrent_requests_per_instance": d.max_concurrent_requests}})
    uri = runner.scoring_uri(row.host, row.port)
    state = runner.shown_state(row)
    info = {"name": row.name, "scoring_uri": uri, "openapi_uri": uri.replace("/score", "/docs"), "state": state,
            "port": row.port, "pid": row.pid, "traffic": row.traffic, "deployments": deployed,
            "review": row.review or None,
            "review_pending": reviews.pending_count(session=session, endpoint_id=int(row.id or 0)),
            "confidence": {dep: summary(values) for dep, values in
                           reviews.confidences(session=session, endpoint_id=int(row.id or 0)).items()}}
    if state == runner.DOWN:
        info["hint"] = f"its server is not running; `kestrel endpoint start {row.name}`"
    return info


def create_endpoint(*, session: Session, name: str, settings: Settings) -> Endpoint:
    """A new endpoint row with two fresh keys; its server is started separately."""
    if models.get_endpoint(session=session, name=check_name(name, "NAME")) is not None:
        raise ConfigError("NAME", f"endpoint {name} exists already", hints=["kestrel endpoint show " + name])
    row = Endpoint(name=name, primary_key=_new_key(settings), secondary_key=_new_key(settings))
    session.add(row)
    session.flush()
    return row


def add_deployment(*, session: Session, endpoint: str, name: str, model: str, request_timeout_ms: int | None = None,
                   max_concurrent_requests: int | None = None, share: int | None = None) -> Deployment:
    """Deploy model version ``model`` (NAME[:VERSION] or NAME@latest) as ``name`` behind ``endpoint``, with
    the reference's request settings; the first deployment takes all traffic, a later one ``share`` percent
    of it (a canary: the others keep the rest in their proportions) or none. The server loads its models
    and settings at start, so restart it afterwards."""
    row = get_endpoint(session, endpoint, f"; create it with `kestrel endpoint create {endpoint}`")
    if any(d.name == name for d in models.deployments(session=session, endpoint_id=row.id)):
        raise ConfigError("--name", f"endpoint {endpoint} has a deployment {name} already")
    version = resolve(session, model)
    deployment = Deployment(endpoint_id=row.id, name=check_name(name, "--name"), model_version_id=version.id,
                            request_timeout_ms=request_timeout_ms, max_concurrent_requests=max_concurrent_requests)
    session.add(deployment)
    if not row.traffic:
        row.traffic = {name: 100}
    elif share is not None:
        row.traffic = canary_split(row.traffic, name, share)
    session.add(row)
    session.flush()
    return deployment


def keys(session: Session, name: str, settings: Settings) -> dict[str, str]:
    """Both keys of ``name`` in the clear; a key that cannot be unsealed is an error saying how to replace it."""
    row = get_endpoint(session, name)
    return {f"{kind}_key": unseal_key(row, kind, settings) for kind in KEY_TYPES}


def readable_keys(row: Endpoint, settings: Settings) -> dict[str, str | None]:
    """Both keys of ``row`` in the clear, None for one that cannot be unsealed with this secret (so the other
    still works while the lost one is regenerated)."""
    readable: dict[str, str | None] = {}
    for kind in KEY_TYPES:
        try:
            readable[f"{kind}_key"] = unseal_key(row, kind, settings)
        except KestrelError:
            readable[f"{kind}_key"] = None
    return readable


def unseal_key(row: Endpoint, kind: str, settings: Settings) -> str:
    try:
        return sealed.unseal(getattr(row, f"{kind}_key"), settings)
    except sealed.WrongSecret as exc:
        raise KestrelError(f"the {kind} key of endpoint {row.name} cannot be read with this secret: {exc}; make a "
                           f"new one with `kestrel endpoint regenerate-key {row.name} --key-type {kind}`") from None
    except sealed.SecretError as exc:
        raise KestrelError(f"the keys of endpoint {row.name} cannot be read: {exc}") from None


def regenerate_key(*, session: Session, name: str, key_type: str, settings: Settings) -> dict[str, str]:
    """Replace the ``key_type`` key of ``name``; the old one stops working at the next request. Returns the
    keys that can be read (the other one may still be sealed with a lost secret)."""
    if key_type not in KEY_TYPES:
        raise ConfigError("--key-type", f"{key_type!r} is not a key", KEY_TYPES)
    row = get_endpoint(session, name)
    setattr(row, f"{key_type}_key", _new_key(settings))
    session.add(row)
    return {kind: key for kind, key in readable_keys(row, settings).items() if key is not None}


def _new_key(settings: Settings) -> str:
    try:
        return sealed.seal(secrets.token_urlsafe(32), settings)
    except sealed.SecretError as exc:
        raise KestrelError(f"no endpoint key can be made: {exc}") from None


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


def canary_split(traffic: dict[str, int], name: str, share: int) -> dict[str, int]:
    """``share`` percent of the traffic to ``name``; the others keep the rest in their proportions (whole
    percentages, the rounding's remainder to the largest)."""
    if not 0 <= share <= 100:
        raise ConfigError("--traffic", f"{share} is not a percentage from 0 to 100")
    others = {dep: pct for dep, pct in traffic.items() if dep != name}
    total = sum(others.values())
    split = {dep: pct * (100 - share) // total for dep, pct in others.items()} if total else {}
    if split:
        largest = max(split, key=lambda dep: others[dep])
        split[largest] += 100 - share - sum(split.values())
    return {**split, name: share}


def set_review(*, session: Session, name: str, threshold: float | None, quota: int = 100) -> Endpoint:
    """Turn the review queue of ``name`` on (images scored below ``threshold`` are kept while fewer than
    ``quota`` wait) or off (``threshold`` None); the server reads it at the next request."""
    row = get_endpoint(session, name)
    if threshold is not None and not 0 < threshold <= 1:
        raise ConfigError("--threshold", f"{threshold} is not a confidence between 0 and 1", hints=["0.5"])
    if threshold is not None and not 1 <= quota <= 100_000:
        raise ConfigError("--quota", f"{quota} is not a number of images from 1 to 100000", hints=["100"])
    row.review = {"threshold": threshold, "quota": quota} if threshold is not None else {}
    session.add(row)
    return row


def delete_rows(*, session: Session, name: str) -> None:
    """Delete endpoint ``name`` with its deployments, review queue and confidences (the models stay
    registered); stop its server first."""
    row = get_endpoint(session, name)
    reviews.forget_endpoint(session=session, endpoint_id=int(row.id or 0))
    for d in models.deployments(session=session, endpoint_id=row.id):
        session.delete(d)
    session.delete(row)
