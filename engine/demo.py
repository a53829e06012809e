"""The demo behind `ctxdb demo` (README's first command): ingest the bundled customer-support
sample in two commits, then show the log now and as of the moment between the two commits."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

from .store import open as open_store

SAMPLES = Path(__file__).resolve().parent / "samples"


def sample_path(name: str = "support.ndjson") -> Path:
    return SAMPLES / name


def run(path: str, echo: Callable[[str], None] = print, last: int = 5) -> None:
    lines = sample_path().read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    with open_store(path) as db:
        first = db.ingest(io.BytesIO(b"".join(lines[:half])))
        second = db.ingest(io.BytesIO(b"".join(lines[half:])))
        echo(f"ingested {sample_path().name}: first commit {first.summary()}")
        echo(f"                     second commit {second.summary()}")
        echo("")
        echo("== ctxdb stats ==")
        for k, v in db.stats().items():
            echo(f"  {k:<18} {v}")
        echo("")
        echo(f"== the last {last} events now ==")
        for ev in db.read(from_seq=max(1, db.last_seq - last + 1)):
            echo(_row(ev))
        # The moment between the commits: when the first half's last event was recorded. Appending
        # it again appends nothing and reports its seq.
        (split_seq,) = db.append([lines[half - 1].strip()])
        as_of = next(db.read(from_seq=split_seq, to_seq=split_seq)).recorded_at
        echo("")
        echo(f"== the same log as of {as_of.isoformat()} (ctxdb log --as-of ...) ==")
        events = 0
        tail: list[str] = []
        for ev in db.read(as_of=as_of):
            events += 1
            tail = (tail + [_row(ev)])[-last:]
        echo(f"  {events} events were known then (of {db.last_seq} now); the last {len(tail)}:")
        for line in tail:
            echo(line)


def _row(ev) -> str:
    data = ev.data.decode()
    data = data if len(data) <= 70 else data[:67] + "..."
    return f"  {ev.seq:>5}  {ev.time:<21} {ev.type:<16} {ev.subject:<18} {data}"
