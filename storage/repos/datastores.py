"""Datastores: names of the reference's datastores mapped to local folders."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, col, select

from storage.tables import Datastore


def create(*, session: Session, name: str, path: Path) -> Datastore:
    row = Datastore(name=name, path=str(path))
    session.add(row)
    session.flush()
    return row


def get(*, session: Session, name: str) -> Datastore | None:
    return session.exec(select(Datastore).where(Datastore.name == name)).first()


def list_all(*, session: Session) -> list[Datastore]:
    return list(session.exec(select(Datastore).order_by(col(Datastore.name))))


def mapping(*, session: Session) -> dict[str, Path]:
    """Every datastore's name and folder, as the importers resolve URLs with them."""
    return {row.name: Path(row.path) for row in list_all(session=session)}


def delete(*, session: Session, name: str) -> bool:
    row = get(session=session, name=name)
    if row is not None:
        session.delete(row)
    return row is not None
