"""Semantic recall: the embedding projector, keyword (BM25) scoring and hybrid relevance.

The embedding projector is a background thread with its own checkpoint (vectors/.../state.json):
the live projector hands it the (content hash, text) pairs of every item version it writes, with
the seq they belong to; it embeds the texts the store lacks in batches and records the seq it
covers. At startup it first embeds stored versions it has not covered (by item version id).
Nothing on the append path waits for it; `wait(seq)` does.

Relevance of a candidate set to a query (query-aware views and search) is computed exactly over
the candidates an agent may see at the view's position -- never "whatever the index holds":

    vector   cosine(query, item) from stored embeddings (rounded to 1e-6 so BLAS blocking can
             never flip a comparison); items without a stored vector yet are embedded first
    keyword  BM25 (k1=1.2, b=0.75) with document frequencies over the same candidates, so exact
             names, ids and numbers count even when the embedding blurs them
    fused    rel = cosine + 0.1 * bm25 / max(bm25): the embedding orders by meaning, the keyword
             term lifts exact names, ids and numbers. Measured against reciprocal rank fusion on
             bench/recall.py (3 seeds): RRF(k=60) 0.827/0.819/0.811 evidence recall, this
             0.849/0.860/0.866 -- RRF gives every candidate that shares any query word (half of
             them) the same keyword credit as a real match. Ties break on key.

Every input is fixed by the log prefix (the candidates), the stored vectors (embedded once, by
content hash) and the query's own stored vector, so a query-aware view asked later at the same seq
is the same bytes.
"""
from __future__ import annotations

import math
import re
import threading
import time as _time
from collections import Counter, deque
from typing import Callable

import msgspec
import numpy as np

from .embed import Embedder
from .errors import BadInput
from .items import content_hash
from .vectors import EmbeddingStore

KW_WEIGHT = 0.1              # keyword share of the fused relevance (bench/recall.py: see docs/semantic.md)
BATCH = 128                  # texts per model call in the background
K1, B = 1.2, 0.75
_WORD = re.compile(r"[^\W_]+", re.UNICODE)   # letters and digits; "damaged_in_transit" is 3 words
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have he her his i in is it its me my of on or "
    "our she so that the their them they this to was we were what when where which who why will with "
    "you your how".split())


def terms(text: str) -> list[str]:
    return [t for t in _WORD.findall(text.lower()) if t not in STOPWORDS]


class TextIndex:
    """In-memory inverted index over distinct texts (by content hash), filled on first sight."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.dl: list[int] = []
        self._post: dict[str, tuple[list[int], list[int]]] = {}
        self._arr: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def ensure(self, hashes: list[str], text_of: Callable[[int], str]) -> np.ndarray:
        """Text ids of `hashes`, indexing the texts not seen before (`text_of(i)` gives hashes[i]'s text)."""
        ids = self.ids
        with self._lock:
            for i, h in enumerate(hashes):
                if h not in ids:
                    tid = ids[h] = len(self.dl)
                    c = Counter(terms(text_of(i)))
                    self.dl.append(sum(c.values()))
                    for t, n in c.items():
                        p = self._post.get(t)
                        if p is None:
                            p = self._post[t] = ([], [])
                        p[0].append(tid)
                        p[1].append(n)
        return np.fromiter((ids[h] for h in hashes), dtype=np.int64, count=len(hashes))

    def _postings(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        p = self._post.get(term)
        if p is None:
            return None
        cached = self._arr.get(term)
        if cached is None or cached[0] != len(p[0]):
            cached = (len(p[0]), np.array(p[0], dtype=np.int64), np.array(p[1], dtype=np.float64))
            self._arr[term] = cached
        return cached[1], cached[2]

    def bm25(self, tids: np.ndarray, query: str) -> np.ndarray:
        """BM25 of each candidate (text ids `tids`, duplicates allowed), statistics over them."""
        out = np.zeros(len(tids))
        qterms = sorted(set(terms(query)))
        if not len(tids) or not qterms:
            return out
        uniq, inv = np.unique(tids, return_inverse=True)
        n = len(uniq)
        pos = np.full(len(self.dl), -1, dtype=np.int64)
        pos[uniq] = np.arange(n)
        dl = np.asarray(self.dl, dtype=np.float64)[uniq]
        avgdl = max(dl.mean(), 1.0)
        norm = K1 * (1 - B + B * dl / avgdl)
        score = np.zeros(n)
        for t in qterms:
            p = self._postings(t)
            if p is None:
                continue
            tid, tf = p
            tid = tid[tid < len(pos)]
            at = pos[tid]
            m = at >= 0
            if not m.any():
                continue
            rows, f = at[m], tf[: len(at)][m]
            df = len(rows)
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            score[rows] += idf * f * (K1 + 1) / (f + norm[rows])
        return score[inv]


def fuse(cos: np.ndarray, kw: np.ndarray) -> np.ndarray:
    """rel = cosine + KW_WEIGHT * bm25 / max(bm25 over the candidates); a cosine of -inf (not
    among an approximate search's nearest) counts as 0."""
    rel = np.where(np.isfinite(cos), cos, 0.0)
    top = kw.max() if len(kw) else 0.0
    if top > 0:
        rel = rel + KW_WEIGHT * (kw / top)
    return np.round(rel, 9)


class Relevance:
    """Scores of one query against one candidate list (aligned arrays). A cosine of -inf means
    "not among the vector index's nearest" (approximate search): no vector term."""

    __slots__ = ("cos", "kw", "rel")

    def __init__(self, cos: np.ndarray, kw: np.ndarray) -> None:
        self.cos, self.kw = cos, kw
        self.rel = fuse(cos, kw) if len(cos) else np.zeros(0)


class Semantic:
    """Embedder + stored embeddings + keyword index + the background embedding projector."""

    def __init__(self, embedder: Embedder, store: EmbeddingStore, *, live: bool = True,
                 index_kind: str = "auto", flat_max: int = 20_000) -> None:
        self.embedder, self.store, self.live = embedder, store, live
        self.index_kind, self.flat_max = index_kind, flat_max
        self._ann = None                     # ann.VectorIndex over every stored vector (lazy)
        self._ann_saved = -1
        self._ann_lock = threading.Lock()
        self.index_rebuilt: str | None = None
        self.text = TextIndex()
        self._q: deque[list] = deque()       # [seq, vid, pairs] in projection order
        self._cond = threading.Condition()
        self.seq = 0                         # covered position (every version up to it embedded)
        self._thread: threading.Thread | None = None
        self._stop = False
        self.error: BaseException | None = None
        self.batches = 0
        self.started = False

    # ---- the background projector ------------------------------------------------------------
    def start(self, backfill: Callable[[int], list[tuple[int, str, str]]], projected_seq: int) -> None:
        """Begin at the stored checkpoint: embed stored versions after its vid (pages from
        `backfill(after_vid)`), then everything the live projector hands over."""
        self.started = True
        self.seq = min(self.store.state.seq, projected_seq)
        self._backfill, self._backfill_to = backfill, projected_seq
        if self.live:
            self._thread = threading.Thread(target=self._run, name="ctxdb-embedder", daemon=True)
            self._thread.start()
        else:
            self._do_backfill()

    def enqueue(self, seq: int, vid: int, pairs: list[tuple[str, str]]) -> None:
        with self._cond:
            self._q.append([seq, vid, pairs])
            self._cond.notify_all()
        if not self.live:
            self.drain()

    def close(self) -> None:
        self._stop = True
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self.save_index()

    # ---- the vector index ------------------------------------------------------------------------
    def ann_threshold(self) -> float:
        """Candidate sets larger than this are searched through the FAISS index (approximate);
        smaller ones exactly. `[embeddings] index = "flat"` never uses the index."""
        return float("inf") if self.index_kind == "flat" else self.flat_max

    def _index_path(self):
        return None if self.store.dir is None else self.store.dir / "index.faiss"

    def ann(self):
        """The FAISS index over every stored vector, in step with the store: loaded from
        index.faiss when it agrees with the stored embeddings (then only the tail is added),
        rebuilt from them otherwise. Ids are the store's vector ids."""
        from .ann import VectorIndex
        from .errors import CorruptionError

        with self._ann_lock:
            idx = self._ann
            if idx is None:
                path = self._index_path()
                if path is not None and path.exists():
                    try:
                        idx, meta = VectorIndex.load(path, expect_dim=self.store.dim)
                        if meta.get("model") != self.store.model_id or len(idx) > len(self.store):
                            self.index_rebuilt = (f"index.faiss holds {len(idx)} vectors of "
                                                  f"{meta.get('model')}, the store {len(self.store)}")
                            idx = None
                    except CorruptionError as exc:
                        self.index_rebuilt = str(exc)
                        idx = None
                if idx is None:
                    idx = VectorIndex(self.store.dim, self.index_kind, flat_max=self.flat_max)
                self._ann = idx
            n = len(self.store)
            if len(idx) < n:
                idx.add(self.store.matrix[len(idx):n])
            return idx

    def save_index(self) -> None:
        """Persist the index with the seq it reflects (on close; a stale or missing file is
        only a slower next start, never a wrong answer)."""
        idx, path = self._ann, self._index_path()
        if idx is None or path is None or self.store.readonly or len(idx) == self._ann_saved:
            return
        try:
            idx.save(path, {"model": self.store.model_id, "seq": self.seq})
            self._ann_saved = len(idx)
        except Exception:  # noqa: BLE001 - a cache; rebuilt from stored embeddings next time
            pass

    def _run(self) -> None:
        try:
            self._do_backfill()
        except BaseException as exc:  # noqa: BLE001 - surfaced through wait()/stats
            self._fail(exc)
            return
        while not self._stop:
            with self._cond:
                while not self._q and not self._stop:
                    self._cond.wait(0.5)
            if self._stop:
                break
            try:
                self.drain(limit=BATCH)
                self.error = None
            except BaseException as exc:  # noqa: BLE001
                self._fail(exc)
                _time.sleep(1.0)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        with self._cond:
            self._cond.notify_all()

    def _do_backfill(self) -> None:
        after = self.store.state.vid
        while not self._stop:
            rows = self._backfill(after)
            if not rows:
                break
            self._embed([(h, t) for _, h, t in rows], vid=rows[-1][0])
            after = rows[-1][0]
        if not self._stop:
            self._covered(self._backfill_to, None)

    def drain(self, limit: int | None = None) -> None:
        """Embed queued texts (up to about `limit`), advancing the covered seq past every
        queue entry finished."""
        while True:
            with self._cond:
                if not self._q:
                    return
                take: list[tuple[str, str]] = []
                done_seq = done_vid = None
                while self._q and (limit is None or len(take) < limit):
                    head = self._q[0]
                    room = len(head[2]) if limit is None else limit - len(take)
                    take.extend(head[2][:room])
                    head[2] = head[2][room:]
                    if head[2]:
                        break
                    self._q.popleft()
                    done_seq, done_vid = head[0], head[1]
            self._embed(take)
            if done_seq is not None:
                self._covered(done_seq, done_vid)
            if limit is not None:
                return

    def _embed(self, pairs: list[tuple[str, str]], vid: int | None = None) -> int:
        todo = {}
        ids = self.store.ids
        for h, t in pairs:
            if h not in ids and h not in todo:
                todo[h] = t
        if todo:
            hs = sorted(todo)
            vecs = self.embedder.encode([todo[h] for h in hs])
            self.store.add(hs, vecs, vid=vid)
            self.batches += 1
        elif vid is not None:
            self.store.advance(vid=vid)
        return len(todo)

    def _covered(self, seq: int, vid: int | None) -> None:
        self.store.advance(seq=seq, vid=vid)
        with self._cond:
            self.seq = max(self.seq, seq)
            self._cond.notify_all()

    def wait(self, seq: int, timeout: float | None = None) -> bool:
        if not self.live:
            self.drain()
            return self.seq >= seq
        deadline = None if timeout is None else _time.monotonic() + timeout
        with self._cond:
            while self.seq < seq:
                if self.error is not None:
                    raise self.error
                left = None if deadline is None else deadline - _time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(left, 0.5))
        return True

    def pending(self) -> int:
        with self._cond:
            return sum(len(e[2]) for e in self._q)

    # ---- relevance ---------------------------------------------------------------------------
    def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding, stored like any text (so asking again never calls the model)."""
        h = content_hash(query)
        i = self.store.ids.get(h)
        if i is None:
            vec = self.embedder.encode([query])
            self.store.add([h], vec)
            i = self.store.ids[h]
        return self.store.matrix[i]

    def vectors_for(self, hashes: list[str], text_of: Callable[[int], str]) -> np.ndarray:
        """Stored vector ids for `hashes`; texts not embedded yet are embedded now (a view at a
        position the projector already covers never gets here)."""
        vids = self.store.lookup(hashes)
        miss = np.flatnonzero(vids < 0)
        if len(miss):
            todo = {}
            for j in miss.tolist():
                todo.setdefault(hashes[j], text_of(j))
            hs = sorted(todo)
            self.store.add(hs, self.embedder.encode([todo[h] for h in hs]))
            vids = self.store.lookup(hashes)
        return vids

    def relevance(self, query: str, hashes: list[str], text_of: Callable[[int], str], *,
                  ann_k: int | None = None) -> Relevance:
        """Vector and keyword scores of the candidates `hashes` for `query`. The vector part is
        exact (every candidate) unless `ann_k` is given: then it comes from the FAISS index,
        filtered inside the search to these candidates' vectors (nothing else can come back),
        and only the nearest max(10·ann_k, 100) get a cosine -- for search over very large
        candidate sets; views always score every candidate exactly."""
        if not query.strip():
            raise BadInput("the query is empty", field="query", expected="a question or keywords")
        if not hashes:
            return Relevance(np.zeros(0), np.zeros(0))
        qv = self.query_vector(query)
        vids = self.vectors_for(hashes, text_of)
        if ann_k is None:
            # einsum, not BLAS gemv: multi-threaded OpenBLAS made this 4x slower on 2 cores
            cos = np.round(np.einsum("ij,j->i", self.store.matrix[vids], qv), 6).astype(np.float64)
        else:
            scores, ids = self.ann().search(qv, max(10 * ann_k, 100), allowed=np.unique(vids))
            found = {int(i): round(float(d), 6) for d, i in zip(scores, ids) if i >= 0}
            cos = np.fromiter((found.get(int(v), -np.inf) for v in vids), dtype=np.float64, count=len(vids))
        kw = np.round(self.text.bm25(self.text.ensure(hashes, text_of), query), 6)
        return Relevance(cos, kw)


class Hit(msgspec.Struct, frozen=True):
    """One search result: an item visible to the agent at the search position."""

    rank: int
    key: str
    kind: str
    subject: str
    text: str
    score: float                 # fused relevance: cosine + 0.1 * bm25 / max bm25
    vector: float                # cosine similarity to the query
    keyword: float               # BM25
    time: str
    from_seq: int
    hash: str
    lineage_seqs: tuple[int, ...]
    lineage_ids: tuple[str, ...]
    merged: tuple[str, ...] = ()


def search_candidates(sem: "Semantic", C, idx: np.ndarray, query: str, k: int) -> list[Hit]:
    """Top `k` of candidates `C[idx]` by fused relevance (ties: key); identical texts count once
    (the smallest key stands for them, the others are listed in `merged`)."""
    from .view import _iso, item_hash
    from .events import utc_from_micros

    if k < 1:
        raise BadInput(f"k must be at least 1, got {k}", field="k", expected="an integer >= 1")
    idx = [int(i) for i in idx]
    hashes = [C.hashes[i] for i in idx]
    rel = sem.relevance(query, hashes, lambda j: C.text(idx[j]),
                        ann_k=k if len(idx) > sem.ann_threshold() else None)
    if not idx:
        return []
    score = rel.rel
    desc = np.argsort(-score, kind="stable")
    m = min(len(desc), 4 * k + 16)
    while True:
        # the first m by score, plus every candidate tied with the m-th (ties: key; identical
        # texts have identical scores, so a text's duplicates are all inside)
        cut = m
        while cut < len(desc) and score[desc[cut]] == score[desc[m - 1]]:
            cut += 1
        head = sorted(desc[:cut].tolist(), key=lambda j: (-score[j], C.keys[idx[j]]))
        seen: dict[str, list[str]] = {}
        picked: list[int] = []
        for j in head:
            h = hashes[j]
            if h in seen:
                seen[h].append(C.keys[idx[j]])
            elif len(picked) < k:
                seen[h] = []
                picked.append(j)
        if len(picked) >= k or cut >= len(desc):
            break
        m = min(len(desc), 4 * m)
    out: list[Hit] = []
    for r, j in enumerate(picked, 1):
        v = C.items[idx[j]]
        out.append(Hit(rank=r, key=v.key, kind=v.kind, subject=v.subject, text=v.text,
                       score=round(float(rel.rel[j]), 9), vector=float(rel.cos[j]), keyword=float(rel.kw[j]),
                       time=_iso(utc_from_micros(v.time_us)), from_seq=v.from_seq, hash=item_hash(v),
                       lineage_seqs=v.lineage_seqs, lineage_ids=v.lineage_ids,
                       merged=tuple(sorted(seen[hashes[j]]))))
    return out
