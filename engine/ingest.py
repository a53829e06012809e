"""Ingest: files and pipes -> validated batches -> the log.

A call ingests its whole input in one transaction (files) or one transaction per batch (streams
with `stream=True`, e.g. stdin): a bad record rolls back everything of its transaction, and the
error names the file, line, field and what was expected. With `skip_bad`, bad records are written
to the rejects file with their reason and the rest goes in.

Input may be gzip or zstd compressed (detected by magic bytes, not by name), NDJSON (one record a
line) or a JSON document (a CloudEvents batch array or a single pretty-printed object).
"""
from __future__ import annotations

import gzip
import io
import os
import queue
import stat
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import msgspec
import zstandard

from . import parallel
from .codec import _DEC, Batch, build_batch, fast_batch
from .errors import BadInput
from .events import Envelope
from .formats import ADAPTERS, FORMATS, detect
from .log import BaseLog, Transaction

CHUNK_BYTES = 4 << 20
BATCH_EVENTS = 16384
MAX_RECORD_BYTES = 16 << 20
IDLE_COMMIT_S = 1.0
Progress = Callable[[int, int], None]  # (bytes read, events appended so far)


@dataclass
class IngestReport:
    files: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    records: int = 0
    appended: int = 0
    duplicates: int = 0
    rejected: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    bytes_read: int = 0
    seconds: float = 0.0
    rejects_file: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["events_per_s"] = round(self.events_per_s, 1)
        return d

    def summary(self) -> str:
        rng = f"seqs {self.first_seq}..{self.last_seq}" if self.first_seq else "no new seqs"
        return (f"{self.appended} appended, {self.duplicates} duplicates, {self.rejected} rejected; "
                f"{rng}; {self.records} records in {self.seconds:.2f}s ({self.events_per_s:,.0f} events/s)")

    def _took(self, r) -> None:
        self.appended += r.appended
        self.duplicates += r.duplicates
        if r.first_seq is not None:
            self.first_seq = self.first_seq if self.first_seq is not None else r.first_seq
            self.last_seq = r.last_seq


class _Rejects:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self._f: IO[bytes] | None = None
        self.count = 0

    def write(self, name: str, line: int | None, reason: str, record: bytes) -> None:
        if self.path is None:
            return
        if self._f is None:
            self._f = open(self.path, "ab")
        self._f.write(msgspec.json.encode({"file": name, "line": line, "reason": reason,
                                           "record": record[:1 << 20].decode("utf-8", "replace")}) + b"\n")
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


# ---- reading -------------------------------------------------------------------------------
class _Counting(io.RawIOBase):
    """Counts compressed bytes read, for progress."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.n = f, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        # read1: return what a pipe has now instead of blocking until the buffer is full
        read1 = getattr(self.f, "read1", None)
        data = read1(len(b)) if read1 is not None else self.f.read(len(b))
        self.n += len(data)
        b[: len(data)] = data
        return len(data)


def open_input(src: str | os.PathLike | IO[bytes]) -> tuple[str, IO[bytes], _Counting]:
    """(display name, decompressed byte stream, byte counter) of a path, '-' or a binary file."""
    if isinstance(src, (str, os.PathLike)) and str(src) != "-":
        p = Path(src)
        if p.is_dir():
            raise BadInput("is a directory", file=str(p), expected="a file of events (NDJSON, JSON, .gz or .zst)")
        try:
            raw: IO[bytes] = open(p, "rb")
        except FileNotFoundError:
            raise BadInput("no such file", file=str(p), expected="an existing file of events") from None
        except PermissionError:
            raise BadInput("permission denied", file=str(p)) from None
        name = str(p)
    elif str(src) == "-":
        raw, name = sys.stdin.buffer, "<stdin>"
    else:
        raw, name = src, getattr(src, "name", "<stream>")  # type: ignore[assignment]
        if not isinstance(name, str):
            name = "<stream>"
    counter = _Counting(raw)
    buffered = io.BufferedReader(counter, buffer_size=1 << 16)
    head = buffered.peek(4)[:4]
    if head[:3] == BOM:  # a UTF-8 byte order mark is not part of the first record
        buffered.read(3)
        head = buffered.peek(4)[:4]
    kind = compression(head)
    if kind == "gzip":
        return name, gzip.GzipFile(fileobj=buffered), counter  # type: ignore[return-value]
    if kind == "zstd":
        return name, zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True), counter  # type: ignore[return-value]
    return name, buffered, counter


BOM = b"\xef\xbb\xbf"


def compression(head: bytes) -> str | None:
    """'gzip' or 'zstd' from a file's first bytes (names lie; magic numbers don't), else None."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


def iter_line_chunks(f: IO[bytes], name: str, max_record: int, on_too_long: Callable[[int, int], None]) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines) chunks; a line longer than max_record is reported via
    on_too_long(line, size) and skipped without being held in memory."""
    rest = b""
    lineno = 1
    skipping = False
    skip_size = 0
    while True:
        try:
            block = f.read(CHUNK_BYTES)
        except (OSError, EOFError, zstandard.ZstdError) as exc:
            raise BadInput(f"cannot decompress/read ({exc})", file=name, line=lineno,
                           expected="an uncorrupted file (NDJSON, optionally gzip or zstd)") from None
        if not block:
            break
        if skipping:
            nl = block.find(b"\n")
            if nl < 0:
                skip_size += len(block)
                continue
            on_too_long(lineno, skip_size + nl)
            block, skipping, lineno = block[nl + 1 :], False, lineno + 1
        data = rest + block if rest else block
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            if len(rest) > max_record:
                skipping, skip_size, rest = True, len(rest), b""
            continue
        lines = data[:cut].split(b"\n")
        rest = data[cut + 1 :]
        if max(map(len, lines)) > max_record:
            for i, line in enumerate(lines):
                if len(line) > max_record:
                    on_too_long(lineno + i, len(line))
                    lines[i] = b""  # skipped (with --skip-bad); keeps the line numbers
        yield lineno, lines
        lineno += len(lines)
    if skipping:
        on_too_long(lineno, skip_size)
    elif rest:
        if len(rest) > max_record:
            on_too_long(lineno, len(rest))
        else:
            yield lineno, [rest]


# ---- decoding ------------------------------------------------------------------------------
@dataclass
class _Decoded:
    envs: list[Envelope]
    lines: list[int] | None  # None on the fast path (all lines non-empty and valid)
    raw: list[bytes]
    first_line: int
    nbytes: int

    def line_of(self, row: int) -> int:
        return self.lines[row] if self.lines is not None else self.first_line + row


def decode_chunk(first: int, lines: list[bytes], adapter: Callable[[bytes], Envelope], name: str,
                 skip: Callable[[int, str, bytes], None] | None, nbytes: int | None = None) -> _Decoded:
    """`nbytes`: the bytes the lines came from, newlines included (computed when not given)."""
    if nbytes is None:
        nbytes = sum(map(len, lines)) + len(lines)
    if adapter is ADAPTERS["ndjson"] and all(lines):
        try:
            return _Decoded(list(map(_DEC.decode, lines)), None, lines, first, nbytes)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            pass  # extension attributes, or a bad line: per-line path below (with line numbers)
    envs, nums, raws = [], [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            envs.append(adapter(line))
        except BadInput as exc:
            if skip is None:
                raise exc.located(file=name, line=first + i) from None
            skip(first + i, exc.reason if not exc.field else str(exc), line)
            continue
        nums.append(first + i)
        raws.append(line)
    return _Decoded(envs, nums, raws, first, nbytes)


def lines_batch(first: int, lines: list[bytes], adapter: Callable[[bytes], Envelope], name: str,
                default_source: str, skip: Callable[[int, str, bytes], None] | None,
                nbytes: int | None = None) -> tuple[int, Batch | None]:
    """(records, batch or None if there are none) of a chunk of lines: codec.fast_batch for
    NDJSON in the usual form, else decode_chunk and to_batch (bad records, blank lines, other
    formats and attributes; errors and rejects are theirs)."""
    if nbytes is None:
        nbytes = sum(map(len, lines)) + len(lines)
    if adapter is ADAPTERS["ndjson"]:
        batch = fast_batch(lines, default_source, nbytes)
        if batch is not None:
            return len(batch), batch
    d = decode_chunk(first, lines, adapter, name, skip, nbytes)
    return len(d.envs), (to_batch(d, name, default_source, skip) if d.envs else None)


def to_batch(d: _Decoded, name: str, default_source: str,
             skip: Callable[[int, str, bytes], None] | None) -> Batch:
    try:
        return build_batch(d.envs, default_source=default_source, json_bytes=d.nbytes)
    except BadInput as exc:
        if skip is None:
            raise exc.located(file=name, line=d.line_of(exc.row or 0)) from None
    keep_envs, keep_lines = [], []
    for i, env in enumerate(d.envs):  # slow path: validate each row alone to find every bad one
        try:
            build_batch([env], default_source=default_source)
        except BadInput as exc:
            skip(d.line_of(i), str(exc), d.raw[i])
            continue
        keep_envs.append(env)
        keep_lines.append(d.line_of(i))
    return build_batch(keep_envs, default_source=default_source, lines=keep_lines, json_bytes=d.nbytes)


# ---- the ingest loop -----------------------------------------------------------------------
class Ingest:
    def __init__(self, log: BaseLog, *, format: str = "auto", skip_bad: bool = False,
                 rejects: str | None = None, progress: Progress | None = None,
                 default_source: str = "", batch_events: int = BATCH_EVENTS,
                 max_record_bytes: int = MAX_RECORD_BYTES, idle_commit: float = IDLE_COMMIT_S) -> None:
        if format not in FORMATS:
            raise BadInput(f"unknown format {format!r}", field="format", expected=" | ".join(FORMATS))
        if rejects and not skip_bad:
            skip_bad = True
        self.log, self.format, self.skip_bad = log, format, skip_bad
        self.rejects = _Rejects(rejects)
        self.progress, self.default_source = progress, default_source
        self.batch_events, self.max_record = batch_events, max_record_bytes
        self.idle_commit = idle_commit
        self.report = IngestReport(rejects_file=rejects)
        self._bytes_done = 0

    def _skipper(self, name: str):
        if not self.skip_bad:
            return None

        def skip(line: int, reason: str, record: bytes) -> None:
            self.report.rejected += 1
            self.rejects.write(name, line, reason, record)
        return skip

    def run(self, sources: list, *, stream: bool = False) -> IngestReport:
        t0 = time.perf_counter()
        try:
            if stream:
                for src in sources:
                    self._stream(src)
            else:
                with self.log.transaction() as txn:
                    with _Writer(txn) as writer:
                        for src in sources:
                            for batch, more in self._batches(src):
                                writer.put(batch, more)
                                self._tick()
                self.report._took(txn.result)
        finally:
            self.rejects.close()
            self.report.seconds = time.perf_counter() - t0
        return self.report

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress(self._bytes_done, self.report.appended)

    def _parallel_plan(self, src) -> list[tuple[int, int]] | None:
        """Byte ranges for the parallel path, or None where it could change the outcome."""
        if self.skip_bad or self.format not in ("auto", "ndjson") or not isinstance(src, (str, os.PathLike)):
            return None
        path = str(src)
        if path == "-" or not os.path.isfile(path):
            return None
        size = os.path.getsize(path)
        if size < int(os.environ.get("CTXDB_PARALLEL_MIN_BYTES") or parallel.MIN_BYTES):
            return None
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        if compression(head) or head[:3] == BOM:
            return None
        first = next((x for x in head.split(b"\n")[:-1] if x.strip()), b"")
        if not (first.lstrip().startswith(b"{") and detect(first) == "ndjson"):
            return None
        return parallel.plan(path, size, self.max_record)

    def _parallel_batches(self, path: str, spans: list[tuple[int, int]]) -> Iterator[tuple[Batch, int | None]]:
        self.report.files.append(path)
        self.report.formats[path] = "ndjson"
        size = os.path.getsize(path)
        base = self._bytes_done
        done = seen = 0
        for batch, _lines in parallel.batches(path, spans, self.default_source, self.max_record):
            if batch is not None:
                self.report.records += len(batch)
                seen += len(batch)
                done += batch.json_bytes
                self._bytes_done = base + min(done, size)
                yield batch, _expect_more(seen, done, size)
        self.report.bytes_read += size
        self._bytes_done = base + size

    def _batches(self, src) -> Iterator[tuple[Batch, int | None]]:
        """(batch, about how many more records this source holds after it, or None)."""
        spans = self._parallel_plan(src)
        if spans is not None:
            yield from self._parallel_batches(str(src), spans)
            return
        name, f, counter = open_input(src)
        self.report.files.append(name)
        skip = self._skipper(name)
        adapter = None
        base = self._bytes_done
        size = _file_size(src)
        seen = 0

        def too_long(line: int, size: int) -> None:
            err = BadInput(f"record is {size:,} bytes, over the {self.max_record:,}-byte limit",
                           file=name, line=line, expected=f"records under {self.max_record:,} bytes (max_record_bytes)")
            if skip is None:
                raise err
            self.report.rejected += 1
            self.rejects.write(name, line, str(err), b"")

        try:
            chunks = iter_line_chunks(f, name, self.max_record, too_long)
            for first, lines in self._documents(chunks, name):
                if adapter is None:
                    fmt = self.format
                    if fmt == "auto":
                        fmt = detect(next((x for x in lines if x.strip()), b"{}"))
                    self.report.formats[name] = fmt
                    adapter = ADAPTERS[fmt]
                seen += len(lines)
                after = _expect_more(seen, counter.n, size)  # records after this chunk, about
                for off in range(0, len(lines), self.batch_events):
                    part = lines[off : off + self.batch_events]
                    records, batch = lines_batch(first + off, part, adapter, name, self.default_source, skip)
                    self.report.records += records
                    self._bytes_done = base + counter.n
                    if batch is not None:
                        more = None if after is None else after + max(0, len(lines) - off - len(part))
                        yield batch, more
            if not self.report.formats.get(name):
                self.report.formats[name] = "empty"
            self.report.bytes_read += counter.n
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    def _stream(self, src) -> None:
        """One transaction per batch; a batch is committed when full or after idle_commit seconds."""
        name, f, counter = open_input(src)
        self.report.files.append(name)
        skip = self._skipper(name)
        fmt = self.format
        pump = _StdinPump(f)
        lines: list[bytes] = []
        first = lineno = 1
        adapter = ADAPTERS[fmt] if fmt != "auto" else None
        deadline = None
        done = False
        while not done:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = pump.q.get(timeout=timeout)
            except queue.Empty:
                item = ...
            if item is None:
                done = True
            elif item is not ...:
                if len(item) > self.max_record:
                    err = BadInput(f"record is {len(item):,} bytes, over the {self.max_record:,}-byte limit",
                                   file=name, line=lineno, expected="smaller records")
                    if skip is None:
                        raise err
                    skip(lineno, str(err), b"")
                    lineno += 1
                    continue
                if not lines:
                    first = lineno
                    deadline = time.monotonic() + self.idle_commit
                lines.append(item.rstrip(b"\r\n"))
                lineno += 1
                if len(lines) < self.batch_events:
                    continue
            if lines:
                if adapter is None:
                    fmt = detect(next((x for x in lines if x.strip()), b"{}"))
                    self.report.formats[name] = fmt
                    adapter = ADAPTERS[fmt]
                records, batch = lines_batch(first, lines, adapter, name, self.default_source, skip)
                self.report.records += records
                if batch is not None:
                    with self.log.transaction() as txn:
                        txn.add(batch)
                    self.report._took(txn.result)
                self._bytes_done = counter.n
                self._tick()
                lines, deadline = [], None

    def _documents(self, chunks: Iterator[tuple[int, list[bytes]]], name: str) -> Iterator[tuple[int, list[bytes]]]:
        """NDJSON chunks pass through; a file that is one JSON document (an array, or an object
        spread over lines) is turned into one record per element."""
        first_chunk = next(chunks, None)
        if first_chunk is None:
            return
        lineno, lines = first_chunk
        head = next((x.lstrip() for x in lines if x.strip()), b"")
        if head.startswith(b"[") or (head.startswith(b"{") and not _complete(head)):
            doc = b"\n".join(lines) + b"\n" + b"\n".join(b"\n".join(ls) for _, ls in chunks)
            yield from _split_document(doc, name)
            return
        yield first_chunk
        yield from chunks


def _complete(line: bytes) -> bool:
    try:
        msgspec.json.decode(line)
        return True
    except msgspec.DecodeError:
        return False


def _split_document(doc: bytes, name: str) -> Iterator[tuple[int, list[bytes]]]:
    try:
        kind = list[msgspec.Raw] if doc.lstrip().startswith(b"[") else msgspec.Raw
        parsed = msgspec.json.decode(doc, type=kind)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"not valid JSON ({exc})", file=name, expected="NDJSON, a JSON array of events, or one JSON event") from None
    if isinstance(parsed, list):
        # Elements are numbered as lines 1..n so errors say "record N" of the array.
        yield 1, [bytes(r) for r in parsed]
    else:
        yield 1, [bytes(parsed)]


def _file_size(src) -> int | None:
    """The size of a regular file given by path (None for pipes, stdin and streams)."""
    if isinstance(src, (str, os.PathLike)) and str(src) != "-":
        try:
            st = os.stat(src)
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None
    return None


def _expect_more(records: int, done: int, size: int | None) -> int | None:
    """About how many records follow, from the records in the `done` bytes read of `size`."""
    if not size or not done or not records:
        return None
    return max(0, round(records * (size - done) / done))


class _Writer:
    """Adds batches to a transaction on a second thread, so compression, checksums and writes
    (which release the GIL) overlap with decoding the next batch. Errors surface in put()/exit."""

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self.txn.add(item[0], expect_more=item[1])
                except BaseException as exc:  # re-raised on the caller's thread
                    self.error = exc

    def put(self, batch: Batch, expect_more: int | None = None) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((batch, expect_more))

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.q.put(None)
        self.t.join()
        if exc_type is None and self.error is not None:
            raise self.error


class _StdinPump:
    """Reads lines on a thread so the ingest loop can commit on an idle timeout."""

    def __init__(self, f: IO[bytes]) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=BATCH_EVENTS * 4)
        t = threading.Thread(target=self._run, args=(f,), daemon=True)
        t.start()

    def _run(self, f: IO[bytes]) -> None:
        try:
            for line in f:
                self.q.put(line)
        finally:
            self.q.put(None)
