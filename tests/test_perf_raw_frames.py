"""RAW WAL frames: once the WAL holds a segment's worth of events, further frames of a transaction
are written uncompressed (they are sealed at its commit). Whatever happens next (the seal, a crash
before it, damage on disk), the events are exactly those appended, and no RAW frame survives a
seal."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import ctxdb
import ctxdb.log
from ctxdb.codec import build_batch, envelopes_from_objects
from ctxdb.log_disk import DiskLog
from ctxdb.wal import HEADER_SIZE, RAW, scan, verify_frames

from conftest import events, write_ndjson

SEG = 10


def _batch(n: int, start: int):
    return build_batch(envelopes_from_objects(events(n, start=start)))


def _wal(path: Path) -> Path:
    (wal,) = sorted((path / "log").glob("wal-*.log"))
    return wal


def _big_txn(log: DiskLog, frames: int = 5, size: int = 6, start: int = 0) -> None:
    with log.transaction() as txn:
        for k in range(frames):
            txn.add(_batch(size, start + size * k))


def _flags(path: Path, first: int) -> list[tuple[int, int, int]]:
    return [(f.first_seq, f.count, f.flags & RAW) for f in scan(_wal(path), first).committed]


def _no_seal(monkeypatch) -> None:
    """Commits only make themselves durable: no seal (as if the process died right after)."""
    monkeypatch.setattr(DiskLog, "_maybe_seal", lambda self: None)
    monkeypatch.setattr(DiskLog, "_sync_and_seal", lambda self, token: self._sync_to(token))


def _rows(db) -> list:
    return [(e.seq, e.id, e.source, e.type, e.subject, e.time, e.data, e.meta, e.ext) for e in db.read()]


def test_frames_past_a_segment_are_raw_and_the_seal_leaves_none(tmp_path, monkeypatch):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    _no_seal(monkeypatch)
    _big_txn(log)  # seqs 1..30 in frames of 6: frames starting at seq >= 11 are RAW
    assert _flags(path, 1) == [(1, 6, 0), (7, 6, 0), (13, 6, RAW), (19, 6, RAW), (25, 6, RAW)]
    monkeypatch.undo()
    want = _rows(ctxdb.Store(log))
    assert [r[0] for r in want] == list(range(1, 31))
    log.seal()
    assert log.stats()["segments"] == 3 and log.stats()["wal_events"] == 0
    log.append_batch(_batch(4, 100))  # 31..34: the WAL is below a segment again: compressed
    assert _flags(path, 31) == [(31, 4, 0)]
    log.close()
    with ctxdb.open(path, segment_events=SEG) as db:
        assert _rows(db)[:30] == want


def test_seal_re_encodes_raw_frames_it_carries_over(tmp_path):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    _big_txn(log, frames=4, size=7)  # 1..28: RAW from seq 15 on; the commit seals 1..20
    res = scan(_wal(path), 21)
    assert [(f.first_seq, f.count, f.flags & RAW) for f in res.committed] == [(21, 1, 0), (22, 7, 0)]
    assert res.committed_end == res.file_size
    want = _rows(ctxdb.Store(log))
    log.close()
    with ctxdb.open(path, segment_events=SEG) as db:
        assert _rows(db) == want and [r[0] for r in want] == list(range(1, 29))
        assert db.append(events(30)) == list(range(1, 29)) + [29, 30]  # dedup across all of it


def test_crash_after_commit_before_seal_keeps_raw_frames_readable(tmp_path, monkeypatch):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    _no_seal(monkeypatch)  # the process dies after the fsync
    _big_txn(log)
    want = _rows(ctxdb.Store(log))
    log._writer = None
    log.close()
    monkeypatch.undo()
    with ctxdb.open(path, readonly=True) as ro:
        assert _rows(ro) == want
    with ctxdb.open(path, segment_events=SEG) as db:
        assert _rows(db) == want and not db.recovery
        assert db.append(events(31)) == list(range(1, 32))  # duplicates found in RAW frames; seals
        assert db.stats()["segments"] == 3
        assert _rows(db)[:30] == want
    assert all(not raw for _, _, raw in _flags(path, 31))


def test_damaged_raw_frame_is_detected(tmp_path, monkeypatch):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    _no_seal(monkeypatch)
    _big_txn(log)
    log.close()
    monkeypatch.undo()
    raw = [f for f in scan(_wal(path), 1).committed if f.flags & RAW]
    with open(_wal(path), "r+b") as f:  # a flipped byte inside a RAW payload, valid frames after it
        f.seek(raw[0].offset + HEADER_SIZE + 50)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x5A]))
    with pytest.raises(ctxdb.CorruptionError) as ei:
        ctxdb.open(path, segment_events=SEG)
    assert ei.value.offset == raw[0].offset and "acknowledged data is damaged" in str(ei.value)


def test_torn_raw_frame_at_the_tail_is_truncated(tmp_path):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=1000)
    log.append_batch(_batch(5, 0))
    log.segment_events = 3  # the next frame starts past a segment's worth: RAW
    log._sync_and_seal = log._sync_to  # no seal
    log.append_batch(_batch(5, 5))
    log.close()
    frames = scan(_wal(path), 1).committed
    assert frames[-1].flags & RAW
    with open(_wal(path), "r+b") as f:
        f.truncate(frames[-1].offset + HEADER_SIZE + 10)  # died while writing the RAW frame
    with ctxdb.open(path) as db:
        assert [e.seq for e in db.read()] == [1, 2, 3, 4, 5]
        assert db.recovery and "torn tail truncated" in db.recovery.messages[0]


def test_frames_over_the_raw_limit_are_compressed(tmp_path, monkeypatch):
    import ctxdb.log_disk as log_disk

    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    monkeypatch.setattr(log_disk, "MAX_RAW_FRAME", 100)  # every frame is over it
    _no_seal(monkeypatch)
    _big_txn(log)
    assert all(not raw for _, _, raw in _flags(path, 1))
    log.close()


def _hinted_txn(log: DiskLog, frames: int, size: int, expect_total: int) -> None:
    with log.transaction() as txn:
        for k in range(frames):
            txn.add(_batch(size, size * k), expect_more=max(0, expect_total - size * (k + 1)))


def test_with_a_size_hint_frames_that_will_be_sealed_never_reach_the_wal(tmp_path):
    # 1..28 in frames of 7, the transaction saying where it will end: the commit will seal
    # 1..20, so 1..14 are held in memory (never written to the WAL: the commit seals them), the
    # frame straddling 20 and the remainder are compressed as they are written (nothing for the
    # seal to re-encode but the straddler's tail). No frame is RAW.
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    with log.transaction() as txn:
        for k in range(4):
            txn.add(_batch(7, 7 * k), expect_more=max(0, 28 - 7 * (k + 1)))
        wal = _wal(path).read_bytes()
        heads = [(f.first_seq, f.count, f.flags & RAW) for _, f in verify_frames(wal, 0, "wal")]
        assert heads == [(15, 7, 0), (22, 7, 0)]  # uncommitted yet; 1..14 only in memory
    want = _rows(ctxdb.Store(log))
    assert [r[0] for r in want] == list(range(1, 29))
    assert log.stats()["segments"] == 2
    assert _flags(path, 21) == [(21, 1, 0), (22, 7, 0)]
    log.close()
    with ctxdb.open(path, segment_events=SEG) as db:
        assert _rows(db) == want and not db.recovery


@pytest.mark.parametrize("expect_total", [0, 5, 40, 1000])
def test_a_wrong_size_hint_changes_nothing_but_the_layout(tmp_path, expect_total):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=SEG)
    _hinted_txn(log, frames=4, size=7, expect_total=expect_total)
    want = _rows(ctxdb.Store(log))
    assert [r[0] for r in want] == list(range(1, 29))
    assert all(not raw for _, _, raw in _flags(path, 21))
    log.close()
    with ctxdb.open(path, segment_events=SEG) as db:
        assert _rows(db) == want
        assert db.append(events(30)) == list(range(1, 29)) + [29, 30]


def test_file_ingest_passes_a_size_hint(tmp_path, monkeypatch):
    src = write_ndjson(tmp_path / "in.ndjson", events(50))
    hints = []
    orig = ctxdb.log.Transaction.add

    def add(self, batch, *, expect_more=None):
        hints.append((len(batch), expect_more))
        return orig(self, batch, expect_more=expect_more)

    monkeypatch.setattr(ctxdb.log.Transaction, "add", add)
    with ctxdb.open(tmp_path / "s") as db:
        db.ingest(str(src), batch_events=20)
    assert sum(n for n, _ in hints) == 50 and hints[-1][1] == 0 and all(h is not None for _, h in hints)
