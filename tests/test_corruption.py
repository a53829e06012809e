"""Damaged stores: every kind of damage gives the specified behaviour and an actionable message."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import ctxdb
from ctxdb.wal import HEADER_SIZE, scan

from conftest import events


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def _wal(store_path: Path) -> Path:
    (wal,) = sorted((store_path / "log").glob("wal-*.log"))
    return wal


def _three_txns(store_path: Path) -> None:
    with ctxdb.open(store_path) as db:
        for k in range(3):
            db.append(events(4, start=4 * k))


def _sealed(store_path: Path, n: int, pattern: str = "seg-*.parquet") -> list[Path]:
    """A store of n events in segments of 10; its files matching pattern, in seq order."""
    with ctxdb.open(store_path, segment_events=10) as db:
        db.append(events(n))
    return sorted((store_path / "log").glob(pattern))


def test_flipped_byte_in_sealed_segment_is_a_hard_error_with_file_and_offset(store_path):
    seg = _sealed(store_path, 25)[1]
    _flip(seg, 200)
    with ctxdb.open(store_path, segment_events=10) as db:
        assert [e.seq for e in db.read(to_seq=10)] == list(range(1, 11))  # other segment fine
        with pytest.raises(ctxdb.CorruptionError) as ei:
            list(db.read())
        err = ei.value
        assert err.file == str(seg) and err.offset == 0
        assert "checksum mismatch" in str(err) and "11..20" in str(err) and "backup" in str(err)


def test_flipped_byte_in_last_wal_frame_is_truncated_and_reported(store_path):
    _three_txns(store_path)
    wal = _wal(store_path)
    res = scan(wal, 1)
    last_commit_end = res.committed_end
    _flip(wal, last_commit_end - 2)  # inside the final COMMIT frame
    with ctxdb.open(store_path) as db:
        assert db.last_seq == 8
        assert [e.seq for e in db.read()] == list(range(1, 9))
        assert any("torn tail truncated" in m for m in db.recovery.messages)
        assert db.append(events(4, start=8)) == [9, 10, 11, 12]  # the lost txn can be re-sent
    assert os.path.getsize(wal) > last_commit_end - HEADER_SIZE  # the re-sent txn is on disk


def test_flipped_byte_before_valid_frames_is_a_hard_error(store_path):
    _three_txns(store_path)
    wal = _wal(store_path)
    first = scan(wal, 1).committed[0]
    _flip(wal, first.offset + HEADER_SIZE + 5)
    size = os.path.getsize(wal)
    with pytest.raises(ctxdb.CorruptionError) as ei:
        ctxdb.open(store_path)
    assert ei.value.file == str(wal) and ei.value.offset == first.offset
    assert "acknowledged data is damaged" in str(ei.value)
    assert os.path.getsize(wal) == size  # nothing was truncated away
    with pytest.raises(ctxdb.CorruptionError):
        ctxdb.open(store_path, readonly=True)


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 3, HEADER_SIZE + 2])
def test_truncated_wal_recovers_to_last_commit(store_path, cut):
    _three_txns(store_path)
    wal = _wal(store_path)
    res = scan(wal, 1)
    second_end = [f for f in res.committed][1].end + HEADER_SIZE  # data frame + commit frame of txn 2
    with open(wal, "r+b") as f:
        f.truncate(second_end + cut)
    with ctxdb.open(store_path) as db:
        assert [e.seq for e in db.read()] == list(range(1, 9))
        assert db.recovery and "truncated" in db.recovery.messages[0]
    assert os.path.getsize(wal) == second_end


def test_truncated_segment_fails_open_naming_the_file(store_path):
    seg = _sealed(store_path, 20)[0]
    with open(seg, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ctxdb.CorruptionError) as ei:
        ctxdb.open(store_path)
    assert ei.value.file == str(seg) and "truncated" in str(ei.value) and "1..10" in str(ei.value)


def test_deleted_segment_fails_open_naming_the_lost_events(store_path):
    seg = _sealed(store_path, 30)[1]
    seg.unlink()
    for ro in (False, True):
        with pytest.raises(ctxdb.CorruptionError) as ei:
            ctxdb.open(store_path, readonly=ro)
        assert "missing" in str(ei.value) and "11..20" in str(ei.value) and seg.name in str(ei.value)


def test_garbage_manifest_is_a_hard_error(store_path):
    _sealed(store_path, 10)
    (store_path / "log" / "manifest.json").write_bytes(b"{not json")
    with pytest.raises(ctxdb.CorruptionError, match="manifest"):
        ctxdb.open(store_path)


def test_damaged_key_file_is_rebuilt_and_dedup_still_works(store_path):
    keys = _sealed(store_path, 20, "keys-*.npy")[0]
    _flip(keys, 300)
    with ctxdb.open(store_path, segment_events=10) as db:
        assert db.append(events(22)) == list(range(1, 23))


def test_leftovers_of_an_interrupted_seal_are_removed(store_path):
    with ctxdb.open(store_path, segment_events=100) as db:
        db.append(events(30))
    logdir = store_path / "log"
    (logdir / "seg-00000000000000000001-00000000000000000030.parquet").write_bytes(b"partial")
    (logdir / "manifest.json.tmp").write_bytes(b"{")
    (logdir / "wal-00000000000000000031.log").write_bytes(b"")
    with ctxdb.open(store_path) as db:
        assert [e.seq for e in db.read()] == list(range(1, 31))
        assert db.recovery
    assert not (logdir / "manifest.json.tmp").exists()
    assert not (logdir / "seg-00000000000000000001-00000000000000000030.parquet").exists()
