"""The layering rules of STYLE.md, checked: import contracts, and a torch-free UI side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import core
import storage

ROOT = Path(__file__).resolve().parents[1]
UI_FILES = [f for f in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "ui").glob("*.py"))]
            if f.exists()]
HEAVY = ("torch", "torchvision", "timm", "ultralytics", "captum")
MAX_LINES = 400


def test_packages_come_from_this_repository():
    assert Path(core.__file__).resolve().is_relative_to(ROOT)
    assert Path(storage.__file__).resolve().is_relative_to(ROOT)


def test_import_contracts_hold():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_ui_imports_no_heavy_library_even_indirectly():
    modules = sorted({m for f in UI_FILES for m in _imports(f) if m.split(".")[0] in ("core", "storage")})
    assert not {m for f in UI_FILES for m in _imports(f)} & set(HEAVY)
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + \
        f"print(sorted(set(sys.modules) & {set(HEAVY)!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_core_holds_packages_only_and_pages_only_pages():
    assert sorted(p.name for p in (ROOT / "core").glob("*.py")) == ["__init__.py"]
    assert sorted(p.name for p in (ROOT / "pages").glob("_*.py")) == []  # helpers live in ui/


def test_no_module_imports_itself_round_a_circle():
    import grimp

    graph = grimp.build_graph("core", "storage", "ui")
    circles = []
    for module in sorted(m for m in graph.modules if m.startswith(("core", "storage", "ui"))):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith(module + ".") or module.startswith(imported + "."):
                continue  # a package and its own modules
            if graph.chain_exists(importer=imported, imported=module):
                circles.append(f"{module} <-> {imported}")
    assert circles == []


def test_modules_stay_small():
    files = [*ROOT.glob("core/**/*.py"), *ROOT.glob("storage/**/*.py"), *UI_FILES]
    big = [f"{f.relative_to(ROOT)}: {n}" for f in files
           if "migrations" not in f.parts and (n := len(f.read_text().splitlines())) > MAX_LINES]
    assert big == []


def test_code_passes_ruff():
    result = subprocess.run([str(Path(sys.executable).parent / "ruff"), "check", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_the_weight_resolver_may_reach_the_network():
    network = {"socket", "urllib.request", "requests", "httpx", "http.client"}
    # The endpoint runner probes ports and polls /health of the servers it starts, on loopback only; a DDP
    # trial's processes meet on a loopback port the first one picks.
    allowed = {"core/zoo/weights.py", "core/serving/runner.py", "core/train/distributed.py"}
    offenders = [str(f.relative_to(ROOT)) for f in ROOT.glob("core/**/*.py")
                 if str(f.relative_to(ROOT)) not in allowed and _imports(f) & network]
    assert offenders == []


def test_cli_help_loads_no_database_or_model_library():
    """`kestrel --help` (and typer's completion) builds the command tree only: SQLAlchemy, Alembic and the
    model libraries load with the command that needs them."""
    code = "import sys\nimport core.cli\nprint(sorted({m.split('.')[0] for m in sys.modules} & " \
           f"{set(HEAVY) | {'sqlalchemy', 'sqlmodel', 'alembic', 'yaml', 'PIL', 'numpy'}!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
