"""The secret that seals endpoint keys: made once with mode 0600, even by processes racing to make it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from storage.secrets import PREFIX, seal, unseal
from storage.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SEAL = "from storage.secrets import seal; from storage.settings import Settings; print(seal('key', Settings()))"


def test_processes_making_the_secret_at_once_all_seal_with_the_one_that_landed(tmp_path):
    env = {"KESTREL_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    racing = [subprocess.Popen([sys.executable, "-c", SEAL], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
              for _ in range(6)]
    tokens = [process.communicate(timeout=60)[0].strip() for process in racing]
    settings = Settings(home=tmp_path)
    assert all(token.startswith(PREFIX) and unseal(token, settings) == "key" for token in tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no draft left behind
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


def test_a_value_from_before_sealing_reads_as_it_is(tmp_path):
    settings = Settings(home=tmp_path)
    assert unseal("plain", settings) == "plain"
    assert unseal(seal("plain", settings), settings) == "plain"
