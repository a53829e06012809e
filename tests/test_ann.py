"""ctxdb.ann.VectorIndex with real faiss, checked against numpy brute force."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

import ctxdb.ann as ann
from ctxdb.ann import VectorIndex
from ctxdb.errors import BadInput, CorruptionError


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(X: np.ndarray, Q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    s = Q @ X.T
    if allowed is not None:
        keep = np.zeros(len(X), bool)
        keep[allowed] = True
        s[:, ~keep] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def recall(I: np.ndarray, G: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(g)) / len(g) for a, g in zip(I.tolist(), G.tolist())]))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_flat_equals_numpy_brute_force(rng):
    X, Q = unit(rng, 3000, 48), unit(rng, 40, 48)
    ix = VectorIndex(48, "flat")
    ix.add(X[:1000])
    ix.add(X[1000:])
    assert ix.kind == "flat" and len(ix) == 3000
    D, I = ix.search(Q, 10)
    G = brute(X, Q, 10)
    assert D.shape == I.shape == (40, 10) and I.dtype == np.int64
    assert np.array_equal(I, G)
    np.testing.assert_allclose(D, np.take_along_axis(Q @ X.T, G, 1), rtol=1e-5, atol=1e-5)
    d1, i1 = ix.search(Q[3], 10)
    assert i1.shape == (10,) and np.array_equal(i1, G[3])
    De, Ie = ix.exact(Q, 10)
    assert np.array_equal(Ie, G)
    assert np.array_equal(ix.vectors(np.array([5, 2999, 0])), X[[5, 2999, 0]])


def test_padding_and_small_inputs(rng):
    X = unit(rng, 3, 8)
    ix = VectorIndex(8, "flat")
    D, I = ix.search(X[0], 4)                       # empty index
    assert I.tolist() == [-1] * 4 and np.isneginf(D).all()
    ix.add(X)
    D, I = ix.search(X[0], 5)
    assert I[0] == 0 and I[3:].tolist() == [-1, -1] and np.isneginf(D[3:]).all() and np.isfinite(D[:3]).all()
    assert ix.search(X, 0)[1].shape == (3, 0)
    ix.add(2.5 * X[:1])                             # re-normalised on the way in
    assert np.allclose(np.linalg.norm(ix.vectors(np.array([3])), axis=1), 1)
    for bad in (np.ones((2, 7)), np.full((1, 8), np.nan), np.zeros((1, 8))):
        with pytest.raises(BadInput):
            ix.add(bad)
    with pytest.raises(BadInput):
        ix.search(np.ones(7), 3)
    with pytest.raises(BadInput):
        ix.vectors(np.array([4]))
    with pytest.raises(BadInput):
        VectorIndex(8, "ivf-pq")
    assert len(ix) == 4                             # failed calls added nothing


def test_hnsw_recall(rng):
    X, Q = unit(rng, 4000, 32), unit(rng, 200, 32)
    ix = VectorIndex(32, "hnsw")
    ix.add(X)
    assert ix.kind == "hnsw"
    _, I = ix.search(Q, 10)
    r = recall(I, brute(X, Q, 10))
    assert r >= 0.9, r
    assert np.array_equal(ix.exact(Q, 10)[1], brute(X, Q, 10))
    assert np.array_equal(ix.vectors(np.arange(4000)), X)


def trap(rng: np.random.Generator, n: int = 3000, d: int = 32):
    """99 % of the vectors are forbidden and nearly identical to the query; 1 % are allowed."""
    q = unit(rng, 1, d)[0]
    X = q + 0.01 * rng.standard_normal((n, d)).astype(np.float32)
    allowed = np.sort(rng.choice(n, n // 100, replace=False)).astype(np.int64)
    X[allowed] = unit(rng, len(allowed), d)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = np.vstack([q, X[rng.choice(n, 20)] + 0.001]).astype(np.float32)
    return X, Q, allowed


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("path", ["brute", "selector"])
@pytest.mark.parametrize("form", ["ids", "mask"])
def test_allowed_never_returns_a_forbidden_id(rng, monkeypatch, kind, path, form):
    X, Q, allowed = trap(rng)
    if path == "selector":                           # force the in-faiss filter (IDSelectorBitmap)
        monkeypatch.setattr(ann, "BRUTE_COST", 0)
    ix = VectorIndex(32, kind)
    ix.add(X)
    arg = allowed
    if form == "mask":
        arg = np.zeros(len(X), bool)
        arg[allowed] = True
    for k in (1, 10, 40):                            # 40 > |allowed|: padding, never a forbidden id
        D, I = ix.search(Q, k, allowed=arg)
        hits = I[I >= 0]
        assert np.isin(hits, allowed).all()
        assert ((I >= 0).sum(axis=1) == min(k, len(allowed))).all()
        G = brute(X, Q, min(k, len(allowed)), allowed)
        if kind == "flat" or path == "brute":        # exact paths; a graph walk through 99 % forbidden
            assert np.array_equal(I[:, :G.shape[1]], G)  # near-duplicates is only promised to filter
        assert np.array_equal(ix.exact(Q, k, allowed=arg)[1][:, :G.shape[1]], G)
    _, I = ix.search(Q[0], 10)                       # unfiltered: the trap works
    assert not np.isin(I, allowed).any()


def test_hnsw_filtered_recall(rng, monkeypatch):
    monkeypatch.setattr(ann, "BRUTE_COST", 0)        # the in-faiss filter, on a realistic selectivity
    X, Q = unit(rng, 4000, 32), unit(rng, 100, 32)
    ix = VectorIndex(32, "hnsw")
    ix.add(X)
    allowed = np.sort(rng.choice(4000, 1200, replace=False))
    _, I = ix.search(Q, 10, allowed=allowed)
    assert np.isin(I, allowed).all()
    r = recall(I, brute(X, Q, 10, allowed))
    assert r >= 0.9, r


def test_allowed_edge_cases(rng):
    X, Q, allowed = trap(rng, n=1000)
    ix = VectorIndex(32, "flat")
    ix.add(X)
    D, I = ix.search(Q[0], 5, allowed=np.array([], np.int64))
    assert I.tolist() == [-1] * 5 and np.isneginf(D).all()
    noisy = np.concatenate([allowed, allowed, [-3, 10_000]])  # duplicates and ids that don't exist
    _, I = ix.search(Q, 10, allowed=noisy)
    assert np.isin(I, allowed).all()
    with pytest.raises(BadInput):
        ix.search(Q, 10, allowed=np.ones(7, bool))
    with pytest.raises(BadInput):
        ix.search(Q, 10, allowed=np.array([0.5]))


def test_auto_switches_to_hnsw_and_ids_stay_stable(rng):
    X = unit(rng, 900, 32)
    ix = VectorIndex(32, "auto", flat_max=500)
    ix.add(X[:400])
    assert ix.kind == "flat"
    before_D, before_I = ix.search(X[:400], 5)
    ix.add(X[400:700])                               # crosses flat_max: rebuilt as HNSW
    assert ix.kind == "hnsw" and len(ix) == 700
    ix.add(X[700:])
    assert len(ix) == 900
    assert np.array_equal(ix.vectors(np.arange(900)), X)
    _, I = ix.search(X[:400], 1)
    assert np.array_equal(I[:, 0], np.arange(400))   # each vector still finds itself under its id
    _, I = ix.search(X[:400], 5, allowed=np.arange(400))
    assert np.array_equal(I, before_I)
    assert np.allclose(ix.vectors(before_I[:, 1]), X[before_I[:, 1]])
    one = VectorIndex(32, "auto", flat_max=500)
    one.add(X)                                       # a single add past flat_max
    assert one.kind == "hnsw" and np.array_equal(one.search(X[:50], 1)[1][:, 0], np.arange(50))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_save_load_roundtrip(rng, tmp_path, kind):
    X, Q = unit(rng, 2000, 24), unit(rng, 30, 24)
    ix = VectorIndex(24, kind, ef_search=48)
    ix.add(X)
    path = tmp_path / "index.faiss"
    ix.save(path, {"seq": 17, "model": "m"})
    ix2, meta = VectorIndex.load(path, expect_n=2000, expect_dim=24)
    assert meta["seq"] == 17 and meta["n"] == 2000 and meta["dim"] == 24 and meta["kind"] == kind
    assert meta["params"]["ef_search"] == 48 and ix2.kind == kind and len(ix2) == 2000
    for a, b in zip(ix.search(Q, 10), ix2.search(Q, 10)):
        assert np.array_equal(a, b)
    assert np.array_equal(ix2.vectors(np.arange(2000)), X)
    ix2.add(Q)                                       # still usable after load
    assert ix2.search(Q[0], 1)[1][0] == 2000
    assert not (tmp_path / "index.faiss.tmp").exists()


def test_load_rejects_bad_files(rng, tmp_path):
    ix = VectorIndex(16, "hnsw")
    ix.add(unit(rng, 500, 16))
    path = tmp_path / "index.faiss"
    ix.save(path, {})
    good, meta_bytes = path.read_bytes(), (tmp_path / "index.faiss.json").read_bytes()

    for kw in ({"expect_n": 499}, {"expect_dim": 32}):
        with pytest.raises(CorruptionError):
            VectorIndex.load(path, **kw)

    path.write_bytes(good[: len(good) // 2])         # truncated
    with pytest.raises(CorruptionError):
        VectorIndex.load(path)

    garbage = np.random.default_rng(1).bytes(len(good))
    path.write_bytes(garbage)                        # same size, fails the CRC
    with pytest.raises(CorruptionError):
        VectorIndex.load(path)
    meta = json.loads(meta_bytes)                    # garbage that the metadata vouches for: faiss
    meta.update(bytes=len(garbage), crc32=zlib.crc32(garbage))  # fails to parse it
    (tmp_path / "index.faiss.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptionError):
        VectorIndex.load(path)

    path.write_bytes(good)
    (tmp_path / "index.faiss.json").write_bytes(b"{not json")
    with pytest.raises(CorruptionError):
        VectorIndex.load(path)
    (tmp_path / "index.faiss.json").unlink()
    with pytest.raises(CorruptionError):
        VectorIndex.load(path)
    (tmp_path / "index.faiss.json").write_bytes(meta_bytes)
    path.unlink()
    with pytest.raises(CorruptionError):
        VectorIndex.load(path)
    path.write_bytes(good)
    assert len(VectorIndex.load(path, expect_n=500)[0]) == 500
