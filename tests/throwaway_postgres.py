"""A throwaway PostgreSQL server on loopback, from Debian's ``postgresql`` package: a new cluster in a temporary
folder (trust authentication, durability off: nothing in it outlives the run), started on a free port. The tests
run the storage, worker and sweep suites against one (tests/conftest.py); a developer starts one with

    .venv/bin/python tests/throwaway_postgres.py

which prints the KESTREL_DATABASE_URL to use and stops the server (deleting its files) on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "kestrel"  # the cluster's superuser


def _binary(name: str) -> str:
    """``name`` from PATH, else from Debian's versioned folder (which is not on PATH)."""
    found = shutil.which(name) or next((str(folder / name) for folder in
                                        sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
                                        if (folder / name).is_file()), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} was not found: install Debian's package (apt-get install "
                           "postgresql), or give a server with KESTREL_TEST_POSTGRES_URL")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kestrel-postgres-"))
        self.data, self.port = self.root / "data", _free_port()

    def _run(self, *args: str) -> None:
        # PostgreSQL refuses to run as root: as root, the cluster belongs to the package's postgres user.
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_owner, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr[-2000:]}{tail}")

    def start(self) -> ThrowawayPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_binary("initdb"), "-D", str(self.data), f"--username={USER}", "--auth=trust",
                  "--encoding=UTF8", "--no-sync")
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                  "-w", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    import time

    server = ThrowawayPostgres().start()
    print(f"KESTREL_DATABASE_URL={server.url()}  (Ctrl-C stops the server and deletes it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
