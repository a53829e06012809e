"""Retention: erase events older than the config allows, through the purge machinery.

    [[retention]]
    type = "chat.*"          # events of these types ...
    retain = "90d"
    [[retention]]
    kind = "event"           # ... or events behind items of this kind
    retain = "30d"

    db.retain()                  (ctxdb retain [--dry-run])

An event expires when its `time` is more than `retain` before the run's now under any entry that
matches it (so the shortest matching retention wins). Never erased: ctxdb's own events
(policies, receipts, tombstones, holds), events about a subject under legal hold (ctxdb hold),
and stubs of earlier erasures. An LLM output made from an expired event goes with it.

Steps, like a purge's (engine/erase.py), all under the store's write lock:

    1. select   the expired seqs (one pass over the log's seq/type/subject/time columns; kinds
                are resolved through the item store's lineage)
    2. project  the item store is projected afresh from the log with those events left out
                (items.retain.duckdb); this is what the store will hold afterwards, window
                summaries re-derived without the expired events included
    3. plan     decision receipts that listed an item version which exists no more get that
                entry turned into a placeholder (kind and item hash kept, salted key hash, the
                retention receipt's seq), so they still verify; a receipt that did not verify
                before is left as it is (a retention run never launders tampering). The plan is
                written to the erase journal (`purge.json`): from here on an interrupted run is
                rolled forward by the next open
    4. log      the affected segments are rewritten: expired events become content-free stubs
                (as a purge's: seq, recorded_at, source and type kept; id and subject salted
                hashes; data null), receipts as planned; the manifest is the commit point
    5. items    the projection of step 2 replaces items.duckdb (after a crash: the store is
                re-projected from the rewritten log instead)
    6. the rest embeddings only the erased versions had, the vector index, snapshots and
                set-aside files go, as in a purge
    7. receipt  a ctxdb.retention event with counts per entry, never the data

Later events of the same subjects are projected as usual: retention is about age, not about a
person (that is forget/purge).
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import Config, glob_match
from .errors import BadInput, ReadOnlyError
from .projector import DECISION_TYPE, PROJECT_COLUMNS, PURGED_PREFIX
from .segment import write_atomic

if TYPE_CHECKING:
    from .store import Store

RETENTION_TYPE = "ctxdb.retention"
ITEMS_TMP = "items.retain.duckdb"
_SKIPPED = PURGED_PREFIX + "retention"      # what the step-2 projection sees instead of a subject
_NEVER = np.iinfo(np.int64).min


class RetentionReport(msgspec.Struct, frozen=True):
    now: str                          # the run's now (RFC 3339): every cutoff is measured from it
    entries: list[dict[str, Any]]     # per [[retention]] entry: type|kind, retain, cutoff, events
    events: int                       # events erased (stubs), LLM outputs of expired events included
    held: int                         # expired events kept because their subject is under legal hold
    receipt_seq: int = 0              # the ctxdb.retention event (0: nothing erased, or a dry run)
    segments_rewritten: int = 0
    segments_total: int = 0
    bytes_rewritten: int = 0
    receipts_rewritten: int = 0       # decision receipts with entries turned into placeholders
    item_versions: int = 0            # item versions (key, hash, from seq) that exist no more
    embeddings: int = 0
    snapshots: int = 0
    other_files: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


def retain(store: "Store", *, now: datetime | str | None = None, dry_run: bool = False,
           progress: Callable[[str], None] | None = None) -> RetentionReport:
    from .log_disk import DiskLog

    if store.readonly and not dry_run:
        raise ReadOnlyError("apply retention")
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    now_us = _now_us(now)
    views = store._views()
    views.catch_up()
    cfg: Config = views.projector.config
    if not cfg.retention:
        return RetentionReport(now=_iso(now_us), entries=[], events=0, held=0, dry_run=dry_run)
    if not dry_run and (store.path is None or not isinstance(store.log, DiskLog)):
        raise BadInput("retention erases files: it needs a store on disk (ctxdb.open(path))", field="store")
    with store._engine_lock, store.log._lock:
        views.catch_up()
        views.persist()
        end = views.projector.seq
        seqs, entries, held = _select(store, views, cfg, now_us, end)
        say(f"{len(seqs)} expired event(s); {held} kept under legal hold")
        if dry_run or not seqs:
            return RetentionReport(now=_iso(now_us), entries=entries, events=len(seqs), held=held, dry_run=dry_run,
                                   seconds=round(time.perf_counter() - t0, 3))
        assert store.path is not None
        tmp = store.path / ITEMS_TMP
        _project_without(store, seqs, end, tmp, say)
        receipt_seq = store.log.last_seq + 1
        plan = _plan(store, views, tmp, seqs, end)
        plan.update(op="retention", now=_iso(now_us), entries=entries, held=held, receipt_seq=receipt_seq,
                    started=time.time(), items_ready=True)
        say(f"plan: {plan['versions']} item version(s) go, {len(plan['receipts'])} receipt(s) get placeholders")
        write_atomic(store.path / "purge.json", json.dumps(plan).encode())
        return finish(store, plan, say, t0)


def finish(store: "Store", plan: dict[str, Any], say: Callable[[str], None], t0: float, *,
           resumed: bool = False) -> RetentionReport:
    """Steps 4-7 (also how the next open rolls an interrupted run forward)."""
    from .erase import _purge_rest, _purge_vectors, _rewrite_receipt, append_receipt, rewrite_log, swap_items

    assert store.path is not None
    store._close_engine()
    receipts: dict[int, list[str]] = {int(k): v for k, v in plan["receipts"].items()}

    def receipt(seq: int, data: str) -> str:
        return _rewrite_receipt(data, dict.fromkeys(receipts[seq], "?"), store._salt, int(plan["receipt_seq"]))

    new, _counts = rewrite_log(store, plan["stub_seqs"], list(receipts), receipt, say)
    tmp = store.path / ITEMS_TMP
    if resumed or not plan.get("items_ready") or not tmp.exists():
        _project_without(store, [], int(plan["end"]), tmp, say)  # the rewritten log's stubs are skipped anyway
    else:
        _drop_uses(tmp, store, receipts)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    swap_items(store, ITEMS_TMP)
    embeddings = _purge_vectors(store.path / "vectors", set(plan["hashes"]))
    snaps, others = _purge_rest(store.path)
    say(f"items: {plan['versions']} version(s) gone; embeddings: {embeddings}; snapshots: {snaps}")

    report = RetentionReport(
        now=plan["now"], entries=plan["entries"], events=len(plan["stub_seqs"]), held=int(plan["held"]),
        receipt_seq=int(plan["receipt_seq"]), segments_rewritten=len(new),
        segments_total=len(store.log.manifest.segments),  # type: ignore[attr-defined]
        bytes_rewritten=sum(s.bytes for s in new), receipts_rewritten=len(receipts), item_versions=int(plan["versions"]),
        embeddings=embeddings, snapshots=snaps, other_files=others, seconds=round(time.perf_counter() - t0, 3),
        resumed=resumed)
    data = {k: v for k, v in report.to_dict().items() if k not in ("seconds", "resumed", "receipt_seq", "dry_run")}
    seq = append_receipt(store, f"retention-{plan['end']}-{plan['receipt_seq']}", RETENTION_TYPE, data)
    if seq != report.receipt_seq:
        report = msgspec.structs.replace(report, receipt_seq=seq)
    say(f"retention receipt at seq {seq}")
    return report


# ---- 1. selecting ---------------------------------------------------------------------------
def _select(store: "Store", views, cfg: Config, now_us: int, end: int) -> tuple[list[int], list[dict], int]:
    """The seqs (<= end) that expire at `now_us`, per-entry counts, and how many a hold kept."""
    items = views.items
    by_kind: list[np.ndarray] = []
    kinds_present = None
    for r in cfg.retention:
        if r.kind is None:
            by_kind.append(np.empty(0, np.int64))
            continue
        if kinds_present is None:
            kinds_present = set(items._q("SELECT DISTINCT kind FROM item_versions").column("kind").to_pylist())
        if r.kind not in kinds_present:
            by_kind.append(np.empty(0, np.int64))
            continue
        t = items._q("SELECT DISTINCT unnest(lineage_seqs) AS s FROM item_versions WHERE kind = ? ORDER BY s", [r.kind])
        by_kind.append(t.column("s").to_numpy().astype(np.int64))
    holds = pa.array(sorted(views.projector.holds), pa.string())
    counts = [0] * len(cfg.retention)
    out: list[np.ndarray] = []
    held = 0
    type_match: dict[str, list[bool]] = {}
    for b in store.log.read_batches(to_seq=end, columns=["seq", "type", "subject", "time_ts"]):
        if not b.num_rows:
            continue
        seq = b.column("seq").to_numpy().astype(np.int64)
        tts = b.column("time_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        types = b.column("type")
        uniq = pc.unique(types).to_pylist()
        for ty in uniq:
            if ty not in type_match:
                type_match[ty] = [r.type is not None and not ty.startswith("ctxdb.") and glob_match(r.type, ty)
                                  for r in cfg.retention]
        eligible = pc.invert(pc.or_(pc.starts_with(types, "ctxdb."),
                                    pc.starts_with(b.column("subject"), PURGED_PREFIX))).to_numpy(zero_copy_only=False)
        on_hold = pc.is_in(b.column("subject"), holds).to_numpy(zero_copy_only=False) if len(holds) else None
        any_exp = np.zeros(b.num_rows, bool)
        any_old = np.zeros(b.num_rows, bool)          # expired by some entry, eligible or not
        idx = pc.index_in(types, pa.array(uniq, pa.string())).to_numpy(zero_copy_only=False)
        for j, r in enumerate(cfg.retention):
            if r.type is not None:
                m = np.array([type_match[ty][j] for ty in uniq], bool)[idx]
            else:
                ks = by_kind[j]
                pos = np.minimum(np.searchsorted(ks, seq), max(len(ks) - 1, 0))
                m = (ks[pos] == seq) if len(ks) else np.zeros(b.num_rows, bool)
            m &= tts < now_us - r.retain_us
            any_old |= m
            m &= eligible
            if on_hold is not None:
                m &= ~on_hold
            counts[j] += int(m.sum())
            any_exp |= m
        if on_hold is not None:
            held += int((on_hold & eligible & any_old).sum())
        out.append(seq[any_exp])
    seqs = np.unique(np.concatenate(out)) if out else np.empty(0, np.int64)
    from .erase import system_refs

    llm, _ = system_refs(store, seqs.tolist(), {}, end)
    entries = [{**({"type": r.type} if r.type is not None else {"kind": r.kind}), "retain": r.retain,
                "cutoff": _iso(now_us - r.retain_us), "events": counts[j]} for j, r in enumerate(cfg.retention)]
    return sorted(set(seqs.tolist()) | set(llm)), entries, held


# ---- 2. projecting without them ---------------------------------------------------------------
def _project_without(store: "Store", seqs: Iterable[int], end: int, target: Path, say) -> None:
    """Project events 1..end into a fresh item store at `target`, `seqs` left out (each is
    shown to the projector with a stub's subject, which it skips, as it will the real stub)."""
    from .rebuild import fresh_projector, replay_into

    skip = pa.array(sorted(seqs), pa.int64())
    sidx = PROJECT_COLUMNS.index("subject")

    def leave_out(b: pa.RecordBatch) -> pa.RecordBatch:
        if len(skip):
            m = pc.is_in(b.column("seq"), skip)
            if pc.any(m).as_py():
                b = b.set_column(sidx, "subject", pc.if_else(m, _SKIPPED, b.column("subject")))
        return b

    t0 = time.perf_counter()
    proj = fresh_projector(store, target)
    try:
        replay_into(proj, store.log, end, transform=leave_out)
        proj.items.flush()
    finally:
        proj.items.close()
    say(f"projected {end} events without the expired ones in {time.perf_counter() - t0:.1f} s")


# ---- 3. planning ----------------------------------------------------------------------------
def _plan(store: "Store", views, tmp: Path, seqs: list[int], end: int) -> dict[str, Any]:
    from .items import ItemStore

    old = views.items
    new = ItemStore(tmp, atrest=store.log.atrest)
    try:
        def pairs(s) -> set[tuple[str, str, int]]:
            t = s._q("SELECT key, hash, from_seq FROM item_versions")
            return set(zip(t.column("key").to_pylist(), t.column("hash").to_pylist(), t.column("from_seq").to_pylist()))

        before, after = pairs(old), pairs(new)
        gone = before - after
        kept_hashes = {h for _, h, _ in after}
        hashes = sorted({h for _, h, _ in gone} - kept_hashes)
        receipts: dict[str, list[str]] = {}
        for ev in store.log.read(type=DECISION_TYPE, to_seq=end):
            if ev.subject.startswith(PURGED_PREFIX):
                continue
            try:
                d = ev.json()
                vseq = int(d["view_seq"])
                listed = {str(i["key"]): str(i["hash"]) for i in d.get("items", []) if isinstance(i, dict) and "key" in i}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if not listed:
                continue
            was, now = _hashes_at(old, listed, vseq), _hashes_at(new, listed, vseq)
            lost = sorted(k for k, h in listed.items() if was.get(k) == h and now.get(k) != h)
            if lost:
                receipts[str(ev.seq)] = lost
    finally:
        new.close()
    return {"stub_seqs": seqs, "end": end, "hashes": hashes, "versions": len(gone), "receipts": receipts}


def _hashes_at(items, keys: Iterable[str], seq: int) -> dict[str, str]:
    """{key: item hash (view.item_hash)} of the versions of `keys` valid at `seq`."""
    from .audit import _versions_of
    from .view import item_hash

    return {v.key: item_hash(v) for v in _versions_of(items, set(keys), seq)}


def _drop_uses(tmp: Path, store: "Store", receipts: dict[int, list[str]]) -> None:
    """A placeholder reinforces nothing: drop the uses the step-2 projection took from entries
    that are placeholders now (a projection of the rewritten log has none of them)."""
    from .items import ItemStore

    s = ItemStore(tmp, atrest=store.log.atrest)
    try:
        for seq, keys in sorted(receipts.items()):
            s._con.execute("DELETE FROM uses WHERE seq = ? AND list_contains(?::VARCHAR[], key)", [seq, sorted(keys)])
        s.flush()
    finally:
        s.close()


# ---- helpers --------------------------------------------------------------------------------
def _now_us(now: datetime | str | None) -> int:
    if now is None:
        return time.time_ns() // 1000
    if isinstance(now, str):
        from .log import parse_time

        now = parse_time(now)
    if now.tzinfo is None:
        raise BadInput(f"now {now!r} has no time zone", field="now", expected="an aware datetime or RFC 3339 with Z/offset")
    return int(now.timestamp() * 1_000_000)


def _iso(us: int) -> str:
    from .events import utc_from_micros

    return utc_from_micros(us).isoformat().replace("+00:00", "Z")


__all__ = ["retain", "finish", "RetentionReport", "RETENTION_TYPE"]
