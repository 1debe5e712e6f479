"""The `kestrel` command line: a thin edge over core and storage. Output for people goes to the terminal;
`--json` prints one JSON object on stdout and nothing else there. Each module is one command group and
registers its commands on the one `app` (`core.cli.common`)."""

from core.cli import data, datastores, doctor, jobs, review, run, serving, weights  # noqa: F401 — importing a group registers it
from core.cli.common import app

__all__ = ["app"]
