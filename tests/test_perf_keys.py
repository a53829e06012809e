"""The key fingerprint and first-occurrence mask: the vectorised implementations give exactly
what the reference gives (fingerprints are stored in key files, so they must never change)."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctxdb.keyindex import _LONG, _M1, _M2, _U, _fmix, first_occurrences, fingerprints


# The original padded-matrix implementation, kept verbatim as the reference.
def reference_fingerprints(sources: pa.Array, ids: pa.Array) -> np.ndarray:
    """(n, 2) uint64 fingerprints of the keys `source \\x1f id`. Deterministic across processes
    and versions of NumPy/Arrow (it depends only on the UTF-8 bytes of the key)."""
    n = len(ids)
    out = np.zeros((n, 2), dtype=np.uint64)
    if n == 0:
        return out
    key = pc.binary_join_element_wise(sources, ids, "\x1f").cast(pa.large_binary())
    key = key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key
    bufs = key.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[key.offset : key.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    if len(data) == 0:
        data = np.zeros(1, np.uint8)
    lens = np.diff(offsets)
    long_rows = np.nonzero(lens > _LONG)[0]
    width = int(min(int(lens.max()), _LONG))
    width = max(8, (width + 7) // 8 * 8)
    cols = np.arange(width)
    idx = offsets[:-1, None] + cols[None, :]
    mat = np.take(data, idx, mode="clip")
    mat[cols[None, :] >= lens[:, None]] = 0
    words = np.ascontiguousarray(mat).view("<u8")
    h1 = lens.astype(np.uint64) * _M1 + _U(0x243F6A8885A308D3)
    h2 = lens.astype(np.uint64) * _M2 + _U(0x13198A2E03707344)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            # Only words that hold key bytes are mixed in, so a key's fingerprint does not depend
            # on the width of the longest key in its batch.
            w = words[:, j]
            n1 = (h1 ^ w) * _M1
            n1 = (n1 << _U(31)) | (n1 >> _U(33))
            n2 = (h2 + w) * _M2
            n2 = n2 ^ (n2 >> _U(29))
            active = lens > 8 * j
            h1 = np.where(active, n1, h1)
            h2 = np.where(active, n2, h2)
        out[:, 0] = _fmix(h1 ^ (h2 >> _U(7)))
        out[:, 1] = _fmix(h2 + h1)
    for r in long_rows:  # exact digest for very long keys
        d = hashlib.blake2b(key[int(r)].as_py(), digest_size=16).digest()
        out[r, 0] = int.from_bytes(d[:8], "little")
        out[r, 1] = int.from_bytes(d[8:], "little")
    return out



ALPHABET = "abcXYZ019-_.:/é€😀\x1f"


def _keys(rng: random.Random, n: int) -> tuple[list[str], list[str]]:
    lens = [0, 1, 2, 7, 8, 9, 15, 16, 17, 23, 36, 64, 200, 250, 255, 256, 257, 300, 600]
    src = [rng.choice(["", "a", "slack", "github", "ü" * rng.randint(0, 9), "s" * rng.randint(0, 300)]) for _ in range(n)]
    ids = ["".join(rng.choice(ALPHABET) for _ in range(rng.choice(lens))) for _ in range(n)]
    return src, ids


@pytest.mark.parametrize("seed", range(40))
def test_fingerprints_match_the_reference(seed):
    rng = random.Random(seed)
    src, ids = _keys(rng, rng.randint(1, 300))
    s, i = pa.array(src), pa.array(ids)
    if seed % 3 == 1:  # sliced arrays (non-zero offsets), as from RecordBatch.slice
        s, i = s.slice(1), i.slice(1)
    if seed % 3 == 2:  # chunked inputs, as from tables
        s, i = pa.chunked_array([s]), pa.chunked_array([i])
    got, want = fingerprints(s, i), reference_fingerprints(s, i)
    assert got.dtype == np.uint64 and got.shape == (len(i), 2)
    assert (got == want).all()


def test_fingerprints_of_uniform_and_empty_inputs():
    for ids in (["x" * 8] * 5, ["x" * 3] * 5, ["abc", "abd"], ["a" * 256, "a" * 257]):
        s, i = pa.array(["src"] * len(ids)), pa.array(ids)
        assert (fingerprints(s, i) == reference_fingerprints(s, i)).all()
    assert fingerprints(pa.array([], pa.string()), pa.array([], pa.string())).shape == (0, 2)
    a = fingerprints(pa.array(["s"]), pa.array(["k"]))
    b = fingerprints(pa.array(["s", "t"]), pa.array(["k", "x" * 100]))
    assert (a[0] == b[0]).all()  # independent of the other keys in the batch


def _reference_first(fp: np.ndarray) -> np.ndarray:
    seen, out = set(), []
    for hi, lo in fp.tolist():
        out.append((hi, lo) not in seen)
        seen.add((hi, lo))
    return np.array(out, dtype=bool)


@pytest.mark.parametrize("seed", range(20))
def test_first_occurrences_matches_a_set_scan(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 200))
    fp = rng.integers(0, 4 if seed % 2 else 2**63, size=(n, 2)).astype(np.uint64)
    if seed % 4 == 3 and n:  # equal high halves with different low halves
        fp[:, 0] = 7
    assert (first_occurrences(fp) == _reference_first(fp)).all()


@pytest.mark.parametrize("seed", range(12))
def test_small_batches_take_the_python_path_with_the_same_fingerprints(seed):
    """Batches under keyindex.SMALL_BATCH are hashed in Python ints: same bits as the vectorised path."""
    from ctxdb import keyindex

    rng = random.Random(1000 + seed)
    src, ids = _keys(rng, keyindex.SMALL_BATCH - 1)
    for n in range(1, keyindex.SMALL_BATCH):
        s, i = pa.array(src[:n]), pa.array(ids[:n])
        want = reference_fingerprints(s, i)
        got = fingerprints(s, i)
        assert got.dtype == np.uint64 and got.shape == (n, 2) and (got == want).all()
        # and the vectorised path, forced, agrees
        big_s, big_i = pa.array(src[:n] * keyindex.SMALL_BATCH), pa.array(ids[:n] * keyindex.SMALL_BATCH)
        assert (fingerprints(big_s, big_i)[:n] == got).all()
