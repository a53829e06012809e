"""A writer process for the sealing-commit crash tests (test_seal_commit.py).

    seal_commit_worker.py STORE SEG POINT

Commits one small transaction (seqs 1..5, printed as "ACK 5"), then one transaction of 4 frames
of 7 events with a size hint, so its first frames are held in memory and its commit is a seal;
the process SIGKILLs itself at POINT of that commit:

    segment   a segment file is durable but no manifest names it
    carry     the new WAL (the transaction's tail and its COMMIT frame) is durable, no manifest
    manifest  the manifest naming the segments is durable, the old WAL not yet deleted
    none      no kill: prints "ACK 33" when the commit returns
"""
from __future__ import annotations

import os
import signal
import sys

import ctxdb.log_disk as log_disk
from ctxdb.codec import build_batch, envelopes_from_objects
from ctxdb.log_disk import DiskLog


def batch(n: int, start: int):
    return build_batch(envelopes_from_objects([
        {"id": f"e-{i}", "source": "crash", "type": "t.x", "subject": f"s:{i % 7}",
         "time": "2026-11-01T00:00:00Z", "data": {"i": i}} for i in range(start, start + n)]))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_after(owner, name: str) -> None:
    orig = getattr(owner, name)

    def wrapped(*a, **k):
        out = orig(*a, **k)
        _die()
        return out

    setattr(owner, name, wrapped)


def main() -> None:
    path, seg, point = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    log = DiskLog(path, segment_events=seg)
    log.append_batch(batch(5, 0))
    print("ACK 5", flush=True)
    if point == "segment":
        _kill_after(log_disk, "write_segment")
    elif point == "carry":
        _kill_after(DiskLog, "_write_carry_over")
    elif point == "manifest":
        _kill_after(log_disk.Manifest, "save")
    with log.transaction() as txn:
        for k in range(4):
            txn.add(batch(7, 5 + 7 * k), expect_more=7 * (3 - k))
    print(f"ACK {log.last_seq}", flush=True)
    log.close()


if __name__ == "__main__":
    main()
