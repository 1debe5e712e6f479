"""YAML as a job, endpoint or deployment file must be read: ``yaml.safe_load`` with two checks between
parsing and building.

A job file comes from anyone who can run ``kestrel job submit``. safe_load already builds no objects,
but it silently keeps the last of a key written twice (so ``max_trials`` can say two things), and it
shares one built value among the aliases to it: ten lines of nested aliases (an "alias bomb") stand for
billions of values, which take gigabytes the moment a field is copied or turned into text. The checks
run on the parsed nodes, whose size is that of the file, so they cost milliseconds whatever the bomb."""

from __future__ import annotations

from typing import Any

import yaml

from core.base.errors import ConfigError

# Values in a job file once its aliases are expanded. A real job has hundreds; a 1 MB file without
# aliases stays under this; ten levels of ten aliases (a few hundred bytes) would be 10^10.
MAX_YAML_NODES = 1_000_000
_MERGE = "tag:yaml.org,2002:merge"
_OPEN = -1  # the size of a node still being counted: reaching it again means an alias to itself


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, checked between parsing and building: no key twice in a mapping, and no
    more than MAX_YAML_NODES values with aliases expanded (the parsed nodes share an aliased value;
    the built document would be turned into text and copied as if it were written out in full)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, "", {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, path: str, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for with its aliases expanded. Each node is counted once
    (``sizes``), so the count takes time in the size of the file, not of the expansion."""
    if sizes.get(id(node)) == _OPEN:
        raise ConfigError(path or "job", f"refers to itself through a YAML alias (line {node.start_mark.line + 1}); "
                          "a job file is a tree: write the value out")
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = _OPEN
    total = 1
    if isinstance(node, yaml.MappingNode):
        _unique_keys(node, path)
        for key, value in node.value:
            total += _expanded_size(key, path, sizes) + _expanded_size(value, _key_path(path, key), sizes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            total += _expanded_size(item, f"{path}[{i}]", sizes)
    if total > MAX_YAML_NODES:
        raise ConfigError(path or "job", f"expands to more than {MAX_YAML_NODES:,} values through nested "
                          f"YAML aliases (line {node.start_mark.line + 1}); write the values out instead "
                          "of aliasing aliases")
    sizes[id(node)] = total
    return total


def _unique_keys(node: yaml.MappingNode, path: str) -> None:
    """Refuse a key written twice: YAML would keep the last one and drop the first without a word."""
    first: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:  # ``<<:`` may repeat and override
            continue
        line = key.start_mark.line + 1
        if (key.tag, key.value) in first:
            raise ConfigError(_key_path(path, key), f"is written twice (lines {first[key.tag, key.value]} and "
                              f"{line}); YAML would keep only the last, so keep the one you mean and delete the other")
        first[key.tag, key.value] = line


def _key_path(path: str, key: yaml.Node) -> str:
    name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
    return f"{path}.{name}" if path else name
