"""The residue scanner behind `ctxdb verify-purge SUBJECT`: does any trace of a subject remain?

`scan_store(root, markers)` opens every file under a store directory (LOCK, temp files, the WAL,
segments, items.duckdb and its WAL, snapshots, vectors, anything else found there) and reports each
place where one of the markers (the subject identifier, e.g. `user:42`, plus any texts known to
have belonged to it) can still be read. Two layers, so that neither encoding nor compression can
hide a marker:

1. raw: every file's bytes as stored, searched for each marker's UTF-8 form and its forms inside
   JSON text (`\\u`-escaped non-ASCII, escaped quotes, backslashes and slashes);
2. decoded, by format (from the file name, else from its magic bytes):
   - wal-frame  `log/wal-*.log`: every frame header is parsed (wal.py), zstd payloads decompressed
                (RAW ones read as they are), including damaged frames and frames after a torn tail;
                each Arrow batch's string columns are searched (a payload that decompresses but is
                not a readable batch is searched as bytes);
   - parquet    every row group decoded (all columns), plus column statistics and key-value metadata;
   - duckdb     a copy (with its `.wal`) opened read-only in a temporary folder, so a live writer's
                lock is never touched; every VARCHAR, VARCHAR[], JSON, BLOB and nested column of every
                table searched in SQL, plus the catalog's SQL text;
   - arrow      Arrow IPC, file or stream format (the vectors chunks);
   - json       parsed (NDJSON too); every key and string value searched after decoding;
   - zstd, gzip decompressed (streaming) and searched as bytes;
   - npy        text arrays (dtype U) searched in their UTF-32 form; other npy and faiss: raw only.

A file that does not decode in its format is listed in `skipped` with the reason (it was still
searched raw); the scan never stops at a damaged file. Each (file, format, marker) is listed at most
`cap` times; further hits are counted in `omitted`, so a file with residue is never missed.

Limits (reported in `warnings`, not as residue): DuckDB compresses strings (FSST, dictionaries), so
rows it keeps after a DELETE/UPDATE and blocks it has freed can still hold text that neither SQL nor a
byte search can see. The scanner counts such rows and free blocks per DuckDB file; a purge must
rewrite the file (DESIGN.md, Erasure) and then both counts are zero. Matching is plain substring
matching: `user:42` also matches inside `user:420`.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from .wal import HEADER, HEADER_SIZE, MAGIC, MAX_FRAME, RAW

CAP = 5                      # locations listed per (file, format, marker)
RAW_COUNT_LIMIT = 100_000    # raw hits counted per (file, marker) before counting stops
RESCANS = 3                  # passes over files a live writer created during the scan
STREAM_CHUNK = 8 << 20       # decompression chunk for .zst / .gz files

_PARQUET_MAGIC = b"PAR1"
_ARROW_MAGIC = b"ARROW1"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
_DUCKDB_MAGIC = b"DUCK"      # at offset 8 of a DuckDB database file
_SKIP_DUCK_TYPES = {
    "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DATE", "TIME", "TIME WITH TIME ZONE",
    "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS",
    "INTERVAL", "UUID", "BIT", "VARINT", "BIGNUM", "NULL",
}


class Residue(msgspec.Struct, frozen=True):
    """One place where a marker can still be read."""

    file: str      # path relative to the store root (POSIX separators)
    format: str    # the layer that saw it: "raw", "wal-frame", "parquet", "duckdb", "arrow", "json", ...
    where: str     # e.g. "offset 1234", "frame at offset 812 seq 40..52 row 3 (seq 43) column data"
    marker: str    # the marker, as given (not the escaped form that matched)


@dataclass
class ScanReport:
    files: int = 0
    bytes: int = 0
    residues: list[Residue] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)     # "file (format): why it could not be decoded"
    warnings: list[str] = field(default_factory=list)    # what the scan cannot see (see module doc)
    omitted: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (file, format, marker) -> hits not listed
    markers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.residues

    @property
    def residue_files(self) -> list[str]:
        return sorted({r.file for r in self.residues})


# ---- markers and their encoded forms ---------------------------------------------------------
@dataclass(frozen=True)
class _Pattern:
    marker: str
    text: str       # the form searched for
    data: bytes     # its UTF-8 bytes
    note: str       # "" for the marker itself, else how it is encoded


def _forms(marker: str) -> list[tuple[str, str]]:
    """The marker and the ways JSON writers spell it inside a string literal."""
    out = [(marker, "")]
    ascii_lower = json.dumps(marker, ensure_ascii=True)[1:-1]
    out.append((ascii_lower, "JSON-escaped"))
    out.append((re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), ascii_lower), "JSON-escaped"))
    out.append((json.dumps(marker, ensure_ascii=False)[1:-1], "JSON-escaped"))
    if "/" in marker:
        out += [(t.replace("/", "\\/"), "JSON-escaped") for t, _ in list(out)]
    seen: set[str] = set()
    uniq = []
    for t, note in out:
        if t not in seen:
            seen.add(t)
            uniq.append((t, note))
    return uniq


def _patterns(markers: Iterable[str]) -> list[_Pattern]:
    pats = []
    for m in markers:
        for text, note in _forms(m):
            pats.append(_Pattern(m, text, text.encode("utf-8"), note))
    return pats


def _with_note(where: str, p: _Pattern) -> str:
    return f"{where} ({p.note})" if p.note else where


# ---- the collector ---------------------------------------------------------------------------
class _Scan:
    """What one file's scan found (one per file, so files can be scanned in parallel)."""

    def __init__(self, markers: list[str], patterns: list[_Pattern], cap: int) -> None:
        self.markers = markers
        self.patterns = patterns
        self.cap = cap
        self.report = ScanReport()
        self._listed: dict[tuple[str, str, str], int] = {}

    def hit(self, file: str, fmt: str, where: str, marker: str) -> bool:
        """Record one location; False once the cap for (file, format, marker) is reached."""
        k = (file, fmt, marker)
        n = self._listed.get(k, 0)
        if n >= self.cap:
            self.report.omitted[k] = self.report.omitted.get(k, 0) + 1
            return False
        self._listed[k] = n + 1
        self.report.residues.append(Residue(file, fmt, where, marker))
        return True

    def more(self, file: str, fmt: str, marker: str, n: int) -> None:
        if n > 0:
            k = (file, fmt, marker)
            self.report.omitted[k] = self.report.omitted.get(k, 0) + n

    def skip(self, file: str, fmt: str, why: str) -> None:
        why = " ".join(str(why).split())
        if len(why) > 300:
            why = why[:297] + "..."
        self.report.skipped.append(f"{file} ({fmt}): {why}")

    # -- searching a bytes-like buffer --------------------------------------------------------
    def search_bytes(self, buf, file: str, fmt: str, where: Callable[[int], str], base: int = 0,
                     patterns: list[_Pattern] | None = None) -> None:
        """Every pattern in `buf` (bytes in memory); `where(offset)` names a location."""
        for p in patterns or self.patterns:
            i = buf.find(p.data)
            found = 0
            while i >= 0:
                found += 1
                listed = self.hit(file, fmt, _with_note(where(base + i), p), p.marker)
                if not listed and found >= RAW_COUNT_LIMIT:
                    break
                i = buf.find(p.data, i + 1)

    def search_stream(self, read: Callable[[int], bytes], file: str, fmt: str, where: Callable[[int], str],
                      patterns: list[_Pattern] | None = None) -> None:
        """Every pattern in a stream of bytes read in chunks (`read(n)`, b"" at the end); matches that
        straddle two chunks are found too. Memory stays bounded whatever the file's size, and a file
        that shrinks while it is read is not a crash (as a memory map of it would be)."""
        pats = patterns or self.patterns
        keep = max(len(p.data) for p in pats) - 1
        found = dict.fromkeys(range(len(pats)), 0)
        tail = b""
        base = 0           # stream offset of tail[0]
        while True:
            chunk = read(STREAM_CHUNK)
            if not chunk:
                break
            window = tail + chunk
            for k, p in enumerate(pats):
                i = window.find(p.data)
                while i >= 0 and found[k] < RAW_COUNT_LIMIT:
                    if i + len(p.data) > len(tail):    # not already seen in the previous window
                        found[k] += 1
                        self.hit(file, fmt, _with_note(where(base + i), p), p.marker)
                    i = window.find(p.data, i + 1)
            cut = max(len(window) - keep, 0)
            tail, base = window[cut:], base + cut

    # -- searching Arrow data -----------------------------------------------------------------
    def search_arrow(self, data: pa.Table | pa.RecordBatch, file: str, fmt: str,
                     where: Callable[[str, int], str], *, row_base: int = 0) -> None:
        """Every string-like value (nested ones too) of a table or batch; `where(column, row)`."""
        for name, col in zip(data.schema.names, data.columns):
            chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
            off = row_base
            for ch in chunks:
                for path, leaf, to_rows in _leaves(ch, name):
                    self._search_leaf(leaf, file, fmt, path, off, to_rows, where)
                off += len(ch)

    def _search_leaf(self, arr: pa.Array, file: str, fmt: str, path: str, row_base: int,
                     to_rows: Callable[[np.ndarray], np.ndarray], where) -> None:
        if len(arr) == 0:
            return
        bufs = arr.buffers()
        if len(bufs) < 3 or bufs[2] is None or bufs[1] is None:
            return
        odt = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
        offsets = np.frombuffer(bufs[1], dtype=odt)[arr.offset: arr.offset + len(arr) + 1]
        lo, hi = int(offsets[0]), int(offsets[-1])
        if hi <= lo:
            return
        blob = memoryview(bufs[2])[lo:hi].tobytes()
        rel = offsets - lo
        for marker in self.markers:
            pats = [p for p in self.patterns if p.marker == marker]
            rows: dict[int, _Pattern] = {}
            exhausted = True
            for p in pats:
                i = blob.find(p.data)
                while i >= 0:
                    r = int(np.searchsorted(rel, i, side="right")) - 1
                    if i + len(p.data) <= rel[r + 1]:      # inside one value, not across two
                        rows.setdefault(r, p)
                        if len(rows) > self.cap:
                            exhausted = False
                            break
                        i = blob.find(p.data, int(rel[r + 1]))   # next value
                    else:
                        i = blob.find(p.data, i + 1)
                if not exhausted:
                    break
            if not rows:
                continue
            total = len(rows)
            if not exhausted:   # many: count the matching values exactly
                mask = None
                for p in pats:
                    m = pc.match_substring(arr, p.text)
                    mask = m if mask is None else pc.or_(mask, m)
                total = int(pc.sum(pc.fill_null(mask, False)).as_py() or 0)
            listed = sorted(rows)[: self.cap]
            tops = to_rows(np.asarray(listed, dtype=np.int64))
            for r, top in zip(listed, tops):
                self.hit(file, fmt, _with_note(where(path, row_base + int(top)), rows[r]), marker)
            self.more(file, fmt, marker, total - len(listed))

    def search_text(self, s: str, file: str, fmt: str, where: str) -> None:
        """A decoded string (JSON value, metadata, SQL text): the marker itself is enough."""
        for m in self.markers:
            if m in s:
                self.hit(file, fmt, where, m)


def _leaves(arr: pa.Array, path: str) -> Iterator[tuple[str, pa.Array, Callable[[np.ndarray], np.ndarray]]]:
    """(column path, string/binary array, map from its indices to `arr`'s rows) of every
    string-like value inside `arr`."""
    yield from _walk(arr, path, lambda ix: ix)


def _walk(arr: pa.Array, path: str, to_rows) -> Iterator[tuple[str, pa.Array, Callable]]:
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        yield path, arr, to_rows
    elif pa.types.is_string_view(t) if hasattr(pa.types, "is_string_view") else False:
        yield path, arr.cast(pa.large_string()), to_rows
    elif pa.types.is_binary_view(t) if hasattr(pa.types, "is_binary_view") else False:
        yield path, arr.cast(pa.large_binary()), to_rows
    elif pa.types.is_fixed_size_binary(t):
        yield path, arr.cast(pa.binary()), to_rows
    elif pa.types.is_dictionary(t):
        if _may_hold_text(t.value_type):
            yield from _walk(arr.dictionary_decode(), path, to_rows)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or (
            hasattr(pa.types, "is_list_view") and (pa.types.is_list_view(t) or pa.types.is_large_list_view(t))):
        if not _may_hold_text(t.value_type):
            return
        if hasattr(pa.types, "is_list_view") and (pa.types.is_list_view(t) or pa.types.is_large_list_view(t)):
            arr = arr.cast(pa.large_list(t.value_type))
        flat = arr.flatten()

        def list_rows(ix: np.ndarray, arr=arr, to_rows=to_rows) -> np.ndarray:
            parents = pc.list_parent_indices(arr).to_numpy()
            return to_rows(parents[ix])

        yield from _walk(flat, f"{path}[]", list_rows)
    elif pa.types.is_map(t):
        for part, sub in (("key", arr.keys), ("value", arr.items)):
            def map_rows(ix: np.ndarray, arr=arr, to_rows=to_rows) -> np.ndarray:
                offs = arr.offsets.to_numpy()
                rel = offs - offs[0]
                return to_rows(np.searchsorted(rel, ix, side="right") - 1)

            yield from _walk(sub, f"{path}{{{part}}}", map_rows)
    elif pa.types.is_struct(t):
        for i, child in enumerate(arr.flatten()):    # children with the struct's slice and nulls
            yield from _walk(child, f"{path}.{t.field(i).name}", to_rows)
    elif pa.types.is_union(t):
        for i in range(t.num_fields):   # rows are approximate for dense unions
            yield from _walk(arr.field(i), f"{path}<{t.field(i).name}>", to_rows)


def _may_hold_text(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t) \
            or pa.types.is_fixed_size_binary(t) or pa.types.is_dictionary(t) or pa.types.is_union(t):
        return True
    if hasattr(pa.types, "is_string_view") and (pa.types.is_string_view(t) or pa.types.is_binary_view(t)):
        return True
    if pa.types.is_struct(t):
        return any(_may_hold_text(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _may_hold_text(t.key_type) or _may_hold_text(t.item_type)
    if hasattr(t, "value_type"):
        return _may_hold_text(t.value_type)
    return False


# ---- formats -----------------------------------------------------------------------------------
def _format_of(name: str, head: bytes) -> str | None:
    """The decoder for a file, from its name (a trailing .tmp ignored), else its magic bytes."""
    n = name.lower()
    while n.endswith((".tmp", ".partial", ".bak", ".old")):
        n = n.rsplit(".", 1)[0]
    if re.fullmatch(r"wal-.*\.log", n) or head.startswith(MAGIC):
        return "wal-frame"
    if n.endswith(".parquet") or head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if n.endswith(".duckdb") or head[8:12] == _DUCKDB_MAGIC:
        return "duckdb"
    if n.endswith((".arrow", ".arrows", ".feather", ".ipc")) or head.startswith(_ARROW_MAGIC):
        return "arrow"
    if n.endswith((".json", ".ndjson", ".jsonl")):
        return "json"
    if n.endswith((".zst", ".zstd")) or head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if n.endswith(".gz") or head.startswith(_GZIP_MAGIC):
        return "gzip"
    if n.endswith(".npy") or head.startswith(b"\x93NUMPY"):
        return "npy"
    return None


def _scan_wal(s: _Scan, rel: str, buf) -> None:
    """Every frame of a WAL file that can be found and decoded, damaged or not."""
    size = len(buf)
    pos = 0
    problems: list[str] = []
    dctx = zstandard.ZstdDecompressor()
    if size and buf[:4] != MAGIC:
        problems.append("no frame at offset 0")
    while pos < size:
        if buf[pos:pos + 4] != MAGIC:
            nxt = buf.find(MAGIC, pos + 1)
            if nxt < 0:
                break
            pos = nxt
            continue
        if pos + HEADER_SIZE > size:
            problems.append(f"incomplete frame header at offset {pos}")
            break
        _, flags, length, raw_len, first, count, _rec, _jb, crc = HEADER.unpack(buf[pos:pos + HEADER_SIZE])
        end = pos + HEADER_SIZE + length
        truncated = length > MAX_FRAME or end > size
        payload = buf[pos + HEADER_SIZE: min(end, size)]
        intact = not truncated and zlib.crc32(payload, zlib.crc32(buf[pos:pos + 40])) == crc
        label = f"frame at offset {pos} seq {first}..{first + count - 1}" if count else f"frame at offset {pos}"
        if not intact:
            problems.append(f"{label}: {'truncated (torn tail)' if truncated else 'checksum mismatch'}")
        if payload:
            _decode_frame(s, rel, payload, flags, raw_len, first, label, dctx, problems)
        pos = end if intact else pos + 1
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        s.skip(rel, "wal-frame", "; ".join(problems[:3]) + more)


def _decode_frame(s: _Scan, rel: str, payload: bytes, flags: int, raw_len: int, first: int, label: str,
                  dctx: zstandard.ZstdDecompressor, problems: list[str]) -> None:
    if flags & RAW:
        stream = payload
    else:
        try:
            stream = dctx.decompress(payload, max_output_size=min(max(raw_len, 1), MAX_FRAME))
        except zstandard.ZstdError:
            try:   # a torn or damaged payload: keep whatever decompresses
                stream = dctx.decompressobj().decompress(payload)
            except zstandard.ZstdError as exc:
                problems.append(f"{label}: payload does not decompress ({exc})")
                return
            problems.append(f"{label}: payload decompressed partially ({len(stream)} bytes)")
    batches = []
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(stream))
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
    except (pa.ArrowException, OSError, ValueError) as exc:
        problems.append(f"{label}: not a readable Arrow batch ({exc})")
        batches = []
    if batches:
        row = 0
        for b in batches:
            s.search_arrow(b, rel, "wal-frame",
                           lambda col, r: f"{label} row {r} (seq {first + r}) column {col}", row_base=row)
            row += b.num_rows
    else:
        s.search_bytes(stream, rel, "wal-frame", lambda off: f"{label} decompressed byte {off}")


def _scan_parquet(s: _Scan, rel: str, path: Path) -> None:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))      # read, not memory-mapped: a file changed under a map is a SIGBUS
    md = pf.metadata
    # the rows first (the most telling locations fill the listed ones), then what the footer repeats
    row = 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        try:
            tbl = pf.read_row_group(g, use_threads=True)
        except (pa.ArrowException, OSError, ValueError) as exc:
            s.skip(rel, "parquet", f"row group {g} (rows {row}..{row + n - 1}) does not decode: {exc}")
        else:
            s.search_arrow(tbl, rel, "parquet", lambda col, r, g=g: f"row group {g} column {col} row {r}", row_base=row)
        row += n
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            st = col.statistics
            if st is None or not st.has_min_max or col.physical_type not in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"):
                continue
            for label, v in (("min", st.min), ("max", st.max)):
                text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                s.search_text(text, rel, "parquet", f"row group {g} column {col.path_in_schema} statistics {label}")
    for k, v in (md.metadata or {}).items():
        for part, label in ((k, "key"), (v, "value")):
            text = part.decode("utf-8", "replace") if isinstance(part, bytes) else str(part)
            s.search_text(text, rel, "parquet", f"key-value metadata {k.decode('utf-8', 'replace')!r} {label}")
        if k == b"ARROW:schema":
            try:
                decoded = base64.b64decode(v)
                s.search_bytes(decoded, rel, "parquet", lambda off: f"key-value metadata ARROW:schema byte {off}")
            except (ValueError, TypeError):
                pass


def _scan_arrow(s: _Scan, rel: str, path: Path) -> None:
    from pyarrow import ipc

    errors = []
    for kind in ("file", "stream"):
        try:
            src = pa.OSFile(str(path))
            if kind == "file":
                reader = ipc.open_file(src)
                schema = reader.schema
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                reader = ipc.open_stream(src)
                schema = reader.schema
                batches = iter(reader)
            row = 0
            for b in batches:
                s.search_arrow(b, rel, "arrow", lambda col, r: f"column {col} row {r}", row_base=row)
                row += b.num_rows
            for k, v in (schema.metadata or {}).items():
                s.search_text(k.decode("utf-8", "replace") + "\n" + v.decode("utf-8", "replace"), rel, "arrow",
                              f"schema metadata {k.decode('utf-8', 'replace')!r}")
            return
        except (pa.ArrowException, OSError, ValueError) as exc:
            errors.append(f"as an IPC {kind}: {exc}")
    s.skip(rel, "arrow", "; ".join(errors))


def _json_strings(doc) -> Iterator[tuple[str, str]]:
    """(JSON path, string) of every key and string value."""
    stack = [("$", doc)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            yield path, v
        elif isinstance(v, dict):
            for k, x in reversed(list(v.items())):
                p = f"{path}[{json.dumps(k, ensure_ascii=False)}]"
                yield f"{p} (key)", k
                stack.append((p, x))
        elif isinstance(v, list):
            for i in range(len(v) - 1, -1, -1):
                stack.append((f"{path}[{i}]", v[i]))


def _scan_json(s: _Scan, rel: str, buf) -> None:
    text = bytes(buf).decode("utf-8")
    try:
        docs = [("", json.loads(text))]
    except json.JSONDecodeError as exc:
        docs = []
        for i, line in enumerate(text.splitlines(), 1):  # NDJSON
            if line.strip():
                try:
                    docs.append((f"line {i} ", json.loads(line)))
                except json.JSONDecodeError:
                    raise exc from None
    for prefix, doc in docs:
        for path, v in _json_strings(doc):
            s.search_text(v, rel, "json", prefix + path)


def _scan_compressed(s: _Scan, rel: str, path: Path, fmt: str) -> None:
    with open(path, "rb") as f:
        if fmt == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
        else:
            reader = gzip.GzipFile(fileobj=f)
        done = [0]

        def read(n: int) -> bytes:
            b = reader.read(n)
            done[0] += len(b)
            return b

        try:
            s.search_stream(read, rel, fmt, lambda off: f"decompressed offset {off}")
        except (zstandard.ZstdError, OSError, EOFError, zlib.error) as exc:
            s.skip(rel, fmt, f"does not decompress past offset {done[0]}: {exc}")


def _scan_npy(s: _Scan, rel: str, f) -> None:
    """Text arrays (dtype U) hold UTF-32: search that form of each marker. The header is read
    without loading (or memory-mapping) the array."""
    f.seek(0)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        _shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        _shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.kind != "U":
        return   # numbers (or bytes, which the raw layer reads as they are)
    enc = "utf-32-be" if dtype.byteorder == ">" else "utf-32-le"
    item = dtype.itemsize
    pats = [_Pattern(p.marker, p.text, p.text.encode(enc), p.note) for p in s.patterns]
    s.search_stream(f.read, rel, "npy", lambda off: f"element {off // item}", patterns=pats)


def _scan_duckdb(s: _Scan, rel: str, path: Path, tmp_root: str | None) -> None:
    import duckdb

    with tempfile.TemporaryDirectory(prefix="ctxdb-verify-", dir=tmp_root) as d:
        copy = Path(d) / "db.duckdb"
        last: Exception | None = None
        con = None
        for _ in range(3):   # a live writer may checkpoint while we copy: copy again
            shutil.copyfile(path, copy)
            wal = path.with_name(path.name + ".wal")
            cwal = copy.with_name(copy.name + ".wal")
            cwal.unlink(missing_ok=True)
            if wal.exists():
                try:
                    shutil.copyfile(wal, cwal)
                except FileNotFoundError:
                    pass
            try:
                con = duckdb.connect(str(copy), read_only=True, config={"autoload_known_extensions": False})
                break
            except duckdb.Error as exc:
                last = exc
                time.sleep(0.05)
        if con is None:
            raise last  # type: ignore[misc]
        try:
            _search_duckdb(s, rel, con)
        finally:
            con.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duck_expr(col: str, dtype: str) -> tuple[str, bool] | None:
    """(SQL text expression of a column, compare with hex patterns), None when it cannot hold text."""
    base = re.sub(r"(\[\d*\])+$", "", dtype)
    if base in _SKIP_DUCK_TYPES or base.startswith("DECIMAL"):
        return None
    c = _ident(col)
    if dtype in ("VARCHAR", "JSON") or dtype.startswith("ENUM"):
        return (f"CAST({c} AS VARCHAR)" if dtype != "VARCHAR" else c), False
    if dtype == "VARCHAR[]":
        return f"array_to_string({c}, chr(10))", False
    if dtype == "BLOB":
        return f"hex({c})", True
    return f"CAST({c} AS VARCHAR)", False


def _search_duckdb(s: _Scan, rel: str, con) -> None:
    db = con.execute("SELECT current_database()").fetchone()[0]
    # the catalog's own text (table, view, index, macro definitions and comments)
    for what, q in (("table", "SELECT schema_name, table_name, sql, comment FROM duckdb_tables() WHERE database_name = ?"),
                    ("view", "SELECT schema_name, view_name, sql, comment FROM duckdb_views() WHERE database_name = ? AND NOT internal"),
                    ("index", "SELECT schema_name, index_name, sql, comment FROM duckdb_indexes() WHERE database_name = ?")):
        try:
            for schema, name, sql, comment in con.execute(q, [db]).fetchall():
                s.search_text(f"{name}\n{sql or ''}\n{comment or ''}", rel, "duckdb", f"catalog {what} {schema}.{name}")
        except Exception as exc:  # noqa: BLE001  (catalog functions vary between DuckDB versions)
            s.report.warnings.append(f"{rel}: the catalog's {what} definitions were not searched ({exc})")
    cols = con.execute(
        "SELECT c.schema_name, c.table_name, c.column_name, c.data_type FROM duckdb_columns() c "
        "JOIN duckdb_tables() t ON t.database_name = c.database_name AND t.schema_name = c.schema_name "
        "AND t.table_name = c.table_name WHERE c.database_name = ? ORDER BY c.schema_name, c.table_name, c.column_index",
        [db]).fetchall()
    tables: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, col, dtype in cols:
        tables.setdefault((schema, table), []).append((col, dtype))
    for (schema, table), columns in tables.items():
        qt = f"{_ident(schema)}.{_ident(table)}"
        tname = table if schema == "main" else f"{schema}.{table}"
        checks = []     # (column, marker, SQL condition, params)
        for col, dtype in columns:
            ex = _duck_expr(col, dtype)
            if ex is None:
                continue
            expr, hexed = ex
            for m in s.markers:
                texts = [p.data.hex().upper() if hexed else p.text for p in s.patterns if p.marker == m]
                cond = " OR ".join(f"contains({expr}, ?)" for _ in texts)
                checks.append((col, m, f"({cond})", texts))
        if checks:
            # one pass over the table counts the matching rows of every (column, marker) ...
            sel = ", ".join(f"count(*) FILTER (WHERE {c})" for _, _, c, _ in checks)
            params = [x for _, _, _, ps in checks for x in ps]
            try:
                res = con.execute(f"SELECT {sel} FROM {qt}", params).fetchone()
            except Exception as exc:  # noqa: BLE001
                s.skip(rel, "duckdb", f"table {tname}: {exc}")
                continue
            for i, (col, m, cond, ps) in enumerate(checks):
                n = res[i]
                if not n:
                    continue
                # ... and only where there are some, a second one finds the first rows
                rowids = [r for (r,) in con.execute(
                    f"SELECT rowid FROM {qt} WHERE {cond} ORDER BY rowid LIMIT {s.cap}", ps).fetchall()]
                for r in rowids:
                    s.hit(rel, "duckdb", f"table {tname} column {col} rowid {r}", m)
                s.more(rel, "duckdb", m, n - len(rowids))
        _duck_hidden_rows(s, rel, con, qt, tname)
    try:
        row = con.execute("SELECT free_blocks FROM pragma_database_size() WHERE database_name = ?", [db]).fetchone()
        if row and row[0]:
            s.report.warnings.append(
                f"{rel}: {row[0]} free block(s) may still hold old, compressed data the scan cannot read "
                "(a purge must rewrite the file)")
    except Exception as exc:  # noqa: BLE001
        s.report.warnings.append(f"{rel}: free blocks not counted ({exc})")


def _duck_hidden_rows(s: _Scan, rel: str, con, qt: str, tname: str) -> None:
    """Rows the file still stores but SQL no longer shows (deleted or superseded by an update)."""
    try:
        stored = con.execute(
            "SELECT coalesce(sum(n), 0) FROM (SELECT row_group_id, max(start + count) AS n FROM pragma_storage_info(?) "
            "WHERE column_id = 0 AND segment_type != 'VALIDITY' GROUP BY row_group_id)", [qt]).fetchone()[0]
        visible = con.execute(f"SELECT count(*) FROM {qt}").fetchone()[0]
    except Exception:  # noqa: BLE001
        return
    if stored > visible:
        s.report.warnings.append(
            f"{rel}: table {tname} keeps {stored - visible} deleted row(s) in the file (compressed: their "
            "text cannot be searched; a purge must rewrite the file)")


# ---- the walk --------------------------------------------------------------------------------
def _files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for n in sorted(filenames):
            out.append(Path(dirpath) / n)
    return out


def _scan_file(s: _Scan, path: Path, rel: str, tmp_root: str | None) -> None:
    try:
        with open(path, "rb") as f:
            _scan_open_file(s, f, path, rel, tmp_root)
    except FileNotFoundError:
        s.skip(rel, "raw", "vanished during the scan")
    except OSError as exc:
        s.skip(rel, "raw", f"cannot be read: {exc}")


def _scan_open_file(s: _Scan, f, path: Path, rel: str, tmp_root: str | None) -> None:
    size = os.fstat(f.fileno()).st_size
    s.report.files += 1
    s.report.bytes += size
    head = f.read(16)
    f.seek(0)
    s.search_stream(f.read, rel, "raw", lambda off: f"offset {off}")
    fmt = _format_of(path.name, head)
    if fmt is None or size == 0:
        return
    try:
        if fmt == "wal-frame":
            f.seek(0)
            _scan_wal(s, rel, f.read())
        elif fmt == "parquet":
            _scan_parquet(s, rel, path)
        elif fmt == "duckdb":
            _scan_duckdb(s, rel, path, tmp_root)
        elif fmt == "arrow":
            _scan_arrow(s, rel, path)
        elif fmt == "json":
            f.seek(0)
            _scan_json(s, rel, f.read())
        elif fmt in ("zstd", "gzip"):
            _scan_compressed(s, rel, path, fmt)
        elif fmt == "npy":
            _scan_npy(s, rel, f)
    except FileNotFoundError:
        s.skip(rel, fmt, "vanished during the scan")
    except Exception as exc:  # noqa: BLE001  (a damaged file must never stop the scan)
        s.skip(rel, fmt, f"{type(exc).__name__}: {exc}")


def scan_store(root: Path | str, markers: list[str], *, progress: Callable[[int, int, str], None] | None = None,
               cap: int = CAP, tmp_dir: str | None = None, threads: int | None = None) -> ScanReport:
    """Search every file under `root` for every marker, raw and decoded by format.

    `progress(done, total, file)` is called (in the calling thread) as each file is finished.
    `cap`: locations listed per (file, format, marker); further ones are counted in `omitted`.
    `tmp_dir`: where DuckDB files are copied to be opened (default: the system's temporary folder;
    each copy is deleted as soon as it has been searched). `threads`: files scanned at once
    (default: the number of cores, at most 4). The report lists files in path order.

    A store may be scanned while its writer runs: files created during the scan are scanned
    afterwards (up to RESCANS more passes) and files that vanish are listed in `skipped`. For proof
    after a purge, scan a store no writer is changing."""
    root = Path(root)
    markers = list(dict.fromkeys(markers))
    if not markers or any(not isinstance(m, str) or m == "" for m in markers):
        raise ValueError("markers must be non-empty strings")
    if not root.is_dir():
        raise FileNotFoundError(f"no store directory at {root}")
    t0 = time.perf_counter()
    patterns = _patterns(markers)
    files = _files(root)

    def one(path: Path) -> ScanReport:
        s = _Scan(markers, patterns, cap)
        rel = path.relative_to(root).as_posix()
        try:
            if path.is_symlink():
                s.skip(rel, "raw", f"symbolic link to {os.readlink(path)} (not followed)")
            else:
                _scan_file(s, path, rel, tmp_dir)
        except Exception as exc:  # noqa: BLE001  (never stop the scan)
            s.skip(rel, "raw", f"{type(exc).__name__}: {exc}")
        return s.report

    report = ScanReport(markers=markers)
    workers = max(1, threads if threads is not None else min(os.cpu_count() or 1, 4))
    parts: dict[Path, ScanReport] = {}
    with ThreadPoolExecutor(workers) as ex:
        batch, total = files, len(files)
        for rescan in range(RESCANS + 1):
            futs = {ex.submit(one, p): p for p in batch}
            for fut in as_completed(futs):
                parts[futs[fut]] = fut.result()
                if progress is not None:
                    progress(len(parts), total, futs[fut].relative_to(root).as_posix())
            if rescan == RESCANS:
                break
            # a live writer may have created files meanwhile (a segment sealed from a WAL file
            # that then vanished, a new snapshot): scan those too
            batch = [p for p in _files(root) if p not in parts]
            if not batch:
                break
            total += len(batch)
    files = sorted(parts)
    for p in files:
        r = parts[p]
        report.files += r.files
        report.bytes += r.bytes
        report.residues += r.residues
        report.skipped += r.skipped
        report.warnings += r.warnings
        report.omitted.update(r.omitted)
    report.seconds = time.perf_counter() - t0
    return report


def format_report(report: ScanReport) -> str:
    """Human text: one line per residue (`file  format  where  marker`), a line for hits beyond the
    cap, what could not be decoded or seen, and a summary line."""
    lines = []
    if report.residues:
        w_file = max(len(r.file) for r in report.residues)
        w_fmt = max(len(r.format) for r in report.residues)
        w_where = max(len(r.where) for r in report.residues)
        by_file: dict[str, list[Residue]] = {}
        for r in report.residues:
            by_file.setdefault(r.file, []).append(r)
        for file, rs in by_file.items():
            for r in rs:
                lines.append(f"{r.file:<{w_file}}  {r.format:<{w_fmt}}  {r.where:<{w_where}}  {r.marker}")
            for (f, fmt, marker), n in report.omitted.items():
                if f == file:
                    lines.append(f"{f:<{w_file}}  {fmt:<{w_fmt}}  {f'... and {n} more location(s)':<{w_where}}  {marker}")
    for sk in report.skipped:
        lines.append(f"not decoded: {sk}")
    for w in report.warnings:
        lines.append(f"warning: {w}")
    n_files = len({r.file for r in report.residues})
    lines.append(f"{len(report.residues)} residue(s) in {n_files} file(s); scanned {report.files} files, "
                 f"{report.bytes} bytes in {report.seconds:.2f} s")
    return "\n".join(lines)
