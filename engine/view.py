"""Views: an agent's context at one log position, assembled by one pure function.

    assemble(candidates, policy, seq=, now_us=, uses=, tokens=, tokenizer=) -> View

`candidates` are the item versions valid at `seq` (from the live state or from the item store;
both give the same list, in key order). The steps, each visible in `explain`:

    1. policy   subjects (globs), kinds, deny_tags / allow_tags            -> "denied by policy"
    2. expiry   expires_us <= now                                          -> "expired"
    3. history  time older than now - history (pinned and axioms exempt)   -> "outside history"
    4. score    priority*w_p + recency*w_r + reinforcement*w_u, where
                recency = 0.5 ** (age / (half_life * (1 + uses))) and reinforcement = 1 - 0.5 ** uses
    5. budget   pinned items and axioms first (never evicted); then by score (ties: key); an item
                that does not fit is evicted whole, never cut                -> "evicted by budget"

"now" is the recorded_at of the view's position, never the wall clock, so a view is a pure
function of (log prefix, policy in force, renderer version): asked later it is the same bytes.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Callable, Iterable

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import AgentPolicy, glob_match
from .errors import CtxdbError
from .events import utc_from_micros
from .items import ItemVersion
from .tokenizer import Tokenizer

RENDERER_VERSION = "ctxdb-render/3"   # 2: identical texts collapse into one item; 3: composed hash
SECTIONS = (("axiom", "Axioms"), ("persona", "Persona"), ("fact", "Facts"), ("summary", "Summaries"),
            ("event", "Events"))
CHRONOLOGICAL = {"event", "summary"}


class BudgetError(CtxdbError):
    """Pinned items and axioms alone need more tokens than the view's budget."""

    exit_code = 65


class ViewItem(msgspec.Struct, frozen=True, gc=False):
    key: str
    kind: str
    subject: str
    text: str
    tokens: int
    score: float
    priority: float
    recency: float
    reinforcement: float
    uses: int
    pinned: bool
    tags: tuple[str, ...]
    time: str
    expires: str | None
    hash: str                   # item hash: key, kind, subject, text, tags (what the agent saw)
    from_seq: int
    lineage_seqs: tuple[int, ...]
    lineage_ids: tuple[str, ...]
    relevance: float | None = None      # query-aware views: fused relevance and its two parts
    vector: float | None = None
    keyword: float | None = None
    merged: tuple[str, ...] = ()        # keys of items with the identical text folded into this one
    redactions: tuple[dict, ...] = ()   # secrets removed from the text: kind and placeholder offsets


class Explained(msgspec.Struct, frozen=True):
    key: str
    kind: str
    status: str                 # "included" | "evicted by budget" | "expired" | "denied by policy" | "outside history"
    score: float | None = None
    priority: float | None = None
    recency: float | None = None
    reinforcement: float | None = None
    tokens: int | None = None
    relevance: float | None = None
    duplicate_of: str | None = None


class View(msgspec.Struct, frozen=True):
    agent: str
    seq: int
    as_of: Any                  # datetime: recorded_at of `seq` (the view's "now")
    text: str
    tokens: int
    budget: int
    hash: str
    items: tuple[ViewItem, ...]
    tokenizer: str
    policy_version: int
    policy_hash: str
    renderer: str = RENDERER_VERSION
    query: str | None = None
    valid_at: str | None = None
    explain: tuple[Explained, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = msgspec.to_builtins(self)
        d["as_of"] = _iso(self.as_of)
        if not self.explain:
            d.pop("explain")
        return d

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.to_dict())

    def body_key(self) -> tuple:
        """What the agent would see change: the items and their text (not the header)."""
        return tuple((i.key, i.hash) for i in self.items)


def _iso(dt) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def item_hash(v: ItemVersion) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (v.key, v.kind, v.subject, v.text, "\x1f".join(v.tags)):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def view_hash(policy_hash: str, tokenizer: str, header: str, items: "Iterable[tuple[str, str]]",
              query: str | None = None, renderer: str = RENDERER_VERSION) -> str:
    """A view's hash, composed from its header and the (kind, item hash) of every item in
    rendered order. The rendered text is a function of exactly these (item hashes cover key,
    kind, subject, text and tags), so the hash covers the content; and a receipt that keeps the
    item hashes still verifies after an item's text is purged."""
    h = hashlib.blake2b(digest_size=16)
    for part in (renderer, policy_hash, tokenizer, header):
        h.update(part.encode())
        h.update(b"\x00")
    for kind, ih in items:
        h.update(f"{kind}\x1f{ih}\x00".encode())
    if query is not None:
        h.update(b"\x01" + query.encode())
    return "v-" + h.hexdigest()


def view_header(agent: str, seq: int, now_us: int, valid_at: str | None = None) -> str:
    return _header(agent, seq, now_us, valid_at)


def render_line(text: str) -> str:
    """One item as a bullet; continuation lines indented so the item stays one bullet."""
    return "- " + text.replace("\n", "\n  ")


def allowed(policy: AgentPolicy, v: ItemVersion) -> bool:
    if v.kind not in policy.kinds or not policy.allows_subject(v.subject):
        return False
    if policy.deny_tags and any(t in policy.deny_tags for t in v.tags):
        return False
    if policy.allow_tags is not None and v.tags and not all(t in policy.allow_tags for t in v.tags):
        return False
    return True


KIND_CODE = {k: i for i, (k, _) in enumerate(SECTIONS)}


class _Grow:
    """A numpy column with amortised O(1) append and pop: the assembly reads `.arr` (a view of
    the filled part) without converting a Python list per view."""

    __slots__ = ("a", "n")

    def __init__(self, dtype: Any, data: Any = None) -> None:
        self.a = np.empty(16, dtype) if data is None else np.array(data, dtype=dtype)
        self.n = 0 if data is None else len(self.a)

    def append(self, x: Any) -> None:
        if self.n == len(self.a):
            self.a = np.concatenate([self.a, np.empty(max(16, self.n), self.a.dtype)])
        self.a[self.n] = x
        self.n += 1

    def pop(self) -> Any:
        self.n -= 1
        return self.a[self.n]

    def __getitem__(self, i: int) -> Any:
        return self.a[i]

    def __setitem__(self, i: int, x: Any) -> None:
        self.a[i] = x

    def __len__(self) -> int:
        return self.n

    @property
    def arr(self) -> np.ndarray:
        return self.a[:self.n]


class Candidates:
    """Columnar candidate set of one view: parallel columns (item, expiry, time, priority, kind
    code, must-include flag, token count) with O(1) add and remove by key. The live path keeps
    one per agent and updates it per commit; a past view builds one from the item store. Both
    feed the same `assemble`, whose result does not depend on candidate order."""

    __slots__ = ("items", "keys", "pos", "exp", "tim", "prio", "kind", "must", "tok", "hashes", "hcount", "dups",
                 "texts")

    def __init__(self) -> None:
        self.items: Any = []                     # list[ItemVersion] (or lazy rows of an Arrow table)
        self.keys: list[str] = []
        self.pos: dict[str, int] = {}
        self.exp = _Grow(np.int64)
        self.tim = _Grow(np.int64)
        self.prio = _Grow(np.float64)
        self.kind = _Grow(np.int64)
        self.must = _Grow(np.bool_)
        self.tok = _Grow(np.int64)
        self.hashes: list[str] = []
        self.hcount: dict[str, int] = {}         # content hash -> candidates with that text
        self.dups = 0                            # hashes held by more than one candidate
        self.texts: Any = None                   # Arrow text column (past views)

    @classmethod
    def build(cls, items: list[ItemVersion], policy: AgentPolicy, counts: list[int]) -> "Candidates":
        c = cls()
        for v, n in zip(items, counts):
            c.add(v, policy, n)
        return c

    @classmethod
    def from_arrow(cls, tbl: "pa.Table", policy: AgentPolicy, counts: dict[str, int]) -> "Candidates":
        """Columns straight from an item-store query (already filtered by the policy); item
        objects are built only for the few rows the assembly looks at."""
        c = cls()
        c.items = _ArrowItems(tbl)
        c.keys = tbl.column("key").to_pylist()
        c.exp = _Grow(np.int64, pc.fill_null(tbl.column("expires_us"), _NEVER).to_numpy())
        c.tim = _Grow(np.int64, tbl.column("time_us").to_numpy())
        c.prio = _Grow(np.float64, tbl.column("priority").to_numpy())
        kinds = tbl.column("kind").to_pylist()
        c.kind = _Grow(np.int64, [KIND_CODE[k] for k in kinds])
        pinned = tbl.column("pinned").to_pylist()
        c.must = _Grow(np.bool_, [bool(p or k == "axiom" or (bool(policy.pinned) and _pinned(policy.pinned, key)))
                                  for p, k, key in zip(pinned, kinds, c.keys)])
        c.texts = tbl.column("text")
        c.hashes = tbl.column("hash").to_pylist()
        c.tok = _Grow(np.int64, [counts[h] for h in c.hashes])
        for h in c.hashes:
            n = c.hcount.get(h, 0) + 1
            c.hcount[h] = n
            if n == 2:
                c.dups += 1
        return c

    def text(self, i: int) -> str:
        return self.items[i].text if self.texts is None else self.texts[i].as_py()

    def __len__(self) -> int:
        return len(self.items)

    def add(self, v: ItemVersion, policy: AgentPolicy, tokens: int) -> None:
        if v.key in self.pos:
            self.remove(v.key)
        self.pos[v.key] = len(self.items)
        self.items.append(v)
        self.keys.append(v.key)
        self.exp.append(_NEVER if v.expires_us is None else v.expires_us)
        self.tim.append(v.time_us)
        self.prio.append(v.priority)
        self.kind.append(KIND_CODE[v.kind])
        self.must.append(v.pinned or v.kind == "axiom" or (bool(policy.pinned) and _pinned(policy.pinned, v.key)))
        self.tok.append(tokens)
        self.hashes.append(v.hash)
        n = self.hcount.get(v.hash, 0) + 1
        self.hcount[v.hash] = n
        if n == 2:
            self.dups += 1

    def remove(self, key: str) -> None:
        i = self.pos.pop(key, None)
        if i is None:
            return
        last = len(self.items) - 1
        h = self.hashes[i]
        n = self.hcount[h] - 1
        if n:
            self.hcount[h] = n
            if n == 1:
                self.dups -= 1
        else:
            del self.hcount[h]
        for col in (self.items, self.keys, self.exp, self.tim, self.prio, self.kind, self.must, self.tok,
                    self.hashes):
            col[i] = col[last]
            col.pop()
        if i != last:
            self.pos[self.items[i].key] = i

    def get(self, key: str) -> ItemVersion | None:
        i = self.pos.get(key)
        return None if i is None else self.items[i]


def assemble(
    candidates: Iterable[ItemVersion] | Candidates, policy: AgentPolicy, *, seq: int, now_us: int,
    uses: dict[str, int], tokens: Callable[[list[ItemVersion]], list[int]], tokenizer: Tokenizer,
    policy_version: int, policy_hash: str, budget: int | None = None, explain: bool = False,
    query: str | None = None, valid_at: str | None = None, relevance: Callable | None = None,
) -> View:
    """`candidates` as a `Candidates` set is taken as already allowed by `policy` (the live
    path keeps one per agent); any other iterable is filtered by the policy here.

    `relevance(hashes, text_of) -> semantic.Relevance` scores the visible candidates against
    `query` (query-aware views); its fused score joins the others with weight w_relevance."""
    budget = policy.budget if budget is None else budget
    notes: list[Explained] = []
    if isinstance(candidates, Candidates):
        C = candidates
    else:
        kept = []
        for v in candidates:
            if allowed(policy, v):
                kept.append(v)
            elif explain:
                notes.append(Explained(v.key, v.kind, "denied by policy"))
        C = Candidates.build(kept, policy, tokens(kept))
    keep, exp, tim, must_all = _visible(C, policy, now_us)
    if explain:
        for i in np.flatnonzero(~keep):
            v = C.items[i]
            notes.append(Explained(v.key, v.kind, "expired" if exp[i] <= now_us else "outside history"))
    idx = np.flatnonzero(keep)
    items = C.items
    live = _Picked(items, C.keys, idx.tolist())
    must = must_all[idx]
    tim = tim[idx]
    counts = C.tok.arr[idx]
    wp, wr, wu = policy.weight("priority"), policy.weight("recency"), policy.weight("reinforcement")
    hl_table = np.array([np.inf if policy.half_life(k) is None else float(policy.half_life(k)) for k, _ in SECTIONS])
    hl = hl_table[C.kind.arr[idx]]
    prio = C.prio.arr[idx]
    u = (np.array([uses.get(C.keys[i], 0) for i in live.idx], dtype=np.float64) if uses
         else np.zeros(len(live)))
    age = np.maximum(0, now_us - tim).astype(np.float64)
    # One vectorised formula for live and past views alike (an infinite half-life gives 0.5**0 = 1).
    recency = np.power(0.5, age / (hl * (1.0 + u)))
    reinf = 1.0 - np.power(0.5, u)
    score = wp * prio + wr * recency + wu * reinf
    rel = None
    if relevance is not None and query is not None:
        rel = relevance([C.hashes[i] for i in live.idx], lambda j: C.text(live.idx[j]))
        score = score + policy.weight("relevance") * rel.rel

    # Identical texts collapse into one item (the best-scored; ties: key) with combined lineage.
    merged: dict[int, list[int]] = {}
    if C.dups:
        must, score, keepmask, merged, dropped = _dedup(C, live, must, score)
        if explain:
            for j, into in dropped:
                notes.append(Explained(live[j].key, live[j].kind, "duplicate", float(score[j]),
                                       duplicate_of=live.key(into)))
        score = np.where(keepmask, score, -np.inf)

    def entry(i: int) -> tuple:
        r = None if rel is None else (float(rel.rel[i]), float(rel.cos[i]), float(rel.kw[i]))
        return (live[i], int(counts[i]), float(score[i]), float(recency[i]), float(reinf[i]), int(u[i]),
                bool(must[i]), r, live.many(merged.get(i, ())) if i in merged else ())

    header = _header(policy.name, seq, now_us, valid_at)
    heading_cost = _heading_costs(tokenizer)
    used = tokenizer.count(header)
    present: set[str] = set()
    chosen: list[tuple] = []
    for i in sorted(np.flatnonzero(must).tolist(), key=live.key):
        s = entry(i)
        used += s[1] + (0 if s[0].kind in present else heading_cost[s[0].kind])
        present.add(s[0].kind)
        chosen.append(s)
    if used > budget:
        raise BudgetError(
            f"agent {policy.name!r}: pinned items and axioms need {used} tokens, the budget is {budget}")
    rest = np.flatnonzero(~must & np.isfinite(score))
    evicted: list[tuple] = []
    smallest = int(counts[rest].min()) if len(rest) else 0
    # Only the best-scored part of the order is ever walked unless explaining: sort a head
    # big enough to fill the budget with the smallest items (ties at its edge included).
    order: Any = (_by_score_then_key(rest, score, live) if explain else
                  _in_order(rest, score, live, (budget - used) // max(1, smallest) + 1))
    stop = 0
    for pos, i in enumerate(order):
        if budget - used < smallest:
            stop = pos
            break
        v = live[i]
        cost = int(counts[i]) + (0 if v.kind in present else heading_cost[v.kind])
        if used + cost <= budget:
            used += cost
            present.add(v.kind)
            chosen.append(entry(i))
        elif explain:
            evicted.append(entry(i))
    else:
        stop = len(rest)
    if explain:
        evicted.extend(entry(i) for i in order[stop:])

    text = _render(header, chosen)
    exact = used if getattr(tokenizer, "additive", False) else tokenizer.count(text)
    # A tokenizer that is not additive over lines may count the joined text differently: drop the
    # lowest-scoring evictable items until the exact count fits.
    while exact > budget:
        drop = min((s for s in chosen if not s[6]), key=lambda s: (s[2], _neg(s[0].key)), default=None)
        if drop is None:
            raise BudgetError(f"agent {policy.name!r}: pinned items alone exceed the budget of {budget}")
        chosen.remove(drop)
        evicted.append(drop)
        text = _render(header, chosen)
        exact = tokenizer.count(text)

    items = tuple(_view_item(s) for s in _ordered(chosen))  # (the order _render printed them in)
    if explain:
        for s in chosen:
            notes.append(Explained(s[0].key, s[0].kind, "included", s[2], s[0].priority, s[3], s[4], s[1],
                                   None if s[7] is None else round(s[7][0], 9)))
        for s in evicted:
            notes.append(Explained(s[0].key, s[0].kind, "evicted by budget", s[2], s[0].priority, s[3], s[4], s[1],
                                   None if s[7] is None else round(s[7][0], 9)))
        notes.sort(key=lambda e: (_STATUS_ORDER[e.status], -(e.score or 0.0), e.key))
    vhash = view_hash(policy_hash, tokenizer.name, header, [(i.kind, i.hash) for i in items], query)
    return View(agent=policy.name, seq=seq, as_of=utc_from_micros(now_us), text=text, tokens=exact,
                budget=budget, hash=vhash, items=items, tokenizer=tokenizer.name,
                policy_version=policy_version, policy_hash=policy_hash, query=query, valid_at=valid_at,
                explain=tuple(notes))


_NEVER = np.iinfo(np.int64).max


def _visible(C: Candidates, policy: AgentPolicy, now_us: int):
    """Mask of candidates not expired at `now_us` and inside the history window (pinned and
    axioms exempt from history), with the expiry, time and must-include columns."""
    exp, tim, must_all = C.exp.arr, C.tim.arr, C.must.arr
    keep = exp > now_us
    if policy.history_us is not None:
        keep &= (tim >= now_us - policy.history_us) | must_all
    return keep, exp, tim, must_all


def visible(C: Candidates, policy: AgentPolicy, now_us: int) -> np.ndarray:
    """Indices of the candidates an agent's view at `now_us` may hold (search uses the same)."""
    return np.flatnonzero(_visible(C, policy, now_us)[0])


@lru_cache(maxsize=1 << 20)
def _pinned(globs: tuple[str, ...], key: str) -> bool:
    return any(glob_match(g, key) for g in globs)


def _by_score_then_key(idx: np.ndarray, score: np.ndarray, live: list[ItemVersion]) -> list[int]:
    """`idx` ordered by score descending, equal scores by key ascending."""
    if not len(idx):
        return []
    order = idx[np.argsort(-score[idx], kind="stable")]
    s = score[order]
    out = order.tolist()
    # runs of equal scores: sort each by key
    breaks = np.flatnonzero(np.diff(s) != 0) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(out)]))
    long = np.flatnonzero(ends - starts > 1)
    for a, b in zip(starts[long].tolist(), ends[long].tolist()):
        out[a:b] = sorted(out[a:b], key=live.key)
    return out


def _in_order(idx: np.ndarray, score: np.ndarray, live: Any, head: int):
    """The order of `_by_score_then_key`, lazily: the `head` best (and whatever ties the last
    of them) sorted first, the rest only if the caller walks past them."""
    if len(idx) <= 2 * head:
        yield from _by_score_then_key(idx, score, live)
        return
    neg = -score[idx]
    edge = np.partition(neg, head - 1)[head - 1]   # the head-th best score (negated)
    yield from _by_score_then_key(idx[neg <= edge], score, live)
    yield from _by_score_then_key(idx[neg > edge], score, live)


class _Picked:
    """items[idx[i]] without building the list (most candidates are never looked at)."""

    __slots__ = ("items", "keys", "idx")

    def __init__(self, items: Any, keys: list[str], idx: list[int]) -> None:
        self.items, self.keys, self.idx = items, keys, idx

    def __getitem__(self, i: int) -> ItemVersion:
        return self.items[self.idx[i]]

    def key(self, i: int) -> str:
        return self.keys[self.idx[i]]

    def __len__(self) -> int:
        return len(self.idx)

    def many(self, js: "Iterable[int]") -> tuple:
        """items[idx[j]] for every j, built in one go where the items allow it."""
        ids = [self.idx[j] for j in js]
        many = getattr(self.items, "many", None)
        return many(ids) if many is not None else tuple(self.items[i] for i in ids)


class _ArrowItems:
    """Rows of an item-store result as ItemVersions, built on first access."""

    def __init__(self, tbl: "pa.Table") -> None:
        self.tbl = tbl
        self._made: dict[int, ItemVersion] = {}

    def __len__(self) -> int:
        return self.tbl.num_rows

    def __getitem__(self, i: int) -> ItemVersion:
        v = self._made.get(i)
        if v is None:
            from .items import rows_to_versions

            v = self._made[i] = rows_to_versions(self.tbl.slice(i, 1))[0]
        return v

    def many(self, ids: list[int]) -> tuple:
        """Rows `ids` at once (a merged duplicate group can hold thousands: one take, not a
        slice per row)."""
        missing = [i for i in dict.fromkeys(ids) if i not in self._made]
        if len(missing) > 1:
            from .items import rows_to_versions

            for i, v in zip(missing, rows_to_versions(self.tbl.take(pa.array(missing, pa.int64())))):
                self._made[i] = v
        return tuple(self[i] for i in ids)


_STATUS_ORDER = {"included": 0, "evicted by budget": 1, "duplicate": 2, "outside history": 3, "expired": 4,
                 "denied by policy": 5}


def _neg(key: str) -> tuple:
    return tuple(-ord(c) for c in key)


def _header(agent: str, seq: int, now_us: int, valid_at: str | None) -> str:
    h = f"# Context for {agent} (ctxdb seq {seq}, as of {_iso(utc_from_micros(now_us))})"
    if valid_at:
        h += f" valid at {valid_at}"
    return h


def _ordered(chosen: list[tuple]) -> list[tuple]:
    out = []
    for kind, _ in SECTIONS:
        part = [s for s in chosen if s[0].kind == kind]
        if kind in CHRONOLOGICAL:
            part.sort(key=lambda s: (s[0].time_us, s[0].key))
        else:
            part.sort(key=lambda s: (-s[2], s[0].key))
        out.extend(part)
    return out


def _render(header: str, chosen: list[tuple]) -> str:
    lines = [header]
    kind = None
    for s in _ordered(chosen):  # grouped by section, in SECTIONS order
        if s[0].kind != kind:
            kind = s[0].kind
            lines.append(f"## {_TITLE[kind]}")
        lines.append(render_line(s[0].text))
    return "\n".join(lines) + "\n"


_TITLE = dict(SECTIONS)
_HEADING_COSTS: dict[tuple[int, str], dict[str, int]] = {}


def _heading_costs(tokenizer: Tokenizer) -> dict[str, int]:
    """Tokens of each section heading (counted once per tokenizer)."""
    key = (id(tokenizer), tokenizer.name)
    got = _HEADING_COSTS.get(key)
    if got is None:
        got = _HEADING_COSTS[key] = {kind: tokenizer.count(f"## {title}") for kind, title in SECTIONS}
    return got


def _dedup(C: Candidates, live: "_Picked", must: np.ndarray, score: np.ndarray):
    """Group visible candidates by content hash; keep one per group: a must-include one first,
    then the best score, ties by key. Returns (must, score, keep mask, {kept: [folded]}, [(folded, kept)])."""
    groups: dict[str, list[int]] = {}
    for j, i in enumerate(live.idx):
        h = C.hashes[i]
        if C.hcount[h] > 1:
            groups.setdefault(h, []).append(j)
    keep = np.ones(len(live), dtype=bool)
    merged: dict[int, list[int]] = {}
    dropped: list[tuple[int, int]] = []
    must = must.copy()
    for js in groups.values():
        if len(js) < 2:
            continue
        best = min(js, key=lambda j: (not must[j], -score[j], live.key(j)))
        rest = sorted((j for j in js if j != best), key=live.key)
        merged[best] = rest
        for j in rest:
            keep[j] = False
            must[j] = False
            dropped.append((j, best))
    return must, score, keep, merged, dropped


_STATIC: dict[int, tuple] = {}   # id(version) -> (version, time, expires, item hash): live views reuse them


def _static(v: ItemVersion) -> tuple:
    got = _STATIC.get(id(v))
    if got is not None and got[0] is v:
        return got
    if len(_STATIC) > 50_000:
        _STATIC.clear()
    got = _STATIC[id(v)] = (v, _iso(utc_from_micros(v.time_us)),
                            None if v.expires_us is None else _iso(utc_from_micros(v.expires_us)), item_hash(v))
    return got


def _view_item(s: tuple) -> ViewItem:
    v, n, score, recency, reinf, u, must, r, folded = s
    _, time_s, expires_s, ihash = _static(v)
    seqs, ids = v.lineage_seqs, v.lineage_ids
    if folded:
        pairs = sorted(set(zip(seqs, ids)).union(*(zip(f.lineage_seqs, f.lineage_ids) for f in folded)))
        seqs, ids = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    return ViewItem(
        key=v.key, kind=v.kind, subject=v.subject, text=v.text, tokens=n, score=round(score, 9),
        priority=v.priority, recency=round(recency, 9), reinforcement=round(reinf, 9), uses=u, pinned=must,
        tags=v.tags, time=time_s, expires=expires_s, hash=ihash, from_seq=v.from_seq, lineage_seqs=seqs, lineage_ids=ids,
        relevance=None if r is None else round(r[0], 9), vector=None if r is None else r[1],
        keyword=None if r is None else r[2], merged=tuple(f.key for f in folded),
        redactions=tuple(msgspec.json.decode(v.meta).get("redactions", ())) if v.meta else ())
