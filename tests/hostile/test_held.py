"""What already held when issue 14 was filed, kept so: rules of the code that no single input can
test, read from its syntax tree. The behaviour each rule protects is tested with hostile input too:

- zip-slip, absolute and symlink entries, zip bombs: tests/data/test_refusals.py
- XML entities (XXE, billion laughs) in Pascal VOC: tests/data/test_formats_coco_voc_yolo_masks.py
- image decompression bombs: tests/data/test_refusals.py, tests/hostile/test_imports.py
- wrong and missing endpoint keys, oversized requests: tests/serving/test_endpoints.py
- kill -9 of the worker resumes the job: tests/sweep/test_jobs_run.py, tests/hostile/test_fault_injection.py
- two workers never claim one job: tests/storage/test_jobs_repo.py
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from storage.tables import Endpoint

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("core", "storage", "ui", "pages") for p in (ROOT / folder).rglob("*.py"))
SOURCES.append(ROOT / "app.py")


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """Each call in ``path`` with the dotted name it calls (``torch.load``, ``subprocess.run``, ``eval``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name, target = [], node.func
            while isinstance(target, ast.Attribute):
                name.append(target.attr)
                target = target.value
            if isinstance(target, ast.Name):
                found.append((".".join([target.id, *reversed(name)]), node))
    return found


def _where(path: Path, call: ast.Call) -> str:
    return f"{path.relative_to(ROOT)}:{call.lineno}"


def _keyword(call: ast.Call, name: str) -> object:
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else value


@pytest.fixture(scope="module")
def calls() -> list[tuple[Path, str, ast.Call]]:
    return [(path, name, call) for path in SOURCES for name, call in _calls(path)]


def test_model_files_are_read_without_running_pickled_code(calls):
    loads = [(p, c) for p, name, c in calls if name == "torch.load"]
    assert loads  # the scan sees them
    assert [_where(p, c) for p, c in loads if _keyword(c, "weights_only") is not True] == []
    assert [_where(p, c) for p, name, c in calls if name in ("pickle.load", "pickle.loads")] == []


def test_yaml_is_read_only_with_the_safe_loader(calls):
    unsafe = ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all")
    assert [_where(p, c) for p, name, c in calls if name in unsafe] == []


def test_no_shell_runs_and_no_text_is_evaluated(calls):
    assert [_where(p, c) for p, _, c in calls if _keyword(c, "shell") is True] == []
    banned = ("os.system", "os.popen", "eval", "exec", "subprocess.getoutput", "subprocess.getstatusoutput")
    assert [_where(p, c) for p, name, c in calls if name in banned] == []
    spawns = [(p, c) for p, name, c in calls if name in ("subprocess.run", "subprocess.Popen", "subprocess.call",
                                                           "subprocess.check_call", "subprocess.check_output")]
    assert spawns
    # A command as one string would need a shell to split it: every command here is a list of arguments.
    assert [_where(p, c) for p, c in spawns if c.args and isinstance(c.args[0], ast.Constant | ast.JoinedStr)] == []


def test_endpoints_listen_on_loopback_unless_told_otherwise():
    from core.cli.serving import endpoint_serve

    assert Endpoint(name="e").host == "127.0.0.1"
    assert inspect.signature(endpoint_serve).parameters["host"].default == "127.0.0.1"
