"""Secrets planted in events never reach any file the projection writes.

The raw log (log/: WAL frames and sealed segments) keeps `data` byte-for-byte as received -- it is
the record of what arrived, and erasing from it is purge's job (issue 5). Everything derived from
it -- items.duckdb, snapshots, stored embeddings, the vector index, token caches -- is scanned
here, raw bytes and decompressed, for every planted secret."""
from __future__ import annotations

from pathlib import Path

import ctxdb
from ctxdb.embed import MiniLM

from conftest import Clock

SECRETS = {
    "api_key": "sk-proj-Zq81mXvT4kL0pQ2rS7uW9yB3nC5dE6fG",
    "github_token": "ghp_4fK9sL2mQ8wE1rT6yU3iO7pA5sD0fG2hJ4kL",
    "url_password": "hunter2-Wobbly-Kettle",
    "card_number": "4539 1488 0343 6467",
    "bearer_token": "q8Zr2LmN5vX0tBy7Wc4Ks1Jd6Hf3Ga9P",
    "private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7markerKEYBODY",
}

TEXTS = [
    f"Use the key {SECRETS['api_key']} for the staging API.",
    f"CI token is {SECRETS['github_token']}, rotate it monthly.",
    f"Connect with postgres://app:{SECRETS['url_password']}@db.internal:5432/orders please.",
    f"Customer paid with card {SECRETS['card_number']} yesterday.",
    f"curl -H 'Authorization: Bearer {SECRETS['bearer_token']}' https://api.example.com",
    "Here is the key:\n-----BEGIN PRIVATE KEY-----\n" + SECRETS["private_key"] + "\n-----END PRIVATE KEY-----",
]

TOML = """
[[rules]]
on = "note.added"
key = "note:{id}"
text = "{data.text}"
kind = "fact"

[agents.bot]
budget = 2000
[view]
tokenizer = "whitespace"
"""


def needles() -> list[bytes]:
    out = []
    for s in SECRETS.values():
        out += [s.encode(), s.encode("utf-16-le")]
        out.append(s[: len(s) // 2 + 4].encode())      # a long prefix must not survive either
    return out


def decoded(path: Path) -> list[bytes]:
    """The file's bytes, plus its zstd frames decompressed (Arrow/Parquet/DuckDB may compress)."""
    import zstandard

    data = path.read_bytes()
    out = [data]
    magic = b"\x28\xb5\x2f\xfd"
    i = data.find(magic)
    while i >= 0 and len(out) < 10_000:
        try:
            out.append(zstandard.ZstdDecompressor().decompressobj().decompress(data[i:]))
        except zstandard.ZstdError:
            pass
        i = data.find(magic, i + 1)
    return out


def test_planted_secrets_are_in_no_derived_file(tmp_path):
    cfg = tmp_path / "ctxdb.toml"
    cfg.write_text(TOML)
    db = ctxdb.open(tmp_path / "db", config=cfg, clock=Clock(), embedder=MiniLM())
    try:
        db.append([{"id": f"n{i}", "source": "t", "type": "note.added", "subject": "user:1",
                    "time": "2027-01-10T09:00:00Z", "data": {"text": t}} for i, t in enumerate(TEXTS)])
        assert db.wait(timeout=120)
        v = db.view("bot")
        assert len(v.items) == len(TEXTS)
        by_key = {i.key: i for i in v.items}
        for i, kind in enumerate(SECRETS):
            it = by_key[f"note:n{i}"]
            assert f"[REDACTED:{kind}]" in it.text, it.text
            assert SECRETS[kind] not in it.text
            assert it.redactions and all(set(r) == {"kind", "start", "end"} for r in it.redactions)
            r = it.redactions[0]
            assert it.text[r["start"]:r["end"]] == f"[REDACTED:{r['kind']}]"
        assert "db.internal:5432" in by_key["note:n2"].text and "postgres://app:" in by_key["note:n2"].text
        hits = db.search("bot", "staging API key")
        assert hits and all(SECRETS["api_key"] not in h.text for h in hits)
        db.snapshot()
        assert db.rebuild()["identical"]
    finally:
        db.close()
    root = tmp_path / "db"
    scanned = 0
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        if f.relative_to(root).parts[0] == "log":
            continue  # the raw record of what arrived (see the module docstring)
        scanned += 1
        for blob in decoded(f):
            for n in needles():
                assert n not in blob, f"{f.relative_to(root)} holds a planted secret"
    assert scanned >= 4          # items.duckdb, a snapshot (db + manifest), embeddings state + chunk
    # and the log does hold them: the check above would have found them there
    assert any(SECRETS["api_key"].encode() in b for f in (root / "log").rglob("*") if f.is_file()
               for b in decoded(f))
