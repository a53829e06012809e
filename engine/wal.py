"""The write-ahead log: framed, checksummed, zstd-compressed Arrow batches.

A WAL file `log/wal-<first_seq>.log` is a sequence of frames:

    offset  size  field
    0       4     magic b"CXWF"
    4       1     flags (bit 0: COMMIT, the frame ends a transaction; bit 1: RAW, the payload is
                  the Arrow IPC stream itself, not zstd-compressed)
    5       3     reserved (zero)
    8       4     payload length (compressed bytes)
    12      4     uncompressed payload length
    16      8     first seq of the frame
    24      4     number of events
    28      8     recorded_at of the transaction, µs since epoch (COMMIT frames; 0 otherwise)
    36      4     JSON bytes the events were ingested from (for compression statistics)
    40      4     CRC-32 of bytes 0..39 and the payload
    44      ...   payload: zstd(Arrow IPC stream of one record batch), empty for a bare COMMIT;
                  with RAW, the IPC stream as is

RAW frames hold events that are about to be sealed into Parquet (see log_disk.py): compressing
them would be work thrown away at the seal, which re-encodes any RAW frame it carries over. (A
transaction that a seal commits keeps such events out of the WAL altogether; see log_disk.py.)

A transaction is a run of frames ending with a COMMIT frame; its events become visible, all with
the COMMIT frame's recorded_at, only when that frame is durable. Recovery keeps every committed
frame and truncates what follows the last one (a torn or uncommitted tail). A bad frame *followed
by a valid frame* is not a torn tail but damage to acknowledged data: a CorruptionError.
"""
from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import zstandard

from .errors import CorruptionError

MAGIC = b"CXWF"
HEADER = struct.Struct("<4sB3xIIqIqII")
HEADER_SIZE = HEADER.size  # 44
COMMIT = 1
RAW = 2
MAX_FRAME = 1 << 30

_LEVEL = 1  # WAL frames are short-lived (sealed into Parquet): favour speed
_DCTX = zstandard.ZstdDecompressor()
_local = threading.local()


def _cctx() -> zstandard.ZstdCompressor:
    """A compressor per thread (a ZstdCompressor must not be used by two threads at once)."""
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=_LEVEL)
    return c


@dataclass(frozen=True, slots=True)
class Frame:
    """Where a frame lives and what it holds (the payload is read on demand)."""

    path: str
    offset: int
    length: int
    raw_length: int
    first_seq: int
    count: int
    flags: int
    recorded_at: int
    json_bytes: int

    @property
    def end(self) -> int:
        return self.offset + HEADER_SIZE + self.length

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


def ipc_stream(batch: pa.RecordBatch) -> pa.Buffer:
    """One record batch as an Arrow IPC stream (the uncompressed frame payload)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue()


def encode_payload(batch: pa.RecordBatch, *, raw: bool = False, ipc: pa.Buffer | None = None
                   ) -> tuple[bytes | pa.Buffer, int]:
    """(payload, uncompressed length) of one record batch: zstd of its IPC stream, or with
    `raw` the stream itself. `ipc` is the batch's stream when the caller already has it."""
    stream = ipc if ipc is not None else ipc_stream(batch)
    return (stream if raw else _cctx().compress(stream)), stream.size


def decode_payload(payload: bytes | memoryview, raw_length: int, flags: int = 0) -> pa.RecordBatch:
    if flags & RAW:
        if len(payload) != raw_length:
            raise ValueError(f"RAW payload of {len(payload)} bytes, header says {raw_length}")
        raw = pa.py_buffer(payload)
    else:
        raw = _DCTX.decompress(payload, max_output_size=raw_length)
    return pa.ipc.open_stream(raw).read_next_batch()


def frame_header(
    payload: bytes | memoryview | pa.Buffer, raw_length: int, first_seq: int, count: int, *,
    flags: int = 0, recorded_at: int = 0, json_bytes: int = 0,
) -> bytes:
    """The 44-byte header of a frame holding `payload` (written before it)."""
    head = HEADER.pack(MAGIC, flags, len(payload), raw_length, first_seq, count, recorded_at,
                       min(json_bytes, 0xFFFFFFFF), 0)[:40]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc)


def encode_frame(
    payload: bytes, raw_length: int, first_seq: int, count: int, *, flags: int = 0,
    recorded_at: int = 0, json_bytes: int = 0,
) -> bytes:
    return frame_header(payload, raw_length, first_seq, count, flags=flags, recorded_at=recorded_at,
                        json_bytes=json_bytes) + bytes(payload)


@dataclass
class ScanResult:
    committed: list[Frame]
    committed_end: int  # byte offset just past the last committed frame
    file_size: int
    dropped_frames: int  # complete but uncommitted frames after the last commit
    problem: str | None  # why scanning stopped before the end of the file, if it did


def scan(path: Path, expect_seq: int) -> ScanResult:
    """Read every frame header of a WAL file and verify every payload checksum.

    `expect_seq` is the seq the first frame must start at. Raises CorruptionError when a damaged
    frame is followed by a valid one (damage to acknowledged data, not a torn tail)."""
    committed: list[Frame] = []
    pending: list[Frame] = []
    committed_end = 0
    problem = None
    spath = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        next_seq = expect_seq
        while pos < size:
            frame, problem = _read_frame(f, spath, pos, size)
            if frame is None:
                break
            if frame.count and frame.first_seq != next_seq:
                problem = f"frame at offset {pos} starts at seq {frame.first_seq}, expected {next_seq}"
                break
            next_seq += frame.count
            pending.append(frame)
            pos = frame.end
            if frame.flags & COMMIT:
                committed.extend(
                    _with_time(fr, frame.recorded_at) for fr in pending if fr.count
                )
                pending.clear()
                committed_end = pos
        if problem is not None:
            _check_no_valid_frame_after(f, spath, pos, size, problem)
    return ScanResult(committed, committed_end, size, len(pending), problem)


def _with_time(fr: Frame, recorded_at: int) -> Frame:
    return Frame(fr.path, fr.offset, fr.length, fr.raw_length, fr.first_seq, fr.count,
                 fr.flags, recorded_at, fr.json_bytes)


def _read_frame(f, path: str, pos: int, size: int) -> tuple[Frame | None, str | None]:
    f.seek(pos)
    head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        return None, f"incomplete frame header at offset {pos} ({len(head)} of {HEADER_SIZE} bytes)"
    magic, flags, length, raw_len, first_seq, count, rec, jb, crc = HEADER.unpack(head)
    if magic != MAGIC:
        return None, f"bad frame magic at offset {pos}"
    if length > MAX_FRAME or pos + HEADER_SIZE + length > size:
        return None, f"incomplete frame at offset {pos} (needs {length} payload bytes)"
    payload = f.read(length)
    if zlib.crc32(payload, zlib.crc32(head[:40])) != crc:
        return None, f"checksum mismatch in frame at offset {pos}"
    return Frame(path, pos, length, raw_len, first_seq, count, flags, rec, jb), None


def _check_no_valid_frame_after(f, path: str, pos: int, size: int, problem: str) -> None:
    """A torn tail has nothing valid after it; search for a later intact frame."""
    f.seek(pos + 1)
    data = f.read()
    base = pos + 1
    i = data.find(MAGIC)
    while i >= 0:
        frame, _ = _read_frame(f, path, base + i, size)
        if frame is not None:
            raise CorruptionError(
                f"{problem}, but an intact frame follows at offset {base + i}: acknowledged data "
                "is damaged (not a torn write). Restore the store from a backup, or copy the "
                "file aside and truncate it at the damaged offset to keep what precedes it",
                file=path, offset=pos,
            )
        i = data.find(MAGIC, i + 1)


def verify_frames(data: bytes | memoryview, base: int, path: str) -> list[tuple[int, Frame]]:
    """Check that `data` (read from `path` at offset `base`) is a run of whole, intact frames;
    returns (position in data, frame with its offset in the file) of each. Raises
    CorruptionError at the first bad one."""
    mv = memoryview(data)
    pos = 0
    out: list[tuple[int, Frame]] = []
    while pos < len(mv):
        head = bytes(mv[pos : pos + HEADER_SIZE])
        if len(head) < HEADER_SIZE:
            raise CorruptionError("incomplete frame header in committed WAL data", file=path, offset=base + pos)
        magic, flags, length, raw_len, first_seq, count, rec, jb, crc = HEADER.unpack(head)
        end = pos + HEADER_SIZE + length
        if magic != MAGIC or end > len(mv) or zlib.crc32(mv[pos + HEADER_SIZE : end], zlib.crc32(head[:40])) != crc:
            raise CorruptionError("checksum mismatch in a committed frame (changed since it was verified)",
                                  file=path, offset=base + pos)
        out.append((pos, Frame(path, base + pos, length, raw_len, first_seq, count, flags, rec, jb)))
        pos = end
    return out


def read_frame_batch(frame: Frame, fd: int | None = None) -> pa.RecordBatch:
    """The record batch of a (committed, verified) frame."""
    if fd is None:
        with open(frame.path, "rb") as f:
            f.seek(frame.offset)
            buf = f.read(HEADER_SIZE + frame.length)
    else:
        buf = os.pread(fd, HEADER_SIZE + frame.length, frame.offset)
    if len(buf) != HEADER_SIZE + frame.length or zlib.crc32(buf[HEADER_SIZE:], zlib.crc32(buf[:40])) != HEADER.unpack(buf[:HEADER_SIZE])[-1]:
        raise CorruptionError("checksum mismatch in a committed frame (changed since it was verified)",
                              file=frame.path, offset=frame.offset)
    return decode_payload(memoryview(buf)[HEADER_SIZE:], frame.raw_length, frame.flags)


class WalWriter:
    """Appends frames to one WAL file. Not thread-safe: the log serialises writers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)

    def write(self, *parts) -> int:
        """Write a frame (given as one or more bytes-like parts) at the end; returns its offset.
        Not durable until sync()."""
        off = self.size
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                n = os.pwrite(self.fd, view, self.size)
                self.size += n
                view = view[n:]
        return off

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        self.size = size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
