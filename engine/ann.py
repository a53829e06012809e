"""The FAISS vector index: ids 0..n-1 in add order, inner product over L2-normalised float32
vectors (so scores are cosines). Numbers below: bench/semantic_index.py, 384-d MiniLM, 2 cores.

- kind "flat" (IndexFlatIP, exact) while n <= flat_max, then "hnsw" (IndexHNSWFlat). "auto"
  switches once, inside the add() that crosses flat_max, by building the graph over every stored
  vector (1.4 s at 20 k); ids never change. flat_max = 20 k because a flat single query costs
  0.8 ms at 20 k but 2.8 ms at 50 k (60 ms at 1 M). HNSW M=32, efConstruction=80, efSearch=192:
  top-10 at 1 M p50 0.7 ms, p99 1.2 ms, recall@10 0.973 vs exact (efSearch 64: 0.91, 128: 0.95);
  1 M build 200 s idle (up to 400 s on a shared machine). efConstruction 160 reached the same
  recall at efSearch 128 (0.1 ms faster) for a 1.3-1.6x longer build, so builds stay cheap. IVF
  was not needed (and would need training).
- Vectors are stored once, in the faiss flat storage (the index, or the HNSW's storage);
  vectors() and exact() read them through a read-only numpy view of that buffer (rev_swig_ptr),
  re-taken after every add because the buffer may move. add() rejects non-finite or zero rows
  (BadInput) and re-normalises rows that are not unit length.
- allowed: no id outside it is ever returned. m allowed ids out of n are brute-forced when
  m * sqrt(m / n) <= BRUTE_COST, scored in place (knn_inner_products_by_idx): cost grows with m
  (1 M: 0.2 ms for 2 k ids, 2 ms for 10 k, 6 ms for 20 k), exact. Larger sets are filtered inside
  the HNSW walk (SearchParametersHNSW + IDSelectorBitmap, efSearch scaled by 1/sqrt(m / n)),
  whose cost grows as m / n shrinks (1 M: 4.3 ms at 20 k ids, 1.2-1.7 ms at 30 %, recall 0.99);
  the crossover measured ~10-20 k ids at 1 M. A query that gets fewer than min(k, m) hits is
  redone exactly. `allowed` may also be a bool mask of length n (saves 0.4 ms at 300 k ids).
- Threads: builds and batches of >= SERIAL_QUERIES queries use every core available (OpenMP);
  fewer queries run on the calling thread: on 2 shared cores a flat single query split over two
  OpenMP threads took 19 ms against 1 ms serial (20 k vectors). Not thread-safe: callers
  serialise add() against searches.
- save(): the faiss file goes to a temp file, is fsynced and renamed, then the JSON metadata (meta
  + n, dim, kind, params, file size and CRC-32) likewise, then the directory is fsynced (1 M:
  1.8 GB, ~6 s). load() (~3 s at 1 M) checks metadata, size, CRC, the index against it and
  expect_n / expect_dim; any disagreement is a CorruptionError, so the caller rebuilds.
- faiss errors (RuntimeError, and AssertionError from its wrappers) never escape: CtxdbError.
"""
from __future__ import annotations

import json
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from .errors import BadInput, CorruptionError, CtxdbError
from .wal import fsync_dir

KINDS = ("auto", "flat", "hnsw")
FORMAT = "ctxdb-ann/1"
BRUTE_COST = 1500         # allowed sets of m ids with m * sqrt(m / n) <= this are brute-forced
SERIAL_QUERIES = 20       # fewer queries than this run on the calling thread alone
_RESERVED = ("format", "n", "dim", "kind", "mode", "params", "bytes", "crc32")


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@contextmanager
def _faiss(what: str) -> Iterator[None]:
    try:
        yield
    except (RuntimeError, AssertionError) as exc:
        raise CtxdbError(f"vector index: {what} failed in faiss: {exc}") from exc


def _int(name: str, v: object, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise BadInput(f"{name} must be an integer >= {lo}, got {v!r}", field=name)
    return int(v)


def _brute(m: int, n: int) -> bool:
    """Brute force costs ~m random row reads; a filtered HNSW walk grows like 1/sqrt(m / n)."""
    return m * (m / max(n, 1)) ** 0.5 <= BRUTE_COST


def _pad(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)


def _clean(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss results padded to k columns, -1 ids with -inf scores."""
    D, I = np.asarray(D, np.float32), np.asarray(I, np.int64)
    if D.shape[1] < k:
        pd, pi = _pad(len(D), k - D.shape[1])
        D, I = np.hstack([D, pd]), np.hstack([I, pi])
    D[I < 0] = -np.inf
    return D, I


class VectorIndex:
    """FAISS index over L2-normalised float32 vectors; ids are 0..n-1 in add order; inner product."""

    def __init__(self, dim: int, kind: str = "auto", *, flat_max: int = 20_000, hnsw_m: int = 32,
                 ef_construction: int = 80, ef_search: int = 192) -> None:
        if kind not in KINDS:
            raise BadInput(f"unknown vector index kind {kind!r}", field="kind", expected=" / ".join(KINDS))
        self.dim = _int("dim", dim, 1)
        self.mode = kind
        self.params = {"flat_max": _int("flat_max", flat_max, 0), "hnsw_m": _int("hnsw_m", hnsw_m, 2),
                       "ef_construction": _int("ef_construction", ef_construction, 1),
                       "ef_search": _int("ef_search", ef_search, 1)}
        self._kind = "hnsw" if kind == "hnsw" else "flat"
        self._index = self._new(self._kind)
        self._view: np.ndarray | None = None

    def _new(self, kind: str) -> faiss.Index:
        with _faiss("creating the index"):
            if kind == "flat":
                return faiss.IndexFlatIP(self.dim)
            ix = faiss.IndexHNSWFlat(self.dim, self.params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            ix.hnsw.efConstruction = self.params["ef_construction"]
            ix.hnsw.efSearch = self.params["ef_search"]
            return ix

    @property
    def kind(self) -> str:
        """The kind in use now: "flat" or "hnsw"."""
        return self._kind

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"VectorIndex(n={len(self)}, dim={self.dim}, kind={self._kind!r}, mode={self.mode!r})"

    # -- storage --------------------------------------------------------------------------------

    def _xb(self) -> np.ndarray:
        """A read-only numpy view of every stored vector (n, dim), inside faiss' own buffer."""
        if self._view is None or len(self._view) != len(self):
            n = len(self)
            if n == 0:
                return np.empty((0, self.dim), np.float32)
            flat = self._index if self._kind == "flat" else faiss.downcast_index(self._index.storage)
            view = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
            view.flags.writeable = False
            self._view = view
        return self._view

    def _rows(self, vecs: object, name: str, *, query: bool = False) -> np.ndarray:
        try:
            x = np.asarray(vecs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"{name} is not a float array: {exc}", field=name) from None
        if query and x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise BadInput(f"{name} has shape {x.shape}", field=name, expected=f"(m, {self.dim})")
        return np.ascontiguousarray(x)

    def add(self, vecs: np.ndarray) -> None:
        """Append (m, dim) vectors as ids n..n+m-1 (auto: rebuilds as HNSW when crossing flat_max)."""
        x = self._rows(vecs, "vecs")
        if len(x) == 0:
            return
        norms = np.linalg.norm(x, axis=1)
        bad = ~np.isfinite(norms) | (norms == 0)
        if bad.any():
            raise BadInput(f"vector row {int(np.argmax(bad))} is zero or not finite", field="vecs",
                           expected="finite, non-zero vectors")
        if np.abs(norms - 1).max() > 1e-4:
            x = x / norms[:, None]
        faiss.omp_set_num_threads(_cores())
        if self.mode == "auto" and self._kind == "flat" and len(self) + len(x) > self.params["flat_max"]:
            new = self._new("hnsw")
            with _faiss("building the HNSW graph"):
                new.add(self._xb())
                new.add(x)
            self._index, self._kind, self._view = new, "hnsw", None
            return
        with _faiss("adding vectors"):
            self._index.add(x)
        self._view = None

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors for `ids`, a float32 (len(ids), dim) copy."""
        idx = np.asarray(ids)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise BadInput("ids must be a 1-D integer array", field="ids")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise BadInput(f"vector id out of range 0..{len(self) - 1}", field="ids")
        return self._xb()[idx]

    # -- search ---------------------------------------------------------------------------------

    def _query(self, q: object, k: object) -> tuple[np.ndarray, int, bool]:
        q2 = self._rows(q, "q", query=True)
        one = np.ndim(q) == 1
        if not np.isfinite(q2).all():
            raise BadInput("query vector is not finite", field="q")
        faiss.omp_set_num_threads(1 if len(q2) < SERIAL_QUERIES else _cores())
        return q2, _int("k", k, 0), one

    def _allowed(self, allowed: object) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """(sorted unique ids, or None) and (bool mask, or None) and the allowed count."""
        a = np.asarray(allowed)
        n = len(self)
        if a.dtype == bool:
            if a.shape != (n,):
                raise BadInput(f"allowed mask has shape {a.shape}", field="allowed", expected=f"({n},)")
            count = int(np.count_nonzero(a))
            if _brute(count, n):
                return np.flatnonzero(a).astype(np.int64), None, count
            return None, a, count
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise BadInput("allowed must be a 1-D array of integer ids (or a bool mask)", field="allowed")
        a = a.astype(np.int64, copy=False)
        if a.size and (a.min() < 0 or a.max() >= n):
            a = a[(a >= 0) & (a < n)]          # ids that do not exist cannot be returned anyway
        if _brute(len(a), n):
            if len(a) > 1 and not (a[1:] > a[:-1]).all():
                a = np.unique(a)               # (already sorted and unique: skip the sort)
            return a, None, len(a)
        mask = np.zeros(n, bool)
        mask[a] = True
        return None, mask, int(np.count_nonzero(mask))

    def search(self, q: np.ndarray, k: int, *, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), each (nq, k) or (k,) for a 1-D q; padded with -inf / -1.
        With `allowed` (int64 ids or a bool mask of length n) no other id is ever returned."""
        q2, k, one = self._query(q, k)
        n = len(self)
        if allowed is None:
            if n == 0 or k == 0:
                D, I = _pad(len(q2), k)
            else:
                with _faiss("search"):
                    D, I = self._index.search(q2, min(k, n))
                D, I = _clean(D, I, k)
        else:
            ids, mask, count = self._allowed(allowed)
            if ids is not None or count == 0 or k == 0:
                D, I = self._exact(q2, k, ids if ids is not None else np.empty(0, np.int64))
            else:
                D, I = self._filtered(q2, k, mask, count)
        return (D[0], I[0]) if one else (D, I)

    def _filtered(self, q2: np.ndarray, k: int, mask: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        bits = np.packbits(mask, bitorder="little")
        with _faiss("filtered search"):
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            if self._kind == "hnsw":
                params = faiss.SearchParametersHNSW()
                frac = count / len(mask)
                params.efSearch = int(min(max(self.params["ef_search"] / frac ** 0.5, k), 4096))
            else:
                params = faiss.SearchParameters()
            params.sel = sel
            D, I = self._index.search(q2, min(k, count), params=params)
        del sel, bits
        D, I = _clean(D, I, k)
        short = np.flatnonzero((I >= 0).sum(axis=1) < min(k, count))
        if len(short):                         # the graph walk missed: answer those exactly
            D[short], I[short] = self._exact(q2[short], k, np.flatnonzero(mask))
        return D, I

    def exact(self, q: np.ndarray, k: int, *, allowed: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force exact top-k (the recall reference); same arguments and shapes as search()."""
        q2, k, one = self._query(q, k)
        ids = None
        if allowed is not None:
            ids, mask, _ = self._allowed(allowed)
            if ids is None:
                ids = np.flatnonzero(mask)
        D, I = self._exact(q2, k, ids)
        return (D[0], I[0]) if one else (D, I)

    def _exact(self, q2: np.ndarray, k: int, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over every vector (ids None: batched BLAS) or over the sorted unique `ids`
        (scored in place in faiss' buffer, nothing gathered)."""
        X = self._xb()
        kk = min(k, len(X) if ids is None else len(ids))
        if kk == 0:
            return _pad(len(q2), k)
        with _faiss("exact search"):
            if ids is None:
                D, I = faiss.knn(q2, X, kk, metric=faiss.METRIC_INNER_PRODUCT)
            else:
                ids = np.ascontiguousarray(ids, np.int64)
                D, I = np.empty((len(q2), kk), np.float32), np.empty((len(q2), kk), np.int64)
                faiss.knn_inner_products_by_idx(  # ld_ids=0: every query scans the same ids
                    faiss.swig_ptr(q2), faiss.swig_ptr(X), faiss.swig_ptr(ids), self.dim, len(q2), len(X),
                    len(ids), kk, faiss.swig_ptr(D), faiss.swig_ptr(I), 0)
        return _clean(D, I, k)

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, meta: dict) -> None:
        """Write the index to `path` and its metadata (meta + n, dim, kind, params, size, CRC) to
        path + ".json", each atomically (temp file, fsync, rename, fsync the directory)."""
        path = Path(path)
        mpath, tmp = path.with_name(path.name + ".json"), path.with_name(path.name + ".tmp")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"vector index meta is not JSON-serialisable: {exc}", field="meta") from None
        try:
            with _faiss("writing the index"):
                faiss.write_index(self._index, str(tmp))
            size, crc = _crc(tmp, sync=True)
            os.replace(tmp, path)
            info = {**meta, "format": FORMAT, "n": len(self), "dim": self.dim, "kind": self._kind,
                    "mode": self.mode, "params": self.params, "bytes": size, "crc32": crc}
            mtmp = mpath.with_name(mpath.name + ".tmp")
            with open(mtmp, "wb") as f:
                f.write(json.dumps(info, indent=1, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(mtmp, mpath)
            fsync_dir(path.parent)
        except OSError as exc:
            raise CtxdbError(f"{path}: cannot save the vector index: {exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect_n: int | None = None,
             expect_dim: int | None = None) -> tuple["VectorIndex", dict]:
        """Read an index written by save(); returns it and its metadata. Raises CorruptionError when
        the files are missing, unreadable or disagree (with each other or with expect_n/expect_dim)."""
        path = Path(path)
        mpath = path.with_name(path.name + ".json")
        try:
            info = json.loads(mpath.read_bytes())
        except (OSError, ValueError) as exc:
            raise CorruptionError(f"vector index metadata is missing or unreadable ({exc})", file=str(mpath)) from None
        if not isinstance(info, dict) or info.get("format") != FORMAT or any(k not in info for k in _RESERVED):
            raise CorruptionError(f"not {FORMAT} vector index metadata", file=str(mpath))
        try:
            size, crc = _crc(path)
        except OSError as exc:
            raise CorruptionError(f"vector index file is missing or unreadable ({exc})", file=str(path)) from None
        if size != info["bytes"]:
            raise CorruptionError(f"vector index file has {size} bytes, its metadata says {info['bytes']}",
                                  file=str(path), offset=min(size, info["bytes"]) if isinstance(info["bytes"], int) else None)
        if crc != info["crc32"]:
            raise CorruptionError("vector index file fails its CRC-32", file=str(path))
        for name, want in (("n", expect_n), ("dim", expect_dim)):
            if want is not None and info[name] != want:
                raise CorruptionError(f"vector index has {name}={info[name]}, expected {want}", file=str(path))
        try:
            obj = cls(info["dim"], info["mode"], **info["params"])
            ix = faiss.read_index(str(path))
        except (BadInput, TypeError, RuntimeError, AssertionError) as exc:
            raise CorruptionError(f"vector index cannot be read ({exc})", file=str(path)) from None
        kind = "hnsw" if isinstance(ix, faiss.IndexHNSWFlat) else "flat" if isinstance(ix, faiss.IndexFlat) else None
        if kind != info["kind"] or ix.metric_type != faiss.METRIC_INNER_PRODUCT or ix.ntotal != info["n"] or ix.d != info["dim"]:
            raise CorruptionError(f"vector index (kind {kind}, n={ix.ntotal}, dim={ix.d}) disagrees with its "
                                  "metadata", file=str(path))
        if kind == "hnsw":
            ix.hnsw.efSearch = obj.params["ef_search"]
        obj._index, obj._kind = ix, kind
        return obj, info


def _crc(path: Path, *, sync: bool = False) -> tuple[int, int]:
    """(size, CRC-32) of a file; with sync, also fsync it."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return size, crc
