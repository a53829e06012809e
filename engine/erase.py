"""Purge: erase one subject's personal data from every file of a store, provably.

    db.purge("user:42")            (ctxdb forget user:42 --purge)

Steps (a tombstone first, if the subject has none):

    1. plan     the subject's event seqs, item keys (with kinds) and content hashes, and whether
                any item of another subject was derived from its events (a window summary, an
                LLM output); written to `purge.json` (fsync'd) -- from here on the purge is
                rolled forward by the next open if the process dies
    2. log      everything committed is sealed; the affected segments are rewritten under new
                names: the subject's events become content-free stubs (seq, recorded_at, source,
                type kept; id and subject replaced by salted hashes; data, meta and extra
                attributes dropped); decision receipts that listed its items keep each item's
                kind and hash with a salted key hash instead of the key; the segment manifest is
                the commit point; then the old files go. Idempotency keys are kept, so
                re-ingesting the original events is still a no-op
    3. items    items.duckdb is written afresh without the subject's versions, reinforcement,
                summary windows and token counts (DuckDB keeps deleted strings in its file, so
                DELETE is not enough), fsync'd and renamed over the old one; if items of other
                subjects mixed the subject in, the item store is re-projected from the rewritten
                log instead, which re-derives those items without it
    4. vectors  embeddings of texts only the subject had are dropped (chunks rewritten; the
                state file is the commit point) and the FAISS index is deleted (rebuilt lazily)
    5. the rest every snapshot (they hold old item stores), set-aside files and leftovers
    6. receipt  a ctxdb.purge event with counts and the salted subject hash, never the data;
                then purge.json is deleted

The salted hashes use a per-store random salt (`salt`, 32 bytes): whoever holds the store can
confirm that a given subject was purged (hash it and look), nobody can list who was.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import AccessDenied, BadInput, ReadOnlyError
from .projector import DECISION_TYPE, FORGET_TYPE, LLM_TYPE, PURGE_TYPE, PURGED_PREFIX
from .segment import write_atomic
from .wal import fsync_dir

if TYPE_CHECKING:
    from .retention import RetentionReport
    from .store import Store

SALT_FILE = "salt"
JOURNAL = "purge.json"
ITEMS_TMP = "items.purge.duckdb"


class Salt:
    """The store's purge salt (created on first use; in memory for a store without a path)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._key: bytes | None = None
        self._lock = threading.Lock()   # segments are rewritten on two threads

    def key(self) -> bytes:
        if self._key is not None:
            return self._key
        with self._lock:
            return self._load()

    def _load(self) -> bytes:
        if self._key is None:
            if self.root is None:
                self._key = os.urandom(32)
            else:
                f = self.root / SALT_FILE
                if f.exists():
                    k = f.read_bytes()
                    if len(k) != 32:
                        from .errors import CorruptionError

                        raise CorruptionError(f"the purge salt has {len(k)} bytes, expected 32", file=str(f))
                    self._key = k
                else:
                    k = os.urandom(32)
                    write_atomic(f, k)
                    self._key = k
        return self._key

    def hash(self, *parts: str) -> str:
        h = hashlib.blake2b(key=self.key(), digest_size=16, person=b"ctxdb-purge")
        for p in parts:
            h.update(p.encode())
            h.update(b"\x00")
        return h.hexdigest()

    def stub_subject(self, subject: str) -> str:
        return PURGED_PREFIX + self.hash("subject", subject)

    def stub_id(self, source: str, id: str) -> str:
        return PURGED_PREFIX + self.hash("id", source, id)

    def key_hash(self, key: str) -> str:
        return self.hash("key", key)


class PurgeReport(msgspec.Struct, frozen=True):
    subject_hash: str                 # the salted stub subject ("purged:<hash>")
    tombstone_seq: int
    receipt_seq: int
    events: int                       # events turned into stubs
    segments_rewritten: int
    segments_total: int
    bytes_rewritten: int              # bytes of the new segment files
    receipts_rewritten: int           # decision receipts whose item keys were hashed
    item_versions: int
    embeddings: int
    snapshots: int
    other_files: int                  # set-aside and leftover files removed
    items_path: str                   # "copy" (items.duckdb rewritten) or "replay" (re-projected)
    seconds: float
    resumed: bool = False
    key_destroyed: bool = False       # [privacy] encrypt_subjects: the subject's data key was shredded

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


def purge(store: "Store", subject: str, progress: Callable[[str], None] | None = None) -> PurgeReport:
    from .log_disk import DiskLog
    from .store import _check_subject

    _check_subject(subject)
    if store.readonly:
        raise ReadOnlyError("purge")
    if store.path is None or not isinstance(store.log, DiskLog):
        raise BadInput("purge erases files: it needs a store on disk (ctxdb.open(path))", field="store")
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    views = store._views()
    views.catch_up(refresh=False)
    if subject in views.projector.holds:
        raise AccessDenied(f"{subject} is under legal hold since seq {views.projector.holds[subject]}: "
                           "release it first (ctxdb hold --release)")
    tomb = views.projector.forgotten.get(subject)
    if tomb is None:
        tomb = store.forget(subject, reason="purge")
        views.catch_up(tomb, refresh=False)
    views.persist()
    say(f"tombstone at seq {tomb}")
    with store._engine_lock, store.log._lock:  # appends wait from here on: the plan is complete
        plan = _plan(store, views, subject)
        say(f"plan: {len(plan['stub_seqs'])} events, {len(plan['keys'])} item keys, items by {plan['items_path']}")
        plan["tombstone_seq"] = tomb
        plan["receipt_seq"] = store.log.last_seq + 1
        plan["started"] = time.time()
        write_atomic(store.path / JOURNAL, json.dumps(plan).encode())
        return _finish(store, plan, say, t0)


def resume(store: "Store") -> "PurgeReport | RetentionReport | None":
    """Roll an interrupted purge or retention run forward (called by open() before anything
    else happens)."""
    assert store.path is not None
    f = store.path / JOURNAL
    if not f.exists():
        # an erasure that died before its journal changed nothing, but may have left the scratch
        # item store it was projecting (which holds the data it was about to erase)
        from .retention import ITEMS_TMP as RETAIN_TMP

        for name in (ITEMS_TMP, RETAIN_TMP):
            for p in (store.path / name, store.path / (name + ".wal")):
                p.unlink(missing_ok=True)
        return None
    try:
        plan = json.loads(f.read_bytes())
        plan["stub_seqs"], plan["receipt_seq"], plan["subject" if plan.get("op") != "retention" else "end"]
    except (ValueError, KeyError, TypeError):
        # written with write_atomic, so never torn; unreadable means damaged: keep it for inspection
        from .errors import CorruptionError

        raise CorruptionError("an interrupted purge or retention run left a journal that cannot be read; "
                              "restore it, or remove it and run it again", file=str(f)) from None
    with store._engine_lock, store.log._lock:
        if plan.get("op") == "retention":
            from .retention import finish

            return finish(store, plan, lambda _m: None, time.perf_counter(), resumed=True)
        return _finish(store, plan, lambda _m: None, time.perf_counter(), resumed=True)


# ---- planning -------------------------------------------------------------------------------
def _plan(store: "Store", views, subject: str) -> dict[str, Any]:
    seqs: list[int] = []
    for b in store.log.read_batches(subject=subject, columns=["seq"]):
        seqs.extend(b.column("seq").to_pylist())
    items = views.items
    t = items._q("SELECT key, kind, hash FROM item_versions WHERE subject = ? AND op = 'upsert' ORDER BY vid", [subject])
    keys: dict[str, str] = {}
    for k, kind in zip(t.column("key").to_pylist(), t.column("kind").to_pylist()):
        keys[k] = kind
    t2 = items._q("SELECT DISTINCT key FROM item_versions WHERE subject = ?", [subject])
    for k in t2.column("key").to_pylist():
        keys.setdefault(k, "?")
    own = set(t.column("hash").to_pylist())
    shared = set()
    if own:
        s = items._q("SELECT DISTINCT hash FROM item_versions WHERE subject != ? AND list_contains(?::VARCHAR[], hash)",
                     [subject, sorted(own)])
        shared = set(s.column("hash").to_pylist())
    mixed = False
    if seqs:  # (a semi-join over the unnested lineage: 30x faster than list_has_any at 1M versions)
        m = items._q("SELECT count(*) AS n FROM (SELECT unnest(lineage_seqs) AS q, subject FROM item_versions) "
                     "WHERE subject != ? AND q IN (SELECT unnest(?::BIGINT[]))", [subject, seqs])
        mixed = int(m.column("n")[0].as_py()) > 0
    llm, receipts = system_refs(store, seqs, keys)
    open_llm = any(set(r.get("source_seqs", [])) & set(seqs) for r in views.projector.llm_open.values())
    return {"subject": subject, "stub_seqs": sorted(set(seqs) | set(llm)), "keys": keys, "receipt_seqs": receipts,
            "hashes": sorted(own - shared), "items_path": "replay" if (mixed or llm or open_llm) else "copy"}


def system_refs(store: "Store", seqs: "list[int]", keys: dict[str, str], to_seq: int | None = None
                ) -> tuple[list[int], list[int]]:
    """One pass over ctxdb's own events: the LLM outputs made from any of `seqs` (they go with
    them), and the decision receipts that list any of `keys`."""
    sset = set(seqs)
    llm, receipts = [], []
    for b in store.log.read_batches(to_seq=to_seq, type="ctxdb.*", columns=["seq", "type", "data"]):
        for q, ty, data in zip(b.column("seq").to_pylist(), b.column("type").to_pylist(), b.column("data").to_pylist()):
            if ty == DECISION_TYPE:
                if keys and _mentions(data, keys):
                    receipts.append(q)
            elif ty == LLM_TYPE and sset:
                try:
                    src = set(int(x) for x in msgspec.json.decode(data).get("source_seqs", []))
                except (msgspec.DecodeError, ValueError, AttributeError, TypeError):
                    continue
                if src & sset:
                    llm.append(q)
    return llm, receipts


# ---- doing it -------------------------------------------------------------------------------
def _finish(store: "Store", plan: dict[str, Any], say: Callable[[str], None], t0: float, *,
            resumed: bool = False) -> PurgeReport:
    assert store.path is not None
    salt = store._salt
    subject = plan["subject"]
    stub_subject = salt.stub_subject(subject)
    # nothing may read or project while files change: the engine goes, and comes back on next use
    store._close_engine()  # (the engine lock is re-entrant: this thread holds it)
    # crypto-shredding: the key goes first, so every copy made before now is already unreadable
    atrest = store.log.atrest
    shredded = bool(atrest is not None and atrest.applies(subject) and atrest.keys.destroy(subject))

    # 2. the log (a journal written before receipts were planned: find them now; receipts
    # already rewritten no longer name the keys)
    keys: dict[str, str] = plan["keys"]
    if "receipt_seqs" not in plan:
        plan["receipt_seqs"] = system_refs(store, [], keys)[1]

    def receipt(_seq: int, data: str) -> str:
        return _rewrite_receipt(data, keys, salt, plan["receipt_seq"]) if _mentions(data, keys) else data

    # 3. the item store: a copy without the subject is written while the log is rewritten (it
    # does not read the log); a re-projection needs the rewritten log. It replaces
    # items.duckdb only after the log's commit point.
    copying = None
    if plan["items_path"] != "replay":
        copying = ThreadPoolExecutor(max_workers=1)
        building = copying.submit(_build_items, store, plan, stub_subject)
    try:
        new, counts = rewrite_log(store, plan["stub_seqs"], plan["receipt_seqs"], receipt, say, subject=subject)
    finally:
        if copying is not None:
            copying.shutdown(wait=True)
    versions = building.result() if copying is not None else _build_items(store, plan, stub_subject)
    swap_items(store, ITEMS_TMP)
    # 4. embeddings and the vector index
    embeddings = _purge_vectors(store.path / "vectors", set(plan["hashes"]))
    # 5. snapshots, set-aside and leftover files
    snaps, others = _purge_rest(store.path)
    say(f"items: {versions} versions; embeddings: {embeddings}; snapshots: {snaps}; other files: {others}")

    # 6. the purge receipt (a deterministic id: a resumed purge appends it once)
    report = PurgeReport(
        subject_hash=stub_subject, tombstone_seq=int(plan["tombstone_seq"]), receipt_seq=int(plan["receipt_seq"]),
        events=counts["events"], segments_rewritten=len(new), segments_total=len(store.log.manifest.segments),  # type: ignore[attr-defined]
        bytes_rewritten=sum(s.bytes for s in new), receipts_rewritten=counts["receipts"], item_versions=versions,
        embeddings=embeddings, snapshots=snaps, other_files=others, items_path=plan["items_path"],
        seconds=round(time.perf_counter() - t0, 3), resumed=resumed,
        key_destroyed=shredded or bool(atrest is not None and atrest.keys.destroyed(subject)))
    data = {k: v for k, v in report.to_dict().items() if k not in ("seconds", "resumed", "receipt_seq")}
    data["stub_subject"] = stub_subject
    seq = append_receipt(store, f"purge-{stub_subject[len(PURGED_PREFIX):]}-{plan['tombstone_seq']}", PURGE_TYPE, data)
    if seq != report.receipt_seq:
        report = msgspec.structs.replace(report, receipt_seq=seq)
    say(f"purge receipt at seq {seq}")
    return report


# ---- shared with retention ------------------------------------------------------------------
def rewrite_log(store: "Store", stub_seqs: "list[int]", receipt_seqs: "list[int]",
                receipt: Callable[[int, str], str], say: Callable[[str], None], *,
                subject: str | None = None) -> tuple[list, dict[str, int]]:
    """Rewrite the segments holding `stub_seqs` (each row not yet a stub becomes one; with
    `subject`, its rows anywhere too) or `receipt_seqs` (their data passed through
    `receipt(seq, data)`). Idempotent, so an interrupted erasure can run it again. Returns the
    new segments and counts of events stubbed and receipts changed."""
    salt = store._salt
    salt.key()  # created (durably) before any stub is written
    stubs = pa.array(sorted(stub_seqs), pa.int64())
    rset = set(receipt_seqs)
    wanted = pa.array(sorted(set(stub_seqs) | rset), pa.int64())
    counts = {"events": 0, "receipts": 0}

    def find(t: pa.Table) -> bool:  # planned under the write lock: the seqs name every row
        return bool(len(wanted)) and pc.any(pc.is_in(t.column("seq"), wanted)).as_py()

    def one_receipt(q: int, data: str) -> str:
        out = receipt(q, data) if q in rset else data
        counts["receipts"] += out != data
        return out

    def transform(t: pa.Table) -> pa.Table:
        hit = pc.is_in(t.column("seq"), stubs)
        if subject is not None:
            hit = pc.or_(hit, pc.equal(t.column("subject"), subject))
        mask = pc.and_(hit, pc.invert(pc.starts_with(t.column("subject"), PURGED_PREFIX)))
        return _stub_rows(t, mask.to_numpy(zero_copy_only=False), salt, subject, counts, one_receipt)

    _old, new = store.log.rewrite_segments(find, ["seq"], transform, progress=say)  # type: ignore[attr-defined]
    say(f"log: {len(new)} segment(s) rewritten")
    return new, counts


def swap_items(store: "Store", name: str) -> None:
    """Replace items.duckdb by the fsync'd item store `name` (after the log's commit point)."""
    from .snapshot import ITEMS_FILE

    assert store.path is not None
    tmp, live = store.path / name, store.path / ITEMS_FILE
    if not tmp.exists():  # there was no item store to rewrite
        return
    live.with_name(ITEMS_FILE + ".wal").unlink(missing_ok=True)
    os.replace(tmp, live)
    fsync_dir(store.path)


def append_receipt(store: "Store", id: str, type: str, data: dict[str, Any]) -> int:
    """Append an erasure's receipt (a deterministic id: a resumed erasure appends it once) and
    end the erasure: its journal goes."""
    from .store import _now_iso

    assert store.path is not None
    seq = store.append([{"id": id, "source": "ctxdb", "type": type, "subject": type.replace(".", ":", 1),
                         "time": _now_iso(), "data": data}])[0]
    (store.path / JOURNAL).unlink(missing_ok=True)
    fsync_dir(store.path)
    return seq


def _stub_rows(t: pa.Table, mask: np.ndarray, salt: Salt, subject: str | None, counts: dict[str, int],
               receipt: Callable[[int, str], str]) -> pa.Table:
    """A segment with the rows of `mask` turned into content-free stubs (seq, recorded_at,
    source and type kept; id and subject salted hashes; time = recorded_at; data null; meta and
    extra attributes dropped) and every other decision receipt passed through `receipt(seq, data)`.
    Only the changed rows are converted to Python; the columns are patched in place."""
    from .events import utc_from_micros

    cols = {f.name: t.column(f.name) for f in t.schema}
    idx = np.flatnonzero(mask)
    if len(idx):
        m = pa.array(mask, pa.bool_())
        take = pa.array(idx, pa.int64())
        ids, sources, subjects = (cols[n].take(take).to_pylist() for n in ("id", "source", "subject"))
        rec = cols["recorded_at"].cast(pa.int64()).take(take).to_pylist()
        stub_subject = salt.stub_subject(subject) if subject is not None else None
        new = {
            "id": [salt.stub_id(src, i) for src, i in zip(sources, ids)],
            "subject": [stub_subject if s == subject else salt.stub_subject(s) for s in subjects],
            "time": [utc_from_micros(r).isoformat().replace("+00:00", "Z") for r in rec],
            "data": ["null"] * len(idx),
        }
        for n, vals in new.items():
            cols[n] = pc.replace_with_mask(cols[n], m, pa.array(vals, cols[n].type))
        cols["time_ts"] = pc.replace_with_mask(cols["time_ts"], m, pa.array(rec, pa.int64()).cast(cols["time_ts"].type))
        for n in ("meta", "ext"):
            cols[n] = pc.replace_with_mask(cols[n], m, pa.nulls(len(idx), cols[n].type))
        counts["events"] += len(idx)
    dec = pc.and_(pc.equal(t.column("type"), DECISION_TYPE), pa.array(~mask, pa.bool_()))
    didx = np.flatnonzero(dec.to_numpy(zero_copy_only=False))
    if len(didx):
        take = pa.array(didx, pa.int64())
        datas = cols["data"].take(take).to_pylist()
        seqs = cols["seq"].take(take).to_pylist()
        out = [receipt(q, d) if d else d for q, d in zip(seqs, datas)]
        if out != datas:
            cols["data"] = pc.replace_with_mask(cols["data"], pa.array(dec.to_numpy(zero_copy_only=False), pa.bool_()),
                                                pa.array(out, cols["data"].type))
    return pa.Table.from_arrays([cols[f.name] for f in t.schema], schema=t.schema)


def _mentions(data: str | None, keys: dict[str, str]) -> bool:
    if not data:
        return False
    try:
        d = msgspec.json.decode(data)
        return any(isinstance(it, dict) and it.get("key") in keys for it in d.get("items", []))
    except (msgspec.DecodeError, AttributeError, TypeError):
        return False


def _rewrite_receipt(data: str, keys: dict[str, str], salt: Salt, purged_at: int) -> str:
    d = msgspec.json.decode(data)
    items = []
    for it in d.get("items", []):
        if isinstance(it, dict) and it.get("key") in keys:
            k = it["key"]
            items.append({"key_hash": salt.key_hash(k), "kind": it.get("kind") or keys[k], "hash": it.get("hash"),
                          "purged_at": purged_at})
        else:
            items.append(it)
    d["items"] = items
    return msgspec.json.encode(d).decode()


def _build_items(store: "Store", plan: dict[str, Any], stub_subject: str) -> int:
    """Write the item store without the subject to ITEMS_TMP; returns its versions dropped."""
    from .items import SELECT_COLS, ItemStore
    from .rebuild import replay_into
    from .snapshot import ITEMS_FILE

    assert store.path is not None
    src = store.path / ITEMS_FILE
    tmp = store.path / ITEMS_TMP
    for f in (tmp, tmp.with_name(tmp.name + ".wal")):
        f.unlink(missing_ok=True)
    subject = plan["subject"]
    if not src.exists():
        return 0
    probe = ItemStore(src)
    try:
        gone = int(probe._q("SELECT count(*) AS n FROM item_versions WHERE subject = ?", [subject]).column("n")[0].as_py())
        raw = probe.get_meta("purged")
        purged = set(json.loads(raw)) if raw else set()
        raw = probe.get_meta("forgotten")
        forgotten = json.loads(raw) if raw else {}
        end = probe.checkpoint()[0]
        probe.flush()
    finally:
        probe.close()
    purged.add(stub_subject)
    forgotten.pop(subject, None)
    fresh = ItemStore(tmp, atrest=store.log.atrest)
    try:
        if plan["items_path"] == "replay":
            fresh.copy_token_counts_from(src)
            fresh._con.execute("DELETE FROM token_counts WHERE list_contains(?::VARCHAR[], hash)", [plan["hashes"]])
            proj = store._projector(fresh, purged)
            replay_into(proj, store.log, min(end, store.log.last_seq))
        else:
            con = fresh._con
            con.execute(f"ATTACH '{src}' AS old (READ_ONLY)")
            keys = sorted(plan["keys"])
            con.execute(f"INSERT INTO item_versions SELECT {SELECT_COLS} FROM old.item_versions WHERE subject != ?", [subject])
            con.execute("INSERT INTO uses SELECT key, seq, agent FROM old.uses WHERE NOT list_contains(?::VARCHAR[], key)", [keys])
            con.execute("INSERT INTO summary_state SELECT rule, grp, n, list_filter(pending, lambda x: NOT list_contains(?::VARCHAR[], x)) "
                        "FROM old.summary_state WHERE grp != ?", [keys, subject])
            con.execute("INSERT INTO token_counts SELECT tokenizer, hash, n FROM old.token_counts "
                        "WHERE NOT list_contains(?::VARCHAR[], hash)", [plan["hashes"]])
            con.execute("DELETE FROM checkpoints")
            con.execute("INSERT INTO checkpoints SELECT * FROM old.checkpoints")
            con.execute("INSERT INTO policies SELECT * FROM old.policies")
            con.execute("DELETE FROM meta")
            con.execute("INSERT INTO meta SELECT * FROM old.meta WHERE k NOT IN ('purged', 'forgotten')")
            con.execute("DETACH old")
        fresh.set_meta("purged", json.dumps(sorted(purged)))
        fresh.set_meta("forgotten", json.dumps(forgotten))
        fresh.flush()
    finally:
        fresh.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    return gone


def _purge_vectors(root: Path, hashes: set[str]) -> int:
    """Drop the embeddings of `hashes` from every model folder (and its FAISS index)."""
    import pyarrow.ipc as ipc

    if not root.is_dir():
        return 0
    dropped = 0
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in d.glob("index.faiss*"):
            f.unlink()
        st_file = d / "state.json"
        if not st_file.exists():
            continue
        st = json.loads(st_file.read_bytes())
        tables = []
        for name in st.get("chunks", []):
            with ipc.open_file(pa.memory_map(str(d / name))) as r:
                tables.append(r.read_all())
        if not tables:
            continue
        t = pa.concat_tables(tables)
        keep = pc.invert(pc.is_in(t.column("hash"), pa.array(sorted(hashes), pa.string())))
        n_drop = t.num_rows - pc.sum(keep.cast(pa.int64())).as_py() if t.num_rows else 0
        if not n_drop:
            continue
        t = t.filter(keep)
        name = f"chunk-{int(st.get('next_chunk', 1)):06d}.arrow"
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, t.schema) as w:
            w.write_table(t)
        write_atomic(d / name, sink.getvalue().to_pybytes())
        old = list(st["chunks"])
        st.update(chunks=[name], n=t.num_rows, next_chunk=int(st.get("next_chunk", 1)) + 1)
        write_atomic(st_file, json.dumps(st).encode())   # the commit point
        for o in old:
            (d / o).unlink(missing_ok=True)
        fsync_dir(d)
        dropped += int(n_drop)
    return dropped


def _purge_rest(root: Path) -> tuple[int, int]:
    """Remove every snapshot (old item stores) and set-aside or leftover files."""
    snaps = 0
    sdir = root / "snapshots"
    if sdir.is_dir():
        for d in sdir.iterdir():
            if d.is_dir():
                shutil.rmtree(d)
                snaps += 1 if d.name.isdigit() else 0
        fsync_dir(sdir)
    others = 0
    for pat in ("items.duckdb.unreadable-*", "items.rebuild.duckdb*", "*.restore", "vectors/*.unreadable-*"):
        for p in root.glob(pat):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            others += 1
    for p in (root / "log").glob("*.tmp"):
        p.unlink()
        others += 1
    if others:
        fsync_dir(root)
    return snaps, others


def purged_stubs(log) -> dict[str, int]:
    """The stub subjects of every purge the log records (a replay knows them from the start),
    each with the seq of its tombstone: every event of the subject before it was rewritten into
    a stub (0 when the receipt does not say)."""
    out: dict[str, int] = {}
    for ev in log.read(type=PURGE_TYPE):
        try:
            d = ev.json()
            s, t = d.get("stub_subject"), d.get("tombstone_seq")
        except (ValueError, AttributeError):
            continue
        if isinstance(s, str) and s.startswith(PURGED_PREFIX):
            t = t if type(t) is int and 0 < t <= ev.seq else 0
            out[s] = min(out.get(s, t), t)
    return out


__all__ = ["purge", "resume", "Salt", "PurgeReport", "purged_stubs", "FORGET_TYPE"]
