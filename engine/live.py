"""Live views: the projection runner, the materialized view of every agent, and subscriptions.

A background thread wakes on every log commit, projects the new events, updates each agent's
candidate set from the opened and closed item versions, re-assembles the view of every agent with
subscribers at the new position and pushes it to them. The views of other agents read before are
re-assembled when the log has been quiet for a moment (or on their next read). `Views.view(agent)` at the
current position is then a dictionary read.

Projected versions are written to the item store behind the push (write-behind) by a second
thread, in one DuckDB transaction per write with the projector's checkpoint. DuckDB releases the
GIL while it works, so that write runs alongside the next projection instead of in front of it.

Past positions are assembled by the same `assemble()` from the item store's versions at that
seq, the policy in force then and the reinforcement recorded by then, so they equal what was
served live.
"""
from __future__ import annotations

import asyncio
import threading
import time as _time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pyarrow as pa

from .access import check_auditor, filter_versions, no_policy, reader_policy
from .config import AgentPolicy, Config
from .errors import AccessDenied, BadInput, CtxdbError
from .events import micros
from .items import ItemStore, ItemVersion, like_pattern, rows_to_versions
from .log import BaseLog, parse_time
from .projector import PROJECT_COLUMNS, Projector
from .tokenizer import Tokenizer, get_tokenizer
from .view import BudgetError, Candidates, View, allowed, assemble, render_line

if TYPE_CHECKING:
    from .semantic import Semantic


#: write-behind: projected batches are written to the item store (by the writer thread) once the
#: log has been quiet for QUIET_SECONDS, or while commits keep coming when this many versions have
#: piled up or the oldest has waited this many seconds, and before a past view -- never on the
#: push path. A DuckDB write contends with pushes for the GIL and the disk (its commit's fsync
#: delays the log's), so under a stream of small commits it runs rarely.
WRITE_BEHIND_VERSIONS = 20_000
WRITE_BEHIND_SECONDS = 10.0
#: views of agents without subscribers are re-assembled once the log has been quiet this long
QUIET_SECONDS = 0.05


@dataclass(frozen=True)
class ViewUpdate:
    """What a subscriber receives: the new view and what changed since the previous one."""

    view: View
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]


class Subscription:
    """Iterate (sync or async) over an agent's views as they change. The first update is the
    current view. A consumer that falls more than `maxlen` updates behind skips the oldest
    (each update it does get is still an exact view)."""

    def __init__(self, owner: "Views", agent: str, maxlen: int = 1024) -> None:
        self.owner, self.agent = owner, agent
        self._q: deque[ViewUpdate] = deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self._last: View | None = None
        self.closed = False
        self.skipped = 0
        self.error: BaseException | None = None   # set when the agent's grant is revoked

    def _push(self, view: View) -> None:
        with self._cond:
            prev = self._last
            if prev is not None and (view.seq <= prev.seq or prev.body_key() == view.body_key()):
                return
            old = {i.key: i.hash for i in prev.items} if prev else {}
            new = {i.key: i.hash for i in view.items}
            upd = ViewUpdate(view, tuple(k for k in new if k not in old), tuple(k for k in old if k not in new),
                             tuple(k for k in new if k in old and old[k] != new[k]))
            if len(self._q) == self._q.maxlen:
                self.skipped += 1
            self._q.append(upd)
            self._last = view
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> ViewUpdate | None:
        """The next update; None on timeout or when closed."""
        deadline = None if timeout is None else _time.monotonic() + timeout
        with self._cond:
            while not self._q and not self.closed:
                left = None if deadline is None else deadline - _time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.5)
            return self._q.popleft() if self._q else None

    def __iter__(self) -> Iterator[ViewUpdate]:
        while True:
            upd = self.get()
            if upd is None:
                if self.error is not None:
                    raise self.error
                return
            yield upd

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> ViewUpdate:
        while True:
            upd = await asyncio.to_thread(self.get, 0.25)
            if upd is not None:
                return upd
            if self.closed:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self.owner._unsubscribe(self)

    def _deny(self, exc: BaseException) -> None:
        """The agent lost its policy: nothing more is pushed; iteration raises `exc`."""
        self.error = exc
        self.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Views:
    def __init__(self, log: BaseLog, items: ItemStore, projector: Projector, *, live: bool,
                 on_projected: Callable[[int], None] | None = None, semantic: "Semantic | None" = None,
                 keep_token_counts: bool = True) -> None:
        """`keep_token_counts=False`: token counts stay in memory, never written to the item
        store (a scratch store that is thrown away)."""
        self.log, self.items, self.projector = log, items, projector
        self._keep_tokens = keep_token_counts
        self.semantic = semantic
        self.live = live
        self.on_projected = on_projected
        self._lock = threading.RLock()              # projection + live state
        self._changed = threading.Condition()
        self._views: dict[str, View] = {}
        self._cands: dict[str, Candidates] = {}
        self._subs: dict[str, list[Subscription]] = {}
        self._tok_cache: dict[str, dict[str, int]] = {}
        self._tok_pending: dict[str, dict[str, int]] = {}
        self._last_catch_up = 0.0
        self._pending: list = []                    # projected, not yet written (write-behind)
        self._pending_versions = 0
        self._pending_since = 0.0
        # Held while a write-behind batch is written; taken after `_lock`, never before it.
        self._persist_lock = threading.Lock()
        self._inflight: list = []                   # taken by the writer; left here if its write failed
        self._wb = threading.Condition()            # wakes the writer
        self._write_due = False                     # (under _wb) the writer has work to do now
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self.write_error: CtxdbError | None = None  # the writer's last failure (retried until it succeeds)
        self._stop = False
        self.error: BaseException | None = None
        # The live state (every agent's candidates) is built now for a live engine, where pushes
        # need it; otherwise (compliance replay, audits over a scratch store) on first use.
        self._live_ready = False
        if live:
            self._init_live()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.semantic is not None and not self.semantic.started and self.live:
            self.semantic.start(lambda after: self.items.texts_after(after, 512), self.projector.seq)
        if self.live and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ctxdb-projector", daemon=True)
            self._thread.start()
            self._writer = threading.Thread(target=self._write_behind, name="ctxdb-writer", daemon=True)
            self._writer.start()

    def close(self) -> None:
        self._stop = True
        with self.log._changed:
            self.log._changed.notify_all()
        with self._wb:
            self._wb.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._writer is not None:
            self._writer.join(timeout=30)
        if self.semantic is not None:
            self.semantic.close()
        for subs in list(self._subs.values()):
            for s in list(subs):
                s.close()
        self.persist()

    def _run(self) -> None:
        while not self._stop:
            with self.log._changed:
                if self.log.last_seq <= self.projector.seq and not self._stop:
                    self.log._changed.wait(QUIET_SECONDS if self._stale() or self._pending else 0.5)
            if self._stop:
                break
            try:
                if self.log.last_seq <= self.projector.seq:  # quiet
                    self._refresh_stale()
                    self._wake_writer(now=True)
                    if _time.monotonic() - self._last_catch_up >= 1.0:  # quiet for a second
                        self.count_tokens_behind()
                    continue
                self.catch_up()
            except BaseException as exc:  # surfaced to callers of view()/wait()
                self.error = exc
                with self._changed:
                    self._changed.notify_all()
                _time.sleep(0.5)

    # ---- projection ------------------------------------------------------------------------
    def catch_up(self, to_seq: int | None = None, *, refresh: bool = True) -> int:
        """Project everything committed so far (or up to `to_seq`); returns the projected seq.
        `refresh=False`: only agents with subscribers get their view re-assembled now; the
        others' are re-assembled when next read (a purge, which closes the engine right after
        its tombstone, does not pay for views nobody will read)."""
        with self._lock:
            proj = self.projector
            end = self.log.last_seq if to_seq is None else min(to_seq, self.log.last_seq)
            if end <= proj.seq:
                self.error = None
                return proj.seq
            policy_before, reproj_before = proj.config.hash, proj.stats.reprojections
            self._last_catch_up = _time.monotonic()
            batches = self.log.read_batches(from_seq=proj.seq + 1, to_seq=end, columns=PROJECT_COLUMNS)
            writes: list = []
            opened, closed = proj.run(batches, end, self._read_prefix, deferred=writes)
            if proj.config.hash != policy_before or proj.stats.reprojections != reproj_before:
                if self._live_ready:
                    self._init_live()
                self._deny_revoked()
            else:
                self._apply_changes(opened, closed)
            # Push first, then persist: the item store write (a DuckDB commit) is not on the
            # notification path. Past views wait for this lock, so they never see a gap; after a
            # crash the same versions are re-projected from the durable log.
            if writes and not self._pending:
                self._pending_since = _time.monotonic()
            self._pending.extend(writes)  # before anything below can fail
            self._pending_versions += sum(len(w.new) for w in writes)
            if self.semantic is not None and self.live and writes:
                self.semantic.enqueue(proj.seq, writes[-1].next_vid - 1,
                                      [(v.hash, v.text) for w in writes for v in w.new if v.op == "upsert"])
            # A live engine pushes to subscribers now and re-assembles the other agents' views
            # when the log goes quiet (a read before that assembles its own).
            self._refresh_views(subscribed_only=self.live or not refresh)
            if self._writer is None:
                self.persist()
            else:
                self._wake_writer()
            seq = proj.seq
            if self.on_projected is not None:
                self.on_projected(seq)
        self.error = None
        with self._changed:
            self._changed.notify_all()
        return seq

    def persist(self) -> None:
        """Write every projected batch still in memory (write-behind) to the item store, after
        the one the writer thread may be writing. Called before anything reads the item store
        (past views, snapshots, rebuild, close), and after each catch-up of an engine without
        a writer thread."""
        with self._lock, self._persist_lock:
            todo = self._inflight + self._pending
            if todo:
                self.items.write_many(todo)
            self._inflight, self._pending, self._pending_versions = [], [], 0
            self.write_error = None
            self._flush_tokens()

    def _wake_writer(self, now: bool = False) -> None:
        if self._writer is None:
            return
        if now or self._write_overdue():
            with self._wb:
                self._write_due = True
                self._wb.notify()

    def _write_overdue(self) -> bool:
        return self._pending_versions >= WRITE_BEHIND_VERSIONS or \
            bool(self._pending and _time.monotonic() - self._pending_since >= WRITE_BEHIND_SECONDS)

    def _write_behind(self) -> None:
        """The writer thread: writes the batches the projector has pushed (and left in
        `_pending`) in one transaction each, outside the projection lock, so the next projection
        and push need not wait for DuckDB."""
        while not self._stop:
            with self._wb:
                if not self._write_due:
                    self._wb.wait(WRITE_BEHIND_SECONDS)
                due, self._write_due = self._write_due, False
            if self._stop:
                break
            if not due and not self._write_overdue():
                continue
            with self._lock:
                # a batch whose write failed goes first again (persist() may also retry it)
                todo, self._pending, self._pending_versions = self._inflight + self._pending, [], 0
                counts = self._take_tokens()
                if not todo and not counts:
                    continue
                self._inflight = todo
                self._persist_lock.acquire()
            try:
                if todo:
                    self.items.write_many(todo)
                self._inflight = []
                self.write_error = None
                self._put_tokens(counts)
            except CtxdbError as exc:  # kept in `_inflight`: retried next time, in order
                self.write_error = exc
            finally:
                self._persist_lock.release()

    def count_tokens_behind(self, limit: int = 128) -> int:
        """Count tokens of stored versions that have no count yet (superseded versions a past
        view may need), a small batch per idle tick so a commit never waits long behind it;
        returns how many versions it looked at."""
        tok = self.tokenizer(self.projector.config)
        key = f"tokens_vid:{tok.name}"
        done = int(self.items.get_meta(key) or 0)
        rows = self.items.texts_after(done, limit)
        if not rows:
            return 0
        self._count_missing(tok, ((h, t) for _, h, t in rows))
        with self._lock:  # the DuckDB write runs outside it: a commit arriving now is pushed at once
            counts = self._take_tokens()
            self._persist_lock.acquire()
        try:
            self._put_tokens(counts)
            self.items.set_meta(key, str(rows[-1][0]))
        finally:
            self._persist_lock.release()
        return len(rows)

    def _read_prefix(self, at: int):
        return self.log.read_batches(from_seq=1, to_seq=at - 1, columns=PROJECT_COLUMNS)

    def wait(self, seq: int, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else _time.monotonic() + timeout
        if not self.live:
            self.log.refresh()
            self.catch_up(seq)
            return self.projector.seq >= seq
        self.start()
        with self._changed:
            while self.projector.seq < seq:
                if self.error is not None:
                    raise self.error
                left = None if deadline is None else deadline - _time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(min(left, 0.5) if left is not None else 0.5)
        return True

    # ---- live state ------------------------------------------------------------------------
    def _agents(self) -> dict[str, AgentPolicy]:
        return self.projector.config.agents

    def _init_live(self) -> None:
        current = self.projector.current
        tok = self._counter(self.tokenizer(self.projector.config))
        self._cands = {}
        self._live_ready = True
        for name, pol in self._agents().items():
            vs = [current[k] for k in sorted(current) if allowed(pol, current[k])]
            self._cands[name] = Candidates.build(vs, pol, tok(vs))
        self._views = {}

    def _deny_revoked(self) -> None:
        agents = self._agents()
        for name, subs in list(self._subs.items()):
            if name not in agents:
                for s in list(subs):
                    s._deny(AccessDenied(f"agent {name!r} has no policy from seq {self.projector.seq} on: "
                                         "its subscription was closed"))

    def _cands_of(self, agent: str) -> Candidates:
        if not self._live_ready:
            self._init_live()
        return self._cands[agent]

    def _apply_changes(self, opened: list[ItemVersion], closed: list[ItemVersion]) -> None:
        if not self._live_ready:  # built from the projector's current items when first needed
            return
        agents = self._agents()
        for v in closed:
            for name in agents:
                c = self._cands[name]
                cur = c.get(v.key)
                if cur is not None and cur.vid == v.vid:
                    c.remove(v.key)
        fresh = [v for v in opened if self.projector.current.get(v.key) is v]  # not closed again in the run
        if not fresh:
            return
        counts = dict(zip((v.vid for v in fresh), self._counter(self.tokenizer(self.projector.config))(fresh)))
        for v in fresh:
            for name, pol in agents.items():
                if allowed(pol, v):
                    self._cands[name].add(v, pol, counts[v.vid])

    def _live_view(self, name: str, pol: AgentPolicy, position: tuple[int, int, int] | None = None) -> View | None:
        """Assemble (and keep) `name`'s view at the projected position from the live state.
        `position` = (seq, now, policy version), when the caller already has them."""
        seq, now, version = position or self._position()
        if seq == 0:
            return None
        view = self._assemble(self._cands_of(name), pol, seq, now, self.projector.uses, self.projector.config, version)
        self._views[name] = view
        return view

    def _position(self) -> tuple[int, int, int]:
        seq = self.projector.seq
        if seq == 0:
            return 0, 0, 0
        return seq, self.log.recorded_at_of(seq), self._policy_version(seq)

    def _stale(self) -> bool:
        """Whether a materialized view (an agent's view somebody has read) is behind the projection."""
        seq = self.projector.seq
        return any(v.seq != seq for v in self._views.values())

    def _refresh_stale(self) -> None:
        """Re-assemble the materialized views that are behind the projection (agents without
        subscribers that were read before), one agent at a time, giving way as soon as new
        events arrive. An agent never read has no view to keep fresh: its first read assembles it."""
        seq = self.projector.seq
        for name in sorted(n for n, v in list(self._views.items()) if v.seq != seq):
            with self._lock:
                if self.log.last_seq > seq or self.projector.seq != seq:
                    return  # new events: the next quiet moment finishes the work
                pol = self._agents().get(name)
                v = self._views.get(name)
                if v is None or v.seq == seq:
                    continue
                if pol is None:
                    self._views.pop(name, None)
                    continue
                try:
                    self._live_view(name, pol)
                except BudgetError:  # this agent's problem only: its own view() raises it again
                    self._views.pop(name, None)

    def _refresh_views(self, subscribed_only: bool = False) -> None:
        # Agents with subscribers first: their push latency does not wait for the others.
        agents = sorted(self._agents().items(), key=lambda kv: (not self._subs.get(kv[0]), kv[0]))
        if subscribed_only:
            agents = [kv for kv in agents if self._subs.get(kv[0])]
        position = self._position()  # the same for every agent
        pushed = False
        for name, pol in agents:
            if pushed and not self._subs.get(name):
                _time.sleep(0)  # let woken subscribers run before the rest of the work
                pushed = False
            try:
                view = self._live_view(name, pol, position)
            except BudgetError:  # this agent's problem only: its own view() raises it again
                continue
            if view is None:
                return
            for s in list(self._subs.get(name, ())):
                s._push(view)
                pushed = True
        if pushed:
            _time.sleep(0)

    def _policy_version(self, seq: int) -> int:
        v = 0
        for p in self.projector.policies:
            if p.seq <= seq:
                v = p.version
        return v

    # ---- tokens ----------------------------------------------------------------------------
    def tokenizer(self, cfg: Config) -> Tokenizer:
        return get_tokenizer(cfg.tokenizer)

    def _token_cache(self, tok: Tokenizer) -> dict[str, int]:
        cache = self._tok_cache.get(tok.name)
        if cache is None:
            cache = self._tok_cache[tok.name] = self.items.token_counts(tok.name)
        return cache

    def _count_missing(self, tok: Tokenizer, pairs: Iterable[tuple[str, str]]) -> None:
        """Count the (content hash, text) pairs the cache lacks (tokenizing outside the lock) and
        queue the counts for the item store."""
        cache = self._token_cache(tok)
        missing = list({h: t for h, t in pairs if h not in cache}.items())
        if not missing:
            return
        self._remember(tok, [h for h, _ in missing], tok.count_many([render_line(t) for _, t in missing]))

    def _remember(self, tok: Tokenizer, hashes: Iterable[str], counts: Iterable[int]) -> None:
        """Token counts into the cache and queued for the item store."""
        cache = self._token_cache(tok)
        with self._lock:
            pending = self._tok_pending.setdefault(tok.name, {})
            for h, n in zip(hashes, counts):
                cache[h] = n
                pending[h] = n

    def _counter(self, tok: Tokenizer) -> Callable[[list[ItemVersion]], list[int]]:
        cache = self._token_cache(tok)

        def count(vs: list[ItemVersion]) -> list[int]:
            self._count_missing(tok, ((v.hash, v.text) for v in vs))
            return [cache[v.hash] for v in vs]
        return count

    def _counts_for(self, tok: Tokenizer, tbl) -> dict[str, int]:
        cache = self._token_cache(tok)
        hashes = tbl.column("hash").to_pylist()
        miss = [i for i, h in enumerate(hashes) if h not in cache]
        if not miss:
            return cache
        lines = getattr(tok, "count_lines", None)
        if lines is None:
            self._count_missing(tok, zip(hashes, tbl.column("text").to_pylist()))
            return cache
        # counted by the tokenizer over the Arrow column (no Python strings)
        texts = tbl.column("text")
        counted = lines(texts if len(miss) == len(hashes) else texts.take(pa.array(miss, pa.int64())))
        self._remember(tok, (hashes[i] for i in miss), counted)
        return cache

    def _flush_tokens(self) -> None:
        self._put_tokens(self._take_tokens())

    def _take_tokens(self) -> dict[str, dict[str, int]]:
        """The token counts not yet in the item store, by tokenizer (taken: the caller writes them)."""
        out = {name: dict(pending) for name, pending in self._tok_pending.items() if pending}
        for name in out:
            self._tok_pending[name].clear()
        return out

    def _put_tokens(self, counts: dict[str, dict[str, int]]) -> None:
        if self.items is None or not self._keep_tokens:
            return
        for name, batch in counts.items():
            try:
                self.items.put_token_counts(name, batch)
            except CtxdbError:
                pass  # a cache: losing it costs a recount, never correctness

    def _assemble(self, cands, pol: AgentPolicy, seq: int, now: int, uses: dict[str, int], cfg: Config,
                  version: int, **kw: Any) -> View:
        tok = self.tokenizer(cfg)
        return assemble(cands, pol, seq=seq, now_us=now, uses=uses, tokens=self._counter(tok), tokenizer=tok,
                        policy_version=version, policy_hash=cfg.hash, **kw)

    # ---- reading views -----------------------------------------------------------------------
    def view(self, agent: str, *, as_of: datetime | str | None = None, seq: int | None = None,
             budget: int | None = None, explain: bool = False, valid_at: datetime | str | None = None,
             query: str | None = None, auditor: str | None = None) -> View:
        seq = self._settle(as_of, seq)
        if auditor is not None:
            check_auditor(self.projector.config, auditor)
        if query is not None and query.strip():
            # embed the question (once, ever) before taking the projection lock
            self._need_semantic().query_vector(query)
        if seq is None and valid_at is None and not explain:
            with self._lock:
                if query is not None:
                    cfg = self.projector.config
                    pol = self._policy(cfg, agent, self.projector.seq)
                    seq, now, version = self._position()
                    if seq:
                        return self._assemble(self._cands_of(agent), pol, seq, now, self.projector.uses, cfg, version,
                                              budget=budget, query=query, relevance=self._relevance(query))
                cfg = self.projector.config
                pol = self._policy(cfg, agent, self.projector.seq)
                if budget is None or budget == pol.budget:
                    v = self._views.get(agent)
                    if v is None or v.seq != self.projector.seq:
                        v = self._live_view(agent, pol)
                    if v is not None:
                        return v
                seq = self.projector.seq
        return self.view_at(agent, seq if seq is not None else self.projector.seq, budget=budget,
                            explain=explain, valid_at=valid_at, query=query, auditor=auditor)

    def _settle(self, as_of: datetime | str | None, seq: int | None) -> int | None:
        """The position asked for (None: the current one), validated and projected."""
        if as_of is not None and seq is not None:
            raise BadInput("give either as_of or seq, not both", field="as_of")
        end = self.log.last_seq
        if as_of is not None:
            seq = self.log.seq_at(as_of)
        if seq is not None and (seq < 0 or seq > end):
            raise BadInput(f"seq {seq} is outside the log (1..{end})", field="seq", expected=f"0..{end}")
        target = end if seq is None else seq
        if self.projector.seq < target:
            self.wait(target)
        if self.error is not None:
            raise self.error
        return seq

    def _need_semantic(self) -> "Semantic":
        if self.semantic is None:
            raise BadInput("query-aware views and search need embeddings, and this store has them off "
                           "([embeddings] model = \"off\" or CTXDB_EMBEDDINGS=off)", field="query",
                           expected="[embeddings] model = \"minilm\"")
        return self.semantic

    def _relevance(self, query: str) -> Callable:
        sem = self._need_semantic()
        return lambda hashes, text_of: sem.relevance(query, hashes, text_of)

    def search(self, agent: str, query: str, *, k: int = 10, as_of: datetime | str | None = None,
               seq: int | None = None, auditor: str | None = None) -> list:
        """The `k` items most relevant to `query` among those `agent` may see at the position."""
        from .semantic import search_candidates
        from .view import visible

        sem = self._need_semantic()
        seq = self._settle(as_of, seq)
        if auditor is not None:
            check_auditor(self.projector.config, auditor)
        if query.strip():
            sem.query_vector(query)  # the model call (if any) outside the projection lock
        with self._lock:
            if seq is None or seq == self.projector.seq:
                cfg = self.projector.config
                pol = self._policy(cfg, agent, self.projector.seq)
                seq, now, _ = self._position()
                if not seq:
                    return []
                C = self._cands_of(agent)
                return search_candidates(sem, C, visible(C, pol, now), query, k)
        C, pol, now = self._past_candidates(agent, seq, auditor)
        return search_candidates(sem, C, visible(C, pol, now), query, k)

    def reader_policy(self, cfg: Config, agent: str, seq: int, auditor: str | None) -> AgentPolicy:
        """The policy `agent`'s view at `seq` is read under (access.reader_policy)."""
        return reader_policy(cfg, self.projector.config, agent, seq, auditor=auditor,
                             forgotten=self.projector.forgotten)

    def _past_candidates(self, agent: str, seq: int, auditor: str | None = None):
        self.persist()
        cfg, _ = self.projector.policy_at(seq)
        pol = self.reader_policy(cfg, agent, seq, auditor)
        now = self.log.recorded_at_of(seq)
        tbl = filter_versions(self.items.versions_at_arrow(
            seq, subject_like=[like_pattern(p) for p in pol.subjects], kinds=pol.kinds, deny_tags=pol.deny_tags), pol)
        if pol.allow_tags is not None:
            vs = [v for v in rows_to_versions(tbl) if allowed(pol, v)]
            C = Candidates.build(vs, pol, self._counter(self.tokenizer(cfg))(vs))
        else:
            C = Candidates.from_arrow(tbl, pol, self._counts_for(self.tokenizer(cfg), tbl))
        return C, pol, now

    def _policy(self, cfg: Config, agent: str, seq: int) -> AgentPolicy:
        pol = cfg.agent(agent)
        if pol is None:
            raise no_policy(cfg, agent, seq)
        return pol

    def view_at(self, agent: str, seq: int, *, budget: int | None = None, explain: bool = False,
                valid_at: datetime | str | None = None, query: str | None = None,
                auditor: str | None = None) -> View:
        """Assemble the view at a past (projected) position from the item store, under the
        policy the reader may use (access.reader_policy)."""
        self.persist()  # projected batches land before a past view reads the item store
        cfg, pol_rec = self.projector.policy_at(seq)
        pol = self.reader_policy(cfg, agent, seq, auditor)
        version = pol_rec.version if pol_rec else 0
        if valid_at is not None:
            t_us = micros(parse_time(valid_at))
            cands = self.items.valid_at(t_us, seq, self.projector.epoch_start(seq))
            if auditor is None:
                cands = [v for v in cands if allowed(pol, v)]
            return self._assemble(cands, pol, seq, t_us, self.items.uses_at(seq), cfg, version, budget=budget,
                                  explain=explain, valid_at=_iso_us(t_us), **self._q(query))
        now = self.log.recorded_at_of(seq)
        if explain and auditor is not None:
            cands = self.items.versions_at(seq)  # an auditor sees what the policy denied, too
        elif explain:  # an agent's explain never names what it may not read
            cands = [v for v in self.items.versions_at(seq, subject_like=[like_pattern(p) for p in pol.subjects])
                     if allowed(pol, v)]
        elif pol.allow_tags is None:
            # The policy is applied in SQL; columns go straight into the assembly.
            tbl = filter_versions(self.items.versions_at_arrow(
                seq, subject_like=[like_pattern(p) for p in pol.subjects], kinds=pol.kinds,
                deny_tags=pol.deny_tags), pol)
            tok = self.tokenizer(cfg)
            counts = self._counts_for(tok, tbl)
            cands = Candidates.from_arrow(tbl, pol, counts)
        else:
            cands = self.items.versions_at(seq, subject_like=[like_pattern(p) for p in pol.subjects],
                                           kinds=pol.kinds)
        return self._assemble(cands, pol, seq, now, self.items.uses_at(seq), cfg, version, budget=budget,
                              explain=explain, **self._q(query))

    def _q(self, query: str | None) -> dict[str, Any]:
        return {} if query is None else {"query": query, "relevance": self._relevance(query)}

    # ---- subscriptions -----------------------------------------------------------------------
    def subscribe(self, agent: str) -> Subscription:
        self.start()
        with self._lock:
            self._policy(self.projector.config, agent, self.projector.seq)
            sub = Subscription(self, agent)
            self._subs.setdefault(agent, []).append(sub)
            v = self._views.get(agent)
            if v is not None and v.seq != self.projector.seq:
                v = None  # not re-assembled since the last push (nobody was subscribed)
        if v is None and self.projector.seq > 0:
            v = self.view(agent)  # the current view, assembled now
        if v is not None:
            sub._push(v)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.agent, [])
            if sub in subs:
                subs.remove(sub)


def _iso_us(us: int) -> str:
    from .events import utc_from_micros

    return utc_from_micros(us).isoformat().replace("+00:00", "Z")
