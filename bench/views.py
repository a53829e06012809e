"""Views benchmark: live view reads, push latency, as-of views and rebuild, against the naive approach.

    .venv/bin/python bench/views.py                      # 1M events, 10k live items for the agent
    .venv/bin/python bench/views.py --events 100000 --orders 2000   # quick check

The log (seeded, deterministic): `--orders` orders each updated many times (order.status, one
live item per order: the agent's 10k live items), tickets for another agent (ticket.updated) and
unprojected noise (metric.tick), mixed in time order, ~1M events in total. Measured in one run:

  a. rebuild: `db.rebuild()` replays the whole log into a fresh item store (events/s)
  b. current view read: `db.view(agent)` served from the materialized state (p50/p99 of 2000 reads)
  c. append -> subscriber notified: one order.status append (fsync'd) until the subscriber holds
     the new view (p50/p99 of 300 appends)
  d. as-of view at a random past position: `db.view(agent, seq=s)` (p50/p99 of 50 positions)
  e. naive: re-read the log up to the position and re-derive the view from scratch with the same
     rules on each request (p50 of 3 requests)

Writes bench/out/views.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ctxdb  # noqa: E402
from ctxdb.items import ItemStore  # noqa: E402
from ctxdb.projector import PROJECT_COLUMNS, Projector  # noqa: E402

CONFIG = """
[[rules]]
on = "order.status"
key = "order:{data.order_id}/status"
text = "Order #{data.order_id} is {data.status} (carrier {data.carrier}, updated {time:%Y-%m-%d %H:%M})."
kind = "fact"
priority = 0.6
ttl = "90d"

[[rules]]
on = "ticket.updated"
key = "ticket:{data.key}"
text = "Ticket {data.key} [{data.status}] {data.summary}"
kind = "fact"

[agents.support-bot]
subjects = ["order:*"]
budget = 2000
history = "365d"

[agents.ops]
subjects = ["ticket:*"]
budget = 1000

[snapshots]
every = 0
"""

STATUSES = ["placed", "paid", "packed", "shipped", "in transit", "out for delivery", "delivered", "returned"]
CARRIERS = ["UPS", "DHL", "GLS", "DPD"]


def generate(n: int, orders: int, seed: int = 7):
    rnd = random.Random(seed)
    # Times end about now, so TTLs and history windows measured from the view's position apply.
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=n * 20)
    batch = []
    for i in range(n):
        t = (t0 + timedelta(seconds=i * 20)).isoformat().replace("+00:00", "Z")
        r = rnd.random()
        if r < 0.25 or i < orders:
            o = i if i < orders else rnd.randrange(orders)
            ev = {"id": f"e{i}", "source": "shop", "type": "order.status", "subject": f"order:{o}", "time": t,
                  "data": {"order_id": o, "status": rnd.choice(STATUSES), "carrier": rnd.choice(CARRIERS)}}
        elif r < 0.45:
            k = f"SUP-{rnd.randrange(20000)}"
            ev = {"id": f"e{i}", "source": "jira", "type": "ticket.updated", "subject": f"ticket:{k}", "time": t,
                  "data": {"key": k, "status": rnd.choice(["Open", "In Progress", "Resolved"]),
                           "summary": f"customer reports issue {rnd.randrange(10**6)} with order"}}
        else:
            ev = {"id": f"e{i}", "source": "metrics", "type": "metric.tick", "subject": f"host:{rnd.randrange(50)}",
                  "time": t, "data": {"cpu": round(rnd.random(), 3), "mem": rnd.randrange(1 << 30)}}
        batch.append(ev)
        if len(batch) == 50_000:
            yield batch
            batch = []
    if batch:
        yield batch


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def naive_view(db, agent: str, seq: int):
    """Re-read the log up to `seq` and re-derive the agent's view from scratch (same rules)."""
    items = ItemStore(None)
    proj = Projector(items)
    proj.run(db.log.read_batches(to_seq=seq, columns=PROJECT_COLUMNS), seq,
             lambda at: db.log.read_batches(from_seq=1, to_seq=at - 1, columns=PROJECT_COLUMNS))
    eng = db._views()
    cfg, pol = proj.policy_at(seq)
    v = eng._assemble(proj.current.values(), cfg.agents[agent], seq, db.log.recorded_at_of(seq), proj.uses, cfg,
                      pol.version if pol else 0)
    items.close()
    return v


def fdatasync_latency(where: Path, n: int) -> dict:
    """The disk's floor under a push: one small write + fdatasync on a file beside the store."""
    path = where / "fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        ms = []
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 512)
            os.fdatasync(fd)
            ms.append((time.perf_counter() - t) * 1e3)
    finally:
        os.close(fd)
        path.unlink()
    return {"p50": pct(ms, 50), "p99": pct(ms, 99)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--orders", type=int, default=10_000)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--appends", type=int, default=300)
    args = ap.parse_args()
    out: dict = {"events": args.events, "orders": args.orders}
    with tempfile.TemporaryDirectory(prefix="ctxdb-bench-views-") as tmp:
        cfg = Path(tmp) / "ctxdb.toml"
        cfg.write_text(CONFIG)
        store = Path(tmp) / "data"
        t = time.perf_counter()
        with ctxdb.open(store, config=cfg, embedder=None) as db:  # views only: no background embedder
            for b in generate(args.events, args.orders):
                db.append(b)
            out["load_s"] = round(time.perf_counter() - t, 2)
            print(f"loaded {db.last_seq:,} events in {out['load_s']} s", file=sys.stderr)

            rep = db.rebuild()
            out["rebuild"] = {k: rep[k] for k in ("events", "versions", "seconds", "events_per_s", "identical")}
            print(f"rebuild: {rep['events_per_s']:,} events/s ({rep['seconds']} s, {rep['versions']:,} versions)",
                  file=sys.stderr)

            v = db.view("support-bot")
            live_items = db.stats()["live_items"]
            cands = len(db._views()._cands["support-bot"])
            out["live_items_total"], out["agent_live_items"] = live_items, cands
            out["view_items"], out["view_tokens"] = len(v.items), v.tokens

            lat = []
            for _ in range(args.reads):
                t = time.perf_counter()
                db.view("support-bot")
                lat.append((time.perf_counter() - t) * 1e3)
            out["current_view_ms"] = {"p50": pct(lat, 50), "p99": pct(lat, 99)}

            rnd = random.Random(1)
            push, appended = [], []
            with db.subscribe("support-bot") as sub:
                sub.get(timeout=5)
                for i in range(args.appends):
                    o = rnd.randrange(args.orders)
                    ev = {"id": f"live{i}", "source": "shop", "type": "order.status", "subject": f"order:{o}",
                          "time": datetime.now(timezone.utc).isoformat(),
                          "data": {"order_id": o, "status": f"live update {i}", "carrier": "UPS"}}
                    t = time.perf_counter()
                    (seq,) = db.append([ev])
                    appended.append((time.perf_counter() - t) * 1e3)
                    while True:
                        upd = sub.get(timeout=10)
                        if upd is None:
                            raise SystemExit(f"no view update for seq {seq}")
                        if upd.view.seq >= seq:
                            break
                    push.append((time.perf_counter() - t) * 1e3)
            out["append_to_notified_ms"] = {"p50": pct(push, 50), "p99": pct(push, 99)}
            out["append_alone_ms"] = {"p50": pct(appended, 50), "p99": pct(appended, 99)}
            out["fdatasync_ms"] = fdatasync_latency(store, args.appends)

            # Token counts of superseded versions are filled in by the projector thread when idle
            # (a cache: a past view counts what is missing itself). Measure past views both
            # before that cache is complete ("cold") and after ("warm").
            last = db.last_seq

            def past_views(n: int) -> list[float]:
                ms = []
                for _ in range(n):
                    s = rnd.randrange(args.orders, last)
                    t = time.perf_counter()
                    db.view("support-bot", seq=s)
                    ms.append((time.perf_counter() - t) * 1e3)
                return ms

            cold = past_views(10)
            out["as_of_view_cold_ms"] = {"p50": pct(cold, 50), "max": max(cold)}
            t = time.perf_counter()
            eng = db._views()
            while eng.count_tokens_behind(20_000):
                pass
            out["token_backfill_s"] = round(time.perf_counter() - t, 1)
            asof = past_views(50)
            out["as_of_view_ms"] = {"p50": pct(asof, 50), "p99": pct(asof, 99)}

            naive = []
            for _ in range(3):
                s = rnd.randrange(last // 2, last)
                t = time.perf_counter()
                nv = naive_view(db, "support-bot", s)
                naive.append((time.perf_counter() - t) * 1e3)
                assert nv.hash == db.view("support-bot", seq=s).hash, "naive and ctxdb views differ"
            out["naive_view_ms"] = {"p50": statistics.median(naive)}

    cur, ao, nv = out["current_view_ms"]["p50"], out["as_of_view_ms"]["p50"], out["naive_view_ms"]["p50"]
    out["ratio_naive_over_current"] = nv / cur
    out["ratio_naive_over_as_of"] = nv / ao
    rows = [
        ("rebuild", f"{out['rebuild']['events_per_s']:,} events/s", ">= 200,000 events/s",
         out["rebuild"]["events_per_s"] >= 200_000),
        ("current view read p50", f"{cur:.3f} ms", "<= 1 ms", cur <= 1),
        ("current view read p99", f"{out['current_view_ms']['p99']:.3f} ms", "<= 5 ms", out["current_view_ms"]["p99"] <= 5),
        ("append -> notified p99", f"{out['append_to_notified_ms']['p99']:.2f} ms (p50 {out['append_to_notified_ms']['p50']:.2f})",
         "<= 10 ms", out["append_to_notified_ms"]["p99"] <= 10),
        ("  of which append alone", f"p50 {out['append_alone_ms']['p50']:.2f} ms, p99 {out['append_alone_ms']['p99']:.2f} ms",
         f"(disk: write+fdatasync p50 {out['fdatasync_ms']['p50']:.2f}, p99 {out['fdatasync_ms']['p99']:.2f} ms)", None),
        ("as-of view p50", f"{ao:.1f} ms (p99 {out['as_of_view_ms']['p99']:.1f})", "<= 50 ms", ao <= 50),
        ("as-of view, cold cache", f"{out['as_of_view_cold_ms']['p50']:.1f} ms p50 (token backfill {out['token_backfill_s']} s)",
         "", None),
        ("naive re-derive p50", f"{nv:.0f} ms", f"{nv / cur:,.0f}x current, {nv / ao:,.0f}x as-of", None),
    ]
    print(f"\n{args.events:,} events; agent support-bot: {out['agent_live_items']:,} live items "
          f"({out['live_items_total']:,} in all), view {out['view_items']} items / {out['view_tokens']} tokens")
    for name, val, target, ok in rows:
        mark = "" if ok is None else ("  met" if ok else "  MISSED")
        print(f"  {name:<24} {val:<34} {target}{mark}")
    Path(__file__).resolve().parent.joinpath("out").mkdir(exist_ok=True)
    Path(__file__).resolve().parent.joinpath("out", "views.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
