"""Sealed segments: immutable zstd Parquet files of the log, plus the manifest that vouches for them.

`log/seg-<first>-<last>.parquet` holds the events with seqs first..last (zero-padded, so file
order is seq order). Any Parquet reader can query them, e.g. in DuckDB:

    SELECT type, count(*) FROM 'data/log/seg-*.parquet' GROUP BY type;

`log/manifest.json` lists every sealed segment with its size and a CRC-32 per 1 MiB block. A
segment is verified against it whenever it is read, so a flipped byte is reported with the file and
the block's offset instead of being decoded into wrong events; a missing or truncated segment is a
hard error at open. `log/keys-<first>-<last>.npy` is the segment's slice of the idempotency index
(derived data: rebuilt from the segment if missing or damaged).
"""
from __future__ import annotations

import json
import mmap
import os
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .codec import BATCH_SCHEMA
from .errors import CorruptionError
from .keyindex import fingerprints
from .wal import fsync_dir

SEGMENT_SCHEMA = pa.schema(
    [("seq", pa.int64()), ("recorded_at", pa.timestamp("us", tz="UTC")), *BATCH_SCHEMA]
)
BLOCK = 1 << 20
ROW_GROUP = 65536
MANIFEST = "manifest.json"
COMPRESSION_LEVEL = 1  # zstd; level 3 is ~4 % smaller and ~30 % slower to write
DICTIONARY_COLUMNS = ["source", "type", "subject"]
# min/max statistics where a reader can prune with them; those of id, time (see time_ts) and the
# JSON text columns cost a third of the encoding time and never prune anything
STATISTICS_COLUMNS = ["seq", "recorded_at", "time_ts", "source", "type", "subject"]
# seq counts up by one: delta-encoded it is ~2 % of the file smaller and faster to write than
# plain + zstd (readers: any Parquet 2 reader, DuckDB included)
COLUMN_ENCODING = {"seq": "DELTA_BINARY_PACKED"}
FORMAT = 1


def seg_name(first: int, last: int, gen: int = 0) -> str:
    """`gen` > 0: the segment as rewritten by a purge (a new name, so the old file stays intact
    until the manifest naming the new one is durable)."""
    return f"seg-{first:020d}-{last:020d}" + (f"-p{gen}" if gen else "") + ".parquet"


def keys_name(first: int, last: int, gen: int = 0) -> str:
    return f"keys-{first:020d}-{last:020d}" + (f"-p{gen}" if gen else "") + ".npy"


@dataclass
class SegmentInfo:
    file: str
    first_seq: int
    last_seq: int
    rows: int
    bytes: int
    crc32: list[int]
    recorded_at_min: int
    recorded_at_max: int
    json_bytes: int
    keys_file: str
    keys_crc32: int
    time_min: int | None = None
    time_max: int | None = None


@dataclass
class Manifest:
    segments: list[SegmentInfo] = field(default_factory=list)
    format: int = FORMAT

    @property
    def last_seq(self) -> int:
        return self.segments[-1].last_seq if self.segments else 0

    @classmethod
    def load(cls, logdir: Path) -> "Manifest":
        path = logdir / MANIFEST
        if not path.exists():
            return cls()
        try:
            obj = json.loads(path.read_bytes())
            segs = [SegmentInfo(**s) for s in obj["segments"]]
            fmt = int(obj["format"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptionError(f"the segment manifest is unreadable ({exc}); restore it from a backup",
                                  file=str(path)) from None
        if fmt > FORMAT:
            raise CorruptionError(f"manifest format {fmt} is newer than this ctxdb understands ({FORMAT})",
                                  file=str(path))
        expect = 1
        for s in segs:
            if s.first_seq != expect:
                raise CorruptionError(f"segments are not contiguous: {s.file} starts at seq {s.first_seq}, expected {expect}",
                                      file=str(path))
            expect = s.last_seq + 1
        return cls(segs, fmt)

    def save(self, logdir: Path) -> None:
        data = json.dumps({"format": self.format, "segments": [asdict(s) for s in self.segments]},
                          indent=1).encode()
        write_atomic(logdir / MANIFEST, data)

    def check_files(self, logdir: Path) -> None:
        """Every listed segment exists with its recorded size (cheap: no reads)."""
        for s in self.segments:
            p = logdir / s.file
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                raise CorruptionError(
                    f"sealed segment is missing: events {s.first_seq}..{s.last_seq} are lost from this "
                    "store; restore the file from a backup", file=str(p)) from None
            if size != s.bytes:
                raise CorruptionError(
                    f"sealed segment has {size} bytes, the manifest says {s.bytes} (truncated or "
                    f"overwritten); events {s.first_seq}..{s.last_seq} cannot be trusted; restore the "
                    "file from a backup", file=str(p), offset=min(size, s.bytes))


def write_atomic(path: Path, data: bytes | memoryview | pa.Buffer) -> None:
    """Never overwrite in place: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_unnamed(path: Path, write: Callable[[Any], None]) -> int:
    """Write a file that no manifest names yet (a new segment or key file) in place and fsync it;
    `write(f)` writes its bytes to the open file. Returns its size. Until a manifest names it,
    open() removes it as a leftover of an interrupted seal, so a temp file and a rename would
    protect nothing; the caller fsyncs the directory once, before it writes the manifest that
    names the file. Written straight to the file: an in-memory copy first grew (and so copied and
    page-faulted) its way up to the file's size, a measurable part of an ingest's CPU."""
    with pa.OSFile(str(path), "wb") as raw, pa.BufferedOutputStream(raw, 1 << 20, memory_pool=encode_pool()) as f:
        write(f)
    fd = os.open(path, os.O_RDONLY)  # fsync flushes the file's data through any descriptor of it
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def file_block_crcs(path: Path, size: int) -> list[int]:
    """block_crcs of a file just written, read from the page cache through a map (no copy)."""
    if not size:
        return block_crcs(b"")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as m:
        mv = memoryview(m)
        try:
            return block_crcs(mv)
        finally:
            mv.release()


def block_crcs(data: bytes | memoryview | pa.Buffer) -> list[int]:
    mv = memoryview(data)
    return [zlib.crc32(mv[i : i + BLOCK]) for i in range(0, len(mv), BLOCK)] or [0]


def write_segment(logdir: Path, table: pa.Table, json_bytes: int, keys: np.ndarray | None = None,
                  gen: int = 0) -> SegmentInfo:
    """Write one sealed segment (and its key file) durably, under a name no manifest has named
    yet; returns its manifest entry. The caller fsyncs `logdir` before a manifest names it."""
    first, last = int(table["seq"][0].as_py()), int(table["seq"][-1].as_py())
    pool = encode_pool()
    name = seg_name(first, last, gen)
    size = write_unnamed(logdir / name, lambda f: pq.write_table(
        table, f, compression="zstd", compression_level=COMPRESSION_LEVEL, row_group_size=ROW_GROUP,
        write_page_checksum=True, use_dictionary=DICTIONARY_COLUMNS, write_statistics=STATISTICS_COLUMNS,
        column_encoding=COLUMN_ENCODING, memory_pool=pool,
    ))
    crcs = file_block_crcs(logdir / name, size)
    if keys is None:
        keys = _segment_keys(table)
    kname = keys_name(first, last, gen)
    khead, kdata = _npy_parts(keys)
    write_unnamed(logdir / kname, lambda f: (f.write(khead), f.write(kdata)))
    kcrc = zlib.crc32(kdata, zlib.crc32(khead))
    rec = table["recorded_at"].cast(pa.int64())
    tts = table["time_ts"].cast(pa.int64())
    return SegmentInfo(
        file=name, first_seq=first, last_seq=last, rows=table.num_rows, bytes=size,
        crc32=crcs, recorded_at_min=int(rec[0].as_py()), recorded_at_max=int(rec[-1].as_py()),
        json_bytes=json_bytes, keys_file=kname, keys_crc32=kcrc,
        time_min=_minmax(tts, "min"), time_max=_minmax(tts, "max"),
    )


_pool: pa.MemoryPool | None = None


def encode_pool() -> pa.MemoryPool:
    """The memory pool Parquet encoding allocates from: jemalloc where pyarrow has it. Encoding
    allocates and frees page and compression buffers at a high rate; Arrow's default (mimalloc)
    hands them back to the kernel and faults them in again, zeroed: a quarter of the seal's
    CPU went to clearing pages (perf, 1M-event ingest), ~1 % with jemalloc, which keeps them."""
    global _pool
    if _pool is None:
        try:
            _pool = pa.jemalloc_memory_pool()
        except NotImplementedError:  # pyarrow built without jemalloc
            _pool = pa.default_memory_pool()
    return _pool


def _minmax(arr: pa.ChunkedArray, which: str) -> int | None:
    import pyarrow.compute as pc

    v = pc.min_max(arr)[which].as_py()
    return int(v) if v is not None else None


def _segment_keys(table: pa.Table) -> np.ndarray:
    src = table["source"].combine_chunks()
    ids = table["id"].combine_chunks()
    fp = fingerprints(src, ids)
    seqs = table["seq"].to_numpy().astype(np.uint64)
    order = np.argsort(fp[:, 0], kind="stable")
    return np.stack([fp[order, 0], fp[order, 1], seqs[order]], axis=1)


def _npy_parts(arr: np.ndarray) -> tuple[bytes, memoryview]:
    """`arr` in .npy format (the bytes np.save writes) as (header, data)."""
    import io

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(arr))
    return head.getvalue(), np.ascontiguousarray(arr).data


def load_keys(logdir: Path, seg: SegmentInfo) -> np.ndarray:
    """The segment's (hi, lo, seq) key rows; rebuilt from the segment if the file is bad."""
    p = logdir / seg.keys_file
    try:
        data = p.read_bytes()
        if zlib.crc32(data) == seg.keys_crc32:
            import io

            return np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError):
        pass
    table = read_segment(logdir, seg, columns=["seq", "source", "id"])
    return _segment_keys(table)


def verified_bytes(logdir: Path, seg: SegmentInfo) -> bytes:
    """The segment's bytes, each block checked against the manifest."""
    path = logdir / seg.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptionError(f"sealed segment is missing (events {seg.first_seq}..{seg.last_seq})",
                              file=str(path)) from None
    if len(data) != seg.bytes:
        raise CorruptionError(f"sealed segment has {len(data)} bytes, expected {seg.bytes}",
                              file=str(path), offset=min(len(data), seg.bytes))
    got = block_crcs(data)
    for i, (a, b) in enumerate(zip(got, seg.crc32)):
        if a != b:
            raise CorruptionError(
                f"checksum mismatch in bytes {i * BLOCK}..{min(len(data), (i + 1) * BLOCK) - 1} of a "
                f"sealed segment (events {seg.first_seq}..{seg.last_seq}); the file is damaged: "
                "restore it from a backup", file=str(path), offset=i * BLOCK)
    return data


def open_segment(logdir: Path, seg: SegmentInfo) -> pq.ParquetFile:
    return pq.ParquetFile(pa.BufferReader(verified_bytes(logdir, seg)))


def read_segment(logdir: Path, seg: SegmentInfo, columns: list[str] | None = None) -> pa.Table:
    return open_segment(logdir, seg).read(columns=columns)
