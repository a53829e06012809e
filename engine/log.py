"""The log: the append-only, gapless sequence of events that everything else projects from.

`BaseLog` holds what every log backend shares: transactions, idempotency, seq and recorded_at
assignment, group commit, and filtered lazy reads. Backends supply storage hooks: `MemoryLog`
(here; for tests and as the reference) and `DiskLog` (log_disk.py: WAL + sealed Parquet segments).

Transactions: one at a time (the writer lock is held from `begin` to commit/rollback). Frames of
the open transaction are written as they come, so ingest memory stays bounded; they become
visible, with one recorded_at, only when the COMMIT is durable. A rollback truncates them away,
so seqs stay gapless. Group commit: the fsync runs after the writer lock is released, and one
fsync publishes every transaction committed before it started.
"""
from __future__ import annotations

import re
import threading
import time as _time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .codec import Batch
from .errors import BadInput, ReadOnlyError
from .events import Event, micros, utc_from_micros
from .keyindex import KeyIndex, first_occurrences

READ_COLUMNS = ["seq", "recorded_at", "id", "source", "type", "subject", "time", "data", "meta", "ext"]


def wall_clock_us() -> int:
    return _time.time_ns() // 1000


class Chunk:
    """A contiguous, committed run of the log, read as record batches with `seq` and
    `recorded_at` columns. Subclasses load from memory, a WAL frame or a sealed segment."""

    first_seq: int
    last_seq: int
    rec_min: int
    rec_max: int

    def batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def batches_where(self, columns: list[str], probe: list[str],
                      mask_of: Callable[[Any], Any]) -> Iterator[pa.RecordBatch]:
        """The rows of batches(columns) that `mask_of` keeps (a boolean mask over a batch
        holding at least the `probe` columns, or None for every row). Here: every column
        read, then filtered; a sealed segment reads `probe` first (SegmentChunk)."""
        for b in self.batches(columns):
            m = mask_of(b)
            yield b if m is None else b.filter(m)

    def recorded_at(self) -> np.ndarray:
        t = pa.Table.from_batches(list(self.batches(["recorded_at"])))
        return t["recorded_at"].cast(pa.int64()).to_numpy()


class TableChunk(Chunk):
    def __init__(self, table: pa.RecordBatch, first_seq: int, recorded_at: int) -> None:
        self.first_seq, self.last_seq = first_seq, first_seq + table.num_rows - 1
        self.rec_min = self.rec_max = recorded_at
        self._table = table

    def batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        yield with_positions(self._table, self.first_seq, self.rec_min).select(columns)


def with_positions(batch: pa.RecordBatch, first_seq: int, recorded_at: int) -> pa.RecordBatch:
    n = batch.num_rows
    seq = pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64))
    rec = pa.array(np.full(n, recorded_at, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC"))
    return pa.RecordBatch.from_arrays([seq, rec, *batch.columns], names=["seq", "recorded_at", *batch.schema.names])


@dataclass
class TxnResult:
    appended: int = 0
    duplicates: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    recorded_at: datetime | None = None


class Transaction:
    """An atomic group of batches. Use `with log.transaction() as txn:`; commits on normal exit,
    rolls back on an exception."""

    def __init__(self, log: "BaseLog") -> None:
        self.log = log
        log._begin()
        self.start_seq = log._next_seq
        self._pending = KeyIndex()
        self.result = TxnResult()
        self._open = True

    def add(self, batch: Batch, *, expect_more: int | None = None) -> np.ndarray:
        """Append a batch's new events; returns the seq of every input row (the existing seq for
        a duplicate, including duplicates within the batch or the transaction).

        `expect_more`: about how many more records the caller will add to this transaction after
        this batch (an estimate; only a hint for the storage layout, e.g. whether frames that
        will be sealed at commit are worth compressing)."""
        if not self._open:
            raise BadInput("the transaction is already finished")
        log = self.log
        fp = batch.fp
        # One sort of the batch's keys serves the lookups (committed and pending), the check for
        # duplicates within the batch and the run the new keys are added as.
        order = np.argsort(fp[:, 0])
        shi, slo = fp[order, 0], fp[order, 1]
        found = log._keys.lookup_sorted(shi, slo)
        self._pending.lookup_sorted(shi, slo, found)
        seqs = np.empty(len(fp), dtype=np.int64)
        seqs[order] = found
        new = seqs < 0
        if len(shi) > 1 and (shi[1:] == shi[:-1]).any():  # maybe repeated within the batch
            new &= first_occurrences(fp)
        n_new = int(new.sum())
        if n_new:
            first = log._next_seq
            new_seqs = np.arange(first, first + n_new, dtype=np.int64)
            seqs[new] = new_seqs
            part = batch.take(new) if n_new < len(batch) else batch
            if log.atrest is not None:  # [privacy] encrypt_subjects: payloads are encrypted before the WAL
                enc = log.atrest.encrypt_table(part.table)
                if enc is not part.table:
                    part = type(part)(enc, part.fp, part.lines, part.json_bytes)
            log._expect_end = None if expect_more is None else first + n_new + max(0, expect_more)
            try:
                log._write(part, first)
            finally:
                log._expect_end = None
            in_order = new[order]
            self._pending.add_sorted(shi[in_order], slo[in_order], seqs[order][in_order])
            log._next_seq += n_new
            if self.result.first_seq is None:
                self.result.first_seq = first
            self.result.last_seq = first + n_new - 1
        rest = seqs < 0
        if rest.any():
            seqs[rest] = self._pending.lookup(fp[rest])
        self.result.appended += n_new
        self.result.duplicates += len(fp) - n_new
        return seqs

    def commit(self) -> TxnResult:
        if not self._open:
            return self.result
        self._open = False
        log = self.log
        if not self.result.appended:
            log._end()
            return self.result
        try:
            recorded = max(log._clock(), log._last_recorded)
            log._last_recorded = recorded
            try:
                token = log._write_commit(recorded, self._pending)
            except BaseException:  # nothing of it is committed: give its seqs back
                log._rollback(self.start_seq)
                log._next_seq = self.start_seq
                raise
            log._keys.add_index(self._pending)
            self.result.recorded_at = utc_from_micros(recorded)
        finally:
            log._end()
        log._sync_and_seal(token)
        return self.result

    def rollback(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self.log._rollback(self.start_seq)
            self.log._next_seq = self.start_seq
        finally:
            self.log._end()

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


class BaseLog:
    readonly = False

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._lock = threading.RLock()
        self._pub_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._changed = threading.Condition()
        self.atrest = None   # atrest.AtRest: encrypt payloads of [privacy] encrypt_subjects
        self._keys = KeyIndex()
        self._next_seq = 1
        self._last_recorded = 0
        self._clock = clock or wall_clock_us
        self._unpublished: list[tuple[int, list[Chunk]]] = []
        self._synced_token = -1
        self._chunks: list[Chunk] = []  # visible, committed, in seq order
        #: while a batch is written: the seq the open transaction is expected to end before
        #: (a hint from Transaction.add's expect_more), else None
        self._expect_end: int | None = None

    # ---- storage hooks -------------------------------------------------------------------
    def _write(self, batch: Batch, first_seq: int) -> None:
        raise NotImplementedError

    def _write_commit(self, recorded_at: int, keys: KeyIndex) -> int:
        """Write the commit record of the open transaction; return a position token. `keys`
        holds the transaction's idempotency keys (not yet in the log's index). If this raises,
        nothing of the transaction is committed (the caller rolls it back)."""
        raise NotImplementedError

    def _sync(self) -> None:
        pass

    def _rollback(self, start_seq: int) -> None:
        raise NotImplementedError

    def _maybe_seal(self) -> None:
        pass

    def _sync_and_seal(self, token: int) -> None:
        """After a commit: make it durable (and visible), then seal if the backend does."""
        self._sync_to(token)
        self._maybe_seal()

    # ---- transactions --------------------------------------------------------------------
    def _begin(self) -> None:
        if self.readonly:
            raise ReadOnlyError("append")
        self._lock.acquire()
        if getattr(self, "_closed", False):
            self._lock.release()
            raise ReadOnlyError("append: the store is closed")

    def _end(self) -> None:
        self._lock.release()

    def transaction(self) -> Transaction:
        return Transaction(self)

    def append_batch(self, batch: Batch) -> np.ndarray:
        with self.transaction() as txn:
            return txn.add(batch)

    def _queue_publish(self, token: int, chunks: list[Chunk]) -> None:
        with self._pub_lock:
            self._unpublished.append((token, chunks))

    def _sync_to(self, token: int) -> None:
        """Group commit: make every transaction up to `token` durable and visible."""
        with self._sync_lock:
            if self._synced_token >= token:
                return
            with self._pub_lock:
                batch = list(self._unpublished)
            self._sync()
            with self._pub_lock:
                del self._unpublished[: len(batch)]
                for tok, chunks in batch:
                    self._chunks.extend(chunks)
                    self._synced_token = max(self._synced_token, tok)
        with self._changed:
            self._changed.notify_all()

    # ---- reads ---------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        chunks = self._chunks
        return chunks[-1].last_seq if chunks else 0

    def chunks(self) -> list[Chunk]:
        return list(self._chunks)

    def wait_for(self, seq: int, timeout: float | None) -> bool:
        """Block until `seq` is visible (or the timeout passes); True if it is."""
        deadline = None if timeout is None else _time.monotonic() + timeout
        with self._changed:
            while self.last_seq < seq:
                left = None if deadline is None else deadline - _time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left if left is not None else 1.0)
                self.refresh()
        return True

    def refresh(self) -> None:
        """Pick up events appended by another process (read-only opens)."""

    def seq_at(self, as_of: datetime | str | int) -> int:
        """The last seq whose recorded_at <= as_of (0 if none): what the log knew then."""
        t = as_of if isinstance(as_of, int) else micros(parse_time(as_of))
        chunks = self.chunks()
        for c in reversed(chunks):
            if c.rec_min > t:
                continue
            if c.rec_max <= t:
                return c.last_seq
            rec = c.recorded_at()
            return c.first_seq + int(np.searchsorted(rec, t, side="right")) - 1
        return 0

    def recorded_at_of(self, seq: int) -> int:
        """recorded_at (microseconds) of the event at `seq`; 0 for seq 0."""
        if seq <= 0:
            return 0
        for c in reversed(self.chunks()):
            if c.first_seq <= seq <= c.last_seq:
                if c.rec_min == c.rec_max:
                    return c.rec_min
                return int(c.recorded_at()[seq - c.first_seq])
        raise BadInput(f"seq {seq} is beyond the end of the log ({self.last_seq})", field="seq",
                       expected=f"1..{self.last_seq}")

    def read_batches(
        self, *, from_seq: int | None = None, to_seq: int | None = None, as_of=None,
        subject: str | None = None, type: str | None = None, columns: Sequence[str] = READ_COLUMNS,
    ) -> Iterator[pa.RecordBatch]:
        """Matching events as record batches, lazily, in seq order."""
        lo = max(1, from_seq or 1)
        hi = self.last_seq if to_seq is None else min(to_seq, self.last_seq)
        if as_of is not None:
            hi = min(hi, self.seq_at(as_of))
        dec = self.atrest is not None and ("data" in columns or "meta" in columns)
        cols = list(dict.fromkeys(["seq", *columns, *(["subject"] if subject or dec else []), *(["type"] if type else [])]))
        probe = [c for c, on in (("seq", True), ("subject", subject), ("type", type)) if on]
        for c in self.chunks():
            if c.last_seq < lo or c.first_seq > hi:
                continue
            partial = c.first_seq < lo or c.last_seq > hi

            def mask_of(b):
                mask = None
                if partial:
                    s = b.column("seq")
                    mask = pc.and_(pc.greater_equal(s, lo), pc.less_equal(s, hi))
                for name, pat in (("subject", subject), ("type", type)):
                    if pat is not None:
                        m = _match(b.column(name), pat)
                        mask = m if mask is None else pc.and_(mask, m)
                return mask

            for b in c.batches_where(cols, probe, mask_of):
                if b.num_rows:
                    if dec:
                        b = self.atrest.decrypt_batch(b)  # type: ignore[union-attr]
                    yield b.select(list(columns))
            if c.last_seq >= hi:
                break

    def read(self, **kw) -> Iterator[Event]:
        for b in self.read_batches(**kw):
            yield from events_from_batch(b)

    def close(self) -> None:
        self._closed = True


def glob_body(pattern: str) -> str:
    """The regex (without anchors) for a glob: `*` any run of characters, `?` one character,
    everything else literal. Shared by the log's Arrow filters and the policy matchers."""
    return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)


def glob_regex(pattern: str) -> str:
    """An anchored RE2 regex for a glob (for pyarrow.compute)."""
    return "^" + glob_body(pattern) + "$"


def _match(col: pa.Array, pattern: str) -> pa.Array:
    if "*" in pattern or "?" in pattern:
        return pc.match_substring_regex(col, glob_regex(pattern))
    return pc.equal(col, pattern)


def events_from_batch(b: pa.RecordBatch) -> Iterator[Event]:
    seqs = b.column("seq").to_pylist()
    recs = b.column("recorded_at").cast(pa.int64()).to_pylist()
    cols = [b.column(n).to_pylist() for n in ("id", "source", "type", "subject", "time")]
    data = b.column("data").to_pylist()
    meta = b.column("meta").to_pylist()
    ext = b.column("ext").to_pylist()
    for i, seq in enumerate(seqs):
        yield Event(
            seq, utc_from_micros(recs[i]), cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i],
            data[i].encode(), meta[i].encode() if meta[i] is not None else None,
            ext[i].encode() if ext[i] is not None else None,
        )


def parse_time(value: datetime | str) -> datetime:
    """A datetime, an RFC 3339 string, or a relative '2h ago' / '30m ago' / 'now'."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    s = str(value).strip()
    rel = parse_relative(s)
    if rel is not None:
        return datetime.now(timezone.utc) - rel
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadInput(f"cannot read time {s!r}", expected="an RFC 3339 time (2026-11-21T10:00:00Z) or '2h ago'") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_relative(s: str):
    from datetime import timedelta

    s = s.strip().lower()
    if s == "now":
        return timedelta(0)
    if not s.endswith(" ago"):
        return None
    body = s[:-4].strip().replace(" ", "")
    num = body.rstrip("smhdw")
    unit = body[len(num):][:1] or "s"
    try:
        return timedelta(seconds=float(num) * _UNITS[unit])
    except (ValueError, KeyError):
        raise BadInput(f"cannot read relative time {s!r}", expected="e.g. '90s ago', '2h ago', '7d ago'") from None


class MemoryLog(BaseLog):
    """The reference log: everything in memory, nothing durable. Passes the same contract suite
    as DiskLog."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        super().__init__(clock)
        self._pending: list[tuple[pa.RecordBatch, int]] = []
        self._token = 0

    def _write(self, batch: Batch, first_seq: int) -> None:
        self._pending.append((batch.table, first_seq))

    def _write_commit(self, recorded_at: int, keys: KeyIndex) -> int:
        chunks: list[Chunk] = [TableChunk(t, s, recorded_at) for t, s in self._pending]
        self._pending = []
        self._token += 1
        self._queue_publish(self._token, chunks)
        return self._token

    def _rollback(self, start_seq: int) -> None:
        self._pending = []

    def stats(self) -> dict:
        return {"events": self.last_seq, "first_seq": 1 if self.last_seq else None,
                "last_seq": self.last_seq or None, "bytes_on_disk": 0}
