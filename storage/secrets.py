"""Values the database must not reveal (endpoint keys), sealed with a secret kept outside it.

The database may be a shared server or be copied into a bug report, so a column alone must not give a
key away. The secret is ``KESTREL_SECRET_KEY`` when set, else the file ``KESTREL_HOME/secret.key``
(mode 0600), made on first need. Sealed values carry the ``fernet:`` prefix, which tells them apart
from rows written before they were sealed.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from storage.settings import Settings

PREFIX = "fernet:"
SECRET_FILE = "secret.key"
NEW_SECRET = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


class SecretError(ValueError):
    """The secret cannot be had: missing, unreadable, readable by others, or not a key."""


class WrongSecret(SecretError):
    """A value was sealed with another secret than the one configured now."""


def secret_path(settings: Settings) -> Path:
    return settings.home / SECRET_FILE


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def seal(text: str, settings: Settings) -> str:
    """``text`` encrypted with the secret (made now when there is none yet), as a ``fernet:`` value."""
    return PREFIX + _fernet(settings, create=True).encrypt(text.encode()).decode()


def unseal(value: str, settings: Settings) -> str:
    """The text of a sealed value; a value without the prefix (a row from before sealing) as it is."""
    if not is_sealed(value):
        return value
    try:
        return _fernet(settings, create=False).decrypt(value.removeprefix(PREFIX)).decode()
    except InvalidToken:
        raise WrongSecret(f"it was sealed with another secret than {_source(settings)} (lost or changed "
                          "since)") from None


def _source(settings: Settings) -> str:
    return "KESTREL_SECRET_KEY" if settings.secret_key is not None else str(secret_path(settings))


def _fernet(settings: Settings, *, create: bool) -> Fernet:
    if settings.secret_key is not None:
        return _key(settings.secret_key.get_secret_value().encode(), "KESTREL_SECRET_KEY",
                    f"set it to the output of {NEW_SECRET}")
    path = secret_path(settings)
    if create and not path.exists():
        _create(path)
    return _key(_read(path), str(path), "put back the file you had, or remove it and make new endpoint keys "
                                        "with `kestrel endpoint regenerate-key NAME`")


def _key(raw: bytes, source: str, fix: str) -> Fernet:
    try:
        return Fernet(raw.strip())
    except ValueError:
        raise SecretError(f"{source} is not a secret key (44 characters of URL-safe base64); {fix}") from None


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise SecretError(f"{path} can be read by other users (mode {stat.S_IMODE(mode):o}); it holds the "
                                  f"secret that keeps endpoint keys: run `chmod 600 {path}`")
            return handle.read(1024)
    except FileNotFoundError:
        raise WrongSecret(f"{path} is missing") from None
    except PermissionError:
        raise SecretError(f"{path} cannot be read by this user; it must belong to the user that runs "
                          f"Kestrel: `chown $USER {path}` and `chmod 600 {path}`") from None


def _create(path: Path) -> None:
    """Write a new secret to ``path`` with mode 0600 from the first byte; when another process makes one
    at the same moment, the first to land wins and both use it (os.link never replaces a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink(missing_ok=True)
