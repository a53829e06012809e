"""Live views: subscriptions (sync and async), resuming from the checkpoint after a restart, one
agent's trouble not blocking the others, and the `ctxdb view / rebuild / snapshot` commands."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import ctxdb
from conftest import Clock
import duckdb
import pytest
from ctxdb.projector import Upsert
from ctxdb.view import BudgetError

US = 1_000_000
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
WAIT = 10          # generous: the update must come; how fast is not asserted



def at(hours: float) -> str:
    return datetime.fromtimestamp(T0.timestamp() + hours * 3600, UTC).isoformat().replace("+00:00", "Z")


TOML = """
[[rules]]
on = "fact.set"
key = "fact:{data.k}"
text = "{data.text}"
kind = "fact"

[[rules]]
on = "fact.unset"
retract = "fact:{data.k}"

[[rules]]
on = "pin.set"
key = "pin:{data.k}"
text = "{data.text}"
kind = "persona"
pinned = true

[agents.bot]
subjects = ["user:*"]
budget = 500

[agents.ops]
subjects = ["ops:*"]
budget = 500

[agents.audit]
role = "auditor"

[view]
tokenizer = "whitespace"
"""

_n = iter(range(1, 10 ** 9))


def fact(k: str, text: str, subject: str = "user:1", type: str = "fact.set", hours: float = -1) -> dict:
    return {"id": f"f{next(_n)}", "source": "t", "type": type, "subject": subject, "time": at(hours),
            "data": {"k": k, "text": text}}


@pytest.fixture
def db(tmp_path):
    (tmp_path / "ctxdb.toml").write_text(TOML)
    store = ctxdb.open(tmp_path / "store", config=tmp_path / "ctxdb.toml", clock=Clock(T0))
    yield store
    store.close()


def keys(view) -> list[str]:
    return sorted(i.key for i in view.items)


# ---- subscriptions ---------------------------------------------------------------------------
def test_first_update_is_the_current_view_then_changes(db):
    db.append([fact("a", "alpha")])
    assert db.wait(timeout=30)
    with db.subscribe("bot") as sub:
        first = sub.get(timeout=WAIT)
        assert first is not None
        cur = db.view("bot")
        assert first.view.seq == cur.seq == db.last_seq and first.view.text == cur.text
        assert first.added == ("fact:a",) and first.removed == () and first.changed == ()
        s = db.append([fact("b", "bravo")])[0]
        upd = sub.get(timeout=WAIT)
        assert upd is not None
        assert upd.view.seq == s and upd.added == ("fact:b",) and upd.removed == () and upd.changed == ()
        assert upd.view.text == db.view("bot", seq=s).text and upd.view.hash == db.view("bot", seq=s).hash
        s = db.append([fact("a", "alpha two", hours=-0.5)])[0]
        upd = sub.get(timeout=WAIT)
        assert upd is not None and upd.view.seq == s
        assert (upd.added, upd.removed, upd.changed) == ((), (), ("fact:a",))
        assert "alpha two" in upd.view.text
        s = db.append([fact("b", "", type="fact.unset", hours=-0.2)])[0]
        upd = sub.get(timeout=WAIT)
        assert upd is not None and upd.view.seq == s
        assert (upd.added, upd.removed, upd.changed) == ((), ("fact:b",), ())
        assert keys(upd.view) == ["fact:a"]


def test_no_update_for_an_append_the_agent_cannot_see(db):
    db.append([fact("a", "alpha")])
    assert db.wait(timeout=30)
    with db.subscribe("bot") as sub, db.subscribe("ops") as ops:
        assert sub.get(timeout=WAIT) is not None
        assert ops.get(timeout=WAIT) is not None
        s_ops = db.append([fact("o", "ops only", subject="ops:1")])[0]
        s_denied = db.append([fact("u", "another tenant", subject="users:1")])[0]
        assert db.wait(timeout=30)
        o = ops.get(timeout=WAIT)
        # one update (the two commits may be projected together)
        assert o is not None and o.view.seq in (s_ops, s_denied) and o.added == ("fact:o",)
        assert sub.get(timeout=1.0) is None                  # nothing the bot can see changed
        assert ops.get(timeout=0.2) is None
        assert keys(db.view("bot")) == ["fact:a"] and db.view("bot").seq == s_denied
        s = db.append([fact("c", "charlie")])[0]
        upd = sub.get(timeout=WAIT)
        assert upd is not None and upd.view.seq == s and upd.added == ("fact:c",)
        assert ops.get(timeout=0.5) is None


def test_every_subscriber_gets_the_update_and_close_ends_iteration(db):
    db.append([fact("a", "alpha")])
    assert db.wait(timeout=30)
    subs = [db.subscribe("bot") for _ in range(3)]
    got: list[list] = [[] for _ in subs]

    def consume(i):
        for upd in subs[i]:                                 # ends when the subscription closes
            got[i].append(upd)

    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    s = db.append([fact("b", "bravo")])[0]
    assert db.wait(timeout=30)
    deadline = threading.Event()
    for _ in range(WAIT * 10):
        if all(len(g) >= 2 for g in got):
            break
        deadline.wait(0.1)
    for sub in subs:
        sub.close()
    for t in threads:
        t.join(timeout=WAIT)
        assert not t.is_alive(), "iteration did not end when the subscription closed"
    for g in got:
        assert [u.view.seq for u in g] == [s - 1, s]
        assert g[1].added == ("fact:b",)
    assert subs[0].get(timeout=0.1) is None


def test_async_iteration(db):
    db.append([fact("a", "alpha")])
    assert db.wait(timeout=30)

    async def main():
        sub = db.subscribe("bot")
        seen = []

        async def consume():
            async for upd in sub:
                seen.append(upd)
                if len(seen) == 3:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        s1 = (await asyncio.to_thread(db.append, [fact("b", "bravo")]))[0]
        await asyncio.to_thread(db.wait, None, 30)
        s2 = (await asyncio.to_thread(db.append, [fact("c", "charlie")]))[0]
        await asyncio.wait_for(task, WAIT * 2)
        sub.close()
        return seen, s1, s2

    seen, s1, s2 = asyncio.run(main())
    assert [u.view.seq for u in seen] == [s1 - 1, s1, s2]
    assert [u.added for u in seen] == [("fact:a",), ("fact:b",), ("fact:c",)]
    assert keys(seen[-1].view) == ["fact:a", "fact:b", "fact:c"]

    async def after_close():
        sub = db.subscribe("bot")
        assert (await sub.__anext__()).view.seq == s2
        sub.close()
        return [u async for u in sub]

    assert asyncio.run(after_close()) == []


def test_subscribing_to_an_unknown_agent_is_denied(db):
    db.append([fact("a", "alpha")])
    with pytest.raises(ctxdb.AccessDenied):
        db.subscribe("mallory")


def test_wait(db):
    s = db.append([fact("a", "alpha")])[0]
    assert db.wait(s, timeout=30) is True
    assert db.stats()["projected_seq"] == s and db.stats()["projector_lag"] == 0
    assert db.wait(s + 5, timeout=0.3) is False


def test_pinned_overflow_of_one_agent_does_not_break_the_others(tmp_path):
    """`small`'s pinned items outgrow its budget: that is its own error (BudgetError on its view);
    other agents keep getting views and updates."""
    toml = TOML.replace("[view]", '[agents.a_small]\nbudget = 40\n\n[agents.z_other]\nbudget = 5000\n\n[view]')
    (tmp_path / "c.toml").write_text(toml)
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "c.toml", clock=Clock(T0))
    try:
        db.append([fact("a", "alpha")])
        assert db.wait(timeout=30)
        subs = {a: db.subscribe(a) for a in ("bot", "z_other")}
        for s in subs.values():
            assert s.get(timeout=WAIT) is not None
        s1 = db.append([fact("p", " ".join(["word"] * 100), type="pin.set")])[0]
        assert db.wait(timeout=30)
        with pytest.raises(BudgetError):
            db.view("a_small")
        for a, sub in subs.items():
            assert db.view(a).seq == s1
            upd = sub.get(timeout=WAIT)
            assert upd is not None and upd.view.seq == s1 and upd.added == ("pin:p",), a
        s2 = db.append([fact("b", "bravo")])[0]
        assert db.wait(timeout=30)
        for a, sub in subs.items():
            upd = sub.get(timeout=WAIT)
            assert upd is not None and upd.view.seq == s2 and upd.added == ("fact:b",), a
    finally:
        db.close()


def settle(db, seq: int) -> None:
    """Wait until `seq` is projected, riding out BudgetErrors of some agent's live view (this
    test is about what reaches the item store, not about who gets the error)."""
    for _ in range(100):
        try:
            if db.wait(seq, timeout=1):
                return
        except BudgetError:
            threading.Event().wait(0.1)
    raise AssertionError(f"seq {seq} was never projected")


def test_an_agents_budget_error_loses_no_projected_items(tmp_path):
    """Whatever happens to one agent's view, every projected event reaches the item store: past
    views and rebuilds see it."""
    toml = TOML.replace("[view]", '[[rules]]\non = "pin.unset"\nretract = "pin:{data.k}"\n\n'
                                  '[agents.a_small]\nbudget = 40\n\n[view]')
    (tmp_path / "c.toml").write_text(toml)
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "c.toml", clock=Clock(T0))
    try:
        db.append([fact("a", "alpha")])
        assert db.wait(timeout=30)
        s_pin = db.append([fact("p", " ".join(["word"] * 100), type="pin.set")])[0]
        settle(db, s_pin)
        s_b = db.append([fact("b", "bravo")])[0]
        settle(db, s_b)
        s_un = db.append([fact("p", "", type="pin.unset", hours=-0.1)])[0]   # a_small fits again
        settle(db, s_un)
    finally:
        db.close()
    versions = {}
    con = duckdb.connect(str(tmp_path / "store" / "items.duckdb"), read_only=True)
    try:
        for k, f, t in con.execute("SELECT key, from_seq, to_seq FROM item_versions WHERE op = 'upsert'").fetchall():
            versions[k] = (f, t)
        cp = con.execute("SELECT seq FROM checkpoints").fetchone()[0]
    finally:
        con.close()
    assert cp == s_un
    assert versions.get("pin:p") == (s_pin, s_un) and versions.get("fact:b") == (s_b, None), versions
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "c.toml")
    try:
        assert keys(db.view("a_small")) == ["fact:a", "fact:b"] and db.view("a_small").seq == s_un
        assert keys(db.view("bot", seq=s_b)) == ["fact:a", "fact:b", "pin:p"]
        assert db.rebuild()["identical"]
    finally:
        db.close()


# ---- write-behind and quiet-time refresh ------------------------------------------------------
def wait_until(cond, timeout: float = 10.0) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if cond():
            return True
        ev.wait(0.02)
    return cond()


def _writer_db(tmp_path: Path):
    """A store with the test config, and a function counting the versions in its item store."""
    (tmp_path / "c.toml").write_text(TOML)
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "c.toml", clock=Clock(T0))
    items = db._views().items
    return db, lambda: items._q("SELECT count(*) AS n FROM item_versions").column("n")[0].as_py()


def test_the_writer_thread_writes_behind_and_a_failed_write_is_retried(tmp_path, monkeypatch):
    """Projected versions reach the item store from the writer thread without anyone reading;
    a write that fails there is kept and retried first, so the store ends with every version in
    order (the same as a rebuild's)."""
    db, stored = _writer_db(tmp_path)
    try:
        eng = db._views()
        items = eng.items
        db.append([fact(f"k{i}", f"fact {i}") for i in range(5)])
        assert db.wait(timeout=30)
        assert wait_until(lambda: stored() == 5)          # written behind: no reader asked for it
        real = type(items).write_many
        failed: list[int] = []

        def flaky(self, wbs):
            if not failed and threading.current_thread().name == "ctxdb-writer":
                failed.append(len(wbs))
                raise ctxdb.CtxdbError("disk said no")
            return real(self, wbs)
        monkeypatch.setattr(type(items), "write_many", flaky)
        s1 = db.append([fact("k1", "fact 1 again", hours=-0.5)])[0]
        assert db.wait(s1, timeout=30)
        assert wait_until(lambda: bool(failed))
        assert wait_until(lambda: eng.write_error is not None or stored() == 6)
        s2 = db.append([fact("k9", "fact 9")])[0]
        assert db.wait(s2, timeout=30)
        # retried by the writer, in order, with no reader asking
        assert wait_until(lambda: stored() == 7)
        assert eng.write_error is None
        assert items._q("SELECT seq FROM checkpoints WHERE projector = 'items'").column("seq")[0].as_py() == s2
        assert "fact 1 again" in db.view("bot", seq=s1).text and "fact 1 again" not in db.view("bot", seq=s1 - 1).text
        assert db.rebuild()["identical"]
    finally:
        db.close()


def test_the_writer_waits_for_a_quiet_log_unless_versions_pile_up(tmp_path, monkeypatch):
    """While commits keep coming, the item store write (a DuckDB commit, which contends with
    pushes for the GIL and the disk) waits: until the log is quiet, or until enough versions or
    seconds have piled up."""
    from ctxdb import live
    monkeypatch.setattr(live, "QUIET_SECONDS", 60.0)      # the log never counts as quiet here
    db, stored = _writer_db(tmp_path)
    try:
        eng = db._views()
        s = db.append([fact(f"k{i}", f"fact {i}") for i in range(3)])[-1]
        assert db.wait(s, timeout=30)
        threading.Event().wait(1.5)                       # the old writer wrote after 1 s
        assert stored() == 0 and eng._pending_versions == 3
        monkeypatch.setattr(live, "WRITE_BEHIND_VERSIONS", 5)
        s = db.append([fact(f"j{i}", f"more {i}") for i in range(2)])[-1]
        assert db.wait(s, timeout=30)
        assert wait_until(lambda: stored() == 5)          # 5 pending: written without a quiet log
        monkeypatch.setattr(live, "QUIET_SECONDS", 0.05)
        s = db.append([fact("q", "quiet")])[0]
        assert db.wait(s, timeout=30)
        assert wait_until(lambda: stored() == 6)          # and once the log is quiet
        assert db.view("bot", seq=s).hash == db.view("bot").hash
    finally:
        db.close()


def test_views_of_agents_without_subscribers_are_ready_when_the_log_goes_quiet(db):
    db.append([fact("a", "alpha"), fact("o", "ops one", subject="ops:1")])
    assert db.wait(timeout=30)
    eng = db._views()
    assert db.view("ops").seq == db.last_seq                 # read once: materialized from now on
    assert "audit" not in eng._views                          # never read: nothing kept fresh
    with db.subscribe("bot") as sub:
        assert sub.get(timeout=WAIT) is not None
        s = db.append([fact("b", "bravo")])[0]
        upd = sub.get(timeout=WAIT)
        assert upd is not None and upd.view.seq == s
        # the ops view is re-assembled when the log goes quiet, and equals the past view
        assert wait_until(lambda: eng._views["ops"].seq == s)
        assert eng._views["ops"].hash == db.view("ops", seq=s).hash
    s = db.append([fact("o", "ops two", subject="ops:1", hours=-0.5)])[0]
    assert db.wait(s, timeout=30)
    v = db.view("ops")                                      # read before the quiet refresh, or after
    assert v.seq == s and "ops two" in v.text and v.hash == db.view("ops", seq=s).hash


def test_a_new_subscriber_gets_the_current_view_not_a_stale_one(db, monkeypatch):
    db.append([fact("o", "ops one", subject="ops:1")])
    assert db.wait(timeout=30)
    assert db.view("ops").seq == db.last_seq                 # materialized at this seq
    monkeypatch.setattr(type(db._views()), "_refresh_stale", lambda self: None)  # no quiet-time refresh
    s = db.append([fact("o2", "ops two", subject="ops:1")])[0]
    assert db.wait(s, timeout=30)
    assert db._views()._views["ops"].seq < s                 # what the engine holds is behind
    with db.subscribe("ops") as sub:
        first = sub.get(timeout=WAIT)
        assert first is not None and first.view.seq == s and "ops two" in first.view.text


# ---- restart -----------------------------------------------------------------------------------
def item_store_state(path: Path) -> tuple[int, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        versions = con.execute("SELECT count(*) FROM item_versions").fetchone()[0]
        seq = con.execute("SELECT seq FROM checkpoints WHERE projector = 'items'").fetchone()[0]
        return versions, seq
    finally:
        con.close()


def test_restart_resumes_from_the_checkpoint(tmp_path):
    (tmp_path / "c.toml").write_text(TOML)
    calls: list[int] = []

    def opened():
        store = ctxdb.open(tmp_path / "store", config=tmp_path / "c.toml", clock=Clock(T0))

        @store.rule("py.*")
        def py(event):
            calls.append(event.seq)
            yield Upsert(key=f"py:{event.id}", text=f"python saw {event.id}", kind="fact")
        return store

    db = opened()
    try:
        db.append([fact(f"k{i}", f"fact {i}") for i in range(20)])
        db.append([{"id": f"p{i}", "source": "t", "type": "py.x", "subject": "user:2", "time": at(-1), "data": {}}
                   for i in range(5)])
        assert db.wait(timeout=30)
        st = db.stats()
        assert st["projected_seq"] == db.last_seq and st["projector_lag"] == 0
        before = db.view("bot")
        last = db.last_seq
        assert len(calls) == 5
    finally:
        db.close()
    versions, cp = item_store_state(tmp_path / "store" / "items.duckdb")
    assert cp == last and versions == 25

    calls.clear()
    db = opened()
    try:
        assert db.wait(timeout=30)
        assert db.stats()["projected_seq"] == last
        v = db.view("bot")
        assert v.text == before.text and v.hash == before.hash
        assert calls == []                                      # nothing replayed
        s = db.append([{"id": "p-new", "source": "t", "type": "py.x", "subject": "user:2", "time": at(-0.5),
                        "data": {}}])[0]
        assert db.wait(timeout=30)
        assert calls == [s]                                     # only the new event
        assert db.stats()["projected_seq"] == s
        assert "python saw p-new" in db.view("bot").text
    finally:
        db.close()
    versions, cp = item_store_state(tmp_path / "store" / "items.duckdb")
    assert cp == s and versions == 26


def test_a_new_process_sees_events_appended_while_it_was_away(tmp_path):
    (tmp_path / "c.toml").write_text(TOML)
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "c.toml", clock=Clock(T0))
    try:
        db.append([fact("a", "alpha")])
        assert db.wait(timeout=30)
        first = db.view("bot")
    finally:
        db.close()
    # appended by a process that never built views
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "c.toml", clock=Clock(T0, step=3600))
    try:
        s = db.append([fact("b", "bravo")])[0]
    finally:
        db.close()
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "c.toml")
    try:
        with db.subscribe("bot") as sub:
            upd = sub.get(timeout=WAIT)
            assert upd is not None and upd.view.seq <= s
            if upd.view.seq < s:                    # subscribed before the projection caught up
                assert keys(upd.view) == ["fact:a"]
                upd = sub.get(timeout=WAIT)
                assert upd is not None
            assert upd.view.seq == s and keys(upd.view) == ["fact:a", "fact:b"]
        assert db.view("bot", seq=first.seq).hash == first.hash
    finally:
        db.close()


# ---- the command line ------------------------------------------------------------------------
def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "ctxdb"
    return subprocess.run([str(exe), *args], capture_output=True, timeout=120, cwd=cwd, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture
def cli_store(tmp_path):
    """A closed store with a config, a few commits and a late event; returns (path, views by seq)."""
    (tmp_path / "c.toml").write_text(TOML)
    path = tmp_path / "store"
    db = ctxdb.open(path, config=tmp_path / "c.toml", clock=Clock(T0, step=3600))
    try:
        db.append([fact("a", "alpha", hours=-5)])
        db.append([fact("b", "bravo", hours=-3)])
        db.append([fact("a", "alpha late", hours=-6)])           # late: does not replace alpha
        db.append([fact("c", "charlie", hours=-1), fact("o", "ops thing", subject="ops:1")])
        assert db.wait(timeout=30)
        views = {s: db.view("bot", seq=s) for s in range(1, db.last_seq + 1)}
        valid = db.view("bot", valid_at=at(-5.5))
    finally:
        db.close()
    return path, views, valid


def test_cli_view_text_json_seq_as_of_valid_at(cli_store, tmp_path):
    path, views, valid = cli_store
    last = max(views)
    r = cli("view", "--agent", "bot", "--db", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == views[last].text
    assert views[last].hash in r.stderr.decode()

    r = cli("view", "--agent", "bot", "--db", str(path), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["seq"] == last and d["text"] == views[last].text and d["hash"] == views[last].hash
    assert sorted(i["key"] for i in d["items"]) == ["fact:a", "fact:b", "fact:c"]
    a = next(i for i in d["items"] if i["key"] == "fact:a")
    assert a["text"] == "alpha" and a["lineage_seqs"] == [2] and len(a["lineage_ids"]) == 1

    for s in (2, 4):            # seq 4: after the late event, which replaced nothing
        r = cli("view", "--agent", "bot", "--db", str(path), "--seq", str(s), cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.decode() == views[s].text, (s, r.stderr)
    assert [i.text for i in views[4].items] == [i.text for i in views[3].items] == ["bravo", "alpha"]
    r = cli("view", "--agent", "bot", "--db", str(path), "--as-of", views[3].as_of.isoformat(), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.decode() == views[3].text, r.stderr

    r = cli("view", "--agent", "bot", "--db", str(path), "--valid-at", at(-5.5), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["text"] == valid.text and [i["text"] for i in d["items"]] == ["alpha late"]

    r = cli("view", "--agent", "bot", "--db", str(path), "--budget", "12", "--json", cwd=tmp_path)
    d = json.loads(r.stdout)
    assert r.returncode == 0 and d["budget"] == 12 and d["tokens"] <= 12


def test_cli_view_explain_and_errors(cli_store, tmp_path):
    path, _views, _ = cli_store
    r = cli("view", "--agent", "ops", "--db", str(path), "--explain", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "ops thing" in out
    rows = {ln.split()[-1]: ln for ln in out.splitlines() if ln.startswith(("included", "denied"))}
    assert rows["fact:o"].startswith("included")
    assert "fact:a" not in rows  # an agent's explain never names what it may not read
    r = cli("view", "--agent", "ops", "--db", str(path), "--explain", "--json", cwd=tmp_path)
    d = json.loads(r.stdout)
    assert {e["key"]: e["status"] for e in d["explain"]} == {"fact:o": "included"}
    r = cli("view", "--agent", "ops", "--db", str(path), "--explain", "--json", "--auditor", "audit", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert {e["key"]: e["status"] for e in d["explain"]} == {
        "fact:o": "included", "fact:a": "denied by policy", "fact:b": "denied by policy", "fact:c": "denied by policy"}
    r = cli("view", "--agent", "ops", "--db", str(path), "--auditor", "ops", cwd=tmp_path)
    assert r.returncode == 77 and b"auditor" in r.stderr

    r = cli("view", "--agent", "mallory", "--db", str(path), cwd=tmp_path)
    assert r.returncode == 77 and b"mallory" in r.stderr and b"Traceback" not in r.stderr
    r = cli("view", "--agent", "bot", "--db", str(path), "--seq", "999", cwd=tmp_path)
    assert r.returncode == 65 and b"Traceback" not in r.stderr


def test_cli_view_while_another_process_holds_the_store(cli_store, tmp_path):
    path, views, _ = cli_store
    with ctxdb.open(path, clock=Clock(T0, step=7200)) as db:
        s = db.append([fact("d", "delta", hours=-0.5)])[0]
        assert db.wait(timeout=30)
        live = db.view("bot")
        assert live.seq == s
        r = cli("view", "--agent", "bot", "--db", str(path), "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert (d["seq"], d["text"], d["hash"]) == (s, live.text, live.hash)
        r = cli("view", "--agent", "bot", "--db", str(path), "--seq", "3", cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.decode() == views[3].text


def test_cli_view_on_a_missing_store_does_not_create_one(tmp_path):
    missing = tmp_path / "no-such-store"
    r = cli("view", "--agent", "bot", "--db", str(missing), cwd=tmp_path)
    assert r.returncode != 0
    assert not missing.exists()


def test_cli_rebuild_and_snapshot(cli_store, tmp_path):
    path, views, _ = cli_store
    r = cli("rebuild", "--db", str(path), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["identical"] is True and rep["digest_before"] == rep["digest_after"]
    assert rep["events"] == max(views) and rep["versions"] >= 5
    r = cli("rebuild", "--db", str(path), cwd=tmp_path)
    assert r.returncode == 0 and "identical" in r.stderr.decode() and "DIFFERENT" not in r.stderr.decode()
    assert r.stdout.decode().strip() == rep["digest_after"]

    r = cli("snapshot", "--db", str(path), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["seq"] == max(views) and m["policy_version"] == 1 and Path(m["path"]).is_dir() and m["bytes"] > 0
    r = cli("snapshot", "--list", "--db", str(path), "--json", cwd=tmp_path)
    assert r.returncode == 0 and [json.loads(x)["seq"] for x in r.stdout.decode().splitlines()] == [m["seq"]]
    (path / "items.duckdb").unlink()
    r = cli("view", "--agent", "bot", "--db", str(path), "--seq", "3", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.decode() == views[3].text
    with ctxdb.open(path) as db:
        assert db.view("bot").hash == views[max(views)].hash
        assert db.restored_from is None                       # the CLI restored items.duckdb already
