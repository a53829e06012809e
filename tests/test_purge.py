"""Purge: a subject's personal data leaves every file of the store (proved by scanning every file
by its format), nobody else's history changes, receipts still verify, and a purge killed with
SIGKILL at any moment either completes on the next open or has not happened."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import ctxdb
import pytest
from conftest import ROOT, Clock, kill_at_random_moments, run_cli
from ctxdb.embed import MiniLM
from ctxdb.verify_purge import scan_store

RULES = """
[[rules]]
on = "note.set"
key = "note:{subject}/{data.k}"
text = "{data.text}"
kind = "fact"

[[rules]]
on = "chat.msg"
key = "chat:{id}"
text = "{data.who}: {data.text}"
kind = "event"
summarize = { group = "{data.room}", every = 4 }

[view]
tokenizer = "whitespace"

[agents.bot]
subjects = ["user:*"]
budget = 4000

[agents.seven]
subjects = ["user:7", "room:*"]

[agents.rooms]
subjects = ["room:*"]
kinds = ["event", "summary"]

[agents.audit]
role = "auditor"
"""

NOTES_ONLY = RULES.split("[[rules]]\non = \"chat.msg\"")[0] + RULES[RULES.index("[view]"):]


def marker(i: int) -> str:
    return f"MARK42-{i:04d}-zq"


def note(i: int, subject: str, text: str, k: str | None = None) -> dict:
    return {"id": f"e{i}", "source": "crm", "type": "note.set", "subject": subject, "time": "2027-01-01T00:00:00Z",
            "data": {"k": k or str(i % 11), "text": text}}


def seed(db, n: int = 300) -> list[str]:
    """n events, every 10th about user:42 (each with a unique marker); returns the markers."""
    evs, marks = [], []
    for i in range(n):
        if i % 10 == 0:
            marks.append(marker(i))
            evs.append(note(i, "user:42", f"{marker(i)} lives at 1 Elm Street", k=f"k{i}"))
        else:
            evs.append(note(i, "user:7" if i % 3 else "user:8", f"ordinary note {i}"))
    for j in range(0, len(evs), 50):
        db.append(evs[j:j + 50])
    assert db.wait(timeout=60)
    return marks


def open_db(root: Path, toml: str = RULES, **kw) -> ctxdb.Store:
    cfg = root / "c.toml"
    cfg.write_text(toml)
    kw.setdefault("segment_events", 64)
    return ctxdb.open(root / "db", config=cfg, clock=kw.pop("clock", None) or Clock(), **kw)


def test_purge_erases_every_trace_and_keeps_everyone_elses_history(tmp_path):
    db = open_db(tmp_path, NOTES_ONLY, embedder=MiniLM())
    try:
        marks = seed(db)
        end = db.last_seq
        before = {a: db.view(a) for a in ("bot", "seven")}
        assert any(m in before["bot"].text for m in marks)
        did = db.record_decision("bot", before["bot"], output="sent the letter")
        d7 = db.record_decision("seven", before["seven"])
        db.snapshot()
        hits = db.search("bot", "who lives at Elm Street", k=3)
        assert hits and hits[0].subject == "user:42"
        # the scanner sees the markers before the purge (in the WAL, segments, items, snapshots)
        pre = scan_store(tmp_path / "db", ["user:42", *marks[:3]])
        assert not pre.ok and {r.format for r in pre.residues} >= {"parquet", "duckdb"}
        rep = db.purge("user:42")
        assert rep.events == len(marks) + 1  # its events and its tombstone
        assert rep.segments_rewritten >= 1 and rep.segments_rewritten <= rep.segments_total
        assert rep.item_versions == len(marks) and rep.receipts_rewritten == 1 and rep.snapshots == 1
        assert rep.embeddings == len(marks) and rep.items_path == "copy"
        # not a trace of the subject or its texts in any file, in any format
        post = db.verify_purge("user:42", marks)
        assert post.ok, [str(r) for r in post.residues][:5]
        assert post.files > 5
        # the log verifies and is gapless; the stubs keep seq, type and recorded_at
        evs = list(db.read())
        assert [e.seq for e in evs] == list(range(1, db.last_seq + 1))
        stubs = [e for e in evs if e.subject.startswith("purged:")]
        assert len(stubs) == rep.events and all(e.data == b"null" for e in stubs)
        assert {e.type for e in stubs} == {"note.set", "ctxdb.forget"}
        receipt = [e for e in evs if e.type == "ctxdb.purge"]
        assert len(receipt) == 1 and receipt[0].seq == rep.receipt_seq
        rj = receipt[0].json()
        assert rj["events"] == rep.events and rj["stub_subject"] == rep.subject_hash and "user:42" not in receipt[0].data.decode()
        # other agents' views at the same positions keep their hashes; the auditor sees no trace
        assert db.view("seven", seq=end).hash == before["seven"].hash
        assert db.view("seven", seq=end, auditor="audit").hash == before["seven"].hash
        assert not any(m in db.view("bot", seq=end, auditor="audit").text for m in marks)
        # the receipts still verify: the purged items are placeholders with their kept hashes
        a = db.audit(did)
        assert a.verified, a.reasons
        purged = [i for i in a.items if i.status == "purged"]
        assert purged and all(i.text is None and i.note == f"purged at seq {rep.receipt_seq}" for i in purged)
        assert all(i.status == "ok" for i in a.items if i.status != "purged")
        assert db.audit(d7).verified
        r = db.replay_verify()
        assert r.ok, r.mismatches
        # search no longer finds it, for anyone
        assert all(h.subject != "user:42" for h in db.search("bot", "who lives at Elm Street", k=5, auditor="audit"))
        # re-ingesting the original events is still a no-op (idempotency keys survive)
        last = db.last_seq
        again = db.append([note(0, "user:42", f"{marks[0]} lives at 1 Elm Street", k="k0")])
        assert again[0] < end and db.last_seq == last
        assert next(db.read(from_seq=again[0], to_seq=again[0])).subject == rep.subject_hash
        # a later event about the purged subject is not projected
        db.append([note(10_000, "user:42", "MARK42-late-zq")])
        assert db.wait(timeout=60)
        assert "MARK42-late-zq" not in db.view("bot", auditor="audit").text
        assert db.rebuild()["identical"]
        assert db.replay_verify().ok   # (a replay checks subjects against the purge from its tombstone on)
    finally:
        db.close()
    db = open_db(tmp_path, NOTES_ONLY, embedder=MiniLM())
    try:
        assert db.view("seven", seq=end).hash == before["seven"].hash
        assert db.audit(did).verified
    finally:
        db.close()


def test_purge_re_derives_window_summaries_without_the_subject(tmp_path):
    """A room summary folds messages of several users: after purging one, the summary is
    re-derived from the others' messages, and nothing of the purged user's is left."""
    db = open_db(tmp_path)
    try:
        msgs = []
        for i in range(12):
            who = "user:42" if i % 4 == 1 else f"user:{7 + i % 2}"
            text = f"MARK42-chat-{i}" if who == "user:42" else f"hello number {i}"
            msgs.append({"id": f"c{i}", "source": "chat", "type": "chat.msg", "subject": who,
                         "time": f"2027-01-01T00:{i:02d}:00Z", "data": {"who": who, "room": "room:1", "text": text}})
        db.append(msgs)
        assert db.wait(timeout=30)
        v = db.view("rooms")
        assert any("MARK42-chat" in i.text for i in v.items if i.kind == "summary")
        rep = db.purge("user:42")
        assert rep.items_path == "replay"
        v2 = db.view("rooms", auditor="audit")
        summaries = [i for i in v2.items if i.kind == "summary"]
        assert summaries and all("MARK42" not in i.text for i in summaries)
        assert any("hello number 0" in i.text for i in summaries)
        assert db.verify_purge("user:42", ["MARK42-chat"]).ok
        assert db.replay_verify().ok
    finally:
        db.close()


def test_hold_blocks_purge_and_release_allows_it(tmp_path):
    db = open_db(tmp_path, NOTES_ONLY)
    try:
        seed(db, 40)
        h = db.hold("user:42", reason="litigation 2027-14")
        assert db.holds() == {"user:42": h}
        with pytest.raises(ctxdb.AccessDenied, match="legal hold"):
            db.purge("user:42")
        assert db.verify_purge("user:42").residues  # nothing was erased
        db.hold("user:42", release=True)
        assert db.holds() == {}
        assert db.purge("user:42").events > 0
    finally:
        db.close()


def test_purge_bad_input(tmp_path):
    db = open_db(tmp_path, NOTES_ONLY)
    try:
        seed(db, 20)
        for bad in ("", "user:*", "agent:bot", "purged:abc"):
            with pytest.raises(ctxdb.BadInput):
                db.purge(bad)
        rep = db.purge("user:nobody")  # nothing to erase: a tombstone and a receipt, no rewrite
        assert rep.events == 1 and rep.item_versions == 0
    finally:
        db.close()
    mem = ctxdb.open_memory(embedder=None)
    with pytest.raises(ctxdb.BadInput, match="disk"):
        mem.purge("user:1")
    mem.close()


def test_cli_forget_purge_and_verify_purge(tmp_path):
    db = open_db(tmp_path, NOTES_ONLY)
    try:
        marks = seed(db, 60)
    finally:
        db.close()
    path, cfg = str(tmp_path / "db"), str(tmp_path / "c.toml")
    r = run_cli("verify-purge", "user:42", "--marker", marks[0], "--db", path)
    assert r.returncode == 1 and marks[0].encode() in r.stdout
    r = run_cli("forget", "user:42", "--purge", "--db", path, "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["purged"] and out["purge"]["events"] == len(marks) + 1
    r = run_cli("verify-purge", "user:42", "--marker", marks[0], "--marker", marks[-1], "--db", path, "--json")
    assert r.returncode == 0, r.stdout
    d = json.loads(r.stdout)
    assert d["ok"] and d["residues"] == [] and d["files"] > 3
    r = run_cli("hold", "user:7", "--db", path, "--config", cfg)
    assert r.returncode == 0
    r = run_cli("forget", "user:7", "--purge", "--db", path, "--config", cfg)
    assert r.returncode == 77 and b"legal hold" in r.stderr


# ---- crash safety ------------------------------------------------------------------------------
def _state(path: Path, marks: list[str]) -> str:
    """'done' or 'not done' (and everything consistent), else an assertion fails."""
    db = ctxdb.open(path, embedder=None)
    try:
        assert not (path / "purge.json").exists()
        evs = list(db.read())  # every segment verified against its checksums
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
        receipts = [e for e in evs if e.type == "ctxdb.purge"]
        own = [e for e in evs if e.subject == "user:42" and e.type == "note.set"]
        if receipts:
            assert len(receipts) == 1 and not own
            assert db.verify_purge("user:42", marks[:5]).ok
            state = "done"
        else:
            assert len(own) == len(marks) and all(marker_in(e) for e in own)
            state = "not done"
        assert db.replay_verify().ok
        return state
    finally:
        db.close()


def marker_in(e) -> bool:
    return "MARK42-" in e.data.decode()


def test_purge_survives_sigkill_at_random_moments(tmp_path):
    tmpl = tmp_path / "tmpl"
    tmpl.mkdir()
    db = open_db(tmpl, NOTES_ONLY, embedder=None)
    try:
        marks = seed(db, 1500)
        db.snapshot()
        did = db.record_decision("bot", db.view("bot"))
        seven = db.view("seven")
    finally:
        db.close()
    cfg = str(tmpl / "c.toml")

    def check(work: Path) -> str:
        state = _state(work, marks)
        db = ctxdb.open(work, embedder=None)
        try:
            assert db.view("seven", seq=seven.seq).hash == seven.hash
            assert db.audit(did).verified
        finally:
            db.close()
        return state

    kills, seen = kill_at_random_moments(
        tmp_path, tmpl / "db", lambda w: [sys.executable, str(ROOT / "tests" / "purge_worker.py"), str(w), cfg, "user:42"],
        check, min_kills=22, cap=45, seed=7)
    assert kills >= 20, (kills, seen)
    assert seen["done"] >= 1  # killed after the plan was durable: completed on reopen


# ---- crypto-shredding --------------------------------------------------------------------------
def test_crypto_shredding_makes_a_copy_taken_before_the_purge_unreadable(tmp_path):
    """With `encrypt_subjects`, the subject's payloads and item texts are ciphertext at rest; the
    purge destroys its key first, so a copy of the store made before the purge (keys kept apart,
    as they should be) can no longer reveal anything of it. Other subjects read as before."""
    keys = tmp_path / "vault"
    toml = NOTES_ONLY + f'\n[privacy]\nencrypt_subjects = ["user:42"]\nkeys_dir = "{keys}"\n'
    db = open_db(tmp_path, toml)
    try:
        marks = seed(db, 120)
        v = db.view("bot")
        assert any(m in v.text for m in marks)                       # readable through the API
        assert all(m in e.data.decode() for e, m in zip(db.read(subject="user:42"), marks))
        db.snapshot()
        db.log.seal(force=True)
        # at rest: no marker in any file of the store, in any format (the key lives in the vault)
        at_rest = scan_store(tmp_path / "db", marks)
        assert at_rest.ok, [str(r) for r in at_rest.residues][:3]
        assert (keys / "keys").is_dir()
        backup = tmp_path / "backup"
        shutil.copytree(tmp_path / "db", backup)
        end = db.last_seq
        seven = db.view("seven", seq=end)
        rep = db.purge("user:42")
        assert rep.key_destroyed and rep.events == len(marks) + 1
        assert db.view("seven", seq=end).hash == seven.hash
    finally:
        db.close()
    # the pre-purge copy, opened with the (live) key vault: the subject's data is gone from it too
    (backup / "LOCK").unlink(missing_ok=True)
    cfg = tmp_path / "b.toml"
    cfg.write_text(toml)
    old = ctxdb.open(backup, config=cfg, embedder=None)
    try:
        own = list(old.read(subject="user:42"))
        assert len(own) == len(marks) and all(e.data == b"null" for e in own)
        assert not any(m in old.view("bot", auditor="audit", seq=end).text for m in marks)
        assert any("ordinary note" in i.text for i in old.view("seven", seq=end).items)
    finally:
        old.close()
