"""Each test gets a fresh KESTREL_HOME with a migrated SQLite database (migrated once per
session into a template file, copied per test). The storage, worker and sweep tests run on PostgreSQL
as well (a throwaway server, tests/throwaway_postgres.py; each test a database copied from a migrated
template); KESTREL_TEST_DATABASES=sqlite leaves it out, KESTREL_TEST_POSTGRES_URL names a server of
one's own. Trained models are not timed (seconds a trial) except in the tests of that timing, which
turn it on."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from storage.db import make_engine, upgrade
from storage.settings import Settings

os.environ.setdefault("KESTREL_MEASURE_LATENCY", "0")  # inherited by the processes tests start

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
if not SHARED.is_dir():  # CI checks main out beside shared/ as well; fall back to the known place
    SHARED = Path("/work/shared/datasets")


DATABASES = [d.strip() for d in os.environ.get("KESTREL_TEST_DATABASES", "sqlite,postgres").split(",") if d.strip()]
ON_BOTH = {"storage", "worker", "sweep"}  # test folders whose tests run on each of DATABASES (and those marked)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    test = metafunc.definition
    if "database" in metafunc.fixturenames and not test.get_closest_marker("sqlite_only") and (
            test.path.parent.name in ON_BOTH or test.get_closest_marker("both_databases")):
        metafunc.parametrize("database", DATABASES, indirect=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: checks what only SQLite has (its file, WAL, pragmas)")
    config.addinivalue_line("markers", "both_databases: runs on PostgreSQL as well (as storage, worker, sweep do)")


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres() -> Iterator[tuple[object, str]]:
    """A PostgreSQL server (throwaway unless KESTREL_TEST_POSTGRES_URL names one) with a migrated template
    database: (an autocommit engine on it, the server's URL without a database)."""
    from sqlalchemy import create_engine, text
    from throwaway_postgres import ThrowawayPostgres

    given = os.environ.get("KESTREL_TEST_POSTGRES_URL")
    server = None if given else ThrowawayPostgres().start()
    url = given or server.url()  # type: ignore[union-attr]
    base = url.rsplit("/", 1)[0]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS kestrel_template WITH (FORCE)"))
        connection.execute(text("CREATE DATABASE kestrel_template"))
    template = make_engine(f"{base}/kestrel_template")
    upgrade(template)
    template.dispose()
    yield admin, base
    admin.dispose()
    if server is not None:
        server.stop()


_names = itertools.count()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "kestrel.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def settings(tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch, database: str,
             request: pytest.FixtureRequest) -> Iterator[Settings]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KESTREL_HOME", str(home))
    if database == "sqlite":
        shutil.copyfile(template_db, home / "kestrel.db")
        monkeypatch.delenv("KESTREL_DATABASE_URL", raising=False)
        yield Settings()
        return
    from sqlalchemy import text

    admin, base = request.getfixturevalue("postgres")
    name = f"test_{os.getpid()}_{next(_names)}"
    with admin.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(text(f"CREATE DATABASE {name} TEMPLATE kestrel_template"))
    monkeypatch.setenv("KESTREL_DATABASE_URL", f"{base}/{name}")  # inherited by the processes tests start
    yield Settings()
    with admin.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))


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


@pytest.fixture
def all_cores():  # type: ignore[no-untyped-def]
    """A test that trains alone gets every core, as a trial does (an in-process ultralytics import
    earlier in the session leaves torch on one thread)."""
    import torch

    from core.train.device import use_all_cores

    threads = torch.get_num_threads()
    use_all_cores()
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
