"""Decision audits and compliance replay.

    audit(store, decision_id)  the receipt (a ctxdb.decision event) names the agent, the view's seq,
                               hash, budget and query, and every item's hash. The view is assembled
                               again at that seq (policy in force then, stored embeddings, no model
                               call), its hash compared, and each item shown with its lineage back
                               to the source events.
    replay_verify(store)       every projection rebuilt from the log alone into a scratch item store
                               (the live item store is not read), every receipt's view assembled
                               from it and compared; the scratch item versions are compared with
                               the live item store too, so tampering with a log segment (checksums),
                               a receipt (its view no longer hashes the same) or the item store
                               (digest) is reported.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

import msgspec

from . import prerender
from .access import SYSTEM_AUDITOR
from .errors import BadInput, CtxdbError
from .projector import DECISION_TYPE, versions_final
from .rebuild import fresh_projector, replay_into

if TYPE_CHECKING:
    from .live import Views
    from .store import Store


class LineageEvent(msgspec.Struct, frozen=True):
    seq: int
    id: str
    source: str
    type: str
    subject: str
    time: str


class AuditItem(msgspec.Struct, frozen=True):
    key: str                         # a purged item: "purged:<key hash>"
    kind: str
    status: str                      # "ok" | "changed" (hash differs) | "missing" (not in the rebuilt view)
                                     # | "purged" (erased since; its kept hash enters the view hash)
    recorded_hash: str
    hash: str | None
    text: str | None
    lineage: tuple[LineageEvent, ...] = ()
    note: str | None = None          # e.g. "purged at seq 812"


class AuditReport(msgspec.Struct, frozen=True):
    decision: str
    seq: int                         # the receipt's own position
    agent: str
    view_seq: int
    as_of: str | None
    query: str | None
    view_hash: str
    rebuilt_hash: str | None
    verified: bool
    reasons: tuple[str, ...]
    items: tuple[AuditItem, ...]
    text: str | None
    output: Any = None
    meta: Any = None


def _receipt(store: "Store", decision_id: str):
    for ev in store.log.read(type=DECISION_TYPE):
        if ev.id == decision_id:
            return ev
    raise BadInput(f"no decision receipt {decision_id!r} in the log", field="decision",
                   expected="an id returned by db.record_decision (ctxdb log --type ctxdb.decision)")


def check_receipt(views: "Views", ev, *, lineage: Callable[[tuple[int, ...]], tuple] | None = None) -> AuditReport:
    """Assemble the receipt's view again from `views` (as an auditor: exactly as it was) and
    compare it. A receipt that lists purged items is checked without their text: see
    _check_purged."""
    try:
        d = ev.json()
        agent, vseq, vhash = str(d["agent"]), int(d["view_seq"]), str(d["view_hash"])
        entries = list(d.get("items", []))
        if any("key_hash" in i for i in entries):
            return _check_purged(views, ev, d, lineage)
        recorded = [(str(i["key"]), str(i["hash"])) for i in entries]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return AuditReport(ev.id, ev.seq, "?", 0, None, None, "", None, False,
                           (f"unreadable receipt: {exc}",), (), None)
    query, budget = d.get("query"), d.get("budget")
    reasons: list[str] = []
    try:
        v = views.view(agent, seq=vseq, query=query, budget=budget, auditor=SYSTEM_AUDITOR)
    except CtxdbError as exc:
        return AuditReport(ev.id, ev.seq, agent, vseq, None, query, vhash, None, False,
                           (f"cannot assemble the view: {exc}",), (), None, d.get("output"), d.get("meta"))
    if v.hash != vhash:
        reasons.append(f"view hash {v.hash} differs from the receipt's {vhash}")
    got = {i.key: i for i in v.items}
    items = []
    for key, h in recorded:
        it = got.get(key)
        status = "missing" if it is None else "ok" if it.hash == h else "changed"
        if status != "ok":
            reasons.append(f"item {key}: {status}")
        items.append(AuditItem(key=key, kind=it.kind if it else "?", status=status, recorded_hash=h,
                               hash=it.hash if it else None, text=it.text if it else None,
                               lineage=lineage(it.lineage_seqs) if (it and lineage) else ()))
    extra = sorted(set(got) - {k for k, _ in recorded})
    if extra:
        reasons.append(f"items not in the receipt: {', '.join(extra[:5])}")
    return AuditReport(ev.id, ev.seq, agent, vseq, v.as_of.isoformat().replace("+00:00", "Z"), query, vhash, v.hash,
                       not reasons, tuple(reasons), tuple(items), v.text, d.get("output"), d.get("meta"))


def _versions_of(items, keys: set[str], seq: int) -> list:
    """The versions of `keys` valid at `seq` (only those: an agent may see 500k items)."""
    from .items import SELECT_COLS, rows_to_versions

    if not keys:
        return []
    t = items._q(f"SELECT {SELECT_COLS} FROM item_versions WHERE op = 'upsert' AND from_seq <= ? "
                 "AND (to_seq IS NULL OR to_seq > ?) AND list_contains(?::VARCHAR[], key)", [seq, seq, sorted(keys)])
    return rows_to_versions(t)


def _check_purged(views: "Views", ev, d: dict, lineage) -> AuditReport:
    """A receipt whose view held items purged since: their text is gone, so the view cannot be
    assembled again. What is checked instead:
      1. the view hash, recomputed from the receipt's header fields and the (kind, hash) of every
         item it lists (purged ones included: their hashes are kept), equals the recorded hash;
      2. every item not purged is, at the view's seq, the version the log derives (same hash);
      3. every purged item points at a purge receipt (ctxdb.purge or ctxdb.retention) in the log."""
    from .projector import PURGE_TYPE
    from .retention import RETENTION_TYPE
    from .view import RENDERER_VERSION, item_hash, view_header, view_hash

    agent, vseq, vhash = str(d["agent"]), int(d["view_seq"]), str(d["view_hash"])
    query = d.get("query")
    reasons: list[str] = []
    cfg, _ = views.projector.policy_at(vseq)
    policy_hash = str(d.get("policy_hash") or cfg.hash)
    tok = str(d.get("tokenizer") or views.tokenizer(cfg).name)
    now_us = views.log.recorded_at_of(vseq)
    header = view_header(agent, vseq, now_us, d.get("valid_at"))
    entries = list(d["items"])
    views.persist()
    wanted = {str(i["key"]) for i in entries if "key" in i}
    at = {v.key: v for v in _versions_of(views.items, wanted, vseq)}
    items, parts = [], []
    purges: dict[int, str | None] = {}
    for it in entries:
        h = str(it["hash"])
        if "key_hash" in it:
            kind, p = str(it.get("kind", "?")), int(it.get("purged_at", 0))
            if p not in purges:
                purges[p] = next((e.type for e in views.log.read(from_seq=p, to_seq=p)
                                  if e.type in (PURGE_TYPE, RETENTION_TYPE)), None) if p > 0 else None
            if purges[p] is None:
                reasons.append(f"purged item {it['key_hash'][:16]}: no purge receipt at seq {p}")
            parts.append((kind, h))
            how = "erased by retention" if purges[p] == RETENTION_TYPE else "purged"
            items.append(AuditItem(key="purged:" + str(it["key_hash"]), kind=kind, status="purged", recorded_hash=h,
                                   hash=None, text=None, note=f"{how} at seq {p}"))
            continue
        key = str(it["key"])
        v = at.get(key)
        got = None if v is None else item_hash(v)
        status = "missing" if v is None else "ok" if got == h else "changed"
        if status != "ok":
            reasons.append(f"item {key}: {status}")
        kind = str(it.get("kind") or (v.kind if v is not None else "?"))
        parts.append((kind, h))
        items.append(AuditItem(key=key, kind=kind, status=status, recorded_hash=h, hash=got,
                               text=None if v is None else v.text,
                               lineage=lineage(v.lineage_seqs) if (v is not None and lineage) else ()))
    composed = view_hash(policy_hash, tok, header, parts, query, renderer=str(d.get("renderer") or RENDERER_VERSION))
    if composed != vhash:
        reasons.append(f"the hash composed from the receipt's items is {composed}, the receipt says {vhash}")
    from .events import utc_from_micros

    return AuditReport(ev.id, ev.seq, agent, vseq, utc_from_micros(now_us).isoformat().replace("+00:00", "Z"), query,
                       vhash, composed, not reasons, tuple(reasons), tuple(items), None, d.get("output"), d.get("meta"))


def audit(store: "Store", decision_id: str) -> AuditReport:
    ev = _receipt(store, decision_id)
    views = store._views()

    def lineage(seqs: tuple[int, ...]) -> tuple[LineageEvent, ...]:
        out = []
        for s in seqs:
            for e in store.log.read(from_seq=s, to_seq=s):
                out.append(LineageEvent(e.seq, e.id, e.source, e.type, e.subject,
                                        e.time if isinstance(e.time, str) else str(e.time)))
        return tuple(out)

    return check_receipt(views, ev, lineage=lineage)


class ReplayReport(msgspec.Struct, frozen=True):
    events: int
    receipts: int
    verified: int
    mismatches: tuple[dict, ...]
    items_identical: bool
    digest_live: str
    digest_replay: str
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.items_identical


def replay_verify(store: "Store", progress: Callable[[int, int], None] | None = None) -> ReplayReport:
    t0 = time.perf_counter()
    log = store.log
    # the replay's render worker starts now, while the live store is opened (prerender)
    worker = prerender.Worker() if prerender.wanted(store._python_rules, log, log.last_seq) else None
    try:
        return _replay_verify(store, progress, t0, worker)
    finally:
        if worker is not None:
            worker.close()


def _replay_verify(store: "Store", progress, t0: float, worker: "prerender.Worker | None") -> ReplayReport:
    from .live import Views

    log = store.log
    receipts = list(log.read(type=DECISION_TYPE))
    with _live_items(store, needs_semantic=any(_has_query(ev) for ev in receipts)) as (end, semantic, digest):
        receipts = [ev for ev in receipts if ev.seq <= end]
        proj = fresh_projector(store, None)  # knows every purge of the log from the start
        scratch = proj.items
        try:
            # receipts read the scratch store and the projector's policies, never its current versions
            replay_into(proj, log, end, progress, keep_projector=False, in_memory=True, worker=worker)
            # the scratch store is digested on a thread while the receipts are checked (it is
            # only read from here on; the hashing releases the GIL)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctxdb-replay-digest") as pool:
                d_fut = pool.submit(scratch.digest)
                views = Views(log, scratch, proj, live=False, semantic=semantic, keep_token_counts=False)
                bad = []
                for ev in receipts:
                    r = check_receipt(views, ev)
                    if not r.verified:
                        bad.append({"decision": ev.id, "seq": ev.seq, "reasons": list(r.reasons)})
                d_replay = d_fut.result()
        finally:
            scratch.close()
        d_live = digest()
    return ReplayReport(events=end, receipts=len(receipts), verified=len(receipts) - len(bad), mismatches=tuple(bad),
                        items_identical=d_live == d_replay, digest_live=d_live, digest_replay=d_replay,
                        seconds=round(time.perf_counter() - t0, 3))


def _has_query(ev) -> bool:
    try:
        return bool(ev.json().get("query"))
    except (ValueError, AttributeError):
        return False


@contextmanager
def _live_items(store: "Store", *, needs_semantic: bool):
    """(the seq the live item store is projected to, the semantic layer, a function returning
    the live store's digest at that seq) for the time of a compliance replay.

    Without an engine in this process (a `ctxdb replay --verify`, or right after a purge), the
    live engine is not built for it: on a 10^6-event store that loads every current version and
    assembles every agent's view, seconds of work a replay does not need. The item store is
    opened alone, projected up to the log's end if it is behind (a plain projector, no views;
    not if the events it lacks change no item version, as a purge's last two do: building the
    projector alone loads every current version, ~2 s per 10^6), and its digest computed on a
    thread while the replay runs. Nothing else may build the
    engine meanwhile (the engine lock is held), so the store stays at that seq. A receipt with
    a query needs the semantic layer: then, and with an engine already running, the engine is
    used: caught up and persisted under its projection lock, which is held until the digest,
    on a thread too, holds the item store's lock (the engine's next write waits for it)."""
    from .live import Views

    if not (needs_semantic or store.readonly or store.path is None):
        with store._engine_lock:  # (re-entrant: _views below may take it too)
            if store._engine is None:
                items = store._open_items()
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctxdb-live-digest")
                try:
                    end = store.log.last_seq
                    if not versions_final(store.log, items, store._python_rules, end):
                        v = Views(store.log, items, store._projector(items), live=False)
                        end = v.catch_up(end, refresh=False)   # (no agent's view is assembled)
                        v.persist()
                    yield end, None, pool.submit(items.digest).result
                finally:
                    pool.shutdown(wait=True)
                    items.close()
                return
    live = store._views()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctxdb-live-digest")
    try:
        with live._lock:
            live.catch_up()
            live.persist()
            end = live.projector.seq
            started = threading.Event()
            fut = pool.submit(live.items.digest, started)
            while not (started.wait(0.1) or fut.done()):
                pass
        yield end, live.semantic, fut.result
    finally:
        pool.shutdown(wait=True)
