"""The ctxdb command, through typer's runner and through real subprocesses (pipes, exit codes)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

import ctxdb
from ctxdb_cli.main import app

from conftest import events, run_cli, write_ndjson

runner = CliRunner()


def test_ingest_stats_log_roundtrip(tmp_path):
    db = str(tmp_path / "db")
    f = write_ndjson(tmp_path / "e.ndjson", events(40))
    r = runner.invoke(app, ["ingest", "--db", db, "--json", str(f)])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["appended"] == 40 and rep["first_seq"] == 1 and rep["last_seq"] == 40
    r = runner.invoke(app, ["stats", "--db", db, "--json"])
    st = json.loads(r.stdout)
    assert st["events"] == 40 and st["first_seq"] == 1 and st["last_seq"] == 40 and st["bytes_on_disk"] > 0
    r = runner.invoke(app, ["log", "--db", db, "--type", "order.*", "--limit", "3"])
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 3 and all(x["type"] == "order.shipped" for x in lines)
    r = runner.invoke(app, ["log", "--db", db, "--last", "2"])
    assert [json.loads(x)["seq"] for x in r.stdout.splitlines()] == [39, 40]


def test_db_from_environment(tmp_path):
    f = write_ndjson(tmp_path / "e.ndjson", events(3))
    r = run_cli("ingest", str(f), env={"CTXDB_PATH": str(tmp_path / "envdb")})
    assert r.returncode == 0 and "3 appended" in r.stderr.decode()
    assert (tmp_path / "envdb" / "log").is_dir()


def test_bad_input_exit_code_65_and_message(tmp_path):
    f = tmp_path / "bad.ndjson"
    f.write_text('{"type":"t","subject":"s","time":"2026-11-01T00:00:00Z"}\n')
    r = run_cli("ingest", "--db", str(tmp_path / "db"), str(f))
    assert r.returncode == 65
    err = r.stderr.decode()
    assert f"{f}:1:" in err and "`data`" in err and "Traceback" not in err


def test_locked_store_exit_code_75(tmp_path):
    with ctxdb.open(tmp_path / "db"):
        f = write_ndjson(tmp_path / "e.ndjson", events(1))
        r = run_cli("ingest", "--db", str(tmp_path / "db"), str(f))
    assert r.returncode == 75 and b"locked by pid" in r.stderr


def test_log_on_missing_store_is_an_error(tmp_path):
    r = run_cli("log", "--db", str(tmp_path / "none"))
    assert r.returncode == 1 and b"no ctxdb store" in r.stderr


def test_stdin_batches_commit_on_idle_without_eof(tmp_path):
    """`tail -f app.log | ctxdb ingest -`: events become visible while the pipe is still open."""
    db = tmp_path / "db"
    exe = Path(sys.executable).parent / "ctxdb"
    proc = subprocess.Popen([str(exe), "ingest", "--db", str(db), "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write("".join(json.dumps(e) + "\n" for e in events(3)).encode())
    proc.stdin.flush()
    seen = 0
    for _ in range(300):  # poll; the batch must commit on idle, not on EOF
        time.sleep(0.1)
        if (db / "log").exists():
            with ctxdb.open(db, readonly=True) as ro:
                seen = ro.last_seq
        if seen:
            break
    still_open = proc.poll() is None
    proc.stdin.close()
    proc.wait(timeout=30)
    assert still_open and seen == 3
    assert proc.returncode == 0


def test_log_follow_prints_new_events(tmp_path):
    db = tmp_path / "db"
    with ctxdb.open(db) as w:
        w.append(events(2))
    exe = Path(sys.executable).parent / "ctxdb"
    proc = subprocess.Popen([str(exe), "log", "--db", str(db), "--follow"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    got = [json.loads(proc.stdout.readline())["seq"] for _ in range(2)]
    with ctxdb.open(db) as w:
        w.append(events(1, start=2))
    got.append(json.loads(proc.stdout.readline())["seq"])
    proc.kill()
    proc.wait()
    assert got == [1, 2, 3]


def test_piped_ingest_prints_only_the_summary(tmp_path):
    f = write_ndjson(tmp_path / "e.ndjson", events(5))
    r = run_cli("ingest", "--db", str(tmp_path / "db"), str(f))
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 0 and len(err) == 1 and "5 appended" in err[0] and "events/s" in err[0]


def test_engine_does_not_import_cli_libraries():
    code = "import sys, ctxdb; ctxdb.open_memory(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer','rich','click')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_demo_shows_the_view_now_and_as_of_earlier(tmp_path):
    outs = []
    for _ in range(2):  # idempotent: the second run appends nothing
        r = run_cli("demo", "--db", str(tmp_path / "demo"))
        out = r.stdout.decode()
        assert r.returncode == 0, r.stderr
        assert "support-bot's view now" in out and "between the commits" in out
        assert "identical to the view served live" in out
        assert "## Persona" in out and "You are Mia" in out
        outs.append(out)
    assert "2 duplicates" not in outs[0]
    with ctxdb.open(tmp_path / "demo") as db:
        n = db.last_seq
        assert n == 510  # 509 sample events + 1 policy event, nothing twice
        v = db.view("support-bot")
        assert v.tokens <= v.budget
        # The as-of view printed by the first run is reproducible by seq from the log.
        earlier = db.view("support-bot", seq=340)
        assert earlier.hash in outs[0]
