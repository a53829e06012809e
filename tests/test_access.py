"""Access control and tombstones: every read path an agent has (current, as-of, valid-at and
query-aware views, explain, search, subscribe, log reads) stays inside its grants; the escape
attempts here must all fail with AccessDenied or come back without the forbidden data."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import ctxdb
import pytest
from conftest import Clock, run_cli
from ctxdb.embed import MiniLM

T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)

RULES = """
[[rules]]
on = "note.set"
key = "note:{subject}/{data.k}"
text = "{data.text}"
kind = "fact"
tags = ["{data.tag}"]

[view]
tokenizer = "whitespace"
"""

AGENTS = """
[agents.bot]
subjects = ["user:42", "order:*"]
deny_tags = ["pii"]

[agents.wide]
subjects = ["user:*"]

[agents.audit]
role = "auditor"
"""

NARROW = """
[agents.bot]
subjects = ["order:*"]
deny_tags = ["pii"]

[agents.wide]
subjects = ["user:*"]

[agents.audit]
role = "auditor"
"""

_n = iter(range(10 ** 9))


def note(subject: str, k: str, text: str, tag: str = "ok") -> dict:
    return {"id": f"n{next(_n)}", "source": "t", "type": "note.set", "subject": subject,
            "time": "2027-01-15T07:00:00Z", "data": {"k": k, "text": text, "tag": tag}}


def open_db(root: Path, agents: str = AGENTS, name: str = "c.toml", **kw) -> ctxdb.Store:
    cfg = root / name
    cfg.write_text(RULES + agents)
    return ctxdb.open(root / "db", config=cfg, clock=kw.pop("clock", None) or Clock(T0), **kw)


FORBIDDEN = ["SECRET-42x", "SECRET-4", "SECRET-420", "SECRET-pii", "SECRET-team"]


def seed(db) -> int:
    db.append([note("user:42", "a", "allowed fact about 42"),
               note("user:42x", "a", "SECRET-42x lookalike subject"),
               note("user:4", "a", "SECRET-4 prefix subject"),
               note("user:420", "a", "SECRET-420 longer subject"),
               note("user:42", "p", "SECRET-pii tagged fact", tag="pii"),
               note("team:1", "a", "SECRET-team other namespace"),
               note("order:7", "a", "order seven shipped")])
    assert db.wait(timeout=30)
    return db.last_seq


def no_secret(text: str) -> bool:
    return not any(s in text for s in FORBIDDEN)


def test_exact_subject_grant_is_not_a_prefix_match(tmp_path):
    """`user:42` grants user:42 only: not user:42x, user:420 or user:4; deny_tags hold; every read
    path agrees."""
    db = open_db(tmp_path)
    try:
        end = seed(db)
        v = db.view("bot")
        assert "allowed fact about 42" in v.text and "order seven" in v.text and no_secret(v.text)
        assert {i.subject for i in v.items} == {"user:42", "order:7"}
        for w in (db.view("bot", seq=end), db.view("bot", as_of=v.as_of), db.view("bot", explain=True),
                  db.view("bot", valid_at="2027-01-15T07:30:00Z")):
            assert no_secret(w.text) and no_secret(json.dumps(w.to_dict()))
        ex = db.view("bot", explain=True)
        assert {e.key for e in ex.explain} == {"note:user:42/a", "note:order:7/a"}
        # the wide agent's glob sees the lookalikes (they are users), never the pii denial of bot
        wide = db.view("wide").text
        assert "SECRET-42x" in wide and "SECRET-team" not in wide
        # log reads on behalf of an agent
        subjects = {e.subject for e in db.read(agent="bot")}
        assert subjects <= {"user:42", "order:7"} and "user:42" in subjects
        assert {e.subject for e in db.read(agent="bot", subject="user:4*")} == {"user:42"}
        with pytest.raises(ctxdb.AccessDenied, match="user:42x"):
            list(db.read(agent="bot", subject="user:42x"))
        with pytest.raises(ctxdb.AccessDenied):
            list(db.read(agent="mallory"))
        assert all(no_secret(e.data.decode()) for e in db.read(agent="bot"))
    finally:
        db.close()


def test_sql_wildcards_in_subjects_are_literal(tmp_path):
    """A grant for `user:4_` must not match user:42 through SQL LIKE's `_` (past views go through SQL)."""
    db = open_db(tmp_path, '[agents.under]\nsubjects = ["user:4_", "50%"]\n[agents.audit]\nrole = "auditor"\n')
    try:
        db.append([note("user:42", "a", "SECRET-42 not granted"), note("user:4_", "a", "literal underscore"),
                   note("500", "a", "SECRET-500 not granted"), note("50%", "a", "literal percent")])
        assert db.wait(timeout=30)
        end = db.last_seq
        for v in (db.view("under"), db.view("under", seq=end)):
            assert "literal underscore" in v.text and "literal percent" in v.text
            assert "SECRET" not in v.text
    finally:
        db.close()


def test_past_views_after_a_grant_is_revoked(tmp_path):
    """Before the revocation the agent saw user:42; asked after it, even at old positions, it no
    longer does. An auditor still reads the view exactly as it was served."""
    db = open_db(tmp_path)
    try:
        end = seed(db)
        served = db.view("bot")
        assert "allowed fact about 42" in served.text
    finally:
        db.close()
    db = open_db(tmp_path, NARROW, name="narrow.toml")
    try:
        assert db.wait(timeout=30)
        revoked_at = db.last_seq
        assert revoked_at == end + 1
        for v in (db.view("bot"), db.view("bot", seq=end), db.view("bot", as_of=served.as_of),
                  db.view("bot", seq=end, explain=True)):
            assert "allowed fact about 42" not in v.text and "order seven" in v.text
            assert all(not e.key.startswith("note:user") for e in v.explain)
        past = db.view("bot", seq=end, auditor="audit")
        assert (past.text, past.hash) == (served.text, served.hash)
        assert all(e.subject != "user:42" for e in db.read(agent="bot"))
        with pytest.raises(ctxdb.AccessDenied):
            list(db.read(agent="bot", subject="user:42"))
        with pytest.raises(ctxdb.AccessDenied, match="auditor"):
            db.view("bot", seq=end, auditor="wide")
    finally:
        db.close()


def test_subscribe_before_a_policy_change(tmp_path):
    """A subscription opened under the wide grant gets no forbidden item after the grant narrows;
    one whose agent is removed ends with AccessDenied."""
    db = open_db(tmp_path)
    try:
        seed(db)
        sub = db.subscribe("bot")
        gone = db.subscribe("wide")
        first = sub.get(timeout=10)
        assert first is not None and "allowed fact about 42" in first.view.text
        assert gone.get(timeout=10) is not None
        cfg = ctxdb.config.load_file(_write(tmp_path / "n.toml", RULES + NARROW.replace(
            '[agents.wide]\nsubjects = ["user:*"]\n', "")))
        db.append([{"id": "pol-2", "source": "ctxdb", "type": "ctxdb.policy", "subject": "ctxdb:policy",
                    "time": "2027-01-15T09:00:00Z", "data": {"version": 2, "hash": cfg.hash, "config": cfg.raw}}])
        db.append([note("user:42", "b", "SECRET-after the change"), note("order:8", "a", "order eight")])
        assert db.wait(timeout=30)
        seen = []
        while True:
            upd = sub.get(timeout=2)
            if upd is None:
                break
            seen.append(upd.view)
        assert seen and "order eight" in seen[-1].text
        for v in seen:
            if v.policy_version == 2:
                assert "allowed fact about 42" not in v.text
            assert "SECRET-after" not in v.text
        with pytest.raises(ctxdb.AccessDenied, match="wide"):
            for _ in gone:
                pass
        sub.close()
    finally:
        db.close()


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_unknown_agent_and_auditor_errors_are_clear(tmp_path):
    db = open_db(tmp_path)
    try:
        seed(db)
        for call in (lambda: db.view("mallory"), lambda: db.view("mallory", seq=1),
                     lambda: db.subscribe("mallory"), lambda: list(db.read(agent="mallory")),
                     lambda: db.view("bot", auditor="mallory"), lambda: db.view("bot", auditor="bot")):
            with pytest.raises(ctxdb.AccessDenied) as ei:
                call()
            assert "mallory" in str(ei.value) or "auditor" in str(ei.value)
    finally:
        db.close()


def test_forget_tombstone_reaches_every_agent_read_and_keeps_history_for_auditors(tmp_path):
    db = open_db(tmp_path)
    try:
        end = seed(db)
        before = db.view("bot")
        wide_before = db.view("wide")
        assert "allowed fact about 42" in before.text
        t = db.forget("user:42", reason="erasure request 17")
        assert t == end + 1 and db.wait(timeout=30)
        assert db.forgotten() == {"user:42": t}
        db.append([note("user:42", "c", "SECRET-late event after forget"), note("order:7", "b", "order 7 paid")])
        assert db.wait(timeout=30)
        for v in (db.view("bot"), db.view("bot", seq=end), db.view("bot", as_of=before.as_of),
                  db.view("bot", seq=end, explain=True), db.view("wide", seq=end)):
            assert "allowed fact about 42" not in v.text and "SECRET-late" not in v.text
            assert all(i.subject != "user:42" for i in v.items)
            assert all("user:42/" not in e.key for e in v.explain)
        assert "order 7 paid" in db.view("bot").text
        # the auditor reads the views exactly as they were served before the tombstone
        assert db.view("bot", seq=end, auditor="audit").hash == before.hash
        assert db.view("wide", seq=end, auditor="audit").hash == wide_before.hash
        # ... and after it, the subject is gone for the auditor too
        assert "allowed fact about 42" not in db.view("bot", seq=t, auditor="audit").text
        assert all(e.subject != "user:42" for e in db.read(agent="wide"))
        with pytest.raises(ctxdb.BadInput):
            db.forget("user:*")
        with pytest.raises(ctxdb.BadInput):
            db.forget("")
        # a second tombstone is a no-op for the projection
        db.forget("user:42")
        assert db.wait(timeout=30) and db.forgotten() == {"user:42": t}
        rep = db.rebuild()
        assert rep["identical"]
        assert db.view("bot", seq=end, auditor="audit").hash == before.hash
        assert "allowed fact about 42" not in db.view("bot", seq=end).text
    finally:
        db.close()
    db = open_db(tmp_path)  # after a restart, from the stored projector state
    try:
        assert db.forgotten() == {"user:42": t}
        assert "allowed fact about 42" not in db.view("bot", seq=end).text
        assert db.view("bot", seq=end, auditor="audit").hash == before.hash
    finally:
        db.close()


def test_search_with_an_index_full_of_forbidden_items(tmp_path):
    """Most of the index is forbidden near-duplicates of the query; the agent's hits are only
    its own, at the current position, as of an earlier one, and after a tombstone."""
    db = open_db(tmp_path, embedder=MiniLM())
    try:
        evs = [note("user:42", "pw", "the wifi password of the office is kept by Dana")]
        evs += [note(f"user:{42 + i}x", "pw", f"SECRET-42x the wifi password of the office is {i}") for i in range(30)]
        evs += [note("user:42", f"pii{i}", f"SECRET-pii the wifi password is {i}", tag="pii") for i in range(10)]
        db.append(evs)
        assert db.wait(timeout=120)
        end = db.last_seq
        for hits in (db.search("bot", "wifi password of the office", k=10),
                     db.search("bot", "wifi password of the office", k=10, seq=end)):
            assert [h.subject for h in hits] == ["user:42"] and "Dana" in hits[0].text
        v = db.view("bot", query="wifi password of the office")
        assert "Dana" in v.text and no_secret(v.text)
        db.forget("user:42")
        assert db.wait(timeout=120)
        assert db.search("bot", "wifi password of the office", k=10) == []
        assert db.search("bot", "wifi password of the office", k=10, seq=end) == []
        assert [h.subject for h in db.search("bot", "wifi password", seq=end, auditor="audit")] == ["user:42"]
    finally:
        db.close()


def test_cli_forget_and_agent_log(tmp_path):
    db = open_db(tmp_path)
    try:
        seed(db)
    finally:
        db.close()
    path, cfg = str(tmp_path / "db"), str(tmp_path / "c.toml")
    r = run_cli("forget", "user:42", "--db", path, "--config", cfg, "--reason", "ticket 9", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["subject"] == "user:42" and out["seq"] > 0 and out["purged"] is False
    r = run_cli("view", "--agent", "bot", "--db", path, "--config", cfg)
    assert r.returncode == 0 and b"allowed fact about 42" not in r.stdout and b"order seven" in r.stdout
    r = run_cli("log", "--agent", "bot", "--db", path)
    assert r.returncode == 0
    subjects = {json.loads(ln)["subject"] for ln in r.stdout.decode().splitlines()}
    assert subjects == {"order:7"}
    r = run_cli("log", "--agent", "bot", "--subject", "team:1", "--db", path)
    assert r.returncode == 77 and b"team:1" in r.stderr and b"Traceback" not in r.stderr
    r = run_cli("forget", "user:*", "--db", path, "--config", cfg)
    assert r.returncode == 65 and b"glob" in r.stderr
