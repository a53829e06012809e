"""Views: token budgets (exact, never exceeded, items never cut), pinned items and axioms, eviction
by score with ties by key, explain statuses, policies (subjects, kinds, tags, history), retraction,
summaries, Python rules, reinforcement, access control and the JSON form."""
from __future__ import annotations

import json
import string
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import ctxdb
from conftest import Clock
import pytest
from ctxdb.projector import Retract, Upsert
from ctxdb.tokenizer import get_tokenizer
from ctxdb.view import BudgetError, render_line
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

US = 1_000_000
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)



def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def at(hours: float) -> str:
    """An event time `hours` after T0 (negative: before)."""
    return iso(datetime.fromtimestamp(T0.timestamp() + hours * 3600, UTC))


def open_store(tmp_path: Path, toml: str, *, clock=None, name: str = "store", **kw) -> ctxdb.Store:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(toml)
    return ctxdb.open(tmp_path / name, config=cfg, clock=clock or Clock(), **kw)


_ids = iter(range(1, 10 ** 9))


def fact(k: str, text: str, *, subject: str = "user:1", time: str | None = None, tag: str = "public",
         type: str = "fact.set", id: str | None = None, **data) -> dict:
    return {"id": id or f"ev-{next(_ids)}", "source": "t", "type": type, "subject": subject,
            "time": time or at(-1), "data": {"k": k, "text": text, "tag": tag, **data}}


def line_in(view, text: str) -> bool:
    return ("\n" + render_line(text) + "\n") in view.text


def explain_map(view) -> dict[str, str]:
    return {e.key: e.status for e in view.explain}


RULES = """
[[rules]]
on = "fact.set"
key = "fact:{data.k}"
text = "{data.text}"
kind = "fact"
tags = ["{data.tag}"]

[[rules]]
on = "fact.p1"
key = "fact:{data.k}"
text = "{data.text}"
kind = "fact"
priority = 0.1

[[rules]]
on = "fact.p9"
key = "fact:{data.k}"
text = "{data.text}"
kind = "fact"
priority = 0.9

[[rules]]
on = "fact.unset"
retract = "fact:{data.k}"

[[rules]]
on = "pin.set"
key = "pin:{data.k}"
text = "{data.text}"
kind = "persona"
pinned = true

[[rules]]
on = "axiom.set"
key = "axiom:{data.k}"
text = "{data.text}"
kind = "axiom"

[[rules]]
on = "temp.set"
key = "temp:{data.k}"
text = "{data.text}"
kind = "event"
ttl = "1h"

[[rules]]
on = "chat.msg"
key = "chat:{id}"
text = "{subject}: {data.text}"
kind = "event"
summarize = { group = "{subject}", every = 3 }
"""


# ---- the budget: exact token counts (minilm), never exceeded, items never cut ---------------
MINILM_TOML = RULES + """
[agents.bot]
budget = 120

[view]
tokenizer = "minilm"
"""

TITLES = {"fact": "Facts", "persona": "Persona", "axiom": "Axioms", "event": "Events", "summary": "Summaries"}
ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
item_text = st.text(ALPHABET, min_size=1, max_size=60).filter(lambda s: s.strip() != "") | \
    st.text(string.ascii_letters + " .,!?'\n-", min_size=1, max_size=60).filter(lambda s: s.strip() != "")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(item_text, st.sampled_from(["fact.set", "fact.p1", "fact.p9", "pin.set", "axiom.set"]),
                                st.floats(-48, 0)), min_size=1, max_size=14),
       fraction=st.floats(0.3, 1.1))
def test_budget_is_exact_and_never_exceeded_minilm(items, fraction):
    tok = get_tokenizer("minilm")
    with tempfile.TemporaryDirectory() as d:
        db = open_store(Path(d), MINILM_TOML, sync=False)
        try:
            db.append([fact(f"k{i:02d}", text, type=typ, time=at(h)) for i, (text, typ, h) in enumerate(items)])
            assert db.wait(timeout=60)
            full = db.view("bot", budget=10 ** 9, explain=True)
            musts = [i for i in full.items if i.pinned]
            try:
                live = db.view("bot")                        # the materialized view, policy budget 120
            except BudgetError:
                pass
            else:
                assert tok.count(live.text) == live.tokens <= live.budget == 120
                assert live.text == db.view("bot", seq=live.seq).text
            budget = max(1, int(full.tokens * fraction))
            try:
                v = db.view("bot", budget=budget, explain=True)
            except BudgetError:
                # only legitimate when the header and the pinned items alone do not fit
                header = full.text.split("\n", 1)[0]
                need = tok.count(header) + sum(i.tokens for i in musts)
                need += sum(tok.count(f"## {TITLES[k]}") for k in {i.kind for i in musts})
                assert need > budget
                event("pinned items over budget")
                return
            n = tok.count(v.text)
            assert n == v.tokens, "view.tokens must be the tokenizer's count of view.text"
            assert n <= budget == v.budget
            assert v.tokenizer == tok.name
            # every included item appears whole, as its own bullet
            for it in v.items:
                assert line_in(v, it.text), it.text
                assert it.tokens == tok.count(render_line(it.text))
            # pinned items and axioms are never evicted (one with the same text as another stands
            # in for it: identical texts collapse into one item)
            shown = {i.key for i in v.items} | {k for i in v.items for k in i.merged}
            assert {i.key for i in musts} <= shown
            # an evicted item did not fit even in what is left over at the end
            present = {i.kind for i in v.items}
            for e in v.explain:
                if e.status == "evicted by budget":
                    cost = e.tokens + (0 if e.kind in present else tok.count(f"## {TITLES[e.kind]}"))
                    assert v.tokens + cost > budget, e
            statuses = explain_map(v)
            event("some evicted" if "evicted by budget" in statuses.values() else "all fit")
            assert set(statuses.values()) <= {"included", "evicted by budget", "duplicate"}
            for e in v.explain:
                if e.status == "duplicate":
                    assert e.duplicate_of in statuses and e.duplicate_of != e.key
            assert sorted(k for k, s in statuses.items() if s == "included") == sorted(i.key for i in v.items)
            # the explain form assembles the same view
            assert db.view("bot", budget=budget).text == v.text
        finally:
            db.close()


WS_TOML = RULES + """
[agents.bot]
budget = 1000
subjects = ["user:*", "order:*"]
deny_tags = ["pii"]
history = "2d"

[agents.exact]
subjects = ["user:42"]

[agents.one_char]
subjects = ["user:4?"]

[agents.facts_only]
kinds = ["fact"]

[agents.sqlish]
subjects = ["a_b", "50%", 'back\\slash']

[agents.tagged]
allow_tags = ["public", "internal"]

[agents.pinner]
pinned = ["fact:keep*"]
budget = 1000

[agents.audit]
role = "auditor"

[view]
tokenizer = "whitespace"
"""


@pytest.fixture
def ws(tmp_path):
    db = open_store(tmp_path, WS_TOML)
    yield db
    db.close()


def header_tokens(db, agent: str) -> int:
    v = db.view(agent, budget=10 ** 9)
    return len(v.text.split("\n", 1)[0].split())


def test_eviction_by_score_ties_broken_by_key(ws):
    # Same time, same kind, same length (3 words -> 4 tokens as a bullet): the score is the priority.
    ws.append([fact("e", "epsilon item text", type="fact.p1"),
               fact("d", "delta item text", type="fact.set"),
               fact("c", "charlie item text", type="fact.set"),
               fact("a", "alpha item text", type="fact.p9"),
               fact("b", "bravo item text", type="fact.set"),
               fact("f", "foxtrot item text", type="fact.p1")])
    assert ws.wait(timeout=30)
    budget = header_tokens(ws, "bot") + 2 + 3 * 4          # header, "## Facts", three bullets
    v = ws.view("bot", budget=budget, explain=True)
    assert [i.key for i in v.items] == ["fact:a", "fact:b", "fact:c"]
    assert v.tokens == budget == len(v.text.split())
    st_ = explain_map(v)
    assert st_ == {"fact:a": "included", "fact:b": "included", "fact:c": "included",
                   "fact:d": "evicted by budget", "fact:e": "evicted by budget", "fact:f": "evicted by budget"}
    for k in "def":
        assert {"d": "delta", "e": "epsilon", "f": "foxtrot"}[k] not in v.text   # evicted whole
    # explain lists included first, then evicted, each by score then key
    ev = [e for e in v.explain if e.status == "evicted by budget"]
    assert [e.key for e in ev] == ["fact:d", "fact:e", "fact:f"]
    scores = {e.key: e.score for e in v.explain}
    assert scores["fact:a"] > scores["fact:b"] == scores["fact:c"] == scores["fact:d"] > scores["fact:e"]
    # one token less: the third tie goes, never a cut item
    v2 = ws.view("bot", budget=budget - 1)
    assert [i.key for i in v2.items] == ["fact:a", "fact:b"]
    assert all(line_in(v2, i.text) for i in v2.items) and "charlie" not in v2.text


def test_item_that_does_not_fit_is_skipped_whole_and_smaller_ones_fill_in(ws):
    ws.append([fact("big", " ".join(["huge"] * 30), type="fact.p9"),
               fact("s1", "small one", type="fact.set"),
               fact("s2", "small two", type="fact.p1")])
    assert ws.wait(timeout=30)
    budget = header_tokens(ws, "bot") + 2 + 3 + 3 + 5
    v = ws.view("bot", budget=budget, explain=True)
    assert [i.key for i in v.items] == ["fact:s1", "fact:s2"]
    assert "huge" not in v.text
    assert explain_map(v)["fact:big"] == "evicted by budget"
    assert v.tokens <= budget


def test_pinned_and_axioms_are_never_evicted(ws):
    ws.append([fact("p", "pinned persona line", type="pin.set", time=at(-24 * 400)),
               fact("x", "an old axiom", type="axiom.set", time=at(-24 * 400)),
               fact("keep-me", "kept by the agent policy", type="fact.p1", time=at(-24 * 400)),
               fact("hi", "high priority fact", type="fact.p9"),
               fact("lo", "low priority fact", type="fact.p1")])
    assert ws.wait(timeout=30)
    must = {"pin:p", "axiom:x", "fact:keep-me"}
    full = ws.view("pinner")
    assert must | {"fact:hi", "fact:lo"} == {i.key for i in full.items}
    assert all(i.pinned for i in full.items if i.key in must)
    assert not any(i.pinned for i in full.items if i.key not in must)
    # shrink the budget until only the pinned items remain: they never go
    need = None
    for b in range(full.tokens, 0, -1):
        try:
            v = ws.view("pinner", budget=b)
        except BudgetError:
            need = b + 1
            break
        assert must <= {i.key for i in v.items}, b
        assert v.tokens <= b
    assert need is not None
    only = ws.view("pinner", budget=need)
    assert {i.key for i in only.items} == must
    with pytest.raises(BudgetError):
        ws.view("pinner", budget=need - 1)
    # sections come in a fixed order: axioms, persona, facts
    t = only.text
    assert t.index("## Axioms") < t.index("## Persona") < t.index("## Facts")


def test_explain_statuses_and_policy_filters(ws):
    ws.append([
        fact("ok", "visible fact", subject="user:42"),
        fact("pii", "secret fact", subject="user:42", tag="pii"),
        fact("other", "fact about other subject", subject="team:1"),
        fact("old", "fact from last week", subject="user:42", time=at(-24 * 7)),
        fact("oldpin", "pinned persona from last week", subject="user:42", type="pin.set", time=at(-24 * 7)),
        fact("oldax", "axiom from last year", subject="user:42", type="axiom.set", time=at(-24 * 365)),
        fact("t1", "expired temp", subject="user:42", type="temp.set", time=at(-2)),
        fact("t2", "fresh temp", subject="user:42", type="temp.set", time=at(-0.5)),
    ])
    assert ws.wait(timeout=30)
    v = ws.view("bot", explain=True)
    seen_by_bot = {
        "fact:ok": "included", "pin:oldpin": "included", "axiom:oldax": "included", "temp:t2": "included",
        "fact:old": "outside history", "temp:t1": "expired",
    }
    # an agent's explain never names what it may not read; an auditor's shows the denials too
    assert explain_map(v) == seen_by_bot
    va = ws.view("bot", explain=True, auditor="audit")
    assert explain_map(va) == {**seen_by_bot, "fact:pii": "denied by policy", "fact:other": "denied by policy"}
    assert va.text == v.text and va.hash == v.hash
    for text in ["visible fact", "pinned persona from last week", "axiom from last year", "fresh temp"]:
        assert line_in(v, text)
    for text in ["secret fact", "fact about other subject", "fact from last week", "expired temp"]:
        assert not line_in(v, text) and text not in v.text
    excluded = [e for e in v.explain if e.status != "included"]
    assert all(e.score is None for e in excluded)
    assert all(e.score is not None and e.tokens is not None for e in v.explain if e.status == "included")
    assert ws.view("bot").text == v.text
    # kinds and allow_tags
    fo = ws.view("facts_only")
    assert {i.kind for i in fo.items} == {"fact"} and "fact:pii" in {i.key for i in fo.items}
    tg = ws.view("tagged", explain=True)
    assert "fact:pii" not in explain_map(tg)
    assert explain_map(ws.view("tagged", explain=True, auditor="audit"))["fact:pii"] == "denied by policy"
    assert explain_map(tg)["fact:ok"] == "included" and explain_map(tg)["pin:oldpin"] == "included"


def test_expiry_is_measured_from_event_time_at_the_views_position(tmp_path):
    db = open_store(tmp_path, WS_TOML, clock=Clock(step=20 * 60))   # 20 minutes per commit
    try:
        db.append([fact("t", "short lived", subject="user:1", type="temp.set", time=iso(T0))])  # seq 2 @ T0+40m
        db.append([fact("n", "unrelated", subject="team:1")])                                    # T0+60m
        db.append([fact("n2", "unrelated", subject="team:1")])                                   # T0+80m
        assert db.wait(timeout=30)
        seqs = [e.seq for e in db.read(type="temp.set")] + [e.seq for e in db.read(type="fact.set")]
        v_live = db.view("bot", seq=seqs[0], explain=True)
        assert line_in(v_live, "short lived")                 # 40 min after its time: alive
        assert explain_map(v_live)["temp:t"] == "included"
        for s in seqs[1:]:                                    # 60 and 80 min after: expired
            v_exp = db.view("bot", seq=s, explain=True)
            assert "short lived" not in v_exp.text
            assert explain_map(v_exp)["temp:t"] == "expired"
        assert db.view("bot").text == v_exp.text
    finally:
        db.close()


def test_expiry_boundary_is_inclusive(tmp_path):
    db = open_store(tmp_path, WS_TOML, clock=Clock(step=30 * 60))
    try:
        db.append([fact("t", "short lived", subject="user:1", type="temp.set", time=iso(T0))])   # @ T0+60m
        assert db.wait(timeout=30)
        v = db.view("bot", explain=True)
        assert v.as_of == datetime.fromtimestamp(T0.timestamp() + 3600, UTC)
        assert explain_map(v)["temp:t"] == "expired"
    finally:
        db.close()


def test_subject_globs_are_exact(ws):
    subjects = ["user:42", "user:42x", "user:4", "user:43", "users:1", "xuser:42", "order:1", "user:", "USER:42",
                "user:4\u00e9", "a_b", "aXb", "50%", "50x", "back\\slash", "backXslash"]
    ws.append([fact(f"s{i}", f"about {s}", subject=s) for i, s in enumerate(subjects)])
    assert ws.wait(timeout=30)

    def seen(agent):
        return sorted(i.subject for i in ws.view(agent).items)

    assert seen("exact") == ["user:42"]
    assert seen("one_char") == ["user:42", "user:43", "user:4\u00e9"]
    assert seen("bot") == sorted(["user:42", "user:42x", "user:4", "user:43", "order:1", "user:", "user:4\u00e9"])
    assert seen("sqlish") == sorted(["a_b", "50%", "back\\slash"])       # `_`, `%`, `\\` are literal
    last = ws.last_seq
    for agent in ("exact", "one_char", "bot", "sqlish"):
        assert ws.view(agent, seq=last).text == ws.view(agent).text
        assert ws.view(agent, seq=last, explain=True).text == ws.view(agent).text


def test_retract_removes_and_supersede_replaces(ws):
    s1 = ws.append([fact("a", "first version"), fact("b", "bee")])[-1]
    s2 = ws.append([fact("a", "second version", time=at(-0.5))])[0]
    s3 = ws.append([{"type": "fact.unset", "subject": "user:1", "time": at(-0.2), "data": {"k": "a"}}])[0]
    assert ws.wait(timeout=30)
    assert line_in(ws.view("bot", seq=s1), "first version")
    v2 = ws.view("bot", seq=s2)
    assert line_in(v2, "second version") and "first version" not in v2.text
    assert sorted(i.key for i in v2.items) == ["fact:a", "fact:b"]
    v3 = ws.view("bot", seq=s3)
    assert [i.key for i in v3.items] == ["fact:b"] and "version" not in v3.text
    assert ws.view("bot").text == v3.text
    # a retraction that names no current key changes nothing
    s4 = ws.append([{"type": "fact.unset", "subject": "user:1", "time": at(-0.1), "data": {"k": "zzz"}}])[0]
    assert ws.wait(timeout=30)
    assert [i.key for i in ws.view("bot", seq=s4).items] == ["fact:b"]


def test_summaries_fold_every_n(ws):
    evs = [{"id": f"m{i}", "source": "chat", "type": "chat.msg", "subject": "user:7", "time": at(-3 + i * 0.1),
            "data": {"text": f"message {i}"}} for i in range(7)]
    evs.append({"id": "o1", "source": "chat", "type": "chat.msg", "subject": "user:8", "time": at(-1),
                "data": {"text": "other thread"}})
    seqs = ws.append(evs)
    assert ws.wait(timeout=30)
    v = ws.view("bot")
    summaries = [i for i in v.items if i.kind == "summary"]
    events = [i for i in v.items if i.kind == "event"]
    assert len(summaries) == 2
    assert sorted(i.text for i in events) == ["user:7: message 6", "user:8: other thread"]
    first, second = sorted(summaries, key=lambda i: i.lineage_seqs)
    assert first.lineage_seqs == tuple(seqs[0:3]) and second.lineage_seqs == tuple(seqs[3:6])
    assert first.lineage_ids == ("m0", "m1", "m2") and second.lineage_ids == ("m3", "m4", "m5")
    for i in range(6):
        assert f"user:7: message {i}" in (first.text if i < 3 else second.text)
        assert not line_in(v, f"user:7: message {i}")            # folded, not listed again
    assert first.subject == "user:7" and first.key != second.key
    # Summaries section comes before Events; events are chronological
    assert v.text.index("## Summaries") < v.text.index("## Events")
    assert v.text.index("message 6") < v.text.index("other thread")
    # two more messages: the third fold happens at the 9th message, not before
    ws.append([{"id": "m7", "source": "chat", "type": "chat.msg", "subject": "user:7", "time": at(-0.5),
                "data": {"text": "message 7"}}])
    assert ws.wait(timeout=30)
    assert len([i for i in ws.view("bot").items if i.kind == "summary"]) == 2
    ws.append([{"id": "m8", "source": "chat", "type": "chat.msg", "subject": "user:7", "time": at(-0.4),
                "data": {"text": "message 8"}}])
    assert ws.wait(timeout=30)
    v = ws.view("bot")
    assert len([i for i in v.items if i.kind == "summary"]) == 3
    assert [i.text for i in v.items if i.kind == "event"] == ["user:8: other thread"]


def test_python_rule(tmp_path):
    calls = []

    def register(db):
        @db.rule("order.*")
        def order_status(event):
            calls.append(event.seq)
            d = event.json()
            if event.type == "order.cancelled":
                yield Retract(key=f"order:{d['oid']}/status")
            else:
                yield Upsert(key=f"order:{d['oid']}/status", text=f"Order {d['oid']} is {event.type.split('.')[1]}",
                             kind="fact", priority=0.9, ttl="2h", tags=("orders",))

    toml = '[agents.bot]\nbudget = 500\n[agents.no_orders]\ndeny_tags = ["orders"]\n[view]\ntokenizer = "whitespace"\n'
    db = open_store(tmp_path, toml)
    try:
        register(db)
        s1 = db.append([{"type": "order.shipped", "subject": "order:1", "time": at(-1), "data": {"oid": 1}},
                        {"type": "order.paid", "subject": "order:2", "time": at(-1), "data": {"oid": 2}},
                        {"type": "note", "subject": "x", "time": at(-1), "data": {}}])
        assert db.wait(timeout=30)
        v = db.view("bot")
        items = {i.key: i for i in v.items}
        assert set(items) == {"order:1/status", "order:2/status"}     # no built-in rules in this config
        assert items["order:1/status"].text == "Order 1 is shipped" and items["order:1/status"].kind == "fact"
        assert items["order:1/status"].priority == 0.9 and items["order:1/status"].tags == ("orders",)
        assert items["order:1/status"].lineage_seqs == (s1[0],)
        exp = datetime.fromisoformat(items["order:1/status"].expires)
        assert exp == datetime.fromisoformat(at(1))
        assert db.view("no_orders").items == ()
        with pytest.raises(ctxdb.ConfigError):
            @db.rule("late.*")
            def late(event):
                return []
        s2 = db.append([{"type": "order.cancelled", "subject": "order:1", "time": at(-0.5), "data": {"oid": 1}}])
        assert db.wait(timeout=30)
        assert [i.key for i in db.view("bot").items] == ["order:2/status"]
        assert db.view("bot", seq=s2[0] - 1).text == v.text
        assert sorted(calls) == sorted(set(calls)) and len(calls) == 3
    finally:
        db.close()
    # reopening without the rule is refused (the item store was projected with it)
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "store.toml")
    try:
        with pytest.raises(ctxdb.ConfigError):
            db.view("bot")
    finally:
        db.close()
    db = ctxdb.open(tmp_path / "store", config=tmp_path / "store.toml")
    try:
        register(db)
        assert [i.key for i in db.view("bot").items] == ["order:2/status"]
    finally:
        db.close()


def test_python_rule_star_sees_the_same_events_as_a_config_rule_star(tmp_path):
    """A config rule `on = "*"` does not project ctxdb's own events (policy, decisions); a Python
    rule registered for "*" must not either."""
    toml = ('[[rules]]\non = "*"\nkey = "cfg:{id}"\ntext = "config rule saw {type}"\nkind = "event"\n'
            '[agents.bot]\n[view]\ntokenizer = "whitespace"\n')
    db = open_store(tmp_path, toml)
    try:
        @db.rule("*")
        def every(event):
            yield Upsert(key=f"py:{event.id}", text=f"python rule saw {event.type}", kind="event")

        db.append([{"type": "order.placed", "subject": "order:1", "time": at(-1), "data": {}}])
        assert db.wait(timeout=30)
        db.record_decision("bot", db.view("bot"))
        assert db.wait(timeout=30)
        v = db.view("bot")
        assert sorted(i.text for i in v.items) == ["config rule saw order.placed", "python rule saw order.placed"]
        assert "ctxdb." not in v.text
    finally:
        db.close()


def test_reinforcement_by_decision_raises_recency(tmp_path):
    toml = RULES + """
[agents.bot]
budget = 1000
half_life = { fact = "1h" }
[agents.narrow]
subjects = ["user:1"]
[view]
tokenizer = "whitespace"
"""
    db = open_store(tmp_path, toml, clock=Clock(step=3600))
    try:
        db.append([fact("a", "same-length text A", subject="user:1", time=iso(T0)),
                   fact("b", "same-length text B", subject="user:2", time=iso(T0))])
        assert db.wait(timeout=30)
        before = db.view("bot")
        ia, ib = (next(i for i in before.items if i.key == k) for k in ("fact:a", "fact:b"))
        assert ia.recency == ib.recency and ia.score == ib.score and ia.uses == ib.uses == 0
        narrow = db.view("narrow")
        assert [i.key for i in narrow.items] == ["fact:a"]
        did = db.record_decision("narrow", narrow)
        assert db.wait(timeout=30)
        dec = [e for e in db.read(type="ctxdb.decision")]
        assert len(dec) == 1 and dec[0].id == did
        body = dec[0].json()
        assert body["agent"] == "narrow" and body["view_seq"] == narrow.seq and body["view_hash"] == narrow.hash
        assert [x["key"] for x in body["items"]] == ["fact:a"]
        db.append([fact("c", "later", subject="user:3", time=iso(T0))])   # time passes
        assert db.wait(timeout=30)
        after = db.view("bot")
        ia, ib = (next(i for i in after.items if i.key == k) for k in ("fact:a", "fact:b"))
        assert ia.uses == 1 and ib.uses == 0
        assert ia.reinforcement > 0 == ib.reinforcement
        assert 0 < ib.recency < ia.recency < 1
        assert ia.score > ib.score
        # the view before the decision is unchanged
        assert db.view("bot", seq=before.seq) == before
    finally:
        db.close()


def test_unknown_agent_is_access_denied(ws):
    ws.append([fact("a", "x")])
    assert ws.wait(timeout=30)
    for kw in ({}, {"seq": ws.last_seq}, {"explain": True}, {"valid_at": at(0)}):
        with pytest.raises(ctxdb.AccessDenied):
            ws.view("mallory", **kw)
    with pytest.raises(ctxdb.AccessDenied):
        ws.subscribe("mallory")


def test_bad_view_arguments(ws):
    ws.append([fact("a", "x")])
    assert ws.wait(timeout=30)
    with pytest.raises(ctxdb.BadInput):
        ws.view("bot", seq=ws.last_seq + 1)
    with pytest.raises(ctxdb.BadInput):
        ws.view("bot", seq=-1)
    with pytest.raises(ctxdb.BadInput):
        ws.view("bot", seq=1, as_of=at(0))


def test_json_form_has_lineage(ws):
    seqs = ws.append([fact("a", "alpha fact", subject="user:1", time=at(-2), id="fa"),
                      {"id": "c1", "source": "chat", "type": "chat.msg", "subject": "user:5", "time": at(-1.5),
                       "data": {"text": "one"}},
                      {"id": "c2", "source": "chat", "type": "chat.msg", "subject": "user:5", "time": at(-1.4),
                       "data": {"text": "two"}},
                      {"id": "c3", "source": "chat", "type": "chat.msg", "subject": "user:5", "time": at(-1.3),
                       "data": {"text": "three"}}])
    assert ws.wait(timeout=30)
    v = ws.view("bot")
    d = json.loads(v.to_json())
    assert d["agent"] == "bot" and d["seq"] == v.seq == ws.last_seq
    assert d["text"] == v.text and d["hash"] == v.hash and d["tokens"] == v.tokens and d["budget"] == 1000
    assert d["tokenizer"] == "whitespace" and d["policy_version"] == 1 and d["policy_hash"].startswith("p-")
    assert datetime.fromisoformat(d["as_of"]) == v.as_of
    assert "explain" not in d
    by_key = {i["key"]: i for i in d["items"]}
    assert by_key["fact:a"]["lineage_seqs"] == [seqs[0]]
    assert by_key["fact:a"]["lineage_ids"] == ["fa"]
    assert by_key["fact:a"]["from_seq"] == seqs[0] and by_key["fact:a"]["text"] == "alpha fact"
    summ = next(i for i in d["items"] if i["kind"] == "summary")
    assert summ["lineage_seqs"] == seqs[1:4] and summ["lineage_ids"] == ["c1", "c2", "c3"]
    # lineage points at the real events in the log
    for item in d["items"]:
        for s, i in zip(item["lineage_seqs"], item["lineage_ids"]):
            ev = next(ws.read(from_seq=s, to_seq=s))
            assert ev.id == i
    ex = json.loads(ws.view("bot", explain=True).to_json())
    assert {e["status"] for e in ex["explain"]} == {"included"} and len(ex["explain"]) == len(d["items"])


def test_budget_override_and_hash_depend_on_content(ws):
    ws.append([fact(f"k{i}", f"fact number {i}") for i in range(10)])
    assert ws.wait(timeout=30)
    big = ws.view("bot")
    small = ws.view("bot", budget=30)
    assert small.budget == 30 and small.tokens <= 30 and len(small.items) < len(big.items)
    assert small.hash != big.hash
    assert ws.view("bot", budget=30).hash == small.hash          # deterministic
    assert ws.view("bot", budget=1000) == big                    # the policy budget: the live view


def test_template_defaults_and_skipped_rules(tmp_path):
    toml = """
[[rules]]
on = "ticket.*"
key = "ticket:{subject}"
text = "Ticket {subject} ({data.priority}) assigned to {data.assignee|nobody}"
kind = "fact"

[agents.bot]

[view]
tokenizer = "whitespace"
"""
    db = open_store(tmp_path, toml)
    try:
        db.append([{"type": "ticket.new", "subject": "t1", "time": at(-1), "data": {"priority": "P1"}},
                   {"type": "ticket.new", "subject": "t2", "time": at(-1), "data": {"priority": "P2", "assignee": None}},
                   {"type": "ticket.new", "subject": "t3", "time": at(-1), "data": {"priority": "P3", "assignee": "ann"}},
                   {"type": "ticket.new", "subject": "t4", "time": at(-1), "data": {"assignee": "bob"}}])
        assert db.wait(timeout=30)
        assert sorted(i.text for i in db.view("bot").items) == [
            "Ticket t1 (P1) assigned to nobody", "Ticket t2 (P2) assigned to nobody", "Ticket t3 (P3) assigned to ann"]
        st_ = db.stats()
        assert st_["rules_skipped"] == 1 and "priority" in st_["last_skip"]
    finally:
        db.close()
