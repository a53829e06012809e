"""The Arrow content digest (item-store comparisons in rebuild and replay --verify): independent of
how rows are batched, sensitive to every value, null, length and list element."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

from ctxdb.digest import digest_batches

SCHEMA = pa.schema([("key", pa.string()), ("n", pa.int64()), ("p", pa.float64()), ("b", pa.bool_()),
                    ("tags", pa.list_(pa.string())), ("seqs", pa.list_(pa.int64()))])


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def rows(n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        out.append({"key": None if i % 17 == 5 else f"k{i}-" + "x" * rnd.randrange(5),
                    "n": None if i % 11 == 3 else rnd.randrange(-10**12, 10**12),
                    "p": None if i % 13 == 4 else rnd.random(),
                    "b": None if i % 7 == 2 else bool(i % 2),
                    "tags": None if i % 9 == 1 else [f"t{j}" for j in range(rnd.randrange(3))],
                    "seqs": [rnd.randrange(10**6) for _ in range(rnd.randrange(4))]})
    return out


def dig(t: pa.Table, max_chunksize: int | None = None) -> str:
    return digest_batches(t.schema, t.to_batches(max_chunksize=max_chunksize), threads=1 + (max_chunksize or 0) % 2)


def test_batching_does_not_matter():
    t = table(rows(500))
    d = dig(t)
    assert dig(t, 1) == dig(t, 7) == dig(t, 64) == d
    # slices (non-zero offsets) of a larger table, concatenated
    assert digest_batches(t.schema, [t.slice(0, 123).combine_chunks().to_batches()[0],
                                     t.slice(123).combine_chunks().to_batches()[0]]) == d


@pytest.mark.parametrize("col", ["key", "n", "p", "b", "tags", "seqs"])
def test_every_change_changes_the_digest(col):
    base = rows(200)
    d = dig(table(base))
    seen = {d}
    for i in (0, 5, 57, 199):
        for new in [x for x in _variants(col, base[i][col]) if repr(x) != repr(base[i][col])]:
            changed = [dict(r) for r in base]
            changed[i][col] = new
            got = dig(table(changed), 16)
            assert got != d, (col, i, base[i][col], new)
            seen.add(got)
    assert len(seen) > 4


def _variants(col: str, v):
    if col == "key":
        return [None, "", (v or "") + "y"] if v is not None else ["", "k"]
    if col == "n":
        return [None, 0, (v or 0) + 1] if v is not None else [0]
    if col == "p":
        return [None, -0.0 if v != -0.0 else 0.0, (v or 0.0) + 1e-12] if v is not None else [0.0]
    if col == "b":
        return [None, not v] if v is not None else [False]
    if col == "tags":
        return [None, [], (v or []) + [""]] if v is not None else [[]]
    return [None, (v or []) + [0], list(reversed(v)) + [1]]


def test_moving_bytes_between_neighbours_is_seen():
    a = table([{"key": "ab", "n": 1, "p": 0.0, "b": True, "tags": ["x", "y"], "seqs": [1]},
               {"key": "c", "n": 1, "p": 0.0, "b": True, "tags": [], "seqs": [2]}])
    b = table([{"key": "a", "n": 1, "p": 0.0, "b": True, "tags": ["x", "y"], "seqs": [1]},
               {"key": "bc", "n": 1, "p": 0.0, "b": True, "tags": [], "seqs": [2]}])
    c = table([{"key": "ab", "n": 1, "p": 0.0, "b": True, "tags": ["x"], "seqs": [1]},
               {"key": "c", "n": 1, "p": 0.0, "b": True, "tags": ["y"], "seqs": [2]}])
    assert len({dig(a), dig(b), dig(c)}) == 3
    assert dig(a) != dig(a.slice(0, 1)) and dig(table([])) != dig(a)
