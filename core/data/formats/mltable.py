"""MLTable folders: a YAML file named ``MLTable`` whose ``paths`` name the JSONL files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml

from core.base.errors import InputError
from core.data.formats.base import formats, read_text
from core.data.formats.jsonl import read_jsonl
from core.data.records import ImageRecord, Problem


def mltable_file(path: Path) -> Path:
    return path if path.name == "MLTable" else path / "MLTable"


def jsonl_files(table: Path) -> list[Path]:
    """The JSONL files an MLTable names, resolved against its folder."""
    try:
        spec = yaml.safe_load(read_text(table))
    except yaml.YAMLError as exc:
        raise InputError(str(table), f"not valid YAML: {exc}", "fix the MLTable file") from exc
    paths = spec.get("paths") if isinstance(spec, dict) else None
    if not isinstance(paths, list) or not paths:
        raise InputError(str(table), "no 'paths' list", "add 'paths: [{file: ./annotations.jsonl}]'")
    files = []
    for i, entry in enumerate(paths):
        rel = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(rel, str):
            raise InputError(
                str(table), f"paths[{i}] has no 'file'", "name each JSONL file as '- file: ./x.jsonl'"
            )
        file = (table.parent / rel.removeprefix("file://")).resolve()
        if not file.is_file():
            raise InputError(str(table), f"paths[{i}].file {rel!r} does not exist", "fix the path")
        files.append(file)
    return files


@formats.register("mltable")
class MltableFormat:
    def detect(self, path: Path) -> bool:
        return mltable_file(path).is_file()

    def read(self, path: Path) -> Iterator[ImageRecord | Problem]:
        table = mltable_file(path)
        for file in jsonl_files(table):
            yield from read_jsonl(file, table.parent)
