"""The idempotency index: (source, id) fingerprint -> seq.

Keys are fingerprinted with a 128-bit hash computed column-wise in NumPy (no per-event Python), so
a batch of 16 k events is looked up in a few vectorised `searchsorted` calls. The index is a small
LSM of sorted runs: adding a run merges it with its neighbours while they are of similar size, so
lookups touch O(log n) runs and merges cost O(n log n) overall.

A false "duplicate" would silently drop an event, so the fingerprint is 128 bits wide: the chance
that two distinct keys of a 10^9-event log collide is about 10^-21.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_U = np.uint64
_M1, _M2 = _U(0x9E3779B97F4A7C15), _U(0xC2B2AE3D27D4EB4F)
_F1, _F2 = _U(0xFF51AFD7ED558CCD), _U(0xC4CEB9FE1A85EC53)
_ALL = _U(0xFFFFFFFFFFFFFFFF)
_LONG = 256  # keys longer than this are hashed one by one (rare; keeps the padded matrix small)


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U(33))
    h = h * _F1
    h = h ^ (h >> _U(33))
    h = h * _F2
    return h ^ (h >> _U(33))


#: batches below this many rows are handled in Python (each NumPy or pyarrow call costs ~5-100 us);
#: codec and fastrules use the same threshold
SMALL_BATCH = 16
_SEP = pa.scalar("\x1f")
_MASK = (1 << 64) - 1
_M1I, _M2I, _F1I, _F2I = int(_M1), int(_M2), int(_F1), int(_F2)


def _fmix_int(h: int) -> int:
    h ^= h >> 33
    h = (h * _F1I) & _MASK
    h ^= h >> 33
    h = (h * _F2I) & _MASK
    return h ^ (h >> 33)


def _fingerprint_one(key: bytes) -> tuple[int, int]:
    """fingerprints() of one key (its UTF-8 bytes), in Python ints: the same words, lanes and
    finalisation, each step taken modulo 2^64 as NumPy's uint64 arithmetic wraps."""
    n = len(key)
    if n > _LONG:
        d = hashlib.blake2b(key, digest_size=16).digest()
        return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")
    h1 = (n * _M1I + 0x243F6A8885A308D3) & _MASK
    h2 = (n * _M2I + 0x13198A2E03707344) & _MASK
    for j in range(0, n, 8):
        w = int.from_bytes(key[j:j + 8], "little")  # the last word zero-padded
        a = ((h1 ^ w) * _M1I) & _MASK
        h1 = ((a << 31) | (a >> 33)) & _MASK
        b = ((h2 + w) * _M2I) & _MASK
        h2 = b ^ (b >> 29)
    return _fmix_int(h1 ^ (h2 >> 7)), _fmix_int((h2 + h1) & _MASK)


def fingerprints(sources: pa.Array, ids: pa.Array) -> np.ndarray:
    """(n, 2) uint64 fingerprints of the keys `source \\x1f id`. Deterministic across processes
    and versions of NumPy/Arrow (it depends only on the UTF-8 bytes of the key).

    Each key is hashed as little-endian 64-bit words (the last one zero-padded) folded into two
    lanes; the j-th words of all keys are read with one gather from overlapping 8-byte windows
    over the joined key bytes, so the cost is a few vectorised passes per word of the longest
    key (capped at 256 bytes; longer keys get BLAKE2b)."""
    n = len(ids)
    if 0 < n < SMALL_BATCH:  # a live append: Python ints beat ~40 NumPy calls of ~5 us each
        src, idl = sources.to_pylist(), ids.to_pylist()
        if None not in src and None not in idl:
            return np.array([_fingerprint_one(f"{a}\x1f{b}".encode()) for a, b in zip(src, idl)],
                            dtype=np.uint64).reshape(n, 2)
    out = np.zeros((n, 2), dtype=np.uint64)
    if n == 0:
        return out
    key = pc.binary_join_element_wise(sources, ids, _SEP)
    key = key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key
    bufs = key.buffers()
    large = pa.types.is_large_binary(key.type) or pa.types.is_large_string(key.type)
    offsets = np.frombuffer(bufs[1], dtype=np.int64 if large else np.int32)[key.offset : key.offset + n + 1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    starts = offsets[:-1].astype(np.int64) - lo
    lens = np.diff(offsets).astype(np.int64)
    # The key bytes plus 8 zero bytes, read as overlapping little-endian words: word k is
    # bytes k..k+7, so a key's j-th word is one gather at its start + 8j.
    padded = np.zeros(hi - lo + 8, dtype=np.uint8)
    if hi > lo:
        padded[: hi - lo] = np.frombuffer(bufs[2], dtype=np.uint8, count=hi - lo, offset=lo)
    win = np.ndarray(shape=(hi - lo + 1,), dtype="<u8", buffer=padded.data, strides=(1,))
    maxlen = int(lens.max())
    # Keys in order of decreasing word count (capped at _LONG bytes: longer keys get BLAKE2b
    # below), so the keys that still have a j-th word are a prefix of that order: each round
    # works on contiguous slices, and only its tail (keys whose last word this is) needs the
    # bytes past the end masked off.
    words = np.minimum((lens + 7) >> 3, _LONG // 8).astype(np.int8)
    order = np.argsort(-words, kind="stable")
    s_starts = starts[order]
    s_lens = lens[order]
    counts = np.bincount(words, minlength=_LONG // 8 + 1)
    more = n - np.cumsum(counts)  # more[j]: keys with more than j words
    ul = s_lens.astype(np.uint64)
    h1 = ul * _M1 + _U(0x243F6A8885A308D3)
    h2 = ul * _M2 + _U(0x13198A2E03707344)
    with np.errstate(over="ignore"):
        for j in range(int(words.max()) if n else 0):
            k = int(more[j])  # keys with a j-th word (j from 0)
            last = int(more[j + 1])  # keys from here on end in this word
            w = win[s_starts[:k] + 8 * j]
            rem = np.minimum(s_lens[last:k] - 8 * j, 8).astype(np.uint64)  # bytes of the key in this word (1..8)
            part = rem < _U(8)
            if part.any():
                tail = w[last:k]
                tail &= np.where(part, (_U(1) << (rem * _U(8))) - _U(1), _ALL)
            a = h1[:k]
            a ^= w
            a *= _M1
            a[:] = (a << _U(31)) | (a >> _U(33))
            b = h2[:k]
            b += w
            b *= _M2
            b ^= b >> _U(29)
        f1 = _fmix(h1 ^ (h2 >> _U(7)))
        f2 = _fmix(h2 + h1)
    out[order, 0] = f1
    out[order, 1] = f2
    if maxlen > _LONG:
        kb = key.cast(pa.large_binary()) if not pa.types.is_large_binary(key.type) else key
        for r in np.nonzero(lens > _LONG)[0]:
            d = hashlib.blake2b(kb[int(r)].as_py(), digest_size=16).digest()
            out[r, 0] = int.from_bytes(d[:8], "little")
            out[r, 1] = int.from_bytes(d[8:], "little")
    return out


def first_occurrences(fp: np.ndarray) -> np.ndarray:
    """Boolean mask: True for the first row of each distinct fingerprint (in row order)."""
    n = len(fp)
    if n < 2:
        return np.ones(n, dtype=bool)
    hi = fp[:, 0]
    s = np.sort(hi)
    if not (s[1:] == s[:-1]).any():  # distinct high halves: every row is a first occurrence
        return np.ones(n, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    order = np.lexsort((np.arange(n), fp[:, 1], hi))
    s2 = fp[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (s2[1:, 0] != s2[:-1, 0]) | (s2[1:, 1] != s2[:-1, 1])
    mask[order[new]] = True
    return mask


class _Run:
    """One sorted run. Sorted by the high 64 bits only: equal high halves of distinct keys are
    so rare (~n^2/2^65) that they are handled by a scan, and a stable sort of two concatenated
    sorted runs is then a linear merge (timsort)."""

    __slots__ = ("hi", "lo", "seq")

    def __init__(self, hi: np.ndarray, lo: np.ndarray, seq: np.ndarray) -> None:
        self.hi, self.lo, self.seq = hi, lo, seq

    @classmethod
    def sorted(cls, hi: np.ndarray, lo: np.ndarray, seqs: np.ndarray) -> "_Run":
        order = np.argsort(hi)
        return cls(hi[order], lo[order], np.asarray(seqs, np.int64)[order])

    @classmethod
    def merge(cls, a: "_Run", b: "_Run") -> "_Run":
        """The union of two sorted runs: a stable sort of their concatenation, which finds the
        two runs and merges them in linear time."""
        hi = np.concatenate([a.hi, b.hi])
        order = np.argsort(hi, kind="stable")
        return cls(hi[order], np.concatenate([a.lo, b.lo])[order], np.concatenate([a.seq, b.seq])[order])

    def __len__(self) -> int:
        return len(self.hi)

    def lookup(self, qhi: np.ndarray, qlo: np.ndarray, out: np.ndarray) -> None:
        """Fill out[i] with the seq of key i where this run has it. Queries must be sorted by
        qhi (searchsorted then walks the run once instead of jumping around it)."""
        n = len(self.hi)
        if not n:
            return
        pos = np.searchsorted(self.hi, qhi, side="left")
        inside = pos < n
        p = np.where(inside, pos, 0)
        same_hi = inside & (self.hi[p] == qhi)
        if not same_hi.any():
            return
        hit = same_hi & (self.lo[p] == qlo)
        out[hit] = self.seq[p[hit]]
        # equal high halves: look further along the run (vanishingly rare)
        for i in np.nonzero(same_hi & ~hit)[0]:
            j = int(p[i]) + 1
            while j < n and self.hi[j] == qhi[i]:
                if self.lo[j] == qlo[i]:
                    out[i] = self.seq[j]
                    break
                j += 1


class KeyIndex:
    """Fingerprint -> seq for every event in the log (committed) or in an open transaction."""

    def __init__(self) -> None:
        self._runs: list[_Run] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    def add(self, fp: np.ndarray, seqs: np.ndarray) -> None:
        if not len(fp):
            return
        self._push(_Run.sorted(np.ascontiguousarray(fp[:, 0]), np.ascontiguousarray(fp[:, 1]), seqs))

    def _push(self, run: _Run) -> None:
        self._runs.append(run)
        while len(self._runs) >= 2 and len(self._runs[-1]) * 4 >= len(self._runs[-2]):
            b, a = self._runs.pop(), self._runs.pop()
            self._runs.append(_Run.merge(a, b))

    def add_index(self, other: "KeyIndex") -> None:
        """Merge every entry of `other` (a committed transaction's keys) into this index."""
        for run in other._runs:
            self._push(run)

    def lookup(self, fp: np.ndarray) -> np.ndarray:
        """seq of each fingerprint, or -1 where it is not in the index."""
        out = np.full(len(fp), -1, dtype=np.int64)
        if not self._runs or not len(fp):
            return out
        order = np.argsort(fp[:, 0])
        out[order] = self.lookup_sorted(fp[order, 0], fp[order, 1])
        return out

    def lookup_sorted(self, qhi: np.ndarray, qlo: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """lookup() of keys given as high and low halves sorted by the high half; fills `out`
        (where it is -1) when given."""
        found = np.full(len(qhi), -1, dtype=np.int64) if out is None else out
        for run in self._runs:
            run.lookup(qhi, qlo, found)
        return found

    def add_sorted(self, hi: np.ndarray, lo: np.ndarray, seqs: np.ndarray) -> None:
        """add() of keys already sorted by their high half."""
        if len(hi):
            self._push(_Run(np.ascontiguousarray(hi), np.ascontiguousarray(lo), np.asarray(seqs, np.int64)))

    def export(self, first_seq: int = 0, last_seq: int = 2**62) -> np.ndarray:
        """Entries with first_seq <= seq <= last_seq as an (n, 3) uint64 array (hi, lo, seq),
        sorted by hi."""
        parts = []
        for r in self._runs:
            m = (r.seq >= first_seq) & (r.seq <= last_seq)
            if m.any():
                parts.append(_Run(r.hi[m], r.lo[m], r.seq[m]))
        if not parts:
            return np.zeros((0, 3), np.uint64)
        run = parts[0] if len(parts) == 1 else _Run.sorted(
            np.concatenate([p.hi for p in parts]), np.concatenate([p.lo for p in parts]),
            np.concatenate([p.seq for p in parts]))
        return np.stack([run.hi, run.lo, run.seq.astype(np.uint64)], axis=1)

    def add_sorted_rows(self, rows: np.ndarray) -> None:
        """Add (hi, lo, seq) rows already sorted by hi (a segment's key file)."""
        if len(rows):
            self._push(_Run(np.ascontiguousarray(rows[:, 0]), np.ascontiguousarray(rows[:, 1]),
                            rows[:, 2].astype(np.int64)))
