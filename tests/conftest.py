"""Shared fixtures: real stores in tmp_path, deterministic event generators."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

import ctxdb

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The background embedder (all-MiniLM-L6-v2, ~150 texts/s) would compete for the 2 cores with
# every test that opens a store; the semantic tests pass `embedder=` explicitly (or clear this).
os.environ.setdefault("CTXDB_EMBEDDINGS", "off")


class Clock:
    """A deterministic transaction clock for `ctxdb.open(clock=...)`: every commit is `step`
    seconds after the previous one, starting at `start`."""

    def __init__(self, start=None, step: float = 60) -> None:
        from datetime import datetime, timezone

        start = start or datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)
        self.now = int(start.timestamp() * 1_000_000)
        self.step = int(step * 1_000_000)

    def __call__(self) -> int:
        self.now += self.step
        return self.now


def make_event(i: int, *, source: str = "test", subject: str | None = None, type: str | None = None) -> dict:
    kinds = ["order.shipped", "comment.added", "ticket.updated", "slack.message"]
    return {
        "id": f"ev-{i}",
        "source": source,
        "type": type or kinds[i % 4],
        "subject": subject or f"order:{i % 17}",
        "time": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        "data": {"n": i, "text": f"event number {i} with some text", "nested": {"x": [i, i + 1]}},
    }


def events(n: int, start: int = 0, **kw) -> list[dict]:
    return [make_event(i, **kw) for i in range(start, start + n)]


def write_ndjson(path: Path, evs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in evs))
    return path


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path) -> Iterator[ctxdb.Store]:
    db = ctxdb.open(store_path)
    yield db
    db.close()


@pytest.fixture(params=["memory", "disk"])
def any_store(request, tmp_path: Path) -> Iterator[ctxdb.Store]:
    """Every log implementation, for the contract suite."""
    db = ctxdb.open_memory() if request.param == "memory" else ctxdb.open(tmp_path / "store", segment_events=50)
    yield db
    db.close()


def run_cli(*args: str, input: bytes | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `ctxdb` console script in a subprocess."""
    exe = Path(sys.executable).parent / "ctxdb"
    return subprocess.run([str(exe), *args], input=input, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def kill_at_random_moments(tmp_path: Path, template: Path, argv: "Callable[[Path], list[str]]",
                           check: "Callable[[Path], str]", *, min_kills: int, cap: int, seed: int,
                           need_both: bool = False) -> tuple[int, dict[str, int]]:
    """Crash an erasure with SIGKILL at random moments, each time in a fresh copy of `template`.

    `argv(work)` starts a worker that prints "ready" before the erasure and "done" after it;
    `check(work)` reopens the copy and returns "done" or "not done" (asserting consistency).
    An unkilled run first measures how long the erasure takes; kills alternate between its
    first and its second half. Runs until `min_kills` real kills (and, with `need_both`, both
    outcomes) or `cap` attempts; returns (kills, outcomes). A run that outruns its kill counts
    as an outcome, not a kill."""
    import random
    import shutil
    import signal
    import time

    full = tmp_path / "full"
    shutil.copytree(template, full)
    p = subprocess.Popen(argv(full), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    t_ready = time.perf_counter()
    assert p.stdout.readline().startswith("done")
    p.wait(timeout=60)
    span = time.perf_counter() - t_ready
    assert check(full) == "done"
    rng = random.Random(seed)
    seen = {"done": 0, "not done": 0}
    kills = i = 0
    while (kills < min_kills or (need_both and min(seen.values()) == 0)) and i < cap:
        i += 1
        work = tmp_path / f"w{i}"
        shutil.copytree(template, work)
        p = subprocess.Popen(argv(work), stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, span * 0.5) if i % 2 else rng.uniform(span * 0.5, span * 0.97))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        kills += p.returncode == -signal.SIGKILL
        seen[check(work)] += 1
        shutil.rmtree(work)
    return kills, seen
