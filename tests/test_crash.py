"""Crash tests: real writer processes killed with SIGKILL at random moments."""
from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import ctxdb

from conftest import run_cli
from crash_writer import batch

WRITER = Path(__file__).with_name("crash_writer.py")
SIZE, SEG = 500, 2000


def _kill_after(proc: subprocess.Popen, delay: float) -> list[str]:
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    return out.decode().splitlines()


def _verify(path: Path, acked: set[int]) -> int:
    """Every acknowledged batch present exactly once, seqs gapless, every frame readable."""
    with ctxdb.open(path, segment_events=SEG) as db:
        seqs, keys = [], []
        for ev in db.read():
            seqs.append(ev.seq)
            keys.append(ev.id)
            assert ev.json()["i"] == int(ev.id.split("-")[1])  # payload decodes and matches its id
        assert seqs == list(range(1, len(seqs) + 1)), "seqs must be gapless"
        assert len(keys) == len(set(keys)), "no event twice"
        present = {int(k.split("-")[0][1:]) for k in keys}
        assert acked <= present, f"acknowledged batches lost: {sorted(acked - present)[:5]}"
        per_batch: dict[int, int] = {}
        for k in keys:
            b = int(k.split("-")[0][1:])
            per_batch[b] = per_batch.get(b, 0) + 1
        assert all(n == SIZE for n in per_batch.values()), "a batch is all-or-nothing"
        return len(seqs)


def test_sigkill_during_appends_loses_no_acknowledged_event(tmp_path):
    rng = random.Random(7)
    path = tmp_path / "store"
    acked: set[int] = set()
    next_batch = 0
    kills = 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    while kills < 22:
        # restart from a few batches back: re-sends must be duplicates, never new events
        start = max(0, next_batch - rng.randint(0, 3))
        proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(start), "400", str(SIZE), str(SEG)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        # wait until the store is open so the kill lands in the write path, then a random delay
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(b"OPEN"), line
        lines = _kill_after(proc, rng.uniform(0.0, 0.6))
        kills += 1
        for ln in lines:
            if ln.startswith("ACK"):
                k = int(ln.split()[1])
                acked.add(k)
                next_batch = max(next_batch, k + 1)
        _verify(path, acked)
    total = _verify(path, acked)
    assert total >= len(acked) * SIZE and len(acked) > 10


def test_sigkill_during_cli_ingest_then_rerun_completes_without_duplicates(tmp_path):
    rng = random.Random(11)
    src = tmp_path / "big.ndjson.gz"
    n = 60_000
    with gzip.open(src, "wt") as f:
        for k in range(n // SIZE):
            for ev in batch(k, SIZE):
                f.write(json.dumps(ev) + "\n")
    path = tmp_path / "store"
    exe = Path(sys.executable).parent / "ctxdb"
    env = {**os.environ, "CTXDB_SEGMENT_EVENTS": "7000"}
    for _ in range(6):
        proc = subprocess.Popen([str(exe), "ingest", "--db", str(path), "--batch", "2000", str(src)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        _kill_after(proc, rng.uniform(0.3, 2.0))
        if path.exists():
            with ctxdb.open(path, segment_events=7000) as db:
                # one transaction per file: killed before its commit, nothing of it is visible
                assert db.last_seq in (0, n)
    r = run_cli("ingest", "--db", str(path), "--json", str(src), env={"CTXDB_SEGMENT_EVENTS": "7000"})
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["appended"] + rep["duplicates"] == n
    with ctxdb.open(path) as db:
        ids = [e.id for e in db.read()]
    assert len(ids) == n == len(set(ids))


def test_sigkill_during_stdin_stream_keeps_committed_batches(tmp_path):
    """Streaming ingest commits per batch: after a kill, every batch it reported is present."""
    path = tmp_path / "store"
    exe = Path(sys.executable).parent / "ctxdb"
    proc = subprocess.Popen([str(exe), "ingest", "--db", str(path), "--batch", "100", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    for k in range(10):
        proc.stdin.write("".join(json.dumps(e) + "\n" for e in batch(k, 100)).encode())
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline and seen < 1000:
        time.sleep(0.1)
        if (path / "log").exists():
            with ctxdb.open(path, readonly=True) as ro:
                seen = ro.last_seq
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert seen == 1000
    with ctxdb.open(path) as db:
        assert [e.seq for e in db.read()] == list(range(1, 1001))
