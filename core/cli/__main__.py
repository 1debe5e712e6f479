"""``python -m core.cli``: how the worker starts trial processes and the studio its worker."""

from core.cli import app

app()
