"""Registered models and their versions; endpoints and their deployments."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from storage.tables import Deployment, Endpoint, ModelVersion, RegisteredModel


def add_version(*, session: Session, name: str, task: str, trial_id: int | None, metrics: dict[str, Any],
                settings: dict[str, Any], artifact_dir: str = "") -> ModelVersion:
    """The next version of model ``name`` (created on first use; its task never changes)."""
    model = session.exec(select(RegisteredModel).where(RegisteredModel.name == name)).first()
    if model is None:
        model = RegisteredModel(name=name, task=task)
        session.add(model)
        session.flush()
    elif model.task != task:
        raise ValueError(f"model {name} is a {model.task} model; a {task} model needs another name")
    latest = session.exec(select(ModelVersion.version).where(ModelVersion.model_id == model.id)
                          .order_by(col(ModelVersion.version).desc())).first()
    version = ModelVersion(model_id=model.id, version=(latest or 0) + 1, trial_id=trial_id, metrics=metrics,
                           settings=settings, artifact_dir=artifact_dir)
    session.add(version)
    session.flush()
    return version


def get_model(*, session: Session, name: str) -> RegisteredModel | None:
    return session.exec(select(RegisteredModel).where(RegisteredModel.name == name)).first()


def get_version(*, session: Session, name: str, version: int | None = None) -> ModelVersion | None:
    """Version ``version`` of model ``name``; its latest when ``version`` is None."""
    model = get_model(session=session, name=name)
    if model is None:
        return None
    query = select(ModelVersion).where(ModelVersion.model_id == model.id)
    if version is not None:
        query = query.where(ModelVersion.version == version)
    return session.exec(query.order_by(col(ModelVersion.version).desc())).first()


def list_models(*, session: Session) -> list[tuple[RegisteredModel, list[ModelVersion]]]:
    models = session.exec(select(RegisteredModel).order_by(col(RegisteredModel.name))).all()
    return [(m, list(session.exec(select(ModelVersion).where(ModelVersion.model_id == m.id)
                                  .order_by(col(ModelVersion.version))))) for m in models]


def model_of(*, session: Session, version: ModelVersion) -> RegisteredModel:
    model = session.get(RegisteredModel, version.model_id)
    assert model is not None
    return model


def get_endpoint(*, session: Session, name: str) -> Endpoint | None:
    return session.exec(select(Endpoint).where(Endpoint.name == name)).first()


def list_endpoints(*, session: Session) -> list[Endpoint]:
    return list(session.exec(select(Endpoint).order_by(col(Endpoint.name))))


def deployments(*, session: Session, endpoint_id: int) -> list[Deployment]:
    return list(session.exec(select(Deployment).where(Deployment.endpoint_id == endpoint_id)
                             .order_by(col(Deployment.name))))
