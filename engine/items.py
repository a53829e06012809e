"""Items and the temporal item store (DuckDB).

An item version is valid for log positions `[from_seq, to_seq)`; the current state is the versions
with no `to_seq`. Retractions are stored as `op = 'retract'` rows so that valid-time queries
(`valid_at`) can see them; a version that arrived late (its event `time` is older than the
current version's) is stored with an empty interval `[seq, seq)`: it never was the current
version, but it is what was true at its time.

Each projection batch is written in one DuckDB transaction together with the projector's
position (checkpoint), so a crash leaves either all of a batch or none of it.
"""
from __future__ import annotations

import operator
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import duckdb
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .digest import content_hash, digest_batches  # noqa: F401 (content_hash is imported from here too)
from .errors import CorruptionError, CtxdbError

ITEM_SCHEMA_VERSION = 1


class ItemVersion(msgspec.Struct, frozen=True, gc=False):
    vid: int
    key: str
    op: str                     # "upsert" | "retract"
    subject: str
    kind: str
    text: str
    priority: float
    pinned: bool
    tags: tuple[str, ...]
    time_us: int                # valid time: the event time the version is about
    expires_us: int | None
    hash: str                   # content hash of `text`
    from_seq: int
    to_seq: int | None
    lineage_seqs: tuple[int, ...]
    lineage_ids: tuple[str, ...]
    rule: str
    meta: str | None = None     # JSON: e.g. {"redactions": [{"kind", "start", "end"}]} (never a secret)

    def closed(self, seq: int) -> "ItemVersion":
        return msgspec.structs.replace(self, to_seq=seq)


COLUMNS = [f for f in ItemVersion.__struct_fields__]
#: rows per batch a digest reads: few batches keep its per-column Python work (which holds the
#: GIL a replay's projection needs) small; the hashing itself releases it
DIGEST_ROWS = 500_000
ARROW_SCHEMA = pa.schema([
    ("vid", pa.int64()), ("key", pa.string()), ("op", pa.string()), ("subject", pa.string()),
    ("kind", pa.string()), ("text", pa.string()), ("priority", pa.float64()), ("pinned", pa.bool_()),
    ("tags", pa.list_(pa.string())), ("time_us", pa.int64()), ("expires_us", pa.int64()),
    ("hash", pa.string()), ("from_seq", pa.int64()), ("to_seq", pa.int64()),
    ("lineage_seqs", pa.list_(pa.int64())), ("lineage_ids", pa.list_(pa.string())), ("rule", pa.string()),
    ("meta", pa.string()),
])

DDL = """
CREATE TABLE IF NOT EXISTS item_versions (
    vid BIGINT, key VARCHAR, op VARCHAR, subject VARCHAR, kind VARCHAR, text VARCHAR,
    priority DOUBLE, pinned BOOLEAN, tags VARCHAR[], time_us BIGINT, expires_us BIGINT,
    hash VARCHAR, from_seq BIGINT, to_seq BIGINT, lineage_seqs BIGINT[], lineage_ids VARCHAR[],
    rule VARCHAR, meta VARCHAR);
ALTER TABLE item_versions ADD COLUMN IF NOT EXISTS meta VARCHAR;
CREATE TABLE IF NOT EXISTS checkpoints (projector VARCHAR PRIMARY KEY, seq BIGINT, next_vid BIGINT,
    python_rules VARCHAR);
CREATE TABLE IF NOT EXISTS policies (version INTEGER, seq BIGINT, hash VARCHAR, config VARCHAR);
CREATE TABLE IF NOT EXISTS uses (key VARCHAR, seq BIGINT, agent VARCHAR);
CREATE TABLE IF NOT EXISTS summary_state (rule VARCHAR, grp VARCHAR, n BIGINT, pending VARCHAR[],
    PRIMARY KEY (rule, grp));
CREATE TABLE IF NOT EXISTS token_counts (tokenizer VARCHAR, hash VARCHAR, n INTEGER);
CREATE TABLE IF NOT EXISTS meta (k VARCHAR PRIMARY KEY, v VARCHAR);
"""


@dataclass
class Policy:
    version: int
    seq: int
    hash: str
    config: str                 # canonical JSON of the parsed config


@dataclass
class WriteBatch:
    """Everything one projection step changes; written atomically with the checkpoint."""

    to_seq: int
    next_vid: int
    first_vid: int = 0
    new: list[ItemVersion] = field(default_factory=list)
    closes: dict[int, int] = field(default_factory=dict)          # vid -> to_seq (rows already stored)
    summary_state: dict[tuple[str, str], tuple[int, list[str]]] = field(default_factory=dict)
    policies: list[Policy] = field(default_factory=list)
    uses: list[tuple[str, int, str]] = field(default_factory=list)
    python_rules: str = ""
    meta: dict[str, str] = field(default_factory=dict)             # projector state beside the checkpoint
    new_table: pa.Table | None = None                               # more new versions, as rows of ARROW_SCHEMA
    # more closes, as arrays (vids, to_seqs): the projector's columnar path, for BulkWriter
    close_arrays: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def take_close_arrays(self) -> None:
        """Move close_arrays into `closes` (for writers that take closes as a dict)."""
        for v, s in self.close_arrays:
            self.closes.update(zip(v.tolist(), s.tolist()))
        self.close_arrays = []


_GETTERS = [operator.attrgetter(f.name) for f in ARROW_SCHEMA]


def merge_batches(wbs: list[WriteBatch]) -> WriteBatch:
    """Consecutive projection batches as one, with the same effect when applied: every new
    version is inserted before any close is applied (a close names a version inserted earlier,
    possibly in the same list), later state (summary windows, meta) replaces earlier, policies
    and uses accumulate in order, the last checkpoint wins."""
    if len(wbs) == 1:
        wbs[0].take_close_arrays()
        return wbs[0]
    last = wbs[-1]
    out = WriteBatch(to_seq=last.to_seq, next_vid=last.next_vid, first_vid=wbs[0].first_vid,
                     python_rules=last.python_rules)
    for wb in wbs:
        wb.take_close_arrays()
        out.new.extend(wb.new)
        out.closes.update(wb.closes)
        out.summary_state.update(wb.summary_state)
        out.policies.extend(wb.policies)
        out.uses.extend(wb.uses)
        out.meta.update(wb.meta)
    return out


def _versions_table(rows: list[ItemVersion]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(list(map(g, rows)), type=f.type) for g, f in zip(_GETTERS, ARROW_SCHEMA)],
                                schema=ARROW_SCHEMA)


def _tuples(col: pa.ChunkedArray | pa.Array) -> list[tuple]:
    """A list column as Python tuples (NULL -> ()), from its flat values and offsets (several
    times faster than to_pylist's list per row, for the lineages of 10^5..10^6 versions)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if not n:
        return []
    if arr.offset or arr.null_count:  # (never the case for a fresh query result: the general way)
        return [tuple(x) if x else () for x in arr.to_pylist()]
    offs = arr.offsets.to_numpy()
    flat = arr.values.slice(int(offs[0]), int(offs[-1] - offs[0])).to_pylist()
    offs = offs - offs[0]
    if offs[-1] == n and (np.diff(offs) == 1).all():  # one value each (lineages of plain rules)
        return [(x,) for x in flat]
    if offs[-1] == 0:
        return [()] * n
    return [tuple(flat[a:b]) for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]


_LIST_COLUMNS = ("tags", "lineage_seqs", "lineage_ids")


def rows_to_versions(tbl: pa.Table) -> list[ItemVersion]:
    """The rows of an item_versions table (COLUMNS, in order) as ItemVersions."""
    cols = [_tuples(tbl.column(c)) if c in _LIST_COLUMNS else tbl.column(c).to_pylist() for c in COLUMNS]
    return list(map(ItemVersion, *cols))


SELECT_COLS = ", ".join(COLUMNS)


class ItemStore:
    """The item store of one ctxdb store: `items.duckdb` (or in memory when `path` is None)."""

    def __init__(self, path: Path | None, *, readonly: bool = False, atrest: Any = None) -> None:
        self.path = path
        self.atrest = atrest   # atrest.AtRest: item texts of [privacy] encrypt_subjects stored encrypted
        self._lock = threading.RLock()
        self._adopted: tuple[pa.Table, pa.Schema] | None = None  # versions read in place (adopt_versions)
        try:
            self._con = duckdb.connect(str(path) if path else ":memory:", read_only=readonly)
            if not readonly:
                self._con.execute(DDL)
                self._con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", [str(ITEM_SCHEMA_VERSION)])
        except duckdb.Error as exc:
            raise CorruptionError(f"cannot open the item store: {exc}", file=str(path) if path else None) from None

    # ---- reads ---------------------------------------------------------------------------
    def _q(self, sql: str, params: list | None = None) -> pa.Table:
        with self._lock:
            try:
                t = self._con.sql(sql, params=params or None).to_arrow_table()
                return t if self.atrest is None else self.atrest.decrypt_texts(t)
            except duckdb.Error as exc:
                raise CtxdbError(f"item store query failed ({self.path}): {exc}") from None

    def checkpoint(self) -> tuple[int, int, str]:
        """(seq, next vid, python rule names) the projection has reached."""
        t = self._q("SELECT seq, next_vid, python_rules FROM checkpoints WHERE projector = 'items'")
        if not t.num_rows:
            return 0, 1, ""
        r = t.to_pylist()[0]
        return r["seq"], r["next_vid"], r["python_rules"] or ""

    def current(self) -> list[ItemVersion]:
        return rows_to_versions(self._q(
            f"SELECT {SELECT_COLS} FROM item_versions WHERE op = 'upsert' AND to_seq IS NULL ORDER BY key"))

    def last_times(self, since_seq: int = 0) -> dict[str, int]:
        """Per key, the newest valid time of any op of the current rules epoch (from
        `since_seq`), so a late event never resurrects a key."""
        t = self._q("SELECT key, max(time_us) AS t FROM item_versions WHERE from_seq >= ? GROUP BY key", [since_seq])
        return dict(zip(t.column("key").to_pylist(), t.column("t").to_pylist()))

    def versions_at(self, seq: int, *, subject_like: list[str] | None = None,
                    kinds: Iterable[str] | None = None, deny_tags: Iterable[str] = ()) -> list[ItemVersion]:
        """Item versions valid at `seq` (transaction time), ordered by key."""
        vs = rows_to_versions(self.versions_at_arrow(seq, subject_like=subject_like, kinds=kinds,
                                                     deny_tags=deny_tags))
        vs.sort(key=lambda v: v.key)
        return vs

    def versions_at_arrow(self, seq: int, *, subject_like: list[str] | None = None,
                          kinds: Iterable[str] | None = None, deny_tags: Iterable[str] = ()) -> pa.Table:
        sql = (f"SELECT {SELECT_COLS} FROM item_versions WHERE op = 'upsert' AND from_seq <= ? "
               "AND (to_seq IS NULL OR to_seq > ?)")
        params: list[Any] = [seq, seq]
        if subject_like is not None:
            if not subject_like:
                sql += " AND false"
            else:
                sql += " AND (" + " OR ".join("subject LIKE ? ESCAPE '\\'" for _ in subject_like) + ")"
                params += subject_like
        if kinds is not None:
            kinds = list(kinds)
            sql += " AND kind IN (" + ",".join("?" for _ in kinds) + ")" if kinds else " AND false"
            params += kinds
        deny = list(deny_tags)
        if deny:
            sql += " AND NOT list_has_any(tags, ?::VARCHAR[])"
            params.append(deny)
        return self._q(sql, params)  # any order: the assembly does not depend on it

    def lineage_denied(self, kinds: Iterable[str], deny_tags: Iterable[str], allow_tags: Iterable[str] | None
                       ) -> list[int]:
        """Seqs of the events behind any item version (ever) of a kind outside `kinds`, with a
        denied tag, or (with `allow_tags`) without an allowed one."""
        cond, params = ["kind NOT IN (SELECT unnest(?::VARCHAR[]))"], [list(kinds)]
        if deny_tags:
            cond.append("list_has_any(tags, ?::VARCHAR[])")
            params.append(list(deny_tags))
        if allow_tags is not None:
            cond.append("NOT list_has_any(tags, ?::VARCHAR[])")
            params.append(list(allow_tags))
        t = self._q("SELECT DISTINCT unnest(lineage_seqs) AS s FROM item_versions WHERE op = 'upsert' AND ("
                    + " OR ".join(cond) + ") ORDER BY s", params)
        return t.column("s").to_pylist()

    def valid_at(self, time_us: int, seq: int, since_seq: int = 0) -> list[ItemVersion]:
        """What was true at valid time `time_us`, as known at `seq` under the rules epoch that
        began at `since_seq`: per key, the op with the newest (time, seq) at or before
        `time_us`, if it is an upsert."""
        sql = f"""
            SELECT {SELECT_COLS} FROM (
                SELECT *, row_number() OVER (PARTITION BY key ORDER BY time_us DESC, from_seq DESC, vid DESC) AS rn
                FROM item_versions WHERE from_seq <= ? AND from_seq >= ? AND time_us <= ?)
            WHERE rn = 1 AND op = 'upsert' ORDER BY key"""
        return rows_to_versions(self._q(sql, [seq, since_seq, time_us]))

    def uses_at(self, seq: int) -> dict[str, int]:
        t = self._q("SELECT key, count(*) AS n FROM uses WHERE seq <= ? GROUP BY key", [seq])
        return dict(zip(t.column("key").to_pylist(), t.column("n").to_pylist()))

    def policies(self) -> list[Policy]:
        t = self._q("SELECT version, seq, hash, config FROM policies ORDER BY seq")
        return [Policy(**r) for r in t.to_pylist()]

    def summary_state(self) -> dict[tuple[str, str], tuple[int, list[str]]]:
        t = self._q("SELECT rule, grp, n, pending FROM summary_state")
        return {(r["rule"], r["grp"]): (r["n"], list(r["pending"] or [])) for r in t.to_pylist()}

    def token_counts(self, tokenizer: str) -> dict[str, int]:
        t = self._q("SELECT hash, n FROM token_counts WHERE tokenizer = ?", [tokenizer])
        return dict(zip(t.column("hash").to_pylist(), t.column("n").to_pylist()))

    def texts_after(self, vid: int, limit: int) -> list[tuple[int, str, str]]:
        """(vid, hash, text) of upserts after `vid`, in vid order (for background token counts)."""
        t = self._q("SELECT vid, hash, text, subject FROM item_versions WHERE vid > ? AND op = 'upsert' "
                    "ORDER BY vid LIMIT ?", [vid, limit])
        return list(zip(t.column("vid").to_pylist(), t.column("hash").to_pylist(), t.column("text").to_pylist()))

    def get_meta(self, k: str) -> str | None:
        t = self._q("SELECT v FROM meta WHERE k = ?", [k])
        return t.column("v")[0].as_py() if t.num_rows else None

    def set_meta(self, k: str, v: str) -> None:
        with self._lock:
            self._con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [k, v])

    def count_versions(self) -> int:
        return self._q("SELECT count(*) AS n FROM item_versions").column("n")[0].as_py()

    def digest(self, started: "threading.Event | None" = None) -> str:
        """A hash over every item version, in vid order: two stores with the same digest hold
        identical item versions (see digest.py: SHA-256 over the columns' bytes). `started` is
        set once no write can come between it and the digest (this store's lock is held)."""
        # vid orders the versions but is not hashed: a purge that copies the item store keeps
        # the vids (with gaps where the subject's versions were); a replay numbers them densely
        cols = ", ".join(c for c in COLUMNS if c != "vid")
        if self._adopted is not None:  # (its rows are in vid order: BulkWriter._adopt)
            tbl, schema = self._adopted
            tbl = tbl.drop_columns(["vid"]).cast(schema)
            if started is not None:
                started.set()
            return digest_batches(schema, tbl.to_batches(DIGEST_ROWS))
        with self._lock:
            if started is not None:
                started.set()
            # DuckDB returns a table's rows in insertion order (preserve_insertion_order), which
            # is vid order unless rows were inserted out of it: read them so, checking the vids,
            # and sort only if they are not ascending (a sort of every version cost ~0.3 s of
            # CPU per 10^6 of them, more when the file is cold)
            rdr = self._con.sql(f"SELECT vid, {cols} FROM item_versions").to_arrow_reader(DIGEST_ROWS)
            batches, last = [], None
            for b in rdr:
                v = b.column(0).to_numpy()
                if len(v) and ((last is not None and v[0] <= last) or bool((v[1:] <= v[:-1]).any())):
                    break
                if len(v):
                    last = v[-1]
                batches.append(b.drop_columns(["vid"]))
            else:
                return digest_batches(rdr.schema.remove(0), batches)
            rdr.close()  # (DuckDB runs one query per connection at a time)
            rdr = self._con.sql(f"SELECT {cols} FROM item_versions ORDER BY vid").to_arrow_reader(DIGEST_ROWS)
            return digest_batches(rdr.schema, rdr)

    # ---- writes --------------------------------------------------------------------------
    def write(self, wb: WriteBatch) -> None:
        self.write_many([wb])

    def write_many(self, wbs: list[WriteBatch]) -> None:
        """Apply projection batches in order, in one DuckDB transaction; the last one's
        checkpoint is the position stored."""
        if not wbs:
            return
        with self._lock:
            con = self._con
            try:
                con.execute("BEGIN TRANSACTION")
                self._apply(con, merge_batches(wbs))  # one INSERT and one UPDATE, not one per batch
                con.execute("COMMIT")
            except duckdb.Error as exc:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                raise CtxdbError(f"item store write failed ({self.path}): {exc}") from None

    def _apply(self, con, wb: WriteBatch) -> None:
        for new_tbl in ([_versions_table(wb.new)] if wb.new else []) + ([wb.new_table] if wb.new_table is not None else []):
            if self.atrest is not None:
                new_tbl = self.atrest.encrypt_texts(new_tbl)
            con.execute("INSERT INTO item_versions SELECT * FROM new_tbl")
        if wb.closes:
            closes_tbl = pa.table({"vid": list(wb.closes), "to_seq": list(wb.closes.values())})  # noqa: F841
            con.execute("UPDATE item_versions SET to_seq = c.to_seq FROM closes_tbl c "
                        "WHERE item_versions.vid = c.vid")
        for (rule, grp), (n, pending) in wb.summary_state.items():
            con.execute("INSERT OR REPLACE INTO summary_state VALUES (?, ?, ?, ?)", [rule, grp, n, pending])
        for p in wb.policies:
            con.execute("INSERT INTO policies VALUES (?, ?, ?, ?)", [p.version, p.seq, p.hash, p.config])
        if wb.uses:
            uses_tbl = pa.table({"key": [u[0] for u in wb.uses], "seq": [u[1] for u in wb.uses],  # noqa: F841
                                 "agent": [u[2] for u in wb.uses]})
            con.execute("INSERT INTO uses SELECT * FROM uses_tbl")
        for k, v in wb.meta.items():
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [k, v])
        con.execute("INSERT OR REPLACE INTO checkpoints VALUES ('items', ?, ?, ?)",
                    [wb.to_seq, wb.next_vid, wb.python_rules])

    def put_token_counts(self, tokenizer: str, counts: dict[str, int]) -> None:
        if not counts:
            return
        tbl = pa.table({"tokenizer": [tokenizer] * len(counts), "hash": list(counts),  # noqa: F841
                        "n": pa.array(list(counts.values()), pa.int32())})
        with self._lock:
            self._con.execute("INSERT INTO token_counts SELECT * FROM tbl")

    def copy_token_counts_from(self, other: Path) -> None:
        """Reuse another item store's token counts (counting is deterministic, so a rebuild may)."""
        with self._lock:
            try:
                self._con.execute(f"ATTACH '{other}' AS old (READ_ONLY)")
                self._con.execute("INSERT INTO token_counts SELECT * FROM old.token_counts")
                self._con.execute("DETACH old")
            except duckdb.Error:
                pass

    def adopt_versions(self, tbl: pa.Table) -> None:
        """Make `tbl` (rows of ARROW_SCHEMA, in vid order) the item versions of this store, instead of any
        stored: DuckDB reads it in place (a registered Arrow table), nothing is copied. For a
        fresh in-memory scratch store that is only read afterwards (BulkWriter(in_memory=True)):
        item_versions can no longer be written."""
        if self.path is not None:
            raise CtxdbError("adopt_versions is for an in-memory scratch store only")
        if self.atrest is not None:
            tbl = self.atrest.encrypt_texts(tbl)
        with self._lock:
            # the column types DuckDB gives the table's rows: digest() hashes them
            cols = ", ".join(c for c in COLUMNS if c != "vid")
            schema = self._con.sql(f"SELECT {cols} FROM item_versions LIMIT 0").to_arrow_table().schema
            self._con.execute("DROP TABLE item_versions")
            self._con.register("item_versions", tbl)
            self._adopted = (tbl, schema)

    def flush(self) -> None:
        """Checkpoint DuckDB's WAL into the database file (before copying it)."""
        with self._lock:
            self._con.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            try:
                self._con.close()
            except duckdb.Error:
                pass


class BulkWriter:
    """Writes the projection batches of a replay (`ctxdb rebuild`, `replay --verify`) into a
    fresh item store in a few large transactions instead of one per batch.

    New versions arrive as ItemVersions (WriteBatch.new) or, from the projector's columnar path,
    as Arrow tables (WriteBatch.new_table; `columnar` tells the projector it may send them). A
    version still open (no `to_seq`) is held back (as Arrow rows) until a later batch closes it,
    so no row is ever UPDATEd; closes are applied to the held rows by vid, in bulk, whenever at
    least `chunk` new rows have arrived, and the rows complete by then are inserted (large
    inserts bypass DuckDB's WAL), by a background thread (DuckDB releases the GIL) while the
    projection goes on. Rows are stored in the order they complete, not in vid order: every
    reader orders by vid or key (or, like views, does not depend on order). A batch may close a
    version it adds itself (the columnar path always sends its closes as `closes`): new
    versions are taken before closes, as ItemStore.write applies them. Summary state, policies,
    uses and meta are folded in batch order (later values replace earlier ones, as the
    per-batch writes would). Between two flushes the store holds a checkpoint without the open
    versions: nobody may read it before finish(), which writes the rest with the last batch's
    checkpoint. The rows stored are the ones the per-batch writes would store (ItemStore.digest
    is equal). abort() stops the background writer without writing the rest."""

    columnar = True

    def __init__(self, store: ItemStore, chunk: int = 250_000, background: bool = True,
                 in_memory: bool = False) -> None:
        self.store = store
        self.chunk = chunk
        # in_memory: the rows are kept as Arrow tables and handed to the store at finish()
        # (ItemStore.adopt_versions) instead of inserted: a scratch store that is read a few
        # times and thrown away (replay --verify) need not be built as a DuckDB table. The
        # projector reads it too: with every row kept here, it need not keep its own copy of
        # the rows of current versions small (Projector._compact)
        self.keeps_rows = in_memory
        self._pending: list[pa.Table] = []          # rows not written yet (some still open)
        self._new = 0                               # rows added since the last flush
        self._closes: dict[int, int] = {}           # vid -> to_seq, not applied yet
        self._close_arrays: list[tuple[np.ndarray, np.ndarray]] = []   # more of them, as (vids, to_seqs)
        self._old_closes: dict[int, int] = {}       # closes of versions stored before the replay
        self._wb = WriteBatch(to_seq=0, next_vid=1)
        self._background = background
        self._queue: "queue.Queue[WriteBatch | None] | None" = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __call__(self, wb: WriteBatch) -> None:
        self.append(wb)

    def append(self, wb: WriteBatch) -> None:
        if wb.new:
            self._pending.append(_versions_table(wb.new))
            self._new += len(wb.new)
        if wb.new_table is not None and wb.new_table.num_rows:
            self._pending.append(wb.new_table)
            self._new += wb.new_table.num_rows
        self._closes.update(wb.closes)
        self._close_arrays += wb.close_arrays
        acc = self._wb
        acc.to_seq, acc.next_vid, acc.python_rules = wb.to_seq, wb.next_vid, wb.python_rules
        acc.summary_state.update(wb.summary_state)
        acc.policies += wb.policies
        acc.uses += wb.uses
        acc.meta.update(wb.meta)
        if self._new >= self.chunk and not self.keeps_rows:
            self._flush(final=False)

    def finish(self) -> None:
        """Write everything held back, with the last checkpoint."""
        if self.keeps_rows:
            self._adopt()
        else:
            self._flush(final=True)

    def _adopt(self) -> None:
        """in_memory: every row received, with every close applied (_resolve, once), ordered
        by vid and handed to the store; the rest of the batches is written."""
        t = self._resolve()
        self._pending = []
        if t is None:
            t = ARROW_SCHEMA.empty_table()
        vids = t.column("vid").to_numpy()
        if len(vids) > 1 and not (vids[1:] > vids[:-1]).all():
            t = t.take(pa.array(np.argsort(vids, kind="stable")))
        acc = self._wb
        acc.closes, self._old_closes = self._old_closes, {}
        self.store.write(acc)
        self.store.adopt_versions(t)

    def abort(self) -> None:
        """Stop the background writer; what was not written yet is dropped."""
        try:
            self._stop()
        except BaseException:  # noqa: BLE001 (the caller is raising its own error)
            pass
        self._pending, self._closes, self._close_arrays = [], {}, []

    def _resolve(self) -> pa.Table | None:
        """The held rows with every close received applied (the others are of versions stored
        before the replay: applied by the last write)."""
        if not self._pending:
            t = None
        else:
            t = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        if self._closes or self._close_arrays:
            vs = [v for v, _ in self._close_arrays]
            ss = [s for _, s in self._close_arrays]
            if self._closes:
                vs.append(np.fromiter(self._closes.keys(), dtype=np.int64, count=len(self._closes)))
                ss.append(np.fromiter(self._closes.values(), dtype=np.int64, count=len(self._closes)))
            cv = vs[0] if len(vs) == 1 else np.concatenate(vs)
            cs = ss[0] if len(ss) == 1 else np.concatenate(ss)
            self._closes, self._close_arrays = {}, []
            hit = np.zeros(len(cv), dtype=bool)
            if t is not None and t.num_rows:
                # each close's row, by a search of the vids in order (one sort, no hash table)
                vids = t.column("vid").to_numpy()
                order = None if (vids[1:] > vids[:-1]).all() else np.argsort(vids, kind="stable")
                sv = vids if order is None else vids[order]
                at = np.minimum(np.searchsorted(sv, cv), len(sv) - 1)
                hit = sv[at] == cv
                rows = at[hit] if order is None else order[at[hit]]
                col = t.column("to_seq").combine_chunks()
                if col.null_count:
                    to_seq = col.fill_null(0).to_numpy().copy()
                    null = col.is_null().to_numpy(zero_copy_only=False)
                    free = null[rows]  # a to_seq a row already has is kept
                    to_seq[rows[free]] = cs[hit][free]
                    null[rows[free]] = False
                    t = t.set_column(t.schema.get_field_index("to_seq"), "to_seq", pa.array(to_seq, mask=null))
            if not hit.all():  # closes of versions stored before the replay
                self._old_closes.update(zip(cv[~hit].tolist(), cs[~hit].tolist()))
        return t

    def _flush(self, final: bool) -> None:
        t = self._resolve()
        self._pending, self._new = [], 0
        if t is not None and not final:
            done = pc.is_valid(t.column("to_seq"))
            held = t.filter(pc.invert(done))
            t = t.filter(done)
            if held.num_rows:
                self._pending = [held]
        acc = self._wb
        acc.new_table = t if t is not None and t.num_rows else None
        self._wb = WriteBatch(to_seq=acc.to_seq, next_vid=acc.next_vid, python_rules=acc.python_rules)
        if final:
            acc.closes, self._old_closes = self._old_closes, {}
            self._stop()
            self.store.write(acc)
        elif self._background:
            self._submit(acc)
        else:
            self.store.write(acc)

    def _submit(self, wb: WriteBatch) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(target=self._work, name="ctxdb-bulk-writer", daemon=True)
            self._thread.start()
        self._queue.put(wb)  # type: ignore[union-attr]

    def _work(self) -> None:
        q = self._queue
        assert q is not None
        while True:
            wb = q.get()
            if wb is None:
                return
            if self._error is None:
                try:
                    self.store.write(wb)
                except BaseException as exc:  # noqa: BLE001 (raised by the next append or finish)
                    self._error = exc

    def _stop(self) -> None:
        """Wait for the background writer to write what it holds; raise what it raised."""
        if self._thread is not None:
            self._queue.put(None)  # type: ignore[union-attr]
            self._thread.join()
            self._thread = self._queue = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


def like_pattern(glob: str) -> str:
    """A SQL LIKE pattern (ESCAPE '\\') for a ctxdb glob."""
    out = []
    for ch in glob:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)
