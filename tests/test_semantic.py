"""Semantic recall: embeddings (the real all-MiniLM-L6-v2), hybrid search, query-aware views.

Every store here uses the real model (loaded once per test process); the texts are few, so the
background embedder finishes in a second or two.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ctxdb
from ctxdb import embed
from ctxdb.embed import MiniLM
from ctxdb.errors import AccessDenied, BadInput
from ctxdb.vectors import EmbeddingStore

from conftest import Clock, run_cli

TOML = """
[[rules]]
on = "note.*"
key = "note:{id}"
text = "{data.text}"
kind = "fact"
subject = "{subject}"
tags = ["{data.tag|none}"]

[[rules]]
on = "note.removed"
retract = "note:{data.of}"

[[rules]]
on = "persona.set"
key = "persona:{subject}"
text = "{data.text}"
kind = "persona"
pinned = true

[agents.bot]
subjects = ["user:1", "persona:*"]
budget = 60
deny_tags = ["secret"]
[view]
tokenizer = "whitespace"
"""

NOTES = [
    ("n1", "user:1", "Alice prefers green tea in the morning."),
    ("n2", "user:1", "The delivery to Berlin takes three days by truck."),
    ("n3", "user:1", "Order 48213 was refunded after the package arrived damaged."),
    ("n4", "user:1", "Alice's favourite football club is Werder Bremen."),
    ("n5", "user:1", "The office wifi password rotates every month."),
    ("n6", "user:1", "Our quarterly revenue grew by twelve percent."),
    ("n7", "user:1", "Order 48231 shipped on Monday with DHL."),
    ("n8", "user:1", "Bob is allergic to peanuts and shellfish."),
]


def note(i, subject, text, **data):
    return {"id": i, "source": "test", "type": "note.added", "subject": subject, "time": "2027-01-10T09:00:00Z",
            "data": {"text": text, **data}}


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "ctxdb.toml"
    p.write_text(TOML)
    return p


def open_db(tmp_path: Path, cfg: Path, **kw) -> ctxdb.Store:
    return ctxdb.open(tmp_path / "db", config=cfg, clock=Clock(), embedder=MiniLM(), **kw)


def filled(tmp_path, cfg, extra=()):
    db = open_db(tmp_path, cfg)
    db.append([note(*n) for n in NOTES] + list(extra))
    assert db.wait(timeout=120)
    return db


def test_embedder_contract():
    e = MiniLM()
    v = e.encode(["refund for a damaged parcel", "refund for a damaged parcel", "the weather is nice"])
    assert v.shape == (3, e.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(v[0], v[1], atol=1e-6)
    assert v[0] @ v[2] < 0.5 < v[0] @ e.encode(["my package arrived broken, I want my money back"])[0]
    assert e.encode([]).shape == (0, e.dim)


def test_embeddings_in_background_once_per_text_and_wait_covers_them(tmp_path, cfg):
    same = "Alice prefers green tea in the morning."
    db = open_db(tmp_path, cfg)
    try:
        before = embed.calls.texts
        db.append([note(*n) for n in NOTES] + [note("dup", "user:1", same), note("dup2", "user:2", same)])
        assert db.wait(timeout=120)
        s = db.stats()
        assert s["embedded_seq"] == s["last_seq"] and s["embedder_lag"] == 0 and s["embed_queue"] == 0
        assert s["embeddings"] == len(NOTES)              # 10 items, 8 distinct texts
        assert embed.calls.texts - before == len(NOTES)
        db.append([note("dup3", "user:1", same)])        # a known text again: no model call
        assert db.wait(timeout=60)
        assert embed.calls.texts - before == len(NOTES)
    finally:
        db.close()
    # reopened: nothing is embedded again; the stored checkpoint is reported without the engine
    with ctxdb.open(tmp_path / "db", readonly=True) as ro:
        s = ro.stats()
        assert s["embeddings"] == len(NOTES) and s["embedded_seq"] == s["last_seq"]
    db = open_db(tmp_path, cfg)
    try:
        n0 = embed.calls.texts
        assert db.wait(timeout=60)
        top = db.search("bot", "green tea")[0]
        assert {top.key, *top.merged} == {"note:n1", "note:dup", "note:dup3"}  # user:2's copy is not bot's
        assert embed.calls.texts - n0 == 1               # only the query
    finally:
        db.close()


def test_replays_never_call_the_model(tmp_path, cfg):
    db = filled(tmp_path, cfg)
    try:
        q = "Which drink does Alice like?"
        live = db.view("bot", query=q)
        seq = live.seq
        db.append([note("later", "user:1", "Alice switched to coffee.")])
        assert db.wait(timeout=60)
        n0 = embed.calls.texts
        assert db.view("bot", query=q, seq=seq) == live          # as-of, query-aware
        db.view("bot", seq=seq)                                  # as-of, plain
        rep = db.rebuild()
        assert rep["identical"]
        assert db.view("bot", query=q, seq=seq) == live
        db.snapshot()
        assert embed.calls.texts == n0
    finally:
        db.close()
    (tmp_path / "db" / "items.duckdb").unlink()                  # restore from the snapshot
    db = open_db(tmp_path, cfg)
    try:
        n0 = embed.calls.texts
        assert db.view("bot", query=q, seq=seq) == live
        assert db.wait(timeout=60)
        assert embed.calls.texts == n0
        assert db.restored_from is not None
    finally:
        db.close()


def test_search_never_returns_what_the_agent_may_not_see(tmp_path, cfg):
    # An index full of forbidden items nearly identical to the query: other subjects, denied tags,
    # retracted items, and items added after the as-of position.
    q = "the secret launch code for project falcon"
    forbidden = [note(f"f{i}", "user:2", f"The secret launch code for project falcon is {i}.") for i in range(40)]
    forbidden += [note(f"t{i}", "user:1", f"The secret launch code for project falcon number {i}.", tag="secret")
                  for i in range(20)]
    forbidden += [note("gone", "user:1", "The secret launch code for project falcon, retracted.")]
    db = filled(tmp_path, cfg, forbidden)
    try:
        db.append([{"id": "rm", "source": "test", "type": "note.removed", "subject": "user:1",
                    "time": "2027-01-10T09:00:00Z", "data": {"of": "gone"}}])
        assert db.wait(timeout=120)
        seq = db.last_seq
        db.append([note("after", "user:1", "The secret launch code for project falcon, added later.")])
        assert db.wait(timeout=60)
        allowed = {f"note:{n[0]}" for n in NOTES}
        for hits in (db.search("bot", q, k=50, seq=seq), db.search("bot", q, k=50, as_of=db.log.recorded_at_of(seq))):
            assert {h.key for h in hits} <= allowed and len(hits) == len(NOTES)
        now = db.search("bot", q, k=3)
        assert now[0].key == "note:after"
        assert {h.key for h in now} <= allowed | {"note:after"}
        with pytest.raises(AccessDenied):
            db.search("nobody", q)
    finally:
        db.close()


def test_hybrid_finds_exact_ids_and_ranks_meaning(tmp_path, cfg):
    db = filled(tmp_path, cfg)
    try:
        hits = db.search("bot", "48213", k=3)
        assert hits[0].key == "note:n3" and hits[0].keyword > 0
        assert all(h.keyword == 0 for h in hits[1:] if h.key != "note:n7")
        hits = db.search("bot", "which food allergies does Bob have?", k=2)
        assert hits[0].key == "note:n8" and hits[0].vector > hits[1].vector
        assert [h.rank for h in hits] == [1, 2]
        with pytest.raises(BadInput, match="query"):
            db.search("bot", "   ")
        with pytest.raises(BadInput, match="k"):
            db.search("bot", "tea", k=0)
    finally:
        db.close()


def test_identical_texts_are_one_search_hit_with_every_key(tmp_path, cfg):
    db = filled(tmp_path, cfg, [note("copy", "user:1", NOTES[7][2])])
    try:
        top = db.search("bot", "peanut allergy", k=3)[0]
        assert top.key == "note:copy" and top.merged == ("note:n8",)
        keys = [h.key for h in db.search("bot", "peanut allergy", k=20)]
        assert "note:n8" not in keys and len(keys) == len(NOTES)
    finally:
        db.close()


def test_query_aware_view_spills_over_and_is_reproducible(tmp_path, cfg):
    persona = {"id": "p", "source": "test", "type": "persona.set", "subject": "persona:bot",
               "time": "2027-01-10T09:00:00Z", "data": {"text": "You are a helpful assistant."}}
    db = filled(tmp_path, cfg, [persona])
    try:
        plain = db.view("bot")
        assert "note:n8" not in {i.key for i in plain.items}       # evicted from the plain view
        q = "Is Bob allergic to anything?"
        v = db.view("bot", query=q)
        keys = [i.key for i in v.items]
        assert "note:n8" in keys and "persona:persona:bot" in keys   # spillover recall; pinned stays
        assert v.tokens <= v.budget == 60 and v.query == q
        it = next(i for i in v.items if i.key == "note:n8")
        assert it.relevance == max(i.relevance for i in v.items) and it.vector > 0.3
        assert v.hash != plain.hash
        assert db.view("bot", query=q, seq=v.seq) == v
        ex = db.view("bot", query=q, explain=True)
        assert ex.text == v.text and all(e.relevance is not None for e in ex.explain if e.status == "included")
        with pytest.raises(BadInput):
            db.view("bot", query="")
    finally:
        db.close()
    db = open_db(tmp_path, cfg)
    try:
        assert db.view("bot", query=q, seq=v.seq) == v              # byte-identical after a restart
        assert db.view("bot", query=q).text == v.text
    finally:
        db.close()


def test_embeddings_off_is_a_clear_error(tmp_path, cfg):
    with ctxdb.open(tmp_path / "db", config=cfg, embedder=None) as db:
        db.append([note(*NOTES[0])])
        assert db.wait(timeout=30)
        assert "embedded_seq" not in db.stats()
        with pytest.raises(BadInput, match="embeddings"):
            db.search("bot", "tea")
        with pytest.raises(BadInput, match="embeddings"):
            db.view("bot", query="tea")
        assert db.view("bot").items                                  # plain views need no model


def test_embedding_store_survives_torn_writes(tmp_path):
    root = tmp_path / "vectors"
    s = EmbeddingStore(root, "m", 4)
    s.add(["a", "b"], np.eye(4, dtype=np.float32)[:2], seq=5, vid=7)
    s.add(["c", "a"], np.eye(4, dtype=np.float32)[2:4], seq=9, vid=11)   # "a" is kept as first stored
    d = root / "m"
    (d / "chunk-000009.arrow").write_bytes(b"half a chunk")                # written, never listed
    s2 = EmbeddingStore(root, "m", 4)
    assert s2.hashes == ["a", "b", "c"] and (s2.state.seq, s2.state.vid) == (9, 11)
    assert np.array_equal(s2.matrix, np.eye(4, dtype=np.float32)[:3])
    assert not (d / "chunk-000009.arrow").exists() and s2.recovered
    (d / "state.json").write_text("{not json")
    s3 = EmbeddingStore(root, "m", 4)                                      # unreadable: set aside, re-embed
    assert len(s3) == 0 and s3.recovered and any(p.name.startswith("m.unreadable") for p in root.iterdir())


def test_cli_search_and_query_view(tmp_path, cfg):
    db = filled(tmp_path, cfg)
    db.close()
    env = {"CTXDB_EMBEDDINGS": "minilm"}
    r = run_cli("search", "--db", str(tmp_path / "db"), "--config", str(cfg), "--agent", "bot", "-k", "2",
                "--json", "order 48213 refund", env=env)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["key"] == "note:n3"
    r = run_cli("view", "--db", str(tmp_path / "db"), "--config", str(cfg), "--agent", "bot",
                "--query", "peanut allergy", env=env)
    assert r.returncode == 0, r.stderr
    assert b"Bob is allergic to peanuts" in r.stdout
    r = run_cli("search", "--db", str(tmp_path / "db"), "--config", str(cfg), "--agent", "bot", "x",
                env={"CTXDB_EMBEDDINGS": "off"})
    assert r.returncode == 65 and b"embeddings" in r.stderr
    r = run_cli("stats", "--db", str(tmp_path / "db"), "--json")
    s = json.loads(r.stdout)
    assert s["embedded_seq"] == s["last_seq"] and s["embeddings"] >= len(NOTES)


def test_large_candidate_sets_use_the_faiss_index_filtered_inside(tmp_path):
    # flat_max = 5 sends every search over more than 5 candidates (bot sees 8) through FAISS HNSW
    cfg = tmp_path / "ctxdb.toml"
    cfg.write_text(TOML + '\n[embeddings]\nindex = "hnsw"\nflat_max = 5\n')
    q = "the secret launch code for project falcon"
    forbidden = [note(f"f{i}", "user:2", f"The secret launch code for project falcon is {i}.") for i in range(60)]
    db = filled(tmp_path, cfg, forbidden)
    try:
        hits = db.search("bot", q, k=5)
        assert len(hits) == 5 and all(h.key in {f"note:{n[0]}" for n in NOTES} for h in hits)
        assert db.search("bot", "peanut allergy", k=1)[0].key == "note:n8"
        sem = db._views().semantic
        assert sem._ann is not None and sem._ann.kind == "hnsw" and len(sem._ann) >= len(NOTES) + 60
    finally:
        db.close()
    path = tmp_path / "db" / "vectors"
    idx = next(path.glob("*/index.faiss"))
    meta = json.loads(idx.with_name("index.faiss.json").read_text())
    assert meta["n"] >= len(NOTES) + 60 and meta["seq"] > 0 and meta["kind"] == "hnsw"
    # an index that disagrees with the stored embeddings is rebuilt from them (never trusted)
    data = bytearray(idx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    idx.write_bytes(bytes(data))
    db = open_db(tmp_path, cfg)
    try:
        n0 = embed.calls.texts
        hits = db.search("bot", q, k=5)
        assert all(h.key in {f"note:{n[0]}" for n in NOTES} for h in hits)
        sem = db._views().semantic
        assert sem.index_rebuilt and "CRC" in sem.index_rebuilt
        assert embed.calls.texts == n0                        # rebuilt from stored vectors, not the model
    finally:
        db.close()
