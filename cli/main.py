"""The `ctxdb` command: a thin shell over the embedded API (`import ctxdb`).

Data goes to stdout, progress and messages to stderr. Exit codes:
  0 ok · 1 other error · 2 usage · 65 bad input (EX_DATAERR) · 74 corrupt store (EX_IOERR)
  75 store locked by another writer (EX_TEMPFAIL) · 77 access denied · 78 bad config
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import typer

import ctxdb
from ctxdb.errors import CtxdbError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="ctxdb: the event-sourced context database for AI agents.")

DbOpt = typer.Option(None, "--db", envvar="CTXDB_PATH", help="Store directory [default: ./data]")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable JSON object.")


def _err(msg: str) -> None:
    typer.echo(f"ctxdb: {msg}", err=True)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Map library errors to a message on stderr and a documented exit code."""
    try:
        yield
    except CtxdbError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _path(db: Optional[Path]) -> str:
    return str(db) if db is not None else ctxdb.store.default_path()


class _Bar:
    """A rich progress bar on a terminal (bytes read, events/s); nothing when piped."""

    def __init__(self, total: int | None) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)
        from rich.console import Console

        self.t0 = time.perf_counter()
        self.p = Progress(TextColumn("ingest"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          TextColumn("{task.fields[events]:>12,} events  {task.fields[rate]:>10,.0f} ev/s"),
                          TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.task = self.p.add_task("ingest", total=total, events=0, rate=0.0)
        self.p.start()

    def __call__(self, nbytes: int, events: int) -> None:
        dt = time.perf_counter() - self.t0
        self.p.update(self.task, completed=nbytes, events=events, rate=events / dt if dt else 0.0)

    def close(self) -> None:
        self.p.stop()


@app.command()
def ingest(
    files: List[str] = typer.Argument(..., help="Files to ingest (.gz/.zst ok), or - for stdin."),
    format: str = typer.Option("auto", "--format", "-f", help="auto|ndjson|cloudevents|debezium|github|slack|jira"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Ingest the good records, reject the bad ones."),
    rejects: Optional[str] = typer.Option(None, "--rejects", help="With --skip-bad: write each bad record and its reason here (NDJSON)."),
    source: str = typer.Option("", "--source", help="Source for records that carry none."),
    batch: int = typer.Option(16384, "--batch", help="Events per batch (stdin: per transaction)."),
    db: Optional[Path] = DbOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Append events from files or stdin. A file invocation is atomic: one bad record and nothing
    is appended (exit 65). From stdin, each batch commits when full or after 1 s idle."""
    stream = files == ["-"]
    with _errors():
        if "-" in files and not stream:
            raise ctxdb.BadInput("'-' (stdin) cannot be combined with files", expected="either files or -")
        bar = None
        if sys.stderr.isatty() and not stream:
            total = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
            bar = _Bar(total or None)
        try:
            with ctxdb.open(_path(db)) as store:
                for msg in store.recovery.messages:
                    _err(f"recovered: {msg}")
                rep = store.ingest(files if not stream else "-", format=format, skip_bad=skip_bad or bool(rejects),
                                   rejects=rejects, progress=bar, stream=stream, source=source, batch_events=batch)
        finally:
            if bar is not None:
                bar.close()
        if as_json:
            typer.echo(json.dumps(rep.to_dict()))
        else:
            _err(rep.summary())


@app.command("log")
def log_cmd(
    from_seq: Optional[int] = typer.Option(None, "--from-seq", help="First seq (inclusive)."),
    to_seq: Optional[int] = typer.Option(None, "--to-seq", help="Last seq (inclusive)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Only what was recorded by then (RFC 3339 or '2h ago')."),
    subject: Optional[str] = typer.Option(None, "--subject", help="Subject (exact, or a glob like 'order:*')."),
    type: Optional[str] = typer.Option(None, "--type", help="Type (exact, or a glob like 'order.*')."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Print at most N events."),
    last: Optional[int] = typer.Option(None, "--last", help="Only the last N events of the log."),
    follow: bool = typer.Option(False, "--follow", "-F", help="Keep printing new events as they are committed."),
    db: Optional[Path] = DbOpt,
) -> None:
    """Print events as NDJSON (with seq and recorded_at), filtered like db.read()."""
    with _errors():
        with ctxdb.open(_path(db), readonly=True) as store:
            if last is not None:
                from_seq = max(from_seq or 1, store.last_seq - last + 1)
            out = sys.stdout.buffer
            printed = 0
            nxt = from_seq or 1
            while True:
                for ev in store.read(from_seq=nxt, to_seq=to_seq, as_of=as_of, subject=subject, type=type):
                    out.write(ev.to_json() + b"\n")
                    printed += 1
                    if limit is not None and printed >= limit:
                        out.flush()
                        return
                nxt = max(nxt, store.last_seq + 1)
                out.flush()
                if not follow or (to_seq is not None and nxt > to_seq):
                    return
                while store.last_seq < nxt:
                    time.sleep(0.2)
                    store.refresh()


@app.command()
def stats(db: Optional[Path] = DbOpt, as_json: bool = JsonOpt) -> None:
    """Events, seq and time ranges, segments, bytes on disk, compression ratio."""
    with _errors():
        with ctxdb.open(_path(db), readonly=True) as store:
            s = store.stats()
        if as_json:
            typer.echo(json.dumps(s))
            return
        width = max(len(k) for k in s)
        for k, v in s.items():
            if isinstance(v, int) and not isinstance(v, bool) and k != "events" and "bytes" in k:
                v = f"{v:,} ({v / 1e6:.1f} MB)"
            elif isinstance(v, int) and not isinstance(v, bool):
                v = f"{v:,}"
            typer.echo(f"{k:<{width}}  {v if v is not None else '-'}")


@app.command()
def demo(db: Optional[Path] = DbOpt) -> None:
    """Ingest the bundled customer-support sample and show the log now and as of an earlier time."""
    from ctxdb import demo as _demo

    with _errors():
        _demo.run(_path(db), echo=typer.echo)


def main() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL) if hasattr(signal, "SIGPIPE") else None
    app()


if __name__ == "__main__":
    main()
