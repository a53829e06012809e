"""Sealing with a byte-copied carry-over: the frames after the seal boundary move into the new WAL
verbatim (only a frame straddling the boundary is re-encoded), transactions keep their structure
and recorded_at, and damage or a crash at any step loses nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import ctxdb
from ctxdb.codec import build_batch, envelopes_from_objects
from ctxdb.log_disk import DiskLog
from ctxdb.segment import Manifest
from ctxdb.wal import HEADER_SIZE, scan

from conftest import events


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        self.t += 1000
        return self.t


def _batch(n: int, start: int):
    return build_batch(envelopes_from_objects(events(n, start=start)))


def _multi_frame_txns(log: DiskLog) -> None:
    """Three transactions: 4 events; 3 frames of 3 events; 5 events (seqs 1..4, 5..13, 14..18)."""
    log.append_batch(_batch(4, 0))
    with log.transaction() as txn:
        for k in range(3):
            txn.add(_batch(3, 4 + 3 * k))
    log.append_batch(_batch(5, 13))


def _wal(path: Path) -> Path:
    (wal,) = sorted((path / "log").glob("wal-*.log"))
    return wal


def _read_all(path: Path, **kw) -> list:
    with ctxdb.open(path, **kw) as db:
        return [(e.seq, e.id, e.recorded_at, e.data) for e in db.read()]


@pytest.mark.parametrize("seg", [6, 7, 8, 13, 18, 4])
def test_carry_over_keeps_every_event_transaction_and_recorded_at(tmp_path, seg):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=1000, clock=Clock(1_700_000_000_000_000))
    _multi_frame_txns(log)
    before = [(e.seq, e.id, e.recorded_at, e.data) for e in ctxdb.Store(log).read()]
    log.segment_events = seg
    new = log.seal()
    assert sum(s.rows for s in new) == 18 // seg * seg
    assert all(s.rows == seg for s in new)
    # visible in this process, from the cache or the copied frames
    assert [(e.seq, e.id, e.recorded_at, e.data) for e in ctxdb.Store(log).read()] == before
    st = log.stats()
    assert st["sealed_events"] + st["wal_events"] == 18
    log.close()
    after = _read_all(path, segment_events=seg)
    assert after == before
    assert [s for s, *_ in after] == list(range(1, 19))
    # the new WAL scans clean: every frame committed, its transactions' recorded_at intact
    res = scan(_wal(path), 18 // seg * seg + 1)
    assert res.committed_end == res.file_size and res.problem is None
    assert sum(f.count for f in res.committed) == 18 - 18 // seg * seg
    with ctxdb.open(path, segment_events=seg) as db:  # idempotency survives the carry-over
        assert db.append(events(20)) == list(range(1, 21))


def test_carried_frames_are_copied_not_reencoded(tmp_path):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=1000)
    _multi_frame_txns(log)
    old = _wal(path).read_bytes()
    old_frames = scan(_wal(path), 1).committed
    log.segment_events = 12  # boundary at seq 13: inside the last frame of transaction 2
    log.seal()
    new = _wal(path).read_bytes()
    new_frames = scan(_wal(path), 13).committed
    assert [(f.first_seq, f.count) for f in new_frames] == [(13, 1), (14, 5)]
    # the straddling frame's tail is re-encoded; from its end on (transaction 2's COMMIT frame,
    # transaction 3) the bytes are those of the old WAL
    tail_old = old[old_frames[3].end:]
    assert new.endswith(tail_old) and len(new) > len(tail_old)
    log.close()


def test_damaged_frame_in_the_carried_part_stops_the_seal(tmp_path):
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=1000)
    _multi_frame_txns(log)
    wal = _wal(path)
    frames = scan(wal, 1).committed
    with open(wal, "r+b") as f:  # the disk changes under the writer after verification
        f.seek(frames[-1].offset + HEADER_SIZE + 3)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x5A]))
    log.segment_events = 12
    with pytest.raises(ctxdb.CorruptionError) as ei:
        log.seal()
    assert ei.value.file == str(wal) and ei.value.offset == frames[-1].offset
    assert Manifest.load(path / "log").segments == []  # the seal never reached its commit point
    assert _wal(path) == wal  # its new WAL was removed
    log.close()


@pytest.mark.parametrize("fail_at", ["manifest", "unlink"])
def test_crash_inside_seal_loses_nothing(tmp_path, monkeypatch, fail_at):
    """A seal killed before its manifest (new WAL and segments are discarded on open) or after it
    (the old WAL is discarded): either way every committed event is there exactly once."""
    path = tmp_path / "s"
    log = DiskLog(path, segment_events=1000, clock=Clock(1_700_000_000_000_000))
    _multi_frame_txns(log)
    before = [(e.seq, e.id, e.recorded_at, e.data) for e in ctxdb.Store(log).read()]
    log.segment_events = 7

    class Crash(Exception):
        pass

    def boom(*a, **k):
        raise Crash()

    if fail_at == "manifest":
        monkeypatch.setattr(Manifest, "save", boom)
    else:
        monkeypatch.setattr(Path, "unlink", boom)
    with pytest.raises(Crash):
        log.seal()
    monkeypatch.undo()
    log._writer = None  # as if the process died here: nothing more is written
    log.close()
    assert len(list((path / "log").glob("wal-*.log"))) == 2
    with ctxdb.open(path, segment_events=7) as db:
        assert [(e.seq, e.id, e.recorded_at, e.data) for e in db.read()] == before
        assert db.recovery
        st = db.stats()
        assert st["segments"] == (0 if fail_at == "manifest" else 2)
        assert db.append(events(20)) == list(range(1, 21))


def test_seq_is_delta_encoded_and_duckdb_reads_it(tmp_path):
    import duckdb
    import pyarrow.parquet as pq

    with ctxdb.open(tmp_path / "s", segment_events=300) as db:
        db.append(events(700))
    files = sorted((tmp_path / "s" / "log").glob("seg-*.parquet"))
    assert len(files) == 2
    col = pq.ParquetFile(files[1]).metadata.row_group(0).column(0)
    assert col.path_in_schema == "seq" and "DELTA_BINARY_PACKED" in col.encodings
    got = duckdb.connect().execute(
        f"SELECT min(seq), max(seq), sum(seq), count(*) FROM read_parquet('{tmp_path}/s/log/seg-*.parquet') WHERE seq > 250"
    ).fetchone()
    assert got == (251, 600, sum(range(251, 601)), 350)


def test_sealing_commit_encodes_segments_while_the_wal_syncs_and_names_them_after(tmp_path, monkeypatch):
    import threading

    import ctxdb.log_disk as ld

    order, lock = [], threading.Lock()
    real_sync, real_save, real_write = DiskLog._sync, Manifest.save, ld.write_segment

    def sync(self):
        with lock:
            order.append("sync")
        real_sync(self)

    def save(self, logdir):
        with lock:
            order.append("manifest")
        real_save(self, logdir)

    def write_segment(*a, **k):
        with lock:
            order.append("segment")
        return real_write(*a, **k)

    monkeypatch.setattr(DiskLog, "_sync", sync)
    monkeypatch.setattr(Manifest, "save", save)
    monkeypatch.setattr(ld, "write_segment", write_segment)
    log = DiskLog(tmp_path / "s", segment_events=10)
    log.append_batch(_batch(25, 0))  # one commit that seals two segments
    assert order.index("manifest") > max(i for i, x in enumerate(order) if x in ("sync", "segment"))
    assert order.count("segment") == 2 and order[0] == "segment"  # encoding started before the sync
    assert log.stats()["segments"] == 2 and log.last_seq == 25
    log.close()


def test_failed_fsync_of_a_sealing_commit_names_no_segment(tmp_path, monkeypatch):
    log = DiskLog(tmp_path / "s", segment_events=10)
    log.append_batch(_batch(3, 0))

    def boom(self):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(DiskLog, "_sync", boom)
    with pytest.raises(OSError):
        log.append_batch(_batch(25, 100))
    assert Manifest.load(tmp_path / "s" / "log").segments == []
    monkeypatch.undo()
    log.close()
    with ctxdb.open(tmp_path / "s", segment_events=10) as db:  # leftovers removed; what the WAL holds is kept
        assert not list((tmp_path / "s" / "log").glob("seg-*-*.parquet")) or db.stats()["segments"]
        assert db.last_seq in (3, 28)
