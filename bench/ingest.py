"""Ingest benchmark: ctxdb durable NDJSON ingest against the parse limit, SQLite and eventsourcing.

    .venv/bin/python bench/ingest.py --events 1000000     # ~a few minutes on 2 cores
    .venv/bin/python bench/ingest.py --events 20000       # quick check

Generates N deterministic, seeded events (Slack messages, Jira issue updates, GitHub pushes and
pull requests, shop orders; ~250 bytes a line) to bench/out/events.ndjson, reused while N and the
seed are unchanged. Then measures, each in a fresh temp dir under /tmp, with time.perf_counter:

  a. ctxdb durable ingest: open + db.ingest(file) + close (fsync on commit, the default), then
     bytes on disk / segments / compression ratio from a read-only open's stats();
  b. ctxdb re-ingest of the same file into the same store (every event a duplicate);
  c. bare msgspec decode of the envelope (gc=False Struct, data kept as msgspec.Raw): the parse
     limit, run as a straightforward reader would (whole file read, split, gc enabled);
  d. stdlib sqlite3: WAL, synchronous=NORMAL, INSERT OR IGNORE with UNIQUE(source, id), 10k rows
     a transaction, each line decoded with the same Struct, data stored as its raw JSON text;
  e. eventsourcing 9.x SQLite recorders (StoredEvent per line, one aggregate per subject, the whole
     line as state, 10k events an insert_events call) on a sample of min(N, 100k) events.

Every timing includes reading the file (from the page cache: it is read once beforehand).
Prints a table and the targets check; writes everything to bench/out/ingest.json.
"""
from __future__ import annotations

import argparse
import calendar
import gc
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import msgspec

import ctxdb

OUT = Path(__file__).resolve().parent / "out"
SEED = 20261101
GEN_VERSION = 2
ES_SAMPLE = 100_000
BATCH = 10_000

WORDS = """the a to and of in is for on it that this we with be are not can from at have fix deploy build
test release merge review branch main issue bug error timeout latency customer order payment invoice refund
shipping cart checkout api endpoint service database query index cache migration schema config flag rollout
rollback alert incident oncall pager dashboard metric log trace span retry queue worker job cron backup
restore staging production prod dev ticket sprint standup demo meeting sync call tomorrow today yesterday
friday monday please thanks ok sure done looks good lgtm ship it blocked waiting update status priority high
low urgent p1 p2 owner team frontend backend mobile ios android web ui ux design spec doc draft pr ci
pipeline flaky green red failing passing coverage lint types refactor cleanup perf memory cpu disk network
dns tls cert auth login token session user account admin permission role billing plan trial upgrade churn
report export import csv json webhook event stream kafka postgres redis s3 bucket region eu us just still
maybe already now soon later again also only very really quite about around after before when while if then
so but because hmm yes no""".split()
CUM = [sum(1.0 / (r + 1) ** 0.8 for r in range(i + 1)) for i in range(len(WORDS))]  # Zipf-ish
FIRST = "alice bob carol dave erin frank grace heidi ivan judy mallory nia oscar peggy quinn rupert sybil trent ursula victor wendy xena yusuf zoe".split()
LAST = "smith jones kim garcia nguyen muller rossi silva tanaka khan cohen novak olsen park lee".split()
USERS = [f"{f}.{last}" for f in FIRST for last in LAST]
CHANNELS = [(f"C0{i:07X}", n) for i, n in enumerate(
    "general random eng-backend eng-frontend incidents deploys support sales design product data ops".split())]
PROJECTS, STATUSES = ["CORE", "WEB", "MOB", "OPS", "DATA", "SHOP"], ["To Do", "In Progress", "In Review", "Done"]
REPOS = [f"acme/{r}" for r in "api web mobile infra billing search shop-frontend data-pipeline".split()]
PR_ACTIONS = ["opened", "closed", "merged", "review_requested", "synchronize"]
ORDERS, CARRIERS = ["created", "paid", "shipped", "refunded"], ["UPS", "DHL", "FedEx", "USPS", "GLS"]


class Env(msgspec.Struct, gc=False):  # the envelope as a reader decodes it; data stays raw JSON
    type: str
    subject: str
    time: str
    data: msgspec.Raw
    id: str | None = None
    source: str | None = None


DEC = msgspec.json.Decoder(Env)


# ---- event generation (not measured) ---------------------------------------------------------
def generate(path: Path, n: int) -> None:
    rng = random.Random(SEED)
    enc = msgspec.json.Encoder()

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choices(WORDS, cum_weights=CUM, k=rng.randint(lo, hi)))

    t = calendar.timegm((2026, 11, 1, 0, 0, 0))
    with open(path, "wb") as f:
        for i in range(n):
            t += 1e-6 + rng.random() * 2
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
            user, kind = rng.choice(USERS), rng.random()
            if kind < 0.40:
                ch, name = rng.choice(CHANNELS)
                data: dict[str, Any] = {"channel": ch, "user": user, "text": text(2, 11)}
                if rng.random() < 0.3:
                    data["thread_ts"] = f"{t - rng.randint(60, 86400):.6f}"
                ev = {"id": f"{t:.6f}", "source": "slack", "type": "slack.message.posted", "subject": f"slack:{name}"}
            elif kind < 0.60:
                key = f"{rng.choice(PROJECTS)}-{rng.randint(1, 4000)}"
                old, new = rng.sample(STATUSES, 2)
                data = {"issue": key, "actor": user, "changes": [{"field": "status", "from": old, "to": new}]}
                if rng.random() < 0.5:
                    data["comment"] = text(2, 10)
                ev = {"id": str(10_000_000 + i), "source": "jira", "type": "jira.issue.updated", "subject": f"jira:{key}"}
            elif kind < 0.85:
                repo = rng.choice(REPOS)
                gid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                if rng.random() < 0.55:
                    data = {"ref": f"refs/heads/{rng.choice(['main', 'dev', 'fix-' + rng.choice(WORDS)])}",
                            "after": f"{rng.getrandbits(160):040x}", "pusher": user, "message": text(2, 8)}
                    ev = {"id": gid, "source": "github", "type": "github.push", "subject": f"github:{repo}"}
                else:
                    num, action = rng.randint(1, 3000), rng.choice(PR_ACTIONS)
                    data = {"number": num, "user": user, "title": text(2, 8),
                            "additions": rng.randint(0, 900), "deletions": rng.randint(0, 400)}
                    ev = {"id": gid, "source": "github", "type": f"github.pull_request.{action}",
                          "subject": f"github:{repo}#{num}"}
            else:
                oid, typ = rng.randint(100_000, 999_999), "order." + rng.choice(ORDERS)
                items = [{"sku": f"SKU-{rng.randint(1, 20000):05d}", "qty": rng.randint(1, 3),
                          "price": rng.randint(299, 19999)} for _ in range(rng.choice((1, 1, 2)))]
                data = {"order_id": oid, "customer": f"cus_{rng.randint(1, 200000)}", "items": items,
                        "total": sum(x["qty"] * x["price"] for x in items), "currency": "EUR"}
                if typ == "order.shipped":
                    data["carrier"], data["tracking"] = rng.choice(CARRIERS), f"1Z{rng.getrandbits(48):012X}"
                ev = {"id": f"evt_{i:09d}", "source": "shop", "type": typ, "subject": f"order:{oid}"}
            ev["time"], ev["data"] = ts, data
            f.write(enc.encode(ev) + b"\n")


def ensure_events(n: int) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path, meta = OUT / "events.ndjson", OUT / "events.meta.json"
    want = {"events": n, "seed": SEED, "generator": GEN_VERSION}
    if not (path.exists() and meta.exists() and json.loads(meta.read_text()) == want):
        t0 = time.perf_counter()
        generate(path, n)
        meta.write_text(json.dumps(want))
        print(f"generated {n:,} events in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


# ---- measurements ------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_ctxdb(src: Path, n: int, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    store = tmp / "ctxdb"

    def run() -> Any:  # open .. ingest .. close
        with ctxdb.open(store) as db:
            return db.ingest(str(src))

    secs, rep = timed(run)
    assert rep.appended == n, f"ctxdb appended {rep.appended}, expected {n}"
    with ctxdb.open(store, readonly=True) as ro:
        st = ro.stats()
    first = {"events": n, "seconds": secs, "events_per_s": n / secs, "bytes_on_disk": st["bytes_on_disk"],
             "ingest_report_seconds": rep.seconds, "stats": st}
    secs2, rep2 = timed(run)
    assert rep2.appended == 0 and rep2.duplicates == n, f"re-ingest: {rep2.summary()}"
    again = {"events": n, "seconds": secs2, "events_per_s": n / secs2, "duplicates": rep2.duplicates}
    return first, again


def read_lines(src: Path) -> list[bytes]:
    with open(src, "rb") as f:
        return f.read().splitlines()


def bench_decode(src: Path, n: int) -> dict[str, Any]:
    def run() -> int:
        count = 0
        for line in read_lines(src):
            DEC.decode(line)
            count += 1
        return count

    secs, count = timed(run)
    assert count == n
    return {"events": n, "seconds": secs, "events_per_s": n / secs, "struct_gc": False, "gc_enabled": True}


def bench_sqlite(src: Path, n: int, tmp: Path) -> dict[str, Any]:
    path = tmp / "events.sqlite"
    con = sqlite3.connect(path)  # default isolation: an implicit BEGIN before the first INSERT
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE events(seq INTEGER PRIMARY KEY, id TEXT, source TEXT, type TEXT, "
                "subject TEXT, time TEXT, data TEXT, UNIQUE(source, id))")
    sql = "INSERT OR IGNORE INTO events(id, source, type, subject, time, data) VALUES (?,?,?,?,?,?)"

    def run() -> None:
        lines = read_lines(src)
        for off in range(0, len(lines), BATCH):
            rows: list[tuple[Any, ...]] = []
            for line in lines[off : off + BATCH]:
                e = DEC.decode(line)
                rows.append((e.id, e.source, e.type, e.subject, e.time, bytes(e.data).decode()))
            with con:  # BEGIN .. COMMIT
                con.executemany(sql, rows)
        con.close()

    secs, _ = timed(run)
    on_disk = sum(p.stat().st_size for p in tmp.glob("events.sqlite*"))
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM events").fetchone()[0] == n, "sqlite row count"
    check.close()
    return {"events": n, "seconds": secs, "events_per_s": n / secs, "bytes_on_disk": on_disk}


def bench_eventsourcing(src: Path, k: int, tmp: Path, application: bool) -> dict[str, Any]:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteApplicationRecorder, SQLiteDatastore

    path = tmp / ("es-app.sqlite" if application else "es-agg.sqlite")
    ds = SQLiteDatastore(str(path))
    rec = (SQLiteApplicationRecorder if application else SQLiteAggregateRecorder)(ds)
    rec.create_table()

    def run() -> int:
        with open(src, "rb") as f:
            lines = [x.rstrip(b"\n") for x in islice(f, k)]
        ids: dict[str, uuid.UUID] = {}
        versions: dict[str, int] = {}
        for off in range(0, len(lines), BATCH):
            batch: list[StoredEvent] = []
            for line in lines[off : off + BATCH]:
                e = DEC.decode(line)
                oid = ids.get(e.subject) or ids.setdefault(e.subject, uuid.uuid5(uuid.NAMESPACE_URL, e.subject))
                v = versions[e.subject] = versions.get(e.subject, 0) + 1
                batch.append(StoredEvent(originator_id=oid, originator_version=v, topic=e.type, state=line))
            rec.insert_events(batch)  # one transaction
        ds.close()
        return sum(map(len, lines)) + len(lines)

    secs, jsonl = timed(run)
    on_disk = sum(p.stat().st_size for p in tmp.glob(path.name + "*"))
    return {"events": k, "seconds": secs, "events_per_s": k / secs, "bytes_on_disk": on_disk, "jsonl_bytes": jsonl}


# ---- report ------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    n = ap.parse_args().events
    src = ensure_events(n)
    jsonl = src.stat().st_size
    read_lines(src)  # warm the page cache so every system reads the file from memory
    print(f"{n:,} events, {jsonl:,} bytes of NDJSON, {jsonl / n:.1f} bytes/line on average")

    tmp = Path(tempfile.mkdtemp(prefix="ctxdb-bench-", dir="/tmp"))
    try:
        res: dict[str, dict[str, Any]] = {}
        res["msgspec_decode"] = bench_decode(src, n)
        res["ctxdb"], res["ctxdb_reingest"] = bench_ctxdb(src, n, tmp)
        res["sqlite"] = bench_sqlite(src, n, tmp)
        k = min(n, ES_SAMPLE)
        res["eventsourcing_aggregate"] = bench_eventsourcing(src, k, tmp, application=False)
        res["eventsourcing_application"] = bench_eventsourcing(src, k, tmp, application=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    labels = {
        "ctxdb": "ctxdb ingest (durable, fsync)",
        "ctxdb_reingest": "ctxdb re-ingest (all duplicates)",
        "msgspec_decode": "msgspec envelope decode (parse limit)",
        "sqlite": "sqlite3 WAL sync=NORMAL, 10k/txn",
        "eventsourcing_aggregate": f"eventsourcing AggregateRecorder (n={k:,})",
        "eventsourcing_application": f"eventsourcing ApplicationRecorder (n={k:,})",
    }
    base = res["ctxdb"]["events_per_s"]
    print(f"\n{'system':<46}{'events':>10}{'seconds':>9}{'events/s':>12}{'vs ctxdb':>10}{'bytes on disk':>15}{'disk/JSONL':>11}")
    for key, label in labels.items():
        r = res[key]
        r["vs_ctxdb"] = r["events_per_s"] / base
        size = r.get("bytes_on_disk")
        if size is not None:
            r["disk_over_jsonl"] = size / r.get("jsonl_bytes", jsonl)
        disk = f"{size:>15,}{r['disk_over_jsonl']:>11.3f}" if size is not None else f"{'-':>15}{'-':>11}"
        print(f"{label:<46}{r['events']:>10,}{r['seconds']:>9.2f}{r['events_per_s']:>12,.0f}{r['vs_ctxdb']:>9.2f}x{disk}")
    c, st = res["ctxdb"], res["ctxdb"]["stats"]
    print(f"\nctxdb: {st['segments']} segments, {st['wal_events']:,} events in the WAL, "
          f"compression ratio {st['compression_ratio']} (JSON bytes / log bytes)")
    print("msgspec decode: Struct with gc=False, gc enabled, whole file read then split into lines")

    dec, sql = res["msgspec_decode"]["events_per_s"], res["sqlite"]["events_per_s"]
    targets = [
        ("ctxdb durable ingest >= 500,000 events/s", base >= 500_000, f"{base:,.0f} events/s"),
        ("ctxdb >= 0.5x bare msgspec decode", base >= 0.5 * dec, f"{base / dec:.2f}x ({dec:,.0f} events/s)"),
        ("ctxdb >= 1.5x SQLite", base >= 1.5 * sql, f"{base / sql:.2f}x ({sql:,.0f} events/s)"),
        ("ctxdb bytes on disk <= 0.3x JSONL", c["disk_over_jsonl"] <= 0.3,
         f"{c['disk_over_jsonl']:.3f}x ({c['bytes_on_disk']:,} of {jsonl:,} bytes)"),
    ]
    print("\ntargets:")
    for name, ok, measured in targets:
        print(f"  {'PASS' if ok else 'MISS'}  {name}: {measured}")

    report = {
        "events": n, "jsonl_bytes": jsonl, "avg_line_bytes": jsonl / n, "seed": SEED, "results": res,
        "targets": [{"target": t, "pass": ok, "measured": m} for t, ok, m in targets],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "machine": platform.machine()},
        "versions": {p: version(p) for p in ("ctxdb", "msgspec", "pyarrow", "zstandard", "numpy", "eventsourcing")}
        | {"sqlite": sqlite3.sqlite_version},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (OUT / "ingest.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
