"""The parallel decode path gives exactly what the sequential path gives: same events, same
seqs, same errors (absolute line numbers), same atomicity."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import ctxdb

from conftest import events, write_ndjson


@pytest.fixture
def parallel_env(monkeypatch):
    monkeypatch.setenv("CTXDB_PARALLEL_MIN_BYTES", "1")
    monkeypatch.setenv("CTXDB_PARALLEL_RANGE_BYTES", "2000")  # many small ranges


def test_parallel_matches_sequential(tmp_path, parallel_env, monkeypatch):
    evs = events(400) + events(50)  # with duplicates across ranges
    f = write_ndjson(tmp_path / "e.ndjson", evs)
    with ctxdb.open(tmp_path / "par", segment_events=100) as db:
        rep = db.ingest(f)
        par = [e.to_json() for e in db.read()]
    assert rep.appended == 400 and rep.duplicates == 50 and rep.records == 450
    monkeypatch.setenv("CTXDB_PARALLEL_MIN_BYTES", str(1 << 40))
    with ctxdb.open(tmp_path / "seq", segment_events=100) as db:
        db.ingest(f)
        seq = [e.to_json() for e in db.read()]
    strip = lambda lines: [json.loads(x) | {"recorded_at": None} for x in lines]  # noqa: E731
    assert strip(par) == strip(seq)


def test_parallel_error_names_absolute_line_and_appends_nothing(tmp_path, parallel_env):
    evs = events(300)
    evs[237]["time"] = "not a time"
    f = write_ndjson(tmp_path / "e.ndjson", evs)
    with ctxdb.open(tmp_path / "db") as db:
        db.append(events(2, start=1000))
        with pytest.raises(ctxdb.BadInput) as ei:
            db.ingest(f)
        assert ei.value.file == str(f) and ei.value.line == 238 and ei.value.field == "time"
        assert db.last_seq == 2


def test_parallel_error_in_json_syntax(tmp_path, parallel_env):
    f = tmp_path / "e.ndjson"
    lines = [json.dumps(e) for e in events(100)]
    lines[61] = lines[61][:20]
    f.write_text("\n".join(lines) + "\n")
    with ctxdb.open(tmp_path / "db") as db:
        with pytest.raises(ctxdb.BadInput) as ei:
            db.ingest(f)
        assert ei.value.line == 62 and "JSON" in str(ei.value)
        assert db.last_seq == 0


def test_parallel_path_leaves_overlong_lines_to_the_streaming_reader(tmp_path, parallel_env, monkeypatch):
    monkeypatch.setenv("CTXDB_PARALLEL_RANGE_BYTES", "100")
    f = tmp_path / "e.ndjson"
    big = json.dumps(dict(events(1)[0], id="big", data="x" * 5000))
    f.write_text(json.dumps(events(2)[1]) + "\n" + big + "\n")
    with ctxdb.open(tmp_path / "db") as db:
        from ctxdb.ingest import Ingest

        with pytest.raises(ctxdb.BadInput) as ei:
            Ingest(db.log, max_record_bytes=1000).run([f])
        assert ei.value.line == 2 and "limit" in str(ei.value)
        assert db.last_seq == 0


def test_parallel_error_in_the_first_range_decoded_by_the_parent(tmp_path, parallel_env):
    """The first range is decoded in the calling process while the workers start: its errors are
    reported like any other range's, and nothing is appended."""
    evs = events(300)
    evs[2]["subject"] = ""
    f = write_ndjson(tmp_path / "e.ndjson", evs)
    with ctxdb.open(tmp_path / "db") as db:
        with pytest.raises(ctxdb.BadInput) as ei:
            db.ingest(f)
        assert ei.value.file == str(f) and ei.value.line == 3 and ei.value.field == "subject"
        assert db.last_seq == 0
        rep = db.ingest(write_ndjson(tmp_path / "ok.ndjson", events(300)))
        assert rep.appended == 300 and [e.seq for e in db.read()] == list(range(1, 301))


def _shm_files(d) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.startswith("ctxdb-ingest-"))


def test_batches_shipped_through_shared_memory_leave_no_files(tmp_path, parallel_env, monkeypatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setenv("CTXDB_SHM_DIR", str(shm))
    evs = events(400)
    f = write_ndjson(tmp_path / "e.ndjson", evs + events(30))
    with ctxdb.open(tmp_path / "db", segment_events=100) as db:
        rep = db.ingest(f)
        assert rep.appended == 400 and rep.duplicates == 30
        got = [(e.id, e.json()) for e in db.read()]
    assert got == [(e["id"], e["data"]) for e in evs]
    assert _shm_files(shm) == []
    bad = evs[:]
    bad[390] = dict(bad[390], time="yesterday")  # an error late in the file, ranges still in flight
    with ctxdb.open(tmp_path / "db2") as db:
        with pytest.raises(ctxdb.BadInput):
            db.ingest(write_ndjson(tmp_path / "bad.ndjson", bad))
        assert db.last_seq == 0
    assert _shm_files(shm) == []


def test_stale_shared_memory_files_of_dead_processes_are_swept(tmp_path, parallel_env, monkeypatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setenv("CTXDB_SHM_DIR", str(shm))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that is gone
    old = time.time() - 3600
    for name, data in ((f"ctxdb-ingest-{proc.pid}-abc-3", b"left by a killed ingest"),
                       (f"ctxdb-ingest-{os.getpid()}-abc-4", b"a live process's"), ("unrelated", b"")):
        (shm / name).write_bytes(data)
        os.utime(shm / name, (old, old))
    (shm / f"ctxdb-ingest-{proc.pid}-abc-5").write_bytes(b"too recent to judge")
    with ctxdb.open(tmp_path / "db") as db:
        assert db.ingest(write_ndjson(tmp_path / "e.ndjson", events(200))).appended == 200
    assert sorted(os.listdir(shm)) == sorted([f"ctxdb-ingest-{os.getpid()}-abc-4", f"ctxdb-ingest-{proc.pid}-abc-5",
                                              "unrelated"])


def test_without_shared_memory_batches_go_through_the_pipe(tmp_path, parallel_env, monkeypatch):
    monkeypatch.setenv("CTXDB_SHM_DIR", str(tmp_path / "missing"))
    f = write_ndjson(tmp_path / "e.ndjson", events(300))
    with ctxdb.open(tmp_path / "db") as db:
        assert db.ingest(f).appended == 300
        assert [e.id for e in db.read()] == [f"ev-{i}" for i in range(300)]


_FORKSERVER_SCRIPT = """
{imports}
import sys
import multiprocessing.forkserver as fs

def main():
    with ctxdb.open(sys.argv[2]) as db:
        rep = db.ingest(sys.argv[1])
    maps = open(f"/proc/{{fs._forkserver._forkserver_pid}}/maps").read()
    print(rep.appended, rep.duplicates, "duckdb" in maps)

if __name__ == "__main__":
    main()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
@pytest.mark.parametrize("imports,store_in_forkserver,as_module", [
    ("import ctxdb", False, False),                               # workers never load the store
    ("import ctxdb", False, True),                                # python -m main_script
    ("import ctxdb\nfrom ctxdb import open as _o", False, False),  # a main script using the package: not run there
])
def test_forkserver_imports_only_what_workers_need(tmp_path, imports, store_in_forkserver, as_module):
    f = write_ndjson(tmp_path / "e.ndjson", events(600) + events(10))
    script = tmp_path / "main_script.py"
    script.write_text(_FORKSERVER_SCRIPT.format(imports=imports))
    env = dict(os.environ, CTXDB_PARALLEL_MIN_BYTES="1", CTXDB_PARALLEL_RANGE_BYTES="3000")
    main = ["-m", "main_script"] if as_module else [str(script)]
    out = subprocess.run([sys.executable, *main, str(f), str(tmp_path / "db")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["600", "10", str(store_in_forkserver)]


def test_a_main_script_without_the_main_guard_ingests_with_workers(tmp_path):
    """The decode workers' forkserver never runs the main script (it marks it imported): a
    script without the `if __name__ == "__main__":` guard ingests with its workers, runs once,
    and loses nothing."""
    write_ndjson(tmp_path / "e.ndjson", events(300) + events(20))
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import pathlib, ctxdb\n"
        "here = pathlib.Path(__file__).resolve().parent\n"
        "with ctxdb.open(here / 'db') as db:\n"
        "    rep = db.ingest(str(here / 'e.ndjson'))\n"
        "print('appended', rep.appended, 'duplicates', rep.duplicates)\n")
    env = dict(os.environ, CTXDB_PARALLEL_MIN_BYTES="1", CTXDB_PARALLEL_RANGE_BYTES="2000")
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", str(script)], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("appended") == 1 and "appended 300 duplicates 20" in proc.stdout
    assert "parallel decode unavailable" not in proc.stderr
    with ctxdb.open(tmp_path / "db", readonly=True) as db:
        got = [e.id for e in db.read()]
    assert got == [e["id"] for e in events(300)]


def test_workers_that_cannot_start_leave_the_decoding_to_the_caller(tmp_path, parallel_env, monkeypatch):
    """If the decode workers cannot be started, the ingest decodes in the calling process with
    a warning: same events, nothing lost."""
    from ctxdb import parallel

    def broken(ctx):
        raise OSError("no forkserver here")
    monkeypatch.setattr(parallel, "_start_forkserver", broken)
    write_ndjson(tmp_path / "e.ndjson", events(300) + events(20))
    with pytest.warns(RuntimeWarning, match="parallel decode unavailable"):
        with ctxdb.open(tmp_path / "db") as db:
            rep = db.ingest(str(tmp_path / "e.ndjson"))
    assert (rep.appended, rep.duplicates) == (300, 20)
    with ctxdb.open(tmp_path / "db", readonly=True) as db:
        assert [e.id for e in db.read()] == [e["id"] for e in events(300)]
