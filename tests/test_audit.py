"""Decision receipts, `ctxdb audit` and `ctxdb replay --verify` (tampering is detected)."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

import ctxdb
from ctxdb import embed
from ctxdb.embed import MiniLM
from ctxdb.errors import BadInput
from ctxdb.items import ItemStore

from conftest import Clock, run_cli

TOML = """
[[rules]]
on = "order.status"
key = "order:{data.order}/status"
text = "Order #{data.order} is {data.status}."
kind = "fact"

[agents.bot]
subjects = ["order:*"]
budget = 40
[view]
tokenizer = "whitespace"
"""


def status(i, order, st, t="2027-01-10T09:00:00Z"):
    return {"id": f"s{i}", "source": "shop", "type": "order.status", "subject": f"order:{order}", "time": t,
            "data": {"order": order, "status": st}}


@pytest.fixture
def store(tmp_path: Path):
    cfg = tmp_path / "ctxdb.toml"
    cfg.write_text(TOML)
    db = ctxdb.open(tmp_path / "db", config=cfg, clock=Clock(), embedder=None, segment_events=4)
    db.append([status(i, 100 + i % 5, "paid") for i in range(10)])
    db.append([status(10 + i, 100 + i, "shipped") for i in range(3)])
    assert db.wait(timeout=30)
    yield db, cfg
    db.close()


def test_audit_rebuilds_the_view_and_shows_lineage(store, tmp_path):
    db, cfg = store
    v = db.view("bot")
    did = db.record_decision("bot", v, output="told the customer it shipped", meta={"ticket": 7})
    db.append([status(20, 100, "delivered")])          # the world moves on
    assert db.wait(timeout=30)
    r = db.audit(did)
    assert r.verified and r.view_hash == r.rebuilt_hash == v.hash and not r.reasons
    assert [i.key for i in r.items] == [i.key for i in v.items] and all(i.status == "ok" for i in r.items)
    it = next(i for i in r.items if i.key == "order:100/status")
    assert it.text == "Order #100 is shipped." and [e.id for e in it.lineage] == ["s10"]
    assert it.lineage[0].type == "order.status" and r.output == "told the customer it shipped"
    with pytest.raises(BadInput, match="no decision receipt"):
        db.audit("d-nope")
    db.close()
    out = run_cli("audit", did, "--db", str(tmp_path / "db"), "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert b"VERIFIED" in out.stdout and b"<- seq" in out.stdout
    js = json.loads(run_cli("audit", did, "--db", str(tmp_path / "db"), "--json").stdout)
    assert js["verified"] and js["items"][0]["lineage"]


def test_replay_verify_passes_on_an_intact_store(store, tmp_path):
    db, cfg = store
    for b in (40, 20):
        db.record_decision("bot", db.view("bot", budget=b))
    assert db.wait(timeout=30)
    r = db.replay_verify()
    assert r.ok and r.receipts == 2 and r.verified == 2 and r.items_identical
    db.close()
    out = run_cli("replay", "--verify", "--db", str(tmp_path / "db"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["verified"] == 2


def test_replay_detects_a_forged_receipt(store, tmp_path):
    db, cfg = store
    v = db.view("bot")
    db.record_decision("bot", v)
    # a receipt claiming a view the log never produced (written with valid checksums)
    db.append([{"id": "d-forged", "source": "ctxdb", "type": "ctxdb.decision", "subject": "agent:bot",
                "time": "2027-01-10T09:00:00Z",
                "data": {"agent": "bot", "view_seq": v.seq, "view_hash": "v-0000", "budget": 40,
                         "items": [{"key": i.key, "hash": i.hash} for i in v.items]}}])
    assert db.wait(timeout=30)
    r = db.replay_verify()
    assert not r.ok and r.receipts == 2 and r.verified == 1
    assert r.mismatches[0]["decision"] == "d-forged" and "view hash" in r.mismatches[0]["reasons"][0]
    assert not db.audit("d-forged").verified
    db.close()
    out = run_cli("replay", "--verify", "--db", str(tmp_path / "db"))
    assert out.returncode == 1 and b"MISMATCH d-forged" in out.stdout


def test_replay_detects_a_tampered_item_store(store, tmp_path):
    db, cfg = store
    db.record_decision("bot", db.view("bot"))
    assert db.wait(timeout=30)
    db.close()
    con = duckdb.connect(str(tmp_path / "db" / "items.duckdb"))
    con.execute("UPDATE item_versions SET text = 'Order #101 is refunded.' WHERE key = 'order:101/status' "
                "AND to_seq IS NULL")
    con.close()
    out = run_cli("replay", "--verify", "--db", str(tmp_path / "db"), "--json")
    assert out.returncode == 1
    r = json.loads(out.stdout)
    assert not r["items_identical"] and r["digest_live"] != r["digest_replay"]
    # the receipt itself still verifies against the log: the replay never reads the item store
    assert r["verified"] == 1


def test_replay_detects_a_tampered_segment(store, tmp_path):
    db, cfg = store
    db.record_decision("bot", db.view("bot"))
    assert db.wait(timeout=30)
    db.close()
    segs = sorted((tmp_path / "db" / "log").glob("seg-*.parquet"))
    assert segs
    data = bytearray(segs[0].read_bytes())
    data[len(data) // 3] ^= 0x5A
    segs[0].write_bytes(bytes(data))
    out = run_cli("replay", "--verify", "--db", str(tmp_path / "db"))
    assert out.returncode != 0
    assert segs[0].name.encode() in out.stderr


def test_query_receipts_replay_without_the_model(tmp_path):
    cfg = tmp_path / "ctxdb.toml"
    cfg.write_text(TOML.replace("budget = 40", "budget = 22"))
    with ctxdb.open(tmp_path / "db", config=cfg, clock=Clock(), embedder=MiniLM()) as db:
        db.append([status(i, 100 + i, st) for i, st in enumerate(["paid", "shipped", "lost in transit", "delivered"])])
        assert db.wait(timeout=60)
        v = db.view("bot", query="which parcel went missing?")
        assert "order:102/status" in {i.key for i in v.items}
        did = db.record_decision("bot", v)
        assert db.wait(timeout=60)
        n0 = embed.calls.texts
        r = db.audit(did)
        assert r.verified and r.query == "which parcel went missing?"
        rep = db.replay_verify()
        assert rep.ok and rep.receipts == 1
        assert embed.calls.texts == n0


def test_replay_verify_without_an_engine_catches_the_item_store_up(store, tmp_path):
    """A fresh process (no engine built) whose item store is behind the log: replay --verify
    projects the missing events into the live item store first, then compares at the log's end."""
    db, cfg = store
    db.record_decision("bot", db.view("bot"))
    assert db.wait(timeout=30)
    db.close()
    db = ctxdb.open(tmp_path / "db", config=cfg, clock=Clock(), embedder=None, segment_events=4)
    try:
        seqs = db.append([status(30 + i, 100 + i, "delivered") for i in range(3)])
        assert db._engine is None   # appended, never projected in this process
        r = db.replay_verify()
        assert r.ok and r.items_identical and r.events == seqs[-1] and r.receipts == r.verified == 1
        assert db._engine is None   # the replay did not build the live engine
        assert "Order #100 is delivered." in db.view("bot").text
    finally:
        db.close()
    items = ItemStore(tmp_path / "db" / "items.duckdb", readonly=True)
    try:
        assert items.checkpoint()[0] == seqs[-1]
    finally:
        items.close()


def test_replay_verify_leaves_a_tail_that_changes_no_version_unprojected(store, tmp_path):
    """Events after the live item store's checkpoint that change no item version (a legal
    hold, a purge's stub tombstone, a purge receipt, a receipt no rule matches), as a purge
    leaves them: replay --verify compares at the log's end without projecting them into the live
    store (that would load every current version); an event a rule matches is projected."""
    db, cfg = store
    db.record_decision("bot", db.view("bot"))
    assert db.wait(timeout=30)
    db.close()
    sys_events = [{"id": "h1", "source": "t", "type": "ctxdb.hold", "subject": "user:7", "time": "2027-01-11T00:00:00Z",
                   "data": {}},
                  {"id": "s1", "source": "t", "type": "ctxdb.forget", "subject": "purged:" + "ab" * 16,
                   "time": "2027-01-11T00:00:00Z", "data": {}},
                  {"id": "p1", "source": "t", "type": "ctxdb.purge", "subject": "ctxdb:purge",
                   "time": "2027-01-11T00:00:00Z", "data": {"events": 0}}]

    def checkpoint() -> int:
        items = ItemStore(tmp_path / "db" / "items.duckdb", readonly=True)
        try:
            return items.checkpoint()[0]
        finally:
            items.close()

    projected = checkpoint()
    with ctxdb.open(tmp_path / "db", config=cfg, clock=Clock(), embedder=None, segment_events=4) as db:
        seqs = db.append(sys_events)
        r = db.replay_verify()
        assert r.ok and r.items_identical and r.events == seqs[-1] and db._engine is None
    assert checkpoint() == projected < seqs[0]   # the tail was not projected into the live store
    with ctxdb.open(tmp_path / "db", config=cfg, clock=Clock(), embedder=None, segment_events=4) as db:
        seqs = db.append([status(40, 101, "returned")])
        r = db.replay_verify()
        assert r.ok and r.items_identical and r.events == seqs[-1]
    assert checkpoint() == seqs[-1]   # a version changed: the live store was projected first
