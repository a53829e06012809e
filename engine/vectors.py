"""Stored embeddings: one vector per (model id, content hash), ever.

    vectors/<model slug>/
        chunk-000001.arrow ...   Arrow IPC files (hash: string, vec: fixed_size_list<float32>[dim]),
                                 each written once (temp file, fsync, rename) and never changed
        state.json               model, dim, the chunk list, vector count, and the position the
                                 embedding projector covers (seq, vid); replaced atomically
        index.faiss(.json)       the FAISS index and the count/seq it reflects (see ann.py)

A vector's id is its position in append order (0..n-1), the same id the FAISS index uses. The
state file lists the chunks that count: a chunk written before a crash but not yet listed is an
orphan and is deleted on open, so a crash loses at most the batch in flight (re-embedded later
from the item store, never silently missing). The in-memory matrix holds every vector; exact
search over an agent's candidates gathers rows from it. A store opened read-only (another process
writes) reads the same immutable chunk files without locks.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .errors import CorruptionError
from .segment import write_atomic

COMPACT_CHUNKS = 64          # merge the chunk files into one when there are more than this


def model_slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", model_id).strip("-") or "model"


class State(msgspec.Struct):
    model: str
    dim: int
    chunks: list[str] = []
    n: int = 0
    seq: int = 0                 # the embedding projector covers every item version up to here
    vid: int = 0                 # ... and every stored item version with vid <= this
    next_chunk: int = 1


class EmbeddingStore:
    """Embeddings of one model, by content hash; in memory when `root` is None."""

    def __init__(self, root: Path | None, model_id: str, dim: int, *, readonly: bool = False) -> None:
        self.model_id, self.dim, self.readonly = model_id, dim, readonly
        self.dir = None if root is None else Path(root) / model_slug(model_id)
        self._lock = threading.Lock()
        self.ids: dict[str, int] = {}
        self.hashes: list[str] = []
        self._mat = np.zeros((1024, dim), dtype=np.float32)
        self.state = State(model=model_id, dim=dim)
        self.recovered: list[str] = []          # what opening had to repair (reported in stats)
        if self.dir is not None:
            self._load()

    # ---- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def matrix(self) -> np.ndarray:
        """Every stored vector, row = id (a view; rows are never changed once written)."""
        return self._mat[: len(self.hashes)]

    def lookup(self, hashes: list[str]) -> np.ndarray:
        """Ids of `hashes` (-1 where not embedded yet)."""
        get = self.ids.get
        return np.fromiter((get(h, -1) for h in hashes), dtype=np.int64, count=len(hashes))

    def missing(self, hashes) -> list[str]:
        ids = self.ids
        return [h for h in hashes if h not in ids]

    # ---- writing ---------------------------------------------------------------------------
    def add(self, hashes: list[str], vecs: np.ndarray, *, seq: int | None = None, vid: int | None = None) -> np.ndarray:
        """Store vectors for hashes not stored yet (others are ignored: embedded once, ever) and
        advance the covered position; durable (one chunk file + state) before it returns."""
        vecs = np.asarray(vecs, dtype=np.float32)
        with self._lock:
            keep = [i for i, h in enumerate(hashes) if h not in self.ids]
            seen: set[str] = set()
            keep = [i for i in keep if not (hashes[i] in seen or seen.add(hashes[i]))]
            new_h = [hashes[i] for i in keep]
            first = len(self.hashes)
            if new_h:
                new_v = vecs[keep]
                self._grow(first + len(new_h))
                self._mat[first: first + len(new_h)] = new_v
                for j, h in enumerate(new_h):
                    self.ids[h] = first + j
                self.hashes.extend(new_h)
                if self.dir is not None and not self.readonly:
                    self._write_chunk(new_h, new_v)
            self._advance(seq, vid)
            return np.arange(first, first + len(new_h), dtype=np.int64)

    def advance(self, seq: int | None = None, vid: int | None = None) -> None:
        with self._lock:
            self._advance(seq, vid)

    def _advance(self, seq: int | None, vid: int | None) -> None:
        st = self.state
        changed = False
        if seq is not None and seq > st.seq:
            st.seq, changed = seq, True
        if vid is not None and vid > st.vid:
            st.vid, changed = vid, True
        st.n = len(self.hashes)
        if changed and self.dir is not None and not self.readonly:
            self._write_state()

    def reset_position(self) -> None:
        """Forget the covered position (the item store was replaced by an older one)."""
        with self._lock:
            self.state.seq = self.state.vid = 0
            if self.dir is not None and not self.readonly:
                self._write_state()

    def _grow(self, need: int) -> None:
        if need > len(self._mat):
            cap = max(need, 2 * len(self._mat))
            m = np.zeros((cap, self.dim), dtype=np.float32)
            m[: len(self.hashes)] = self._mat[: len(self.hashes)]
            self._mat = m

    def _write_chunk(self, hashes: list[str], vecs: np.ndarray) -> None:
        assert self.dir is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        st = self.state
        name = f"chunk-{st.next_chunk:06d}.arrow"
        st.next_chunk += 1
        tbl = pa.table({"hash": pa.array(hashes, pa.string()),
                        "vec": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), self.dim)})
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, tbl.schema) as w:
            w.write_table(tbl)
        write_atomic(self.dir / name, sink.getvalue().to_pybytes())
        st.chunks.append(name)
        st.n = len(self.hashes)
        self._write_state()
        if len(st.chunks) > COMPACT_CHUNKS:
            self._compact()

    def _compact(self) -> None:
        """Merge every chunk into one (written and listed before the old files go)."""
        assert self.dir is not None
        old = list(self.state.chunks)
        self.state.chunks = []
        self._write_chunk(self.hashes, self.matrix)
        for name in old:
            (self.dir / name).unlink(missing_ok=True)

    def _write_state(self) -> None:
        assert self.dir is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / "state.json", msgspec.json.encode(self.state))

    def _load(self) -> None:
        assert self.dir is not None
        f = self.dir / "state.json"
        if not f.exists():
            return
        try:
            st = msgspec.json.decode(f.read_bytes(), type=State)
            if st.model != self.model_id or st.dim != self.dim:
                raise CorruptionError(f"embeddings for {st.model}/{st.dim} in a folder for "
                                      f"{self.model_id}/{self.dim}", file=str(f))
            hashes: list[str] = []
            parts: list[np.ndarray] = []
            for name in st.chunks:
                with ipc.open_file(pa.memory_map(str(self.dir / name))) as r:
                    t = r.read_all()
                hashes.extend(t.column("hash").to_pylist())
                vec = t.column("vec").combine_chunks()
                parts.append(vec.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim))
            if len(hashes) != st.n:
                raise CorruptionError(f"state lists {st.n} embeddings, the chunks hold {len(hashes)}", file=str(f))
        except (OSError, ValueError, pa.ArrowException, msgspec.DecodeError, KeyError) as exc:
            if self.readonly:
                raise CorruptionError(f"unreadable embeddings: {exc}", file=str(f)) from exc
            self._set_aside(f"unreadable embeddings ({exc}); they will be re-computed")
            return
        except CorruptionError as exc:
            if self.readonly:
                raise
            self._set_aside(f"{exc}; they will be re-computed")
            return
        self.state = st
        self.hashes = hashes
        self.ids = {h: i for i, h in enumerate(hashes)}
        self._mat = np.zeros((max(1024, len(hashes)), self.dim), dtype=np.float32)
        if parts:
            self._mat[: len(hashes)] = np.concatenate(parts)
        if not self.readonly:
            listed = set(st.chunks)
            for p in self.dir.glob("chunk-*.arrow*"):
                if p.name not in listed:
                    p.unlink()  # written before a crash, never listed: its batch is re-embedded
                    self.recovered.append(f"removed unlisted {p.name}")

    def _set_aside(self, why: str) -> None:
        assert self.dir is not None
        aside = self.dir.with_name(self.dir.name + f".unreadable-{os.getpid()}")
        os.replace(self.dir, aside)
        self.recovered.append(f"{why}; moved to {aside.name}")


def stored_embedding_state(root: Path) -> State | None:
    """The embedding checkpoint on disk (newest-written model folder), without loading vectors."""
    root = Path(root)
    best = None
    for f in root.glob("*/state.json"):
        try:
            st = msgspec.json.decode(f.read_bytes(), type=State)
        except (OSError, msgspec.DecodeError):
            continue
        if best is None or f.stat().st_mtime > best[0]:
            best = (f.stat().st_mtime, st)
    return None if best is None else best[1]
