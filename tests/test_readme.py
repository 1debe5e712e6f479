"""The README's first commands are the ones newcomers type; CI must run the same test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    blocks = ROOT.joinpath("README.md").read_text().split("```bash\n")[1:3]
    return [block.split("\n```")[0].strip() for block in blocks]


def test_ci_runs_exactly_the_readme_test_command():
    studio, tests = _commands()
    assert studio.endswith("kestrel studio") and "pip install -e ." in studio
    assert tests in ROOT.joinpath(".ci/run").read_text().splitlines()
