"""Exact time travel: a view asked for a past position (seq or as_of) is byte for byte the view that
was served live then; also after reopening the store, after `rebuild()` and after restoring the
item store from a snapshot. Late events (transaction time vs valid time) and policy changes."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import ctxdb
from conftest import Clock
import pytest
from ctxdb.projector import Retract, Upsert
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

US = 1_000_000
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
STEP_S = 37 * 60          # transaction clock: 37 minutes per commit



def iso_us(us: int) -> str:
    return datetime.fromtimestamp(us / US, UTC).isoformat().replace("+00:00", "Z")


def at(hours: float) -> str:
    return iso_us(int((T0.timestamp() + hours * 3600) * US))


CFG_A = """
[[rules]]
on = "order.*"
key = "order:{data.oid}/status"
text = "Order {data.oid} is {data.status} ({type})"
kind = "fact"
priority = 0.7
ttl = "6h"

[[rules]]
on = "order.cancelled"
retract = "order:{data.oid}/status"

[[rules]]
on = "chat.msg"
key = "chat:{id}"
text = "{subject} says {data.text}"
kind = "event"
summarize = { group = "{subject}", every = 3 }

[[rules]]
on = "note.*"
key = "note:{subject}"
text = "note on {subject}: {data.text}"
kind = "fact"
priority = 0.3
tags = ["{data.tag}"]

[[rules]]
on = "rule.set"
key = "rule:{data.oid}"
text = "Always {data.text}"
kind = "axiom"

[agents.bot]
subjects = ["user:*", "order:*"]
deny_tags = ["pii"]
history = "1d"
budget = 70
half_life = { fact = "3h", event = "2h" }

[agents.all]
budget = 400

[agents.gone]
subjects = ["user:1"]
budget = 50

[agents.audit]
role = "auditor"
budget = 50

[snapshots]
every = 6
retain = 3

[view]
tokenizer = "whitespace"
"""

# A rules change (the order rule now only follows payments, with new text; summaries fold every
# 2), a budget change, an agent removed, an agent added, and another tokenizer.
CFG_B = (CFG_A.replace('on = "order.*"', 'on = "order.paid"')
         .replace('text = "Order {data.oid} is {data.status} ({type})"', 'text = "ORDER {data.oid}: {data.status}"')
         .replace("every = 3", "every = 2")
         .replace("budget = 70", "budget = 90")
         .replace('[agents.gone]\nsubjects = ["user:1"]\nbudget = 50\n',
                  '[agents.new]\nsubjects = ["order:*"]\n')
         .replace('tokenizer = "whitespace"', 'tokenizer = "minilm"'))
assert CFG_B.count("order.paid") == 1 and "[agents.new]" in CFG_B and "minilm" in CFG_B


@dataclass(frozen=True)
class Seen:
    text: str
    hash: str
    as_of: datetime
    policy_version: int
    budget: int
    tokenizer: str


def seen(v) -> Seen:
    return Seen(v.text, v.hash, v.as_of, v.policy_version, v.budget, v.tokenizer)


def python_rules(db, calls: list[int]) -> None:
    @db.rule("py.*")
    def py(event):
        calls.append(event.seq)
        d = event.json()
        if d["text"] == "bye":
            yield Retract(key=f"py:{event.subject}")
        else:
            yield Upsert(key=f"py:{event.subject}", text=f"py says {d['text']} to {event.subject}", kind="fact",
                         priority=0.6, ttl="90m", tags=(d["tag"],))


TYPES = ["order.shipped", "order.paid", "order.cancelled", "chat.msg", "note.set", "rule.set", "misc.x", "py.set"]
SUBJECTS = ["user:1", "user:2", "user:12", "order:1", "order:2", "users:1", "ops"]

event_st = st.fixed_dictionaries({
    "type": st.sampled_from(TYPES),
    "subject": st.sampled_from(SUBJECTS),
    "offset_min": st.integers(-36 * 60, 60),        # event time relative to the commit: late ones too
    "oid": st.integers(1, 3),
    "status": st.sampled_from(["new", "paid", "lost in transit"]),
    "text": st.sampled_from(["hi", "ok then", "bye", "see you tomorrow", "x"]),
    "tag": st.sampled_from(["ok", "ok", "pii"]),
})
step_st = st.one_of(
    st.tuples(st.just("commit"), st.lists(event_st, min_size=1, max_size=4)),
    st.tuples(st.just("commit"), st.lists(event_st, min_size=1, max_size=2)),
    st.tuples(st.just("decision"), st.sampled_from(["bot", "all"])),
    st.tuples(st.just("reopen"), st.none()),
    st.tuples(st.just("snapshot"), st.none()),
)


class Run:
    """One store through a random history, remembering every view served live."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "a.toml").write_text(CFG_A)
        (root / "b.toml").write_text(CFG_B)
        self.cfg = root / "a.toml"
        self.clock = Clock(T0, step=STEP_S)
        self.calls: list[int] = []
        self.live: dict[tuple[str, int], Seen] = {}
        self.n = 0
        self.db = None
        self.sub = None
        self.open()

    def open(self) -> None:
        self.db = ctxdb.open(self.root / "s", config=self.cfg, clock=self.clock, sync=False)
        python_rules(self.db, self.calls)

    def subscribe(self) -> None:
        self.sub = self.db.subscribe("bot")

    def drain(self) -> None:
        if self.sub is None:
            return
        while (u := self.sub.get(timeout=0.05)) is not None:
            self.record("bot", u.view)

    def close(self) -> None:
        if self.db is None:
            return
        try:
            self.drain()
            if self.sub is not None:
                self.sub.close()
        finally:
            self.sub = None
            db, self.db = self.db, None
            db.close()

    def record(self, agent: str, v) -> None:
        key = (agent, v.seq)
        s = seen(v)
        if key in self.live:
            assert self.live[key] == s, f"two different live views of {agent} at seq {v.seq}"
        self.live[key] = s

    def snap_live(self) -> None:
        assert self.db.wait(timeout=60)
        for agent in sorted(self.db.config().agents):
            self.record(agent, self.db.view(agent))
        self.drain()

    def commit(self, evs: list[dict]) -> None:
        base = self.clock.now + self.clock.step       # the recorded_at this commit will get
        out = []
        for e in evs:
            self.n += 1
            out.append({"id": f"e{self.n}", "source": "gen", "type": e["type"], "subject": e["subject"],
                        "time": iso_us(base + e["offset_min"] * 60 * US),
                        "data": {k: e[k] for k in ("oid", "status", "text", "tag")}})
        self.db.append(out)
        self.snap_live()

    def check(self, label: str, *, explain: bool = False, as_of: bool = False) -> None:
        """Every view served live, asked again later: exactly by an auditor; by the agent itself
        too while the current config grants it the same (a narrowed or removed grant narrows
        its own reads of the past: test_access.py)."""
        db = self.db
        assert db.wait(timeout=60)
        cur = db.config()
        for (agent, seq), s in sorted(self.live.items()):
            then = db._views().projector.policy_at(seq)[0].agent(agent)
            now = cur.agent(agent)
            own = now is not None and then is not None and (now.subjects, now.kinds, now.deny_tags, now.allow_tags) == \
                (then.subjects, then.kinds, then.deny_tags, then.allow_tags)
            for who in ["audit"] + ([None] if own else []):
                v = db.view(agent, seq=seq, auditor=who)
                assert (v.seq, v.text, v.hash) == (seq, s.text, s.hash), f"{label}: {agent} at seq {seq} ({who})"
                assert seen(v) == s, f"{label}: {agent} at seq {seq}"
                if explain:
                    assert db.view(agent, seq=seq, explain=True, auditor=who).text == s.text, \
                        f"{label}: explain {agent}@{seq}"
                if as_of:
                    w = db.view(agent, as_of=s.as_of, auditor=who)
                    assert (w.seq, w.text, w.hash) == (seq, s.text, s.hash), f"{label}: as_of {agent}@{seq}"
                    w = db.view(agent, as_of=s.as_of.isoformat(), auditor=who)
                    assert w.hash == s.hash


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=st.lists(step_st, min_size=4, max_size=14), change_at=st.integers(1, 10), seed_events=st.lists(event_st, min_size=3, max_size=6))
def test_past_views_equal_live_views(steps, change_at, seed_events):
    with tempfile.TemporaryDirectory() as d:
        run = Run(Path(d))
        try:
            run.subscribe()
            run.commit(seed_events)
            for i, (kind, arg) in enumerate(steps):
                if i == change_at:                                  # the policy (and rules) change
                    run.close()
                    run.cfg = run.root / "b.toml"
                    run.open()
                    run.subscribe()
                    run.snap_live()
                if kind == "commit":
                    run.commit(arg)
                elif kind == "decision":
                    agent = arg
                    run.db.record_decision(agent, run.db.view(agent))
                    run.snap_live()
                elif kind == "reopen":
                    run.close()
                    run.open()
                    run.subscribe()
                    run.snap_live()
                elif kind == "snapshot":
                    m = run.db.snapshot()
                    assert m.seq == run.db.last_seq
            run.drain()
            assert run.live
            run.check("same process", explain=True, as_of=True)

            run.close()
            run.open()
            run.check("reopened")

            rep = run.db.rebuild()
            assert rep["identical"], rep
            assert rep["digest_before"] == rep["digest_after"]
            run.check("rebuilt")

            snaps = run.db.snapshots()
            run.close()
            items = run.root / "s" / "items.duckdb"
            assert items.exists()
            for f in (items, items.with_name("items.duckdb.wal")):
                if f.exists():
                    f.unlink()
            run.open()
            run.calls.clear()
            run.check("restored")
            if snaps:
                assert run.db.restored_from is not None
                assert run.db.restored_from.seq == max(m.seq for m in snaps)
                policy_seqs = [e.seq for e in run.db.read(type="ctxdb.policy")]
                if max(policy_seqs) <= run.db.restored_from.seq:            # no re-projection in the tail
                    assert all(s > run.db.restored_from.seq for s in run.calls), "replayed before the snapshot"
        finally:
            run.close()


# ---- deterministic scenarios ----------------------------------------------------------------
PRICE = """
[[rules]]
on = "price"
key = "price:{subject}"
text = "{subject} costs {data.p}"
kind = "fact"

[[rules]]
on = "legacy"
key = "legacy:{subject}"
text = "legacy {data.p}"
kind = "fact"

[[rules]]
on = "withdrawn"
retract = "price:{subject}"

[[rules]]
on = "chat.msg"
key = "chat:{id}"
text = "{subject} says {data.text}"
kind = "event"
summarize = { group = "{subject}", every = 3 }

[agents.bot]
budget = 500
half_life = { fact = "none", event = "none", summary = "none" }

[view]
tokenizer = "whitespace"
"""


def open_at(root: Path, toml: str, clock: Clock, name: str = "c.toml") -> ctxdb.Store:
    (root / name).write_text(toml)
    return ctxdb.open(root / "s", config=root / name, clock=clock)


def texts(v) -> list[str]:
    return sorted(i.text for i in v.items)


def price(id_: str, p: int, hour: float, subject: str = "x") -> dict:
    return {"id": id_, "source": "t", "type": "price", "subject": subject, "time": at(hour), "data": {"p": p}}


def test_late_event_transaction_time_vs_valid_time(tmp_path):
    clock = Clock(step=3600)
    db = open_at(tmp_path, PRICE, clock)
    try:
        s10 = db.append([price("p10", 10, -6)])[0]                 # true from T0-6h
        s12 = db.append([price("p12", 12, -2)])[0]                 # true from T0-2h
        s11 = db.append([price("p11", 11, -4)])[0]                 # late: true from T0-4h, learnt last
        assert db.wait(timeout=30)
        # transaction time: what was known at each position; the late event supersedes nothing
        assert texts(db.view("bot", seq=s10)) == ["x costs 10"]
        assert texts(db.view("bot", seq=s12)) == ["x costs 12"]
        assert texts(db.view("bot", seq=s11)) == ["x costs 12"]
        assert texts(db.view("bot")) == ["x costs 12"]
        v12 = db.view("bot", seq=s12)
        assert db.view("bot", as_of=v12.as_of).text == v12.text
        assert db.view("bot", as_of=iso_us(int(v12.as_of.timestamp() * US) + 1)).seq == s12
        # valid time, as known now: the late event fills its interval
        assert texts(db.view("bot", valid_at=at(-7))) == []
        assert texts(db.view("bot", valid_at=at(-5))) == ["x costs 10"]
        assert texts(db.view("bot", valid_at=at(-3))) == ["x costs 11"]
        assert texts(db.view("bot", valid_at=at(-1))) == ["x costs 12"]
        assert texts(db.view("bot", valid_at=datetime.fromisoformat(at(-3)))) == ["x costs 11"]
        # valid time as known at an earlier position (bitemporal): the late event was not known yet
        assert texts(db.view("bot", seq=s12, valid_at=at(-3))) == ["x costs 10"]
        assert texts(db.view("bot", seq=s10, valid_at=at(-1))) == ["x costs 10"]
        vv = db.view("bot", valid_at=at(-3))
        assert vv.valid_at == at(-3) and f"valid at {at(-3)}" in vv.text.split("\n", 1)[0]
        # a withdrawal at T0-3h: ends the late version's interval, not the current one (T0-2h is newer)
        s_w = db.append([{"id": "w", "source": "t", "type": "withdrawn", "subject": "x", "time": at(-3),
                          "data": {}}])[0]
        assert db.wait(timeout=30)
        assert texts(db.view("bot", seq=s_w)) == ["x costs 12"]
        assert texts(db.view("bot", valid_at=at(-3.5))) == ["x costs 11"]
        assert texts(db.view("bot", valid_at=at(-2.5))) == []
        assert texts(db.view("bot", valid_at=at(-1))) == ["x costs 12"]
        assert texts(db.view("bot", seq=s11, valid_at=at(-2.5))) == ["x costs 11"]
    finally:
        db.close()


def test_valid_at_after_a_rules_change_sees_only_the_new_rules(tmp_path):
    clock = Clock(step=3600)
    db = open_at(tmp_path, PRICE, clock)
    try:
        db.append([price("p10", 10, -6)])
        db.append([{"id": "l1", "source": "t", "type": "legacy", "subject": "y", "time": at(-5), "data": {"p": 1}}])
        assert db.wait(timeout=30)
        before = db.last_seq
        assert texts(db.view("bot", valid_at=at(-4))) == ["legacy 1", "x costs 10"]
    finally:
        db.close()
    new_rules = (PRICE.replace('key = "price:{subject}"\ntext = "{subject} costs {data.p}"',
                               'key = "cost:{subject}"\ntext = "{subject} is priced at {data.p}"')
                 .replace('[[rules]]\non = "legacy"\nkey = "legacy:{subject}"\ntext = "legacy {data.p}"\nkind = "fact"\n', ""))
    assert "legacy" not in new_rules and "cost:{subject}" in new_rules
    db = open_at(tmp_path, new_rules, clock, name="c2.toml")
    try:
        assert db.wait(timeout=30)
        assert texts(db.view("bot")) == ["x is priced at 10"]
        assert texts(db.view("bot", valid_at=at(-4))) == ["x is priced at 10"]
        assert texts(db.view("bot", seq=before, valid_at=at(-4))) == ["legacy 1", "x costs 10"]
    finally:
        db.close()


def test_valid_at_now_agrees_with_the_current_view_when_nothing_is_late(tmp_path):
    """With no late events, no TTLs and no decay, what is true at the newest event time as known
    now is what the current view shows: summarised items are not listed twice."""
    clock = Clock(step=3600)
    db = open_at(tmp_path, PRICE, clock)
    try:
        db.append([price("p1", 1, -9)])
        db.append([{"id": f"m{i}", "source": "t", "type": "chat.msg", "subject": "user:1", "time": at(-8 + i),
                    "data": {"text": f"message {i}"}} for i in range(4)])
        assert db.wait(timeout=30)
        cur = db.view("bot")
        assert len([i for i in cur.items if i.kind == "summary"]) == 1
        va = db.view("bot", valid_at=at(-4))
        assert sorted(i.key for i in va.items) == sorted(i.key for i in cur.items)
        assert texts(va) == texts(cur)
    finally:
        db.close()


def test_policy_change_keeps_the_old_policy_for_earlier_positions(tmp_path):
    clock = Clock(T0, step=STEP_S)
    root = tmp_path
    db = open_at(root, CFG_A, clock, name="a.toml")
    try:
        s1 = db.append([{"id": "o1", "source": "t", "type": "order.shipped", "subject": "order:1", "time": at(0),
                         "data": {"oid": 1, "status": "new"}},
                        {"id": "u1", "source": "t", "type": "note.set", "subject": "user:1", "time": at(0),
                         "data": {"text": "likes tea", "tag": "ok"}}])[-1]
        assert db.wait(timeout=30)
        old = {a: db.view(a) for a in ("bot", "all", "gone")}
        assert old["bot"].policy_version == 1 and old["bot"].budget == 70 and old["bot"].tokenizer == "whitespace"
        assert any("(order.shipped)" in i.text for i in old["all"].items)
    finally:
        db.close()
    db = open_at(root, CFG_B, clock, name="b.toml")
    try:
        assert db.wait(timeout=30)
        pol = list(db.read(type="ctxdb.policy"))
        assert [p.json()["version"] for p in pol] == [1, 2]
        change = pol[-1].seq
        assert change == s1 + 1
        cur = db.view("bot")
        assert cur.policy_version == 2 and cur.budget == 90 and cur.tokenizer != "whitespace"
        assert cur.policy_hash != old["bot"].policy_hash
        # the shipped order is not projected by the new rules, at and after the change
        assert not any("order" in i.key for i in db.view("all").items)
        for a, v in old.items():
            for w in ([db.view(a, seq=s1, auditor="audit")] + ([db.view(a, seq=s1)] if a != "gone" else [])):
                assert (w.text, w.hash, w.policy_version, w.budget, w.tokenizer) == \
                       (v.text, v.hash, 1, v.budget, "whitespace")
        with pytest.raises(ctxdb.AccessDenied):
            db.view("gone")                                   # removed by the new policy
        with pytest.raises(ctxdb.AccessDenied, match="revoked"):
            db.view("gone", seq=s1)                           # ... and so are its past views
        with pytest.raises(ctxdb.AccessDenied):
            db.view("new", seq=s1)                            # did not exist then
        with pytest.raises(ctxdb.AccessDenied, match="auditor"):
            db.view("gone", seq=s1, auditor="bot")            # bot is no auditor
        assert db.view("new").policy_version == 2
        assert db.view("gone", seq=change - 1, auditor="audit").text == old["gone"].text
        rep = db.rebuild()
        assert rep["identical"]
        for a, v in old.items():
            assert db.view(a, seq=s1, auditor="audit").hash == v.hash
        assert db.view("bot").hash == cur.hash
    finally:
        db.close()


def test_rules_change_then_restart_projects_like_a_rebuild(tmp_path):
    """The state a process reloads from the item store after a rules change must be the state
    the re-projection left, not include versions the old rules made."""
    a = ('[[rules]]\non = "x"\nkey = "k:{subject}"\ntext = "A {data.v}"\nkind = "fact"\n'
         '[agents.bot]\nhalf_life = { fact = "none" }\n[view]\ntokenizer = "whitespace"\n')
    b = a.replace('on = "x"', 'on = "y"').replace('"A {data.v}"', '"B {data.v}"')
    clock = Clock(step=3600)
    db = open_at(tmp_path, a, clock, name="a.toml")
    try:
        db.append([{"id": "1", "source": "t", "type": "x", "subject": "s", "time": at(-1), "data": {"v": 1}}])
        db.append([{"id": "2", "source": "t", "type": "y", "subject": "s", "time": at(-3), "data": {"v": 2}}])
        assert db.wait(timeout=30)
        assert texts(db.view("bot")) == ["A 1"]
    finally:
        db.close()
    db = open_at(tmp_path, b, clock, name="b.toml")
    try:
        assert db.wait(timeout=30)
        assert texts(db.view("bot")) == ["B 2"]
    finally:
        db.close()
    db = open_at(tmp_path, b, clock, name="b.toml")
    try:
        s = db.append([{"id": "3", "source": "t", "type": "y", "subject": "s", "time": at(-2), "data": {"v": 3}}])[0]
        assert db.wait(timeout=30)
        live = db.view("bot")
        assert texts(live) == ["B 3"]                          # T0-2h is newer than T0-3h under these rules
        rep = db.rebuild()
        assert rep["identical"], rep
        assert db.view("bot", seq=s).hash == live.hash
    finally:
        db.close()


def test_snapshot_restore_projects_only_the_tail(tmp_path):
    toml = PRICE.replace("[view]", "[snapshots]\nevery = 1000000\nretain = 2\n\n[view]")
    calls: list[int] = []
    clock = Clock(T0, step=STEP_S)

    def opened():
        db = open_at(tmp_path, toml, clock)
        python_rules(db, calls)
        return db

    def py(i, text):
        return {"id": f"py{i}", "source": "t", "type": "py.set", "subject": f"user:{i % 3}", "time": at(-0.5),
                "data": {"text": text, "tag": "ok"}}

    db = opened()
    try:
        db.append([py(i, f"hello {i}") for i in range(6)])
        assert db.wait(timeout=30)
        m1 = db.snapshot()
        assert m1.seq == db.last_seq and Path(m1.path).is_dir() and "items.duckdb" in m1.files
        db.append([py(i, f"again {i}") for i in range(6, 9)])
        assert db.wait(timeout=30)
        m2 = db.snapshot()
        db.append([py(i, f"more {i}") for i in range(9, 11)])
        assert db.wait(timeout=30)
        m3 = db.snapshot()
        assert [m.seq for m in db.snapshots()] == [m2.seq, m3.seq]          # retain = 2
        assert m3.seq == db.last_seq and m2.seq < m3.seq
        tail = db.append([py(11, "tail one"), py(12, "bye")])
        assert db.wait(timeout=30)
        final = db.view("bot")
        views = {s: db.view("bot", seq=s).hash for s in range(1, db.last_seq + 1)}
    finally:
        db.close()
    (tmp_path / "s" / "items.duckdb").unlink()
    calls.clear()
    db = opened()
    try:
        v = db.view("bot")
        assert db.restored_from is not None and db.restored_from.seq == m3.seq
        assert sorted(calls) == tail                                        # only the tail was projected
        assert v.text == final.text and v.hash == final.hash
        assert {s: db.view("bot", seq=s).hash for s in views} == views
    finally:
        db.close()
    # a restart with an intact item store projects nothing again
    calls.clear()
    db = opened()
    try:
        assert db.view("bot").hash == final.hash and calls == []
    finally:
        db.close()
