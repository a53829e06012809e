#!/usr/bin/env python3
"""Set up a virtual environment and run a ctxdb job; needs nothing but Python 3.11+.

    python3 tasks.py demo     # set up, ingest the bundled sample, show stats and events
    python3 tasks.py test     # set up, run the test suite
    python3 tasks.py bench    # set up, run bench/ingest.py

Setup is idempotent: the venv (.venv, or $CTXDB_VENV) is reused while pyproject.toml is unchanged.
torch==2.13.0 is installed before everything else because that pin resolves to the CPU build
already on the machine; letting sentence-transformers pull torch would download CUDA wheels.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("CTXDB_VENV", ROOT / ".venv"))
BIN = VENV / "bin"
PY = BIN / "python"
STAMP = VENV / ".ctxdb-setup"


def _run(*cmd: str | Path, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def setup() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not (STAMP.exists() and STAMP.read_text() == want and PY.exists()):
        if not PY.exists():
            venv.EnvBuilder(with_pip=True).create(VENV)
        pip = (PY, "-m", "pip", "install", "--disable-pip-version-check", "-q")
        _run(*pip, "torch==2.13.0")
        _run(*pip, "-e", f"{ROOT}[dev]")
        STAMP.write_text(want)
    # The package is installed editable, so nothing compiled its modules; where
    # PYTHONDONTWRITEBYTECODE is set every process compiles them again when it imports them
    # (~0.2 s of CPU: the CLI's start-up, each forkserver for decode and render workers).
    # compileall writes the bytecode anyway (and skips what is up to date).
    subprocess.run([str(PY), "-m", "compileall", "-q", str(ROOT / "engine"), str(ROOT / "cli")],
                   check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    job = argv[1] if len(argv) > 1 else "demo"
    setup()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if job == "setup":
        return 0
    if job == "demo":
        return subprocess.call([str(BIN / "ctxdb"), "demo", *argv[2:]], env=env, cwd=ROOT)
    if job == "test":
        return subprocess.call([str(PY), "-m", "pytest", *argv[2:]], env=env, cwd=ROOT)
    if job == "bench":
        return subprocess.call([str(PY), str(ROOT / "bench" / "ingest.py"), *argv[2:]], env=env, cwd=ROOT)
    print(f"unknown job {job!r}; expected demo, test, bench or setup", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
