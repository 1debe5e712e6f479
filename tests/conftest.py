"""Each test gets a fresh KESTREL_HOME with a migrated SQLite database (migrated once per
session into a template file, copied per test). Trained models are not timed (seconds a trial) except
in the tests of that timing, which turn it on."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from storage.db import make_engine, upgrade
from storage.settings import Settings

os.environ.setdefault("KESTREL_MEASURE_LATENCY", "0")  # inherited by the processes tests start

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
if not SHARED.is_dir():  # CI checks main out beside shared/ as well; fall back to the known place
    SHARED = Path("/work/shared/datasets")


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "kestrel.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def settings(tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(template_db, home / "kestrel.db")
    monkeypatch.setenv("KESTREL_HOME", str(home))
    monkeypatch.delenv("KESTREL_DATABASE_URL", raising=False)
    return Settings()


@pytest.fixture
def engine(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings.db_url)
    yield engine
    engine.dispose()


class Cli:
    """Runs `kestrel ...` in-process against the test's KESTREL_HOME."""

    def __init__(self) -> None:
        from core.cli import app

        self.app, self.runner = app, CliRunner()

    def __call__(self, *args: str, ok: bool = True) -> tuple[int, str, str]:
        result = self.runner.invoke(self.app, [str(a) for a in args])
        if ok and result.exit_code != 0:
            raise AssertionError(f"kestrel {' '.join(map(str, args))} failed ({result.exit_code}):\n"
                                 f"{result.stdout}\n{result.stderr}\n{result.exception!r}")
        return result.exit_code, result.stdout, result.stderr

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json")[1])


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


@pytest.fixture(scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    """Training tests share two cores with other processes; two torch threads then run many
    times slower (ENVIRONMENT.md), so the module trains on one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sample_versions(tmp_path_factory: pytest.TempPathFactory, template_db: Path):  # type: ignore[no-untyped-def]
    """Builds sample dataset versions once, in a home of their own:
    ``build(label, {name: (task, count, size)}) -> {name: VersionData}``."""
    from core.data.importer import ImportOptions, import_dataset
    from core.data.samples import write_sample
    from core.data.view import load_version
    from storage.artifacts import BlobStore
    from storage.db import session_scope

    def build(label: str, wanted: dict) -> dict:  # type: ignore[type-arg]
        home = tmp_path_factory.mktemp(label) / "home"
        home.mkdir()
        shutil.copyfile(template_db, home / "kestrel.db")
        settings = Settings(home=home)
        engine = make_engine(settings.db_url)
        out = {}
        for name, (task, count, size) in wanted.items():
            jsonl = write_sample(task, home.parent / name, count=count, size=size)
            import_dataset(jsonl, ImportOptions(name, task), settings=settings, engine=engine)
            with session_scope(engine) as session:
                out[name] = load_version(session=session, blobs=BlobStore(settings.blobs_dir), name=name)
        engine.dispose()
        return out

    return build
