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
ConfigOpt = typer.Option(None, "--config", "-c", help="ctxdb.toml [default: <db>/ctxdb.toml, else ./ctxdb.toml, else the policy in the log]")


def _require_store(db: Optional[Path]) -> None:
    p = Path(_path(db))
    if not (p / "log").is_dir():
        raise ctxdb.CtxdbError(f"no ctxdb store at {p} (ingest something first, or pass --db PATH)")


@contextlib.contextmanager
def _open_for_views(db: Optional[Path], config: Optional[Path]) -> Iterator["ctxdb.Store"]:
    """Open as the writer (projections persist); if another process holds the store, open it
    read-only and project from the newest snapshot in memory."""
    if config is not None:
        from ctxdb.config import load_file

        load_file(config)  # a bad config is exit 78 whether or not the store exists
    _require_store(db)
    try:
        store = ctxdb.open(_path(db), config=config)
    except ctxdb.LockedError as exc:
        _err(f"note: {exc.path} is held by pid {exc.pid}; reading it read-only")
        store = ctxdb.open(_path(db), readonly=True, config=config)
    with store:
        yield store


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
    config: Optional[Path] = ConfigOpt,
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
            with ctxdb.open(_path(db), config=config) as store:
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
    agent: Optional[str] = typer.Option(None, "--agent", "-a", help="Read on behalf of this agent: only subjects its current policy grants, never a forgotten one."),
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
                for ev in store.read(from_seq=nxt, to_seq=to_seq, as_of=as_of, subject=subject, type=type,
                                     agent=agent):
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
def view(
    agent: str = typer.Option(..., "--agent", "-a", help="Agent name (an [agents.<name>] policy)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="The view as the log stood then (RFC 3339 or '2h ago')."),
    seq: Optional[int] = typer.Option(None, "--seq", help="The view at this log position."),
    valid_at: Optional[str] = typer.Option(None, "--valid-at", help="What was true at this (event) time, as known now."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Token budget [default: the agent's policy]."),
    explain: bool = typer.Option(False, "--explain", help="Show every candidate item: score components and why it is in or out."),
    follow: bool = typer.Option(False, "--follow", "-F", help="Print the view again each time it changes."),
    query: Optional[str] = typer.Option(None, "--query", "-q", help="Query-aware view: relevance to this question joins the score."),
    auditor: Optional[str] = typer.Option(None, "--auditor", help="Read as this auditor (role = \"auditor\"): the view exactly as it was, tombstoned data and policy denials included."),
    db: Optional[Path] = DbOpt,
    config: Optional[Path] = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print an agent's context view: the text for its system prompt (or --json with every item,
    its score components and lineage). Read as the agent: its current grants apply to past views
    too and forgotten subjects never show; --auditor reads history as it was."""
    with _errors():
        if follow and query is not None:
            raise ctxdb.BadInput("--follow follows the plain view; drop --query", field="--follow")
        with _open_for_views(db, config) as store:
            v = store.view(agent, as_of=as_of, seq=seq, budget=budget, explain=explain, valid_at=valid_at,
                           query=query, auditor=auditor)
            _print_view(v, as_json, explain)
            if follow:
                with store.subscribe(agent) as sub:
                    for upd in sub:
                        if upd.view.seq > v.seq:
                            _print_view(upd.view, as_json, False)
                            sys.stdout.flush()


def _print_view(v: "ctxdb.View", as_json: bool, explain: bool) -> None:
    if as_json:
        typer.echo(v.to_json().decode())
        return
    typer.echo(v.text, nl=False)
    _err(f"{v.agent} @ seq {v.seq}: {len(v.items)} items, {v.tokens}/{v.budget} tokens ({v.tokenizer}), "
         f"policy v{v.policy_version}, hash {v.hash}")
    if explain:
        typer.echo("")
        rel = v.query is not None
        typer.echo(f"{'status':<18} {'score':>7} {'prio':>5} {'recency':>7} {'reinf':>5} "
                   + (f"{'relev':>6} " if rel else "") + f"{'tokens':>6}  {'kind':<8} key")
        for e in v.explain:
            num = lambda x, w, d=3: f"{x:>{w}.{d}f}" if x is not None else " " * (w - 1) + "-"  # noqa: E731
            tok = f"{e.tokens:>6}" if e.tokens is not None else "     -"
            dup = f" (same text as {e.duplicate_of})" if e.duplicate_of else ""
            typer.echo(f"{e.status:<18} {num(e.score, 7)} {num(e.priority, 5, 2)} {num(e.recency, 7)} "
                       f"{num(e.reinforcement, 5, 2)} " + (f"{num(e.relevance, 6)} " if rel else "")
                       + f"{tok}  {e.kind:<8} {e.key}{dup}")


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for (words, names, ids, a question)."),
    agent: str = typer.Option(..., "--agent", "-a", help="Search as this agent: only items its policy lets it see."),
    k: int = typer.Option(10, "--k", "-k", help="How many results."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Search the items as the log stood then."),
    seq: Optional[int] = typer.Option(None, "--seq", help="Search the items at this log position."),
    auditor: Optional[str] = typer.Option(None, "--auditor", help="Search as this auditor: the items as they were, tombstoned ones included."),
    db: Optional[Path] = DbOpt,
    config: Optional[Path] = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Hybrid search (embeddings fused with BM25 keywords) over the items an agent may see."""
    with _errors():
        with _open_for_views(db, config) as store:
            hits = store.search(agent, query, k=k, as_of=as_of, seq=seq, auditor=auditor)
        if as_json:
            import msgspec

            typer.echo(msgspec.json.encode(hits).decode())
            return
        typer.echo(f"{'rank':>4} {'score':>6} {'vector':>6} {'bm25':>6}  {'key':<28} text")
        for h in hits:
            text = h.text.replace("\n", " ")
            text = text if len(text) <= 100 else text[:99] + "…"
            typer.echo(f"{h.rank:>4} {h.score:>6.3f} {h.vector:>6.3f} {h.keyword:>6.2f}  {h.key:<28} {text}")
        if not hits:
            _err("no items visible to this agent match")


def _progress_printer(what: str):
    """Step messages of a long operation, on stderr (data stays on stdout)."""
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        _err(f"{what}: {msg} ({time.perf_counter() - t0:.2f} s)")
    return step


@app.command()
def forget(
    subject: str = typer.Argument(..., help="The subject to forget, exactly (e.g. user:42)."),
    purge: bool = typer.Option(False, "--purge", help="Also erase its data physically from every file of the store."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why (kept in the tombstone; no personal data here)."),
    db: Optional[Path] = DbOpt,
    config: Optional[Path] = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Tombstone a subject: from now on it is out of every view and search (agents never read it
    again, at any position; auditors still read history before the tombstone). With --purge, its
    personal data is erased from the log, the item store, embeddings, index and snapshots."""
    with _errors():
        _require_store(db)
        with ctxdb.open(_path(db), config=config) as store:
            seq = store.forget(subject, reason=reason)
            out: dict = {"subject": subject, "seq": seq, "purged": False}
            if purge:
                rep = store.purge(subject, progress=_progress_printer("purge"))
                out = {**out, "purged": True, "purge": rep.to_dict()}
            else:
                store.wait(seq)
        if as_json:
            typer.echo(json.dumps(out))
        elif purge:
            r = out["purge"]
            typer.echo(f"forgot and purged {subject}: tombstone at seq {seq}; {r['events']} events stubbed in "
                       f"{r['segments_rewritten']} segment(s), {r['item_versions']} item versions, {r['embeddings']} "
                       f"embeddings, {r['snapshots']} snapshot(s) erased in {r['seconds']:.2f} s; "
                       f"purge receipt at seq {r['receipt_seq']}")
        else:
            typer.echo(f"forgot {subject}: tombstone at seq {seq} (data kept for auditors; --purge erases it)")


@app.command()
def hold(
    subject: str = typer.Argument(..., help="The subject to hold (e.g. user:42)."),
    release: bool = typer.Option(False, "--release", help="Release the hold instead."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why (kept in the hold event)."),
    db: Optional[Path] = DbOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Put a subject under legal hold (or --release it): a held subject cannot be purged, and
    retention does not erase its events."""
    with _errors():
        _require_store(db)
        with ctxdb.open(_path(db), config=config) as store:
            seq = store.hold(subject, release=release, reason=reason)
        typer.echo(f"{'released' if release else 'held'} {subject} at seq {seq}")


@app.command()
def retain(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be erased."),
    now: Optional[str] = typer.Option(None, "--now", help="Measure ages from this time (RFC 3339 or '2h ago'); "
                                                          "default: the wall clock."),
    db: Optional[Path] = DbOpt,
    config: Optional[Path] = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Apply the config's [[retention]] entries: erase every event older than its entry allows
    (content-free stubs stay in the log, items are re-derived without them), except ctxdb's own
    events and events about subjects under legal hold (ctxdb hold). Run it from cron."""
    with _errors():
        _require_store(db)
        with ctxdb.open(_path(db), config=config) as store:
            rep = store.retain(now=now, dry_run=dry_run, progress=None if dry_run else _progress_printer("retain"))
        if as_json:
            typer.echo(json.dumps(rep.to_dict()))
            return
        if not rep.entries:
            typer.echo("no [[retention]] entries in the config: nothing to do")
            return
        for e in rep.entries:
            what = f"type {e['type']}" if "type" in e else f"kind {e['kind']}"
            typer.echo(f"  {what:<24} retain {e['retain']:<6} older than {e['cutoff']}: {e['events']} event(s)")
        held = f"; {rep.held} kept under legal hold" if rep.held else ""
        if rep.dry_run:
            typer.echo(f"dry run at {rep.now}: {rep.events} event(s) would be erased{held}")
        elif not rep.events:
            typer.echo(f"retention at {rep.now}: nothing has expired{held}")
        else:
            typer.echo(f"retention at {rep.now}: {rep.events} event(s) erased in {rep.segments_rewritten} of "
                       f"{rep.segments_total} segment(s), {rep.item_versions} item version(s), {rep.embeddings} "
                       f"embedding(s), {rep.snapshots} snapshot(s), {rep.receipts_rewritten} receipt(s) now with "
                       f"placeholders{held}; {rep.seconds:.2f} s; receipt at seq {rep.receipt_seq}")


@app.command("verify-purge")
def verify_purge(
    subject: str = typer.Argument(..., help="The purged subject (its identifier is searched for)."),
    marker: list[str] = typer.Option([], "--marker", "-m", help="A text the subject's data held (repeatable)."),
    db: Optional[Path] = DbOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Open every file of the store by its format (raw bytes, WAL frames decompressed, Parquet
    decoded, DuckDB tables, vector chunks, JSON, snapshots) and report any trace of the subject
    or the markers. Exit 1 if anything is found."""
    import msgspec
    from ctxdb.verify_purge import format_report, scan_store

    with _errors():
        _require_store(db)
        rep = scan_store(_path(db), [subject, *marker])
        if as_json:
            typer.echo(json.dumps({"ok": rep.ok, "files": rep.files, "bytes": rep.bytes, "seconds": rep.seconds,
                                   "residues": [msgspec.to_builtins(r) for r in rep.residues],
                                   "skipped": rep.skipped, "warnings": rep.warnings}))
        else:
            typer.echo(format_report(rep))
        if not rep.ok:
            raise typer.Exit(1)


@app.command()
def audit(
    decision: str = typer.Argument(..., help="A decision id (from db.record_decision; ctxdb log --type ctxdb.decision)."),
    db: Optional[Path] = DbOpt,
    config: Optional[Path] = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rebuild the view a decision receipt names, check its hash, and show what the agent saw,
    item by item, with lineage back to the source events. Exit 1 if it does not verify."""
    with _errors():
        with _open_for_views(db, config) as store:
            r = store.audit(decision)
        if as_json:
            import msgspec

            typer.echo(msgspec.json.encode(r).decode())
        else:
            typer.echo(f"decision {r.decision} (receipt at seq {r.seq}) by {r.agent}: view at seq {r.view_seq}"
                       f" ({r.as_of})" + (f", query {r.query!r}" if r.query else ""))
            typer.echo(f"  receipt hash {r.view_hash}")
            typer.echo(f"  rebuilt hash {r.rebuilt_hash}: {'VERIFIED' if r.verified else 'MISMATCH'}")
            for reason in r.reasons:
                typer.echo(f"  ! {reason}")
            for it in r.items:
                typer.echo(f"  [{it.status}] {it.kind:<8} {it.key}: {it.text if it.text is not None else '-'}")
                for e in it.lineage:
                    typer.echo(f"      <- seq {e.seq} {e.type} {e.subject} ({e.source}/{e.id}, {e.time})")
            if r.output is not None:
                typer.echo(f"  output: {r.output}")
        if not r.verified:
            raise typer.Exit(1)


@app.command()
def replay(
    verify: bool = typer.Option(False, "--verify", help="Rebuild every projection from the log into a scratch store and re-verify every decision receipt."),
    db: Optional[Path] = DbOpt,
    config: Optional[Path] = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Compliance replay: exit 1 on any mismatch (receipt, or item store differing from the log)."""
    with _errors():
        if not verify:
            raise ctxdb.BadInput("nothing to do: pass --verify", field="--verify")
        _require_store(db)
        with ctxdb.open(_path(db), config=config) as store:
            r = store.replay_verify()
        if as_json:
            import msgspec

            typer.echo(msgspec.json.encode({**msgspec.to_builtins(r), "ok": r.ok}).decode())
        else:
            typer.echo(f"replayed {r.events:,} events in {r.seconds} s; receipts checked {r.receipts}, "
                       f"verified {r.verified}, mismatches {len(r.mismatches)}")
            for m in r.mismatches:
                typer.echo(f"  MISMATCH {m['decision']} (seq {m['seq']}): {'; '.join(m['reasons'])}")
            typer.echo(f"item store {'matches' if r.items_identical else 'DIFFERS FROM'} the replay "
                       f"(live {r.digest_live}, replay {r.digest_replay})")
        if not r.ok:
            raise typer.Exit(1)


@app.command()
def rebuild(db: Optional[Path] = DbOpt, config: Optional[Path] = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Replay the whole log into a fresh item store, compare it with the current one, swap it in."""
    with _errors():
        _require_store(db)
        with ctxdb.open(_path(db), config=config) as store:
            rep = store.rebuild()
        if as_json:
            typer.echo(json.dumps(rep))
            return
        same = {True: "identical to the previous item store", False: "DIFFERENT from the previous item store"}
        _err(f"rebuilt {rep['events']:,} events into {rep['versions']:,} item versions in {rep['seconds']} s "
             f"({rep['events_per_s'] or 0:,} events/s); {same[rep['identical']]}")
        typer.echo(rep["digest_after"])


@app.command()
def snapshot(
    list_: bool = typer.Option(False, "--list", help="List snapshots instead of taking one."),
    db: Optional[Path] = DbOpt, config: Optional[Path] = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Take a snapshot of the projected state (or --list them)."""
    with _errors():
        _require_store(db)
        with ctxdb.open(_path(db), config=config, readonly=list_) as store:
            snaps = store.snapshots() if list_ else [store.snapshot()]
        for m in snaps:
            d = {"seq": m.seq, "policy_version": m.policy_version, "path": m.path,
                 "bytes": sum(f["size"] for f in m.files.values())}
            typer.echo(json.dumps(d) if as_json else f"seq {m.seq:>10,}  policy v{m.policy_version}  {d['bytes']:>12,} B  {m.path}")


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
