"""The demo behind `ctxdb demo` (README's first command).

Ingests the bundled customer-support sample (orders, shipments, comments, Jira tickets, Slack
messages, a persona) with the bundled ctxdb.toml in two commits, prints the support agent's
current view, then the same agent's view as of the moment between the two commits, rebuilt from
the log, and checks it against the view that was served live at that moment. Then it asks a
question: a query-aware view (relevance joins the score) and a hybrid search, once the background
embedder has covered the log.

The sample's event times are shifted so that its last event is a few minutes old: TTLs and
recency are measured from the view's position, and a fixed 2026 sample would otherwise have
expired by the time you run this.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import msgspec

from .store import open as open_store

SAMPLES = Path(__file__).resolve().parent / "samples"
AGENT = "support-bot"
QUESTION = "Which customer got a refund for a damaged item?"
QUERY_BUDGET = 400


def sample_path(name: str = "support.ndjson") -> Path:
    return SAMPLES / name


def shifted_sample(now: datetime) -> tuple[list[bytes], timedelta]:
    """The sample's lines with every `time` moved by whole minutes so the last one is ~5 min ago."""
    events = [msgspec.json.decode(line) for line in sample_path().read_bytes().splitlines() if line.strip()]
    last = max(datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in events)
    shift = (now - timedelta(minutes=5)) - last
    shift = timedelta(minutes=int(shift.total_seconds() // 60))
    out = []
    for e in events:
        t = datetime.fromisoformat(e["time"].replace("Z", "+00:00")) + shift
        e["time"] = t.isoformat().replace("+00:00", "Z")
        out.append(msgspec.json.encode(e) + b"\n")
    return out, shift


def run(path: str, echo: Callable[[str], None] = print) -> None:
    lines, shift = shifted_sample(datetime.now(timezone.utc))
    split = len(lines) * 2 // 3
    with open_store(path, config=SAMPLES / "ctxdb.toml") as db:
        first = db.ingest([_Lines(lines[:split])])
        served = db.view(AGENT)  # the live view right after the first commit
        second = db.ingest([_Lines(lines[split:])])
        db.wait()
        echo(f"ingested {sample_path().name} (times shifted by {shift.days} days so it ends now) with "
             f"{(SAMPLES / 'ctxdb.toml').name}:")
        echo(f"  first commit  {first.summary()}")
        echo(f"  second commit {second.summary()}")
        s = db.stats()
        echo(f"  log: {s['events']} events, {s['bytes_on_disk']:,} bytes on disk; items: {s['live_items']} live, "
             f"policy v{s['policy_version']}")
        echo("")
        now = db.view(AGENT)
        echo(f"== {AGENT}'s view now (ctxdb view --agent {AGENT}) ==")
        echo(now.text.rstrip())
        echo(f"-- {len(now.items)} items, {now.tokens}/{now.budget} tokens ({now.tokenizer}), hash {now.hash}")
        echo("")
        as_of = served.as_of.isoformat().replace("+00:00", "Z")
        then = db.view(AGENT, as_of=served.as_of)
        echo(f"== the same view as of {as_of}, between the commits (ctxdb view --agent {AGENT} --as-of {as_of}) ==")
        echo(then.text.rstrip())
        same = "identical to" if (then.text, then.hash) == (served.text, served.hash) else "DIFFERENT from"
        echo(f"-- {len(then.items)} items, {then.tokens}/{then.budget} tokens, hash {then.hash}: "
             f"{same} the view served live at seq {served.seq}")
        echo("")
        if "embedding_model" not in db.stats():
            echo("(embeddings are off: no question-aware view or search)")
        elif db.wait(timeout=600):  # the background embedder covers the log (all-MiniLM-L6-v2, offline)
            q = QUESTION
            asked = db.view(AGENT, query=q, budget=QUERY_BUDGET)
            echo(f"== {AGENT}'s view for a question, {QUERY_BUDGET} tokens "
                 f"(ctxdb view --agent {AGENT} --query {q!r} --budget {QUERY_BUDGET}) ==")
            echo(asked.text.rstrip())
            again = db.view(AGENT, query=q, budget=QUERY_BUDGET, seq=asked.seq)
            echo(f"-- {len(asked.items)} items, {asked.tokens}/{asked.budget} tokens, hash {asked.hash}; "
                 f"asked again at seq {asked.seq}: {'identical' if again == asked else 'DIFFERENT'}")
            echo("")
            echo(f"== search (ctxdb search --agent {AGENT} {q!r} -k 5) ==")
            for h in db.search(AGENT, q, k=5):
                text = h.text if len(h.text) <= 90 else h.text[:89] + "…"
                echo(f"  {h.rank}. {h.score:.3f}  {h.key}  {text}")


class _Lines:
    """A file-like object over NDJSON lines (what db.ingest reads)."""

    def __init__(self, lines: list[bytes]) -> None:
        import io

        self._buf = io.BytesIO(b"".join(lines))
        self.name = "support.ndjson"

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(n)

    def readinto(self, b) -> int:
        return self._buf.readinto(b)
