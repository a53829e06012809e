"""The facade: `ctxdb.open()` wires a log into a Store and exposes the embedded API.

    db = ctxdb.open("data")          # or: with ctxdb.open() as db:
    db.append([{...}, ...])          # -> seqs (a duplicate reports its existing seq)
    db.ingest("events.ndjson.gz")    # -> IngestReport
    for ev in db.read(subject="order:*", as_of="2h ago"): ...
    db.stats()
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import pyarrow as pa

from .codec import build_batch, envelopes_from_objects
from .errors import BadInput
from .events import Event
from .ingest import Ingest, IngestReport, Progress
from .log import BaseLog, Transaction
from .log_disk import DEFAULT_SEGMENT_EVENTS, DiskLog, Recovery

DEFAULT_PATH = "data"


def default_path() -> str:
    return os.environ.get("CTXDB_PATH") or DEFAULT_PATH


class Store:
    """An open ctxdb store. Thread-safe; one writer process per store (others open read-only)."""

    def __init__(self, log: BaseLog, path: Path | None = None) -> None:
        self.path = path
        self.log = log

    # ---- writing -------------------------------------------------------------------------
    def append(self, events: Iterable[Any], *, source: str = "") -> list[int]:
        """Append events atomically (all or none). Each event is a dict with the envelope fields
        (`type`, `subject`, `time`, `data`, optional `id`, `source`, `meta`, other attributes),
        a JSON line, or an `Envelope`. Returns one seq per input event; a duplicate (same
        `source` and `id` as a logged event, or as an earlier event of this call) gets the seq
        of the event it duplicates and appends nothing."""
        envs = envelopes_from_objects(events)
        if not envs:
            return []
        try:
            batch = build_batch(envs, default_source=source)
        except BadInput as exc:
            raise BadInput(f"event #{exc.row}: {exc.reason}" if exc.row is not None else exc.reason,
                           field=exc.field, expected=exc.expected) from None
        return self.log.append_batch(batch).tolist()

    def ingest(
        self, path_or_file: str | os.PathLike | IO[bytes] | list, format: str = "auto", *,
        skip_bad: bool = False, rejects: str | None = None, progress: Progress | None = None,
        stream: bool = False, source: str = "", batch_events: int | None = None,
        idle_commit: float = 1.0,
    ) -> IngestReport:
        """Ingest files ('-' is stdin). Without `stream`, the whole call is one transaction: a
        bad record raises BadInput (file, line, field) and nothing is appended. With `stream`,
        every batch commits on its own, when full or after `idle_commit` seconds without input."""
        sources = path_or_file if isinstance(path_or_file, list) else [path_or_file]
        kw: dict[str, Any] = {}
        if batch_events:
            kw["batch_events"] = batch_events
        job = Ingest(self.log, format=format, skip_bad=skip_bad, rejects=rejects, progress=progress,
                     default_source=source, idle_commit=idle_commit, **kw)
        return job.run(sources, stream=stream)

    def transaction(self) -> Transaction:
        return self.log.transaction()

    # ---- reading -------------------------------------------------------------------------
    def read(self, *, from_seq: int | None = None, to_seq: int | None = None,
             as_of: datetime | str | None = None, subject: str | None = None,
             type: str | None = None) -> Iterator[Event]:
        """Events in seq order, streamed lazily. `as_of` (a datetime, RFC 3339 or '2h ago') keeps
        what the log had recorded by then; `subject`/`type` match exactly or as globs."""
        return self.log.read(from_seq=from_seq, to_seq=to_seq, as_of=as_of, subject=subject, type=type)

    def read_batches(self, **kw: Any) -> Iterator[pa.RecordBatch]:
        """Like read(), as Arrow record batches (for bulk consumers)."""
        return self.log.read_batches(**kw)

    def seq_at(self, as_of: datetime | str) -> int:
        return self.log.seq_at(as_of)

    @property
    def last_seq(self) -> int:
        return self.log.last_seq

    def wait(self, seq: int | None = None, timeout: float | None = None) -> bool:
        """Block until `seq` (default: the current end of the log) is visible."""
        return self.log.wait_for(self.log.last_seq if seq is None else seq, timeout)

    def refresh(self) -> None:
        self.log.refresh()

    def stats(self) -> dict[str, Any]:
        return self.log.stats()  # type: ignore[attr-defined]

    @property
    def recovery(self) -> Recovery:
        return getattr(self.log, "recovery", Recovery([]))

    # ---- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open(
    path: str | os.PathLike | None = None, *, readonly: bool = False,
    segment_events: int | None = None, sync: bool = True,
    clock: Callable[[], int] | None = None,
) -> Store:
    """Open (creating if needed) the store at `path` (default $CTXDB_PATH or ./data).

    One writer per store: a second writer raises LockedError naming the holder's pid; any number
    of `readonly=True` opens may read alongside. `sync=False` skips fsync (tests/benchmarks
    only: acknowledged events may be lost on power failure)."""
    p = Path(path if path is not None else default_path())
    if segment_events is None:
        segment_events = int(os.environ.get("CTXDB_SEGMENT_EVENTS") or DEFAULT_SEGMENT_EVENTS)
    log = DiskLog(p, readonly=readonly, segment_events=segment_events, clock=clock, sync=sync)
    return Store(log, p)


def open_memory(clock: Callable[[], int] | None = None) -> Store:
    """A store with nothing on disk (tests, notebooks)."""
    from .log import MemoryLog

    return Store(MemoryLog(clock))
