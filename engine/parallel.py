"""Parallel decode for large plain NDJSON files: worker processes turn byte ranges of the file
into validated Arrow batches (with key fingerprints); the parent only deduplicates, assigns seqs
and writes. Decoding is per-event Python work, so on one core it caps ingest; this spreads it
over the machine's cores.

Used only where it cannot change the outcome: uncompressed files in the NDJSON envelope format,
without --skip-bad. Errors are re-raised in the parent with the absolute line number, in file
order, so the message and the all-or-nothing behaviour are those of the sequential path.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

from .codec import Batch
from .errors import BadInput

MIN_BYTES = 64 << 20  # below this, process start-up costs more than it saves
RANGE_BYTES = 8 << 20


def ranges(path: str, size: int, step: int, max_record: int) -> list[tuple[int, int]] | None:
    """Byte ranges of whole lines covering the file, or None when a line crossing a range end is
    over max_record (the sequential path then reports it without reading it into memory)."""
    out, start = [], 0
    with open(path, "rb") as f:
        while start < size:
            end = min(size, start + step)
            if end < size:
                f.seek(end)
                tail = f.readline(max_record + 1)
                if not tail.endswith(b"\n") and end + len(tail) < size:
                    return None
                end += len(tail)
            out.append((start, end))
            start = end
    return out


def _work(args: tuple[str, int, int, str, int]) -> tuple[int, Batch | None, BadInput | None]:
    """(lines in the range, batch or None, error with a range-relative line)."""
    from .ingest import decode_chunk, to_batch
    from .formats import ADAPTERS

    path, start, end, source, max_record = args
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if lines and max(map(len, lines)) > max_record:
        for i, line in enumerate(lines):
            if len(line) > max_record:
                return len(lines), None, BadInput(
                    f"record is {len(line):,} bytes, over the {max_record:,}-byte limit", line=i + 1,
                    expected=f"records under {max_record:,} bytes (max_record_bytes)")
    try:
        d = decode_chunk(1, lines, ADAPTERS["ndjson"], path, None)
        batch = to_batch(d, path, source, None) if d.envs else None
    except BadInput as exc:
        return len(lines), None, exc
    return len(lines), batch, None


def plan(path: str, size: int, max_record: int) -> list[tuple[int, int]] | None:
    step = int(os.environ.get("CTXDB_PARALLEL_RANGE_BYTES") or RANGE_BYTES)
    return ranges(path, size, step, max_record)


def batches(path: str, spans: list[tuple[int, int]], source: str, max_record: int,
            workers: int | None = None) -> Iterator[tuple[Batch | None, int]]:
    """(batch, lines) per range, in file order; raises the first bad record's BadInput with its
    absolute line number.

    The first range is decoded in this process while the workers start (a worker has to start
    a fresh interpreter and import ctxdb first: a fraction of a second the caller would
    otherwise spend waiting); the forkserver imports ctxdb once, so workers fork ready to run."""
    workers = workers or max(2, os.cpu_count() or 2)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    line_base = 0
    jobs = [(path, a, b, source, max_record) for a, b in spans]
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        rest = pool.map(_work, jobs[1:], chunksize=1) if len(jobs) > 1 else iter(())
        for n_lines, batch, err in itertools.chain([_work(jobs[0])] if jobs else [], rest):
            if err is not None:
                line = line_base + (err.line or 1)
                raise BadInput(err.reason, file=path, line=line, field=err.field, expected=err.expected)
            line_base += n_lines
            yield batch, n_lines
