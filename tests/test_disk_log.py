"""DiskLog specifics: persistence, sealing, locking, read-only readers, SQL over segments."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import duckdb
import pyarrow.parquet as pq
import pytest

import ctxdb

from conftest import events


def test_events_and_dedup_survive_reopen(store_path):
    with ctxdb.open(store_path, segment_events=10) as db:
        assert db.append(events(25)) == list(range(1, 26))
    with ctxdb.open(store_path, segment_events=10) as db:
        assert db.append(events(30)) == list(range(1, 31))  # 25 duplicates across the restart
        assert db.last_seq == 30
        assert [e.id for e in db.read()] == [f"ev-{i}" for i in range(30)]
        assert db.stats()["segments"] == 3 and db.stats()["wal_events"] == 0


def test_reads_span_segments_and_wal(store_path):
    with ctxdb.open(store_path, segment_events=8) as db:
        for k in range(5):
            db.append(events(7, start=7 * k))
        st = db.stats()
        assert st["segments"] >= 2 and st["wal_events"] > 0
        assert [e.seq for e in db.read(from_seq=5, to_seq=30)] == list(range(5, 31))
        assert [e.seq for e in db.read()] == list(range(1, 36))
        # the WAL's event count (kept per change, read by every commit) matches its frames
        log = db.log
        assert log._wal_events == sum(c.frame.count for c in log._wal_chunks) == st["wal_events"]
    with ctxdb.open(store_path, segment_events=8) as db:  # after recovery's scan of the WAL
        log = db.log
        assert log._wal_events == sum(c.frame.count for c in log._wal_chunks) > 0
        db.append(events(20, start=100))
        assert log._wal_events == sum(c.frame.count for c in log._wal_chunks) == db.stats()["wal_events"]


def test_segments_are_plain_parquet_readable_by_duckdb(store_path):
    with ctxdb.open(store_path, segment_events=10) as db:
        db.append(events(20))
    files = sorted((store_path / "log").glob("seg-*.parquet"))
    assert len(files) == 2
    t = pq.read_table(files[0])
    assert t.column("seq").to_pylist() == list(range(1, 11))
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT type, count(*) FROM read_parquet('{store_path}/log/seg-*.parquet') GROUP BY type ORDER BY type"
    ).fetchall()
    assert sum(n for _, n in rows) == 20
    n = con.execute(
        f"SELECT json_extract(data, '$.n')::INT FROM read_parquet('{store_path}/log/seg-*.parquet') WHERE seq = 7"
    ).fetchone()[0]
    assert n == 6


def test_second_writer_in_another_process_is_told_the_pid(store_path):
    with ctxdb.open(store_path) as db:
        db.append(events(1))
        code = textwrap.dedent(f"""
            import ctxdb, sys
            try:
                ctxdb.open({str(store_path)!r})
            except ctxdb.LockedError as e:
                print(e); sys.exit(3)
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 3, r.stderr
        assert f"locked by pid {os.getpid()}" in r.stdout


def test_second_writer_in_same_process_fails_and_readers_work(store_path):
    with ctxdb.open(store_path) as db:
        db.append(events(3))
        with pytest.raises(ctxdb.LockedError):
            ctxdb.open(store_path)
        with ctxdb.open(store_path, readonly=True) as ro:
            assert ro.last_seq == 3
            with pytest.raises(ctxdb.ReadOnlyError):
                ro.append(events(1, start=3))
            db.append(events(2, start=3))
            ro.refresh()
            assert ro.last_seq == 5
    with ctxdb.open(store_path) as db:  # the lock went with the writer
        assert db.last_seq == 5


def test_readonly_open_of_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(ctxdb.CtxdbError, match="no ctxdb store"):
        ctxdb.open(tmp_path / "nope", readonly=True)


def test_reader_sees_events_after_writer_seals(store_path):
    with ctxdb.open(store_path, segment_events=5) as db:
        ro = ctxdb.open(store_path, readonly=True)
        db.append(events(4))
        ro.refresh()
        assert ro.last_seq == 4
        db.append(events(4, start=4))  # seals: the WAL the reader looked at is gone
        ro.refresh()
        assert [e.seq for e in ro.read()] == list(range(1, 9))
        ro.close()


def test_concurrent_appenders_share_commits_and_stay_gapless(store_path):
    import threading

    with ctxdb.open(store_path, segment_events=500) as db:
        def work(k: int) -> None:
            for j in range(20):
                db.append(events(10, start=10_000 * k + 10 * j, source=f"t{k}"))
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seqs = [e.seq for e in db.read()]
        assert seqs == list(range(1, 801))
        assert len({(e.source, e.id) for e in db.read()}) == 800


def test_stats_fields(store_path):
    with ctxdb.open(store_path, segment_events=10) as db:
        db.append(events(15))
        st = db.stats()
    assert st["events"] == 15 and st["first_seq"] == 1 and st["last_seq"] == 15
    assert st["bytes_on_disk"] > 0 and st["segments"] == 1 and st["compression_ratio"] > 0
    assert st["time_min"].startswith("2026-11-01")


def test_wait_returns_when_seq_is_visible(store):
    store.append(events(2))
    assert store.wait(2, timeout=1)
    assert not store.wait(3, timeout=0.05)


def test_filtered_reads_skip_row_groups_without_a_match(store_path, monkeypatch):
    """A read by type or subject decodes the other columns only of the row groups holding a
    match; what it returns is exactly the full read filtered, at any seq range."""
    from ctxdb import segment

    monkeypatch.setattr(segment, "ROW_GROUP", 16)
    evs = [dict(e, type="rare" if i in (3, 70, 71, 150) else "common",
                subject="user:9" if i % 37 == 0 else e["subject"]) for i, e in enumerate(events(200))]
    with ctxdb.open(store_path, segment_events=64) as db:
        db.append(evs)
        assert db.stats()["segments"] == 3
        decoded = []
        real = segment.pq.ParquetFile.read_row_group

        def spy(self, i, columns=None, **kw):
            decoded.append((i, tuple(columns or ())))
            return real(self, i, columns=columns, **kw)

        monkeypatch.setattr(segment.pq.ParquetFile, "read_row_group", spy)
        every = list(db.read())
        for kw in ({"type": "rare"}, {"subject": "user:9"}, {"type": "common", "subject": "user:9"},
                   {"type": "rare", "from_seq": 5, "to_seq": 100}, {"type": "nothing"},
                   {"subject": "user:*", "from_seq": 70, "to_seq": 80}):
            lo, hi, pat = kw.get("from_seq", 1), kw.get("to_seq", 200), kw.get("subject")
            want = [e for e in every if lo <= e.seq <= hi and e.type == kw.get("type", e.type)
                    and (pat is None or e.subject == pat or (pat.endswith("*") and e.subject.startswith(pat[:-1])))]
            assert want or kw.get("type") == "nothing"
            decoded.clear()
            got = list(db.read(**kw))
            assert [(e.seq, e.id, e.data, e.recorded_at) for e in got] == \
                [(e.seq, e.id, e.data, e.recorded_at) for e in want], kw
            full = [d for d in decoded if "data" in d[1]]
            if kw == {"type": "rare"}:  # seqs 4, 71, 72 and 151: 3 of the 12 row groups of 3 segments
                assert len(decoded) - len(full) == 12 and [d[0] for d in full] == [0, 0, 1], decoded
            if kw.get("type") == "nothing":
                assert full == [], decoded
