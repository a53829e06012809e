"""Transactions committed by a seal: with a size hint, the frames a transaction's commit will seal
are held in memory, never written to the WAL, and the commit writes the segments, the new WAL
(the rest of the transaction and its COMMIT frame) and then the manifest, its commit point.
Whatever happens on the way (an error, a rollback, SIGKILL at any step), the transaction is all
there or not there at all, and open() removes what an interrupted commit left."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ctxdb
import ctxdb.log_disk as log_disk
from ctxdb.log_disk import DiskLog
from ctxdb.wal import RAW, scan, verify_frames

from conftest import events
from seal_commit_worker import batch

WORKER = Path(__file__).with_name("seal_commit_worker.py")
SEG = 10


def _files(path: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in (path / "log").glob(prefix + "*"))


def _hinted(log: DiskLog, frames: int = 4, size: int = 7, start: int = 0, expect_total: int | None = None) -> None:
    """One transaction of `frames` frames, each add saying how many events follow it."""
    total = frames * size if expect_total is None else expect_total
    with log.transaction() as txn:
        for k in range(frames):
            txn.add(batch(size, start + size * k), expect_more=max(0, total - size * (k + 1)))


def _rows(db) -> list:
    return [(e.seq, e.id, e.recorded_at, e.data) for e in db.read()]


def test_the_commit_seals_held_frames_and_carries_the_rest(tmp_path):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    log.append_batch(batch(5, 100))  # 1..5 committed in the WAL before the transaction
    with log.transaction() as txn:
        for k in range(4):  # 6..33; the commit will seal 1..30
            txn.add(batch(7, 7 * k), expect_more=7 * (3 - k))
            if k == 2:  # 6..26 are held: nothing of the transaction is in the WAL yet
                assert _files(path, "seg-") == []
                assert [f.count for f in scan(path / "log" / _files(path, "wal-")[0], 1).committed] == [5]
        wal = (path / "log" / _files(path, "wal-")[0]).read_bytes()
        # its first commit, then only the frame the commit will carry over (27..33)
        assert [(f.first_seq, f.count) for _, f in verify_frames(wal, 0, "wal")] == [(1, 5), (6, 0), (27, 7)]
    st = log.stats()
    assert st["segments"] == 3 and st["wal_events"] == 3
    assert _files(path, "wal-") == ["wal-00000000000000000031.log"]
    res = scan(path / "log" / _files(path, "wal-")[0], 31)
    assert [(f.first_seq, f.count, f.flags & RAW) for f in res.committed] == [(31, 3, 0)]
    assert res.committed_end == res.file_size  # ends with the transaction's COMMIT frame
    got = _rows(ctxdb.Store(log))
    assert [r[0] for r in got] == list(range(1, 34))
    assert len({r[2] for r in got[5:]}) == 1  # one recorded_at for the whole transaction
    assert got[5][2] >= got[4][2]
    log.close()
    with ctxdb.open(path, segment_events=SEG) as db:
        assert _rows(db) == got and not db.recovery
        # the held events' keys went into the segments' key files: re-sending them appends nothing
        seqs = db.append([{"id": f"e-{i}", "source": "crash", "type": "t.x", "subject": f"s:{i % 7}",
                           "time": "2026-11-01T00:00:00Z", "data": {"i": i}} for i in range(30)])
        assert seqs == list(range(6, 36)) and db.last_seq == 35


def test_a_hint_too_high_seals_a_shorter_last_segment(tmp_path):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    _hinted(log, expect_total=1000)  # every frame held; the commit seals all 28 events
    assert [(s.first_seq, s.last_seq) for s in log.manifest.segments] == [(1, 10), (11, 20), (21, 28)]
    assert log.stats()["wal_events"] == 0
    want = _rows(ctxdb.Store(log))
    log.append_batch(batch(12, 500))  # 29..40: later seals go on from there
    log.close()
    with ctxdb.open(path, segment_events=SEG) as db:
        rows = _rows(db)
        assert rows[:28] == want and [r[0] for r in rows] == list(range(1, 41))
        segs = [(s.first_seq, s.last_seq) for s in db.log.manifest.segments]
        assert segs == [(1, 10), (11, 20), (21, 28), (29, 38)]


def test_rollback_of_a_transaction_with_held_frames_leaves_nothing(tmp_path):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    log.append_batch(batch(5, 100))
    size = (path / "log" / _files(path, "wal-")[0]).stat().st_size
    with pytest.raises(RuntimeError):
        with log.transaction() as txn:
            for k in range(4):
                txn.add(batch(7, 7 * k), expect_more=7 * (3 - k))
            raise RuntimeError("a bad record")
    assert log.last_seq == 5 and log._cached_bytes == sum(
        c.frame.raw_length for c in log._wal_chunks if c.cached is not None)
    assert (path / "log" / _files(path, "wal-")[0]).stat().st_size == size
    assert _files(path, "seg-") == []
    _hinted(log)  # the seqs are reused, the next transaction commits normally
    assert log.last_seq == 33
    log.close()
    with ctxdb.open(path, segment_events=SEG) as db:
        assert [e.seq for e in db.read()] == list(range(1, 34)) and not db.recovery


@pytest.mark.parametrize("fail_at", ["segment", "carry", "manifest"])
def test_an_error_before_the_manifest_commits_nothing(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    log.append_batch(batch(5, 100))
    before = _rows(ctxdb.Store(log))

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    target = {"segment": (log_disk, "write_segment"), "carry": (DiskLog, "_write_carry_over"),
              "manifest": (log_disk.Manifest, "save")}[fail_at]
    monkeypatch.setattr(*target, boom)
    with pytest.raises(OSError):
        _hinted(log, start=1000)
    monkeypatch.undo()
    assert _rows(ctxdb.Store(log)) == before and log._next_seq == 6
    _hinted(log, start=1000)  # the same transaction again: now it commits
    got = _rows(ctxdb.Store(log))
    assert [r[0] for r in got] == list(range(1, 34))
    log.close()
    with ctxdb.open(path, segment_events=SEG) as db:
        assert _rows(db) == got


def _run_worker(path: Path, point: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(WORKER), str(path), str(SEG), point],
                          capture_output=True, timeout=120)
    return proc.stdout.decode().split("\n")


@pytest.mark.parametrize("point", ["segment", "carry"])
def test_sigkill_before_the_manifest_leaves_no_trace_of_the_transaction(tmp_path, point):
    path = tmp_path / "s"
    out = _run_worker(path, point)
    assert "ACK 5" in out and "ACK 33" not in out
    assert _files(path, "seg-") or _files(path, "wal-") != ["wal-00000000000000000001.log"]  # it got that far
    with ctxdb.open(path, segment_events=SEG) as db:
        assert [e.id for e in db.read()] == [f"e-{i}" for i in range(5)]
        assert db.recovery  # leftovers removed, the uncommitted tail truncated
        assert db.stats()["segments"] == 0
    assert _files(path, "seg-") == [] and _files(path, "keys-") == []
    assert _files(path, "wal-") == ["wal-00000000000000000001.log"]
    with ctxdb.open(path, segment_events=SEG) as db:  # and the transaction can be sent again
        log = db.log
        _hinted(log, start=5)
        assert [e.id for e in db.read()] == [f"e-{i}" for i in range(33)]


def test_sigkill_after_the_manifest_keeps_the_whole_transaction(tmp_path):
    path = tmp_path / "s"
    out = _run_worker(path, "manifest")
    assert "ACK 5" in out and "ACK 33" not in out  # killed before the commit returned
    assert len(_files(path, "wal-")) == 2
    with ctxdb.open(path, segment_events=SEG) as db:
        rows = _rows(db)
        assert [r[1] for r in rows] == [f"e-{i}" for i in range(33)]
        assert len({r[2] for r in rows[5:]}) == 1
        assert db.recovery and "already sealed" in " ".join(db.recovery.messages)
    assert _files(path, "wal-") == ["wal-00000000000000000031.log"]


def test_uninterrupted_worker_run_matches(tmp_path):
    path = tmp_path / "s"
    assert "ACK 33" in _run_worker(path, "none")
    with ctxdb.open(path, segment_events=SEG) as db:
        assert [e.id for e in db.read()] == [f"e-{i}" for i in range(33)] and not db.recovery


def test_file_ingest_commits_by_seal_and_reingest_is_a_no_op(tmp_path):
    from conftest import write_ndjson

    src = write_ndjson(tmp_path / "in.ndjson", events(95))
    with ctxdb.open(tmp_path / "s", segment_events=SEG) as db:
        rep = db.ingest(str(src), batch_events=10)
        assert rep.appended == 95 and db.stats()["segments"] == 9
        again = db.ingest(str(src), batch_events=10)
        assert again.appended == 0 and again.duplicates == 95
    with ctxdb.open(tmp_path / "s", segment_events=SEG) as db:
        assert [e.id for e in db.read()] == [f"ev-{i}" for i in range(95)] and not db.recovery
