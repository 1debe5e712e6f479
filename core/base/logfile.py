"""A trial's console output, copied from its pipe into a log file that rotates at a size limit.

A process writing to a file it was given can fill the disk (a print in a loop); read through a pipe,
its output is kept to at most twice the limit: the file and one ``.1`` before it.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import IO

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")  # colour and cursor codes libraries print for terminals
LONGEST_LINE = 64 * 1024


class RotatingLog:
    """Appends to ``path``; a write that would take it past ``max_bytes`` first moves it to ``path.1``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.file = open(path, "ab")

    def write(self, data: bytes) -> None:
        if self.file.tell() and self.file.tell() + len(data) > self.max_bytes:
            self.file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self.file = open(self.path, "ab")
        self.file.write(data)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def copy_output(stream: IO[bytes], path: Path, max_bytes: int) -> threading.Thread:
    """Copy ``stream`` (a child's stdout) line by line into a rotating log at ``path``, without the
    terminal's escape codes, until the child closes it."""
    log = RotatingLog(path, max_bytes)

    def copy() -> None:
        try:
            for line in iter(lambda: stream.readline(LONGEST_LINE), b""):
                log.write(ANSI.sub(b"", line))
        finally:
            log.close()
            stream.close()

    thread = threading.Thread(target=copy, name=f"log {path.parent.name}", daemon=True)
    thread.start()
    return thread
