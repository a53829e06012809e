"""Semantic benchmark: embedding throughput, dedup savings, query-aware view and search latency.

    .venv/bin/python bench/semantic.py              # ~5 min: 10 k items embedded, 200 views, 200 searches
    .venv/bin/python bench/semantic.py --items 2000 # quick check
    .venv/bin/python bench/semantic.py --all        # also runs bench/semantic_index.py (FAISS at 100 k
                                                    # and 1 M) and bench/recall.py and merges their JSON

Measured in one run, all through the public API (`ctxdb.open`, `db.wait`, `db.view`, `db.search`):

  a. embedding throughput: all-MiniLM-L6-v2 sentences/s at batch sizes 16/64/256 on 1024 item
     texts of the bundled support sample (the background embedder uses 64)
  b. background embedding: `--items` events appended in one go, then the time until `db.wait()`
     says the embedder covers the log (texts/s end to end, with the append time as the peer)
  c. dedup savings: item versions vs distinct texts (= embeddings computed) on the bundled support
     sample and on this run's stream
  d. query-aware view latency: `db.view(agent, query=q)` at the live position over `--items`
     visible items, 2000-token budget: p50/p99 for a query seen before (its vector stored) and for
     new queries (one model call each); the plain materialized view and an as-of query view
     (item store read) in the same run as peers
  e. search latency: `db.search(agent, q, k=10)` p50/p99 over the same items

Writes bench/out/semantic.json (and includes bench/out/semantic_index.json and recall.json when
present).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ctxdb  # noqa: E402
from ctxdb import embed  # noqa: E402
from ctxdb.embed import MiniLM  # noqa: E402

OUT = ROOT / "bench" / "out"

CONFIG = """
[[rules]]
on = "note.*"
key = "{subject}/{id}"
text = "{data.text}"
kind = "fact"

[agents.support-bot]
budget = 2000
[snapshots]
every = 0
"""

NAMES = ["Alice", "Bob", "Carla", "Deniz", "Emeka", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena",
         "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq"]
PRODUCTS = ["Chemex 6-cup", "V60 dripper", "French press", "burr grinder", "gooseneck kettle", "espresso tamper",
            "milk jug", "Ethiopia Yirgacheffe beans", "Colombia Huila beans", "decaf blend", "scale", "filter papers",
            "travel mug", "cold brew bottle", "descaler", "gift card"]
ISSUES = ["arrived broken", "was never delivered", "is the wrong colour", "leaks at the seam", "was charged twice",
          "is missing its lid", "stopped working after a week", "came without a manual", "was delayed at customs",
          "tastes stale", "has a cracked handle", "was sent to the old address"]
ACTIONS = ["asked for a refund", "wants a replacement", "asked to change the delivery address",
           "wants to cancel the order", "asked about the WINTER15 discount", "asked for an invoice copy",
           "reported the problem with photos", "asked when the parcel will arrive", "wants to return it unopened"]
CITIES = ["Berlin", "Lisbon", "Utrecht", "Lyon", "Graz", "Porto", "Ghent", "Bremen", "Turin", "Malmo"]
QUESTIONS = ["Who asked for a refund because their {p} {i}?", "What happened with order {o}?",
             "Which customer in {c} {a}?", "Has {n} had problems with a {p} before?",
             "Which orders were charged twice?", "Did anyone report a cracked handle on a travel mug?",
             "What did {n} say about the {p}?", "Which parcels were delayed at customs in {c}?"]


def texts(n: int, seed: int = 11) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        name, p, issue, act, city = (rnd.choice(NAMES), rnd.choice(PRODUCTS), rnd.choice(ISSUES),
                                     rnd.choice(ACTIONS), rnd.choice(CITIES))
        order = 20000 + k
        form = k % 4
        if form == 0:
            out.append(f"{name} from {city} says the {p} on order #{order} {issue} and {act}.")
        elif form == 1:
            out.append(f"Order #{order} ({p}, shipped to {city}): customer {name} {act}; the item {issue}.")
        elif form == 2:
            out.append(f"Ticket SUP-{k}: {p} {issue}. {name} {act}. Assigned to team {city}.")
        else:
            out.append(f"Slack #support: heads-up, {name}'s {p} (order #{order}) {issue}; they {act}.")
    return out


def questions(n: int, seed: int = 5) -> list[str]:
    rnd = random.Random(seed)
    return [rnd.choice(QUESTIONS).format(p=rnd.choice(PRODUCTS), i=rnd.choice(ISSUES), o=20000 + rnd.randrange(10_000),
                                         c=rnd.choice(CITIES), a=rnd.choice(ACTIONS), n=rnd.choice(NAMES))
            + f" (case {k})" for k in range(n)]


def pct(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"p50_ms": round(statistics.median(xs) * 1e3, 3), "p99_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e3, 3),
            "n": len(xs)}


def throughput(out: dict) -> None:
    lines = (ROOT / "engine" / "samples" / "support.ndjson").read_bytes().splitlines()
    sample = []
    for ln in lines:
        d = json.loads(ln).get("data", {})
        for v in d.values() if isinstance(d, dict) else ():
            if isinstance(v, str) and len(v.split()) >= 4:
                sample.append(v)
    sample = (sample * (1024 // max(1, len(sample)) + 1))[:1024] if sample else texts(1024)
    m = MiniLM()
    m.encode(["warm up"])
    res = {}
    for bs in (16, 64, 256):
        m.batch_size = bs
        t = time.perf_counter()
        m.encode(sample)
        res[str(bs)] = round(len(sample) / (time.perf_counter() - t), 1)
    out["encode_sentences_per_s"] = res
    print(f"a. encode: {res} sentences/s by batch size", file=sys.stderr)


def dedup_sample(out: dict) -> None:
    from ctxdb.demo import SAMPLES, _Lines, shifted_sample

    with tempfile.TemporaryDirectory() as tmp:
        lines, _ = shifted_sample(datetime.now(timezone.utc))
        with ctxdb.open(Path(tmp) / "d", config=SAMPLES / "ctxdb.toml", embedder=None, sync=False) as db:
            db.ingest([_Lines(lines)])
            db.wait()
            db._views().persist()
            t = db._views().items._q("SELECT count(*) AS v, count(DISTINCT hash) AS d FROM item_versions "
                                     "WHERE op = 'upsert'")
            v, d = t.column("v")[0].as_py(), t.column("d")[0].as_py()
    out["dedup_support_sample"] = {"versions": v, "distinct_texts": d, "saved": round(1 - d / v, 4)}
    print(f"c. dedup (support sample): {v} item versions, {d} distinct texts -> {1 - d / v:.1%} fewer embeddings",
          file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--dup-rate", type=float, default=0.1, help="share of events that repeat an earlier text")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--all", action="store_true", help="also run semantic_index.py and recall.py")
    a = ap.parse_args()
    out: dict = {"items": a.items, "queries": a.queries}
    throughput(out)
    dedup_sample(out)
    rnd = random.Random(3)
    base = texts(a.items)
    stream = [base[i] if i == 0 or rnd.random() >= a.dup_rate else base[rnd.randrange(i)] for i in range(a.items)]
    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    events = [{"id": f"n{i}", "source": "bench", "type": "note.added", "subject": f"user:{i % 500}",
               "time": (t0 + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"), "data": {"text": s}}
              for i, s in enumerate(stream)]
    with tempfile.TemporaryDirectory(prefix="ctxdb-bench-sem-") as tmp:
        cfg = Path(tmp) / "ctxdb.toml"
        cfg.write_text(CONFIG)
        with ctxdb.open(Path(tmp) / "data", config=cfg, embedder=MiniLM()) as db:
            calls0 = embed.calls.texts
            t = time.perf_counter()
            db.append(events)
            appended = time.perf_counter() - t
            assert db.wait(timeout=3600)
            took = time.perf_counter() - t
            st = db.stats()
            distinct = len(set(stream))
            out["background_embedding"] = {
                "events": len(events), "append_s": round(appended, 3), "embedded_s": round(took, 1),
                "texts_per_s": round((embed.calls.texts - calls0) / took, 1),
                "embeddings": st["embeddings"], "model_texts": embed.calls.texts - calls0}
            out["dedup_stream"] = {"versions": len(stream), "distinct_texts": distinct,
                                   "saved": round(1 - distinct / len(stream), 4)}
            print(f"b. {len(events):,} events appended in {appended:.2f} s; embedder covered them after {took:.1f} s "
                  f"({out['background_embedding']['texts_per_s']} texts/s); {st['embeddings']:,} embeddings", file=sys.stderr)
            print(f"c. dedup (this stream): {len(stream):,} versions, {distinct:,} distinct texts", file=sys.stderr)

            qs = questions(a.queries)
            plain = []
            for _ in range(a.queries):
                s = time.perf_counter()
                db.view("support-bot")
                plain.append(time.perf_counter() - s)
            new_q, seen_q, srch = [], [], []
            for q in qs:
                s = time.perf_counter()
                v = db.view("support-bot", query=q)
                new_q.append(time.perf_counter() - s)
            for q in qs:
                s = time.perf_counter()
                v2 = db.view("support-bot", query=q)
                seen_q.append(time.perf_counter() - s)
            for q in qs:
                s = time.perf_counter()
                db.search("support-bot", q, k=10)
                srch.append(time.perf_counter() - s)
            seq = v2.seq
            db.append([{**events[0], "id": "later", "data": {"text": "A later note."}}])
            db.wait()
            past = []
            for q in qs[:50]:
                s = time.perf_counter()
                db.view("support-bot", query=q, seq=seq)
                past.append(time.perf_counter() - s)
            out["latency"] = {"plain_view": pct(plain), "query_view_new_query": pct(new_q),
                              "query_view_seen_query": pct(seen_q), "search_k10": pct(srch),
                              "query_view_as_of": pct(past), "view_items": len(v2.items), "view_tokens": v2.tokens}
            for k, r in out["latency"].items():
                if isinstance(r, dict):
                    print(f"d/e. {k:<24} p50 {r['p50_ms']:>8} ms  p99 {r['p99_ms']:>8} ms  (n={r['n']})", file=sys.stderr)
    if a.all:
        for script in ("semantic_index.py", "recall.py"):
            subprocess.run([sys.executable, str(ROOT / "bench" / script)], check=True)
    for name in ("semantic_index", "recall"):
        f = OUT / f"{name}.json"
        if f.exists():
            out[name] = json.loads(f.read_text())
    OUT.mkdir(exist_ok=True)
    (OUT / "semantic.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("semantic_index", "recall")}, indent=2))


if __name__ == "__main__":
    main()
