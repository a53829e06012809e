"""Retention: [[retention]] entries erase events older than they allow, through the purge
machinery (content-free stubs, items re-derived, receipts keep placeholders and verify), except
ctxdb's own events and subjects under legal hold; an interrupted run completes or has not
happened."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import ctxdb
import pytest
from conftest import ROOT, Clock, kill_at_random_moments, run_cli
from ctxdb.errors import ConfigError
from ctxdb.verify_purge import scan_store

RULES = """
[[rules]]
on = "chat.msg"
key = "chat:{id}"
text = "{data.who}: {data.text}"
kind = "event"
summarize = { group = "{data.room}", every = 4 }

[[rules]]
on = "note.set"
key = "note:{subject}/{data.k}"
text = "{data.text}"
kind = "fact"

[view]
tokenizer = "whitespace"

[agents.bot]
subjects = ["*"]
budget = 6000

[agents.notes]
subjects = ["user:*"]
kinds = ["fact"]

[agents.audit]
role = "auditor"
"""
RETENTION = """
[[retention]]
type = "chat.*"
retain = "30d"

[[retention]]
kind = "fact"
retain = "365d"
"""
NOW = "2027-06-01T00:00:00Z"
OLD_CHAT, NEW_CHAT = "2027-04-01T00:00:00Z", "2027-05-20T00:00:00Z"   # 61 and 12 days before NOW
OLD_NOTE = "2026-01-01T00:00:00Z"                                        # 516 days before NOW


def chat_mark(i: int) -> str:
    return f"CHATMK-{i:04d}-q"


def note_mark(i: int) -> str:
    return f"NOTEMK-{i:04d}-q"


def events(n: int = 200) -> list[dict]:
    """Half old, half recent; odd i chat messages (3 rooms), even i notes; user:1 is held later."""
    out = []
    for i in range(n):
        old = i < n // 2
        if i % 2:
            out.append({"id": f"c{i}", "source": "chat", "type": "chat.msg", "subject": f"user:{i % 5}",
                        "time": OLD_CHAT if old else NEW_CHAT,
                        "data": {"who": f"u{i % 5}", "text": f"{chat_mark(i)} says hi", "room": f"room{i % 3}"}})
        else:
            out.append({"id": f"n{i}", "source": "crm", "type": "note.set", "subject": f"user:{i % 5}",
                        "time": OLD_NOTE if old else NEW_CHAT, "data": {"k": str(i), "text": f"{note_mark(i)} note"}})
    return out


def expired_marks(n: int = 200, held: str = "user:1") -> tuple[list[str], list[str], list[str]]:
    """(markers that must go, markers of the held subject's old events, markers of recent events)."""
    gone, kept, recent = [], [], []
    for i in range(n):
        m = chat_mark(i) if i % 2 else note_mark(i)
        if i >= n // 2:
            recent.append(m)
        elif f"user:{i % 5}" == held:
            kept.append(m)
        else:
            gone.append(m)
    return gone, kept, recent


def open_db(root: Path, toml: str = RULES + RETENTION, **kw) -> ctxdb.Store:
    cfg = root / "c.toml"
    cfg.write_text(toml)
    kw.setdefault("segment_events", 64)
    kw.setdefault("embedder", None)
    return ctxdb.open(root / "db", config=cfg, clock=kw.pop("clock", None) or Clock(), **kw)


def seed(db, n: int = 200) -> None:
    evs = events(n)
    for j in range(0, len(evs), 50):
        db.append(evs[j:j + 50])
    assert db.wait(timeout=60)


def test_retention_erases_expired_events_and_keeps_history_verifiable(tmp_path):
    db = open_db(tmp_path)
    try:
        seed(db)
        db.hold("user:1", reason="litigation 2027-17")
        gone, kept, recent = expired_marks()
        view = db.view("bot")
        assert any(m in view.text for m in gone)
        did = db.record_decision("bot", view, output="answered")
        notes_view = db.view("notes")
        d_notes = db.record_decision("notes", notes_view)
        db.snapshot()
        end = db.last_seq
        # a dry run says what would go and changes nothing
        files = sorted((p.name, p.stat().st_size) for p in (tmp_path / "db" / "log").iterdir())
        dry = db.retain(now=NOW, dry_run=True)
        assert dry.dry_run and dry.events == len(gone) and dry.held == len(kept) and dry.receipt_seq == 0
        assert [e["events"] for e in dry.entries] == [40, 40]  # 50 old chats and 50 old notes, less user:1's 10 each
        assert dry.entries[0] == {"type": "chat.*", "retain": "30d", "cutoff": "2027-05-02T00:00:00Z", "events": 40}
        assert db.last_seq == end and files == sorted((p.name, p.stat().st_size) for p in (tmp_path / "db" / "log").iterdir())

        rep = db.retain(now=NOW)
        assert rep.events == len(gone) and rep.held == len(kept) and not rep.dry_run
        assert 1 <= rep.segments_rewritten <= rep.segments_total and rep.snapshots == 1
        assert rep.receipts_rewritten == 2 and rep.item_versions >= len(gone)
        # nothing of the expired events is left in any file, in any format; the rest is all there
        assert db.verify_purge("CHATMK-never", gone).ok
        assert not scan_store(tmp_path / "db", kept[:3]).ok
        assert not scan_store(tmp_path / "db", recent[:3]).ok
        # the log: gapless, checksums verified, stubs where the expired events were, one receipt
        evs = list(db.read())
        assert [e.seq for e in evs] == list(range(1, db.last_seq + 1))
        stubs = [e for e in evs if e.subject.startswith("purged:")]
        assert len(stubs) == len(gone) and all(e.data == b"null" and e.seq <= end for e in stubs)
        assert {e.type for e in stubs} == {"chat.msg", "note.set"}
        rec = [e for e in evs if e.type == "ctxdb.retention"]
        assert len(rec) == 1 and rec[0].seq == rep.receipt_seq
        rj = rec[0].json()
        assert rj["events"] == rep.events and rj["entries"] == rep.to_dict()["entries"] and "user:" not in rec[0].data.decode()
        # the views: the expired items are gone for everyone; window summaries are re-derived
        now_view = db.view("bot", auditor="audit")
        assert not any(m in now_view.text for m in gone)
        assert all(m in now_view.text for m in recent[-10:])
        assert any(m in now_view.text for m in kept)
        # receipts still verify; the erased items are placeholders
        a = db.audit(did)
        assert a.verified, a.reasons
        erased = [i for i in a.items if i.status == "purged"]
        assert erased and all(i.note == f"erased by retention at seq {rep.receipt_seq}" and i.text is None for i in erased)
        assert any(i.status == "ok" for i in a.items)
        assert db.audit(d_notes).verified
        r = db.replay_verify()
        assert r.ok, r.mismatches
        # the item store is what a rebuild of the rewritten log gives, reinforcement included
        uses = db._views().items._q("SELECT * FROM uses ORDER BY ALL").to_pylist()
        assert db.rebuild()["identical"]
        assert db._views().items._q("SELECT * FROM uses ORDER BY ALL").to_pylist() == uses
        # re-ingesting an expired event is a no-op (its idempotency key is kept)
        last = db.last_seq
        again = db.append([events()[3]])
        assert again[0] <= end and db.last_seq == last
        # a second run finds nothing more and appends nothing
        rep2 = db.retain(now=NOW)
        assert rep2.events == 0 and rep2.receipt_seq == 0 and db.last_seq == last
        # later events of the same subjects are projected as usual (retention is not a tombstone)
        db.append([{"id": "late", "source": "crm", "type": "note.set", "subject": "user:2", "time": NEW_CHAT,
                    "data": {"k": "late", "text": "LATE-NOTE-q"}}])
        assert db.wait(timeout=60)
        assert "LATE-NOTE-q" in db.view("notes").text
    finally:
        db.close()
    db = open_db(tmp_path)
    try:
        assert db.audit(did).verified
        assert list(db.holds()) == ["user:1"]
    finally:
        db.close()


def test_releasing_a_hold_lets_the_next_run_erase(tmp_path):
    db = open_db(tmp_path)
    try:
        seed(db, 100)
        db.hold("user:1")
        _gone, kept, _ = expired_marks(100)
        assert db.retain(now=NOW).held == len(kept)
        assert not scan_store(tmp_path / "db", kept).ok
        db.hold("user:1", release=True)
        rep = db.retain(now=NOW)
        assert rep.events == len(kept) and rep.held == 0
        assert db.verify_purge("user:1-none", kept).ok
        assert db.replay_verify().ok
    finally:
        db.close()


def test_without_retention_entries_nothing_happens(tmp_path):
    db = open_db(tmp_path, RULES)
    try:
        seed(db, 40)
        last = db.last_seq
        rep = db.retain(now=NOW)
        assert rep.entries == [] and rep.events == 0 and db.last_seq == last
    finally:
        db.close()


@pytest.mark.parametrize("entry, field, words", [
    ('type = "chat.*"\nkind = "event"\nretain = "1d"', "retention[0]", "exactly one of"),
    ('type = "chat.*"', "retention[0].retain", "missing `retain`"),
    ('type = "chat.*"\nretain = "forever"', "retention[0].retain", "forever"),
    ('type = "chat.*"\nretain = "90 days"', "retention[0].retain", "bad duration"),
    ('type = "ctxdb.*"\nretain = "1d"', "retention[0].type", "ctxdb's own events"),
    ('kind = "memo"\nretain = "1d"', "retention[0].kind", "unknown kind"),
    ('type = "chat.[a]"\nretain = "1d"', "retention[0].type", "bad glob"),
    ('type = "chat.*"\nretain = "1d"\nwhen = "x"', "retention[0].when", "unknown key"),
])
def test_bad_retention_entries_are_config_errors(tmp_path, entry, field, words):
    text = RULES + "\n[[retention]]\n" + entry + "\n"
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        ctxdb.config.load_file(f)
    e = ei.value
    assert words in str(e) and e.field == field and e.file == str(f)
    assert e.line is not None and e.line >= text.count("\n", 0, text.index("[[retention]]")) + 1


def test_cli_retain(tmp_path):
    db = open_db(tmp_path)
    try:
        seed(db, 100)
    finally:
        db.close()
    store, cfg = str(tmp_path / "db"), str(tmp_path / "c.toml")
    def cli(*a: str) -> tuple[int, str, str]:
        r = run_cli("retain", "--db", store, "--config", cfg, *a)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    code, out, err = cli("--now", NOW, "--dry-run")
    assert code == 0, err
    assert "would be erased" in out and "type chat.*" in out and "kind fact" in out
    code, out, err = cli("--now", NOW, "--json")
    assert code == 0, err
    rep = json.loads(out)
    gone, _, _ = expired_marks(100, held="nobody")
    assert rep["events"] == len(gone) and rep["receipt_seq"] > 0 and "retain: " in err
    code, out, err = cli("--now", NOW)
    assert code == 0 and "nothing has expired" in out
    code, out, err = cli("--now", "yesterday-ish")
    assert code != 0 and "yesterday-ish" in err


# ---- crash safety ------------------------------------------------------------------------------
def _state(path: Path, gone: list[str], marks_all: int) -> str:
    db = ctxdb.open(path, embedder=None)
    try:
        assert not (path / "purge.json").exists()
        assert not (path / "items.retain.duckdb").exists()
        evs = list(db.read())
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
        receipts = [e for e in evs if e.type == "ctxdb.retention"]
        with_mark = sum(1 for e in evs if b"MK-" in e.data)
        if receipts:
            assert len(receipts) == 1 and with_mark == marks_all - len(gone)
            assert db.verify_purge("nobody", gone[:8] + gone[-8:]).ok
            state = "done"
        else:
            assert with_mark == marks_all
            state = "not done"
        assert db.replay_verify().ok
        return state
    finally:
        db.close()


def test_retention_survives_sigkill_at_random_moments(tmp_path):
    n = 1200
    tmpl = tmp_path / "tmpl"
    tmpl.mkdir()
    db = open_db(tmpl)
    try:
        seed(db, n)
        db.snapshot()
        did = db.record_decision("bot", db.view("bot"))
    finally:
        db.close()
    gone, _, _ = expired_marks(n, held="nobody")
    cfg = str(tmpl / "c.toml")

    def check(work: Path) -> str:
        state = _state(work, gone, n)
        db = ctxdb.open(work, embedder=None)
        try:
            assert db.audit(did).verified
        finally:
            db.close()
        return state

    # until 10 real kills and both outcomes seen (the second-half kills land after the plan is
    # durable: the next open must complete the run)
    kills, seen = kill_at_random_moments(
        tmp_path, tmpl / "db", lambda w: [sys.executable, str(ROOT / "tests" / "retention_worker.py"), str(w), cfg, NOW],
        check, min_kills=10, cap=40, seed=11, need_both=True)
    assert kills >= 10, (kills, seen)
    assert seen["done"] >= 1 and seen["not done"] >= 1, seen
