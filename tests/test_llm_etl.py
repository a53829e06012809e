"""Recorded semantic ETL: LLM summaries become derived events; replays never call the model.

A real HTTP server on loopback serves canned chat completions (and failures)."""
from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

import ctxdb
from conftest import Clock
from test_summarize import Reply, completion, server  # noqa: F401 (the loopback server fixture)

TOML = """
[summarizer]
kind = "openai"
base_url = "{url}"
model = "canned-1"
timeout = "2s"
max_retries = 1
backoff = "10ms"

[[rules]]
on = "comment.added"
key = "comment:{{id}}"
text = "{{data.author}}: {{data.text}}"
kind = "event"
summarize = {{ group = "{{subject}}", every = 3, llm = true, instruction = "Summarize the thread." }}

[[rules]]
on = "ticket.opened"
key = "ticket:{{subject}}"
text = "{{data.body}}"
kind = "fact"
llm = {{ instruction = "One sentence: what does the customer want?" }}

[agents.bot]
budget = 500
[view]
tokenizer = "whitespace"
"""


def comment(i, text, subject="ticket:1"):
    return {"id": f"c{i}", "source": "test", "type": "comment.added", "subject": subject,
            "time": f"2027-01-10T09:0{i}:00Z", "data": {"author": "ann", "text": text}}


def cfg(tmp_path: Path, server) -> Path:
    p = tmp_path / "ctxdb.toml"
    p.write_text(TOML.format(url=server.base_url))
    return p


def until(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def texts(v) -> list[str]:
    return [i.text for i in v.items]


def test_window_summary_is_a_derived_event_and_replays_never_call_the_model(tmp_path, server):
    server.queue(Reply(500, "overloaded"), Reply(500, "overloaded"),  # first attempt: 2 tries, fails
                 Reply(200, completion("Ann reported a broken hinge and asked for a refund.")))
    db = ctxdb.open(tmp_path / "db", config=cfg(tmp_path, server), clock=Clock(), embedder=None)
    try:
        t0 = time.monotonic()
        db.append([comment(1, "my laptop hinge broke"), comment(2, "it is two weeks old"),
                   comment(3, "I want a refund")])
        assert time.monotonic() - t0 < 5          # ingest never waits for the endpoint
        assert db.wait(timeout=20)
        v = db.view("bot")
        # the raw comments stay until the summary arrives
        assert texts(v) == ["ann: my laptop hinge broke", "ann: it is two weeks old", "ann: I want a refund"]
        assert db.stats()["llm_requests_open"] == 1
        # the first attempt failed (500 twice); the worker retries later: make that now
        assert until(lambda: db._llm.failures >= 1)
        db._llm._retry.clear()
        db._llm.poke()
        assert until(lambda: len(list(db.read(type="ctxdb.llm.output"))) == 1)
        assert db.wait(timeout=20)
        ev = list(db.read(type="ctxdb.llm.output"))[0]
        d = ev.json()
        assert d["output"] == "Ann reported a broken hinge and asked for a refund."
        assert d["model"].startswith("openai:canned-1@127.0.0.1") and len(d["prompt_hash"]) == 32
        assert d["source_seqs"] == [2, 3, 4] and d["parts"] == ["comment:c1", "comment:c2", "comment:c3"]
        assert "texts" not in d                    # the inputs stay in their own events
        after = db.view("bot")
        assert texts(after) == ["Ann reported a broken hinge and asked for a refund."]
        item = after.items[0]
        assert item.kind == "summary" and set(item.lineage_seqs) == {2, 3, 4, ev.seq}
        sent = server.requests[-1]["json"]
        assert sent["model"] == "canned-1" and "Summarize the thread." in sent["messages"][-1]["content"]
        assert "my laptop hinge broke" in sent["messages"][-1]["content"]
        assert db.stats()["llm_requests_open"] == 0
        n_requests = len(server.requests)
        before = db.view("bot", seq=v.seq)
        assert before == v                         # the past view still shows the raw comments
        rep = db.rebuild()
        assert rep["identical"]
        assert db.view("bot") == after and db.view("bot", seq=v.seq) == v
        assert len(server.requests) == n_requests  # rebuild and as-of views never called the model
    finally:
        db.close()
    server.httpd.shutdown()                          # the endpoint is gone: replays do not care
    db = ctxdb.open(tmp_path / "db", config=cfg(tmp_path, server), clock=Clock(), embedder=None)
    try:
        (tmp_path / "db" / "items.duckdb").unlink(missing_ok=True)
    finally:
        db.close()
    db = ctxdb.open(tmp_path / "db", config=cfg(tmp_path, server), clock=Clock(), embedder=None)
    try:
        assert db.wait(timeout=20)
        assert texts(db.view("bot")) == ["Ann reported a broken hinge and asked for a refund."]
        assert len(server.requests) == n_requests
    finally:
        db.close()


def test_per_event_summary_replaces_the_text_and_failures_keep_the_raw_item(tmp_path, server):
    server.queue(*[Reply(503, "down")] * 2)
    db = ctxdb.open(tmp_path / "db", config=cfg(tmp_path, server), clock=Clock(), embedder=None)
    try:
        db.append([{"id": "t1", "source": "test", "type": "ticket.opened", "subject": "ticket:9",
                    "time": "2027-01-10T09:00:00Z",
                    "data": {"body": "Hello, I ordered a blue kettle (order 5531) but got a red one. Swap please."}}])
        assert db.wait(timeout=20)
        assert until(lambda: db._llm.failures >= 1)
        s = db.stats()
        assert s["llm_requests_open"] == 1 and "503" in s["llm_last_error"]
        assert texts(db.view("bot"))[0].startswith("Hello, I ordered a blue kettle")
        # more events flow while the endpoint is down
        db.append([comment(1, "still waiting", subject="ticket:9")])
        assert db.wait(timeout=20)
        server.queue(Reply(200, completion("Customer wants the red kettle swapped for the blue one (order 5531).")))
        db._llm._retry.clear()
        db._llm.poke()
        assert until(lambda: db.stats().get("llm_requests_open") == 0 and db.wait(timeout=5)
                     and "swapped" in " ".join(texts(db.view("bot"))))
        v = db.view("bot")
        t = next(i for i in v.items if i.key == "ticket:ticket:9")
        assert t.text == "Customer wants the red kettle swapped for the blue one (order 5531)."
        assert t.kind == "fact"
    finally:
        db.close()


def test_template_summarizer_is_the_default_and_deterministic(tmp_path):
    p = tmp_path / "ctxdb.toml"
    p.write_text(TOML[TOML.index("[[rules]]"):].format())    # no [summarizer]: the template one
    db = ctxdb.open(tmp_path / "db", config=p, clock=Clock(), embedder=None)
    try:
        db.append([comment(i, f"note {i}") for i in range(1, 4)])
        assert until(lambda: db.wait(timeout=5) and db.stats().get("llm_requests_open") == 0)
        assert db.wait(timeout=20)
        ev = list(db.read(type="ctxdb.llm.output"))
        assert len(ev) == 1 and ev[0].json()["model"] == "template/1"
        assert texts(db.view("bot")) == ["3 items: ann: note 1; ann: note 2; ann: note 3"]
    finally:
        db.close()


def test_config_errors_for_llm_rules(tmp_path):
    from ctxdb.config import loads
    from ctxdb.errors import ConfigError

    with pytest.raises(ConfigError, match="llm"):
        loads('[[rules]]\non = "a"\nkey = "k"\ntext = "t"\nllm = "yes"\n')
    with pytest.raises(ConfigError, match="summarizer"):
        loads('[summarizer]\nkind = "openai"\nmodel = "m"\n')
    with pytest.raises(ConfigError, match="llm"):
        loads('[[rules]]\non = "a"\nkey = "k"\ntext = "t"\nsummarize = { group = "g", every = 2, llm = 1 }\n')
    assert msgspec.json.encode(loads('[summarizer]\nkind = "template"\n').summarizer) == b'{"kind":"template"}'
