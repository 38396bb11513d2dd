"""The peers' own environment: a virtualenv made from ``benchmarks/requirements-peers.txt``.

The peers (and matplotlib, and the profilers) are never installed into jobq's environment:
``ensure()`` makes ``benchmarks/.peers-venv`` on first use, with the interpreter that runs the
benchmark, and makes it again when the requirements file changes (its hash is stamped in the
environment). jobq itself runs from the environment that runs the benchmark.

    python -m benchmarks.peers_env        # make (or check) it, print its python
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT

REQUIREMENTS = ROOT / "benchmarks" / "requirements-peers.txt"
VENV = ROOT / "benchmarks" / ".peers-venv"
_STAMP = VENV / ".requirements.sha256"
_LOCK = ROOT / "benchmarks" / ".peers-venv.lock"


def python_of(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _wanted() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def is_ready(venv: Path = VENV) -> bool:
    """Whether the environment exists and matches the requirements file."""
    stamp = venv / _STAMP.name
    return python_of(venv).exists() and stamp.exists() and stamp.read_text() == _wanted()


def ensure(quiet: bool = False) -> Path:
    """The peers' python, making the environment first if it is missing or out of date.

    Safe when two runs start at once (a file lock): the second waits for the first.
    """
    _LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_ready():
            _build(quiet)
    return python_of()


def _build(quiet: bool) -> None:
    started = time.monotonic()
    print(f"making the peers' environment {VENV.relative_to(ROOT)} ...", flush=True)
    if VENV.exists():
        shutil.rmtree(VENV)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python_of()), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("--quiet")
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    (VENV / _STAMP.name).write_text(_wanted())
    print(f"peers' environment ready in {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    print(ensure())
