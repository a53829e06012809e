"""Rendering ahead: a replay's rule rendering shared with a worker process.

A replay (replay --verify, rebuild) spends most of its main thread rendering simple rules:
decoding each event's `data` and formatting templates, then redacting and hashing the texts.
That work is pure (it reads no projector state) and per batch, so it can run anywhere, ahead of
the projection, while the supersession and table building that must follow the log's order stay
on the main thread. `Ahead` wraps the batches a replay reads:

  - it looks a few batches ahead, and for each finds the compiled rules of its event types
    (those in force *now*: a rendering is used only if the projector still has the very same
    rules when it reaches the batch, see Projector._fast_run; a policy event in between makes it
    render that batch itself);
  - the oldest batches go to one worker process (forked by ctxdb.parallel's forkserver): the
    batch goes over as an Arrow IPC stream in a file under /dev/shm, the versions come back the
    same way, mapped without copying;
  - when the batch the projector needs next is not back yet, this thread renders the newest
    batch nobody has started instead (from the other end), then waits.

Either way a batch gets the same Rendered (fastrules.render_batch, pure), so the item versions
are those of a replay without it (tests/test_fastpath.py checks both ways).

Not used where it could not help or could leak: a short replay (the worker's start-up costs
more), Python rules (not compiled), a log with encrypted subjects (their plaintext would sit in
/dev/shm), no writable /dev/shm, one CPU, or CTXDB_RENDER_AHEAD=0. If the worker cannot start or
dies, this thread renders everything, as without it.
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import secrets
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from .fastrules import FastRules, Rendered, compile_rule, render_batch

MIN_EVENTS = 200_000   # below this, rendering here is done before the worker would have started
LOOKAHEAD = 4          # batches read ahead of the projection
IN_FLIGHT = 2          # batches handed to the worker at once (one rendering, one waiting)


def wanted(python_rules: list, log: Any, events: int) -> bool:
    """Whether a replay of `events` events of `log` (with those Python rules) should render ahead."""
    if os.environ.get("CTXDB_RENDER_AHEAD", "1") == "0" or events < MIN_EVENTS or python_rules:
        return False
    if getattr(log, "atrest", None) is not None or (os.cpu_count() or 1) < 2:
        return False
    from .parallel import _ship_dir

    return _ship_dir() is not None


class Worker:
    """The render worker process, started on a thread (the forkserver first, if this process
    has none yet: an interpreter importing what workers need), so that whoever starts it early
    goes on meanwhile. `pool()` is None until it is up, and for good if it could not start."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._thread = threading.Thread(target=self._start, name="ctxdb-render-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        from . import parallel

        try:
            ctx = mp.get_context("forkserver")
            parallel._start_forkserver(ctx)
            pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
            pool.submit(int).result()   # forked and ready
            self._pool = pool
        except Exception:  # noqa: BLE001 (no worker: everything is rendered in the replay's thread)
            pass

    def pool(self, wait: bool = False) -> ProcessPoolExecutor | None:
        if wait:
            self._thread.join()
        return self._pool

    def close(self) -> None:
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class _Entry:
    __slots__ = ("b", "frs", "token", "policy", "fut", "paths", "result", "done")

    def __init__(self, b: pa.RecordBatch, frs: dict[str, FastRules], token: Any, policy: bool) -> None:
        self.b, self.frs, self.token, self.policy = b, frs, token, policy
        self.fut: Future | None = None
        self.paths: tuple[str, str] | None = None
        self.result: Rendered | None = None
        self.done = not frs   # nothing to render


class Ahead:
    """The batches of `batches`, each rendered ahead (see the module doc); `rendered(b)` gives
    the Rendered of the batch just yielded (None: render it in the projector). Counts what was
    rendered where in `stats` (batches: worker, here, none)."""

    def __init__(self, proj: Any, batches: Iterable[pa.RecordBatch], *, worker: "Worker | bool" = True,
                 wait: bool = False) -> None:
        """`worker`: True (start one, closed with this), a Worker started earlier (left running),
        or False (everything is rendered here, ahead); `wait`: wait for the worker to be up
        before the first batch (tests: tiny replays are over before it is)."""
        from . import parallel
        from .projector import POLICY_TYPE  # (not at the top: the worker never imports the projector)

        self._policy_type = POLICY_TYPE
        self._proj = proj
        self._src = iter(batches)
        self._q: deque[_Entry] = deque()
        self._cur: tuple[pa.RecordBatch, Rendered | None] | None = None
        self._dir = parallel._ship_dir()
        self._tag = f"{parallel._PREFIX}{os.getpid()}-r{secrets.token_hex(6)}"
        self._n = 0
        self._blobs: dict[int, tuple[FastRules, bytes]] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._broken = self._dir is None or worker is False
        self._own = worker is True and not self._broken
        self._worker = (Worker() if self._own else worker) if not self._broken else None
        self._in_flight = 0
        self._policy: _Entry | None = None   # a batch with a policy event, not projected yet
        self.stats = {"worker": 0, "here": 0, "none": 0}
        if self._worker is not None and wait:
            self._worker.pool(wait=True)

    # ---- the worker ----------------------------------------------------------------------
    def _ready(self) -> bool:
        if self._pool is None and self._worker is not None:
            self._pool = self._worker.pool()
            if self._pool is None and not self._worker._thread.is_alive():
                self._broken = True   # it could not start
        return self._pool is not None and not self._broken

    def _blob(self, fr: FastRules) -> bytes:
        got = self._blobs.get(id(fr))
        if got is None or got[0] is not fr:
            got = self._blobs[id(fr)] = (fr, pickle.dumps([f.rule for f in fr.rules], protocol=pickle.HIGHEST_PROTOCOL))
        return got[1]

    def _send(self, e: _Entry) -> bool:
        """Hand entry e to the worker; False if it cannot take it."""
        assert self._pool is not None and self._dir is not None
        self._n += 1
        src = os.path.join(self._dir, f"{self._tag}-{self._n}-in")
        dst = os.path.join(self._dir, f"{self._tag}-{self._n}-out")
        try:
            with pa.OSFile(src, "wb") as f:
                with pa.ipc.new_stream(f, e.b.schema) as w:
                    w.write_batch(e.b)
                size = f.tell()
        except (OSError, pa.ArrowException):  # /dev/shm full or gone: no worker from here on
            _unlink(src)
            self._broken = True
            return False
        try:
            e.fut = self._pool.submit(_work, src, size, [(t, self._blob(fr)) for t, fr in e.frs.items()], dst)
        except Exception:  # noqa: BLE001 (BrokenProcessPool, shut down)
            _unlink(src)
            self._broken = True
            return False
        e.paths = (src, dst)
        self._in_flight += 1
        return True

    def _receive(self, e: _Entry) -> None:
        """Entry e's rendering, back from the worker (None if it failed: then the projector
        renders the batch itself, and raises what the worker met where it should)."""
        assert e.fut is not None and e.paths is not None
        self._in_flight -= 1
        try:
            got = e.fut.result()
        except Exception:  # noqa: BLE001 (the worker died: no worker from here on)
            self._broken = True
            got = None
        finally:
            _unlink(e.paths[0])
        e.done = True
        if got is None:
            _unlink(e.paths[1])
            return
        if got[0] != "ok":
            self.stats["none"] += 1
            return
        _, path, size, spec, skips = got
        try:
            with pa.memory_map(path) as m:
                buf = m.read_buffer(size)
        finally:
            _unlink(path)
        t = pa.ipc.open_stream(buf).read_next_batch()
        names = t.schema.names
        rules = [e.frs[typ].rules[ri] for typ, ri in spec]
        r = Rendered(rules, t.column("gid").to_numpy(), t.column("row").to_numpy(), t.column("key"), t.column("text"),
                     t.column("meta"), t.column("hash"), t.column("subject") if "subject" in names else None,
                     t.column("tags") if "tags" in names else None, skips)
        r.token = e.token
        e.result = r
        self.stats["worker"] += 1

    def _here(self, e: _Entry) -> None:
        """Render entry e in this thread (None if rendering raises: the projector raises it)."""
        e.done = True
        try:
            r = render_batch(e.b, e.frs)
        except Exception:  # noqa: BLE001
            self.stats["none"] += 1
            return
        r.token = e.token
        e.result = r
        self.stats["here"] += 1

    # ---- the batches ---------------------------------------------------------------------
    def _entry(self, b: pa.RecordBatch) -> _Entry:
        proj = self._proj
        fast_for = proj._fast_for
        frs = {}
        types = pc.unique(b.column("type")).to_pylist()
        for t in types:
            fr = fast_for(t)
            if fr is not None:
                frs[t] = fr
        return _Entry(b, frs, proj._fast_cache, self._policy_type in types)

    def _top_up(self) -> None:
        # a policy event may change the rules: the batches after it are not looked at before
        # the projector is past it (rendered with the rules before it, they would be wasted)
        while len(self._q) < LOOKAHEAD and self._policy is None:
            try:
                b = next(self._src)
            except StopIteration:
                break
            e = self._entry(b)
            self._q.append(e)
            if e.policy:
                self._policy = e
        if self._ready():
            for e in self._q:
                if self._in_flight >= IN_FLIGHT or self._broken:
                    break
                if not e.done and e.fut is None:
                    self._send(e)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                self._top_up()
                if not self._q:
                    return
                e = self._q[0]
                while not e.done:
                    if e.fut is None:
                        self._here(e)
                    elif e.fut.done() or self._broken:
                        self._receive(e)
                    else:  # the worker has it: render the newest batch nobody has started meanwhile
                        spare = next((x for x in reversed(self._q) if not x.done and x.fut is None), None)
                        if spare is None:
                            self._receive(e)  # (waits)
                        else:
                            self._here(spare)
                self._q.popleft()
                for x in self._q:   # the worker finished others meanwhile: give it more
                    if x.fut is not None and not x.done and x.fut.done():
                        self._receive(x)
                self._top_up()
                self._cur = (e.b, e.result)
                yield e.b
                self._cur = None
                if self._policy is e:  # projected: its rules are in force now
                    self._policy = None
        finally:
            self.close()

    def rendered(self, b: pa.RecordBatch) -> Rendered | None:
        cur = self._cur
        return cur[1] if cur is not None and cur[0] is b else None

    def close(self) -> None:
        """Stop: batches not started are cancelled, the one the worker is rendering is waited
        for (it would write its file after the unlinking below), every file is removed."""
        self._cur = None
        running = []
        for e in self._q:
            if e.fut is not None and not e.done and not e.fut.cancel():
                running.append(e.fut)
        if self._own and self._worker is not None:
            self._worker.close()
        elif running:  # a worker started by the caller goes on: wait for what it is rendering
            wait(running)
        self._pool = None
        for e in self._q:
            if e.paths is not None and not e.done:
                for p in e.paths:
                    _unlink(p)
        self._q.clear()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---- in the worker -------------------------------------------------------------------------------
_compiled: dict[bytes, FastRules] = {}


def _rules(blob: bytes) -> FastRules:
    fr = _compiled.get(blob)
    if fr is None:
        compiled = [compile_rule(r) for r in pickle.loads(blob)]  # noqa: S301 (from the parent process)
        assert all(c is not None for c in compiled)
        fr = _compiled[blob] = FastRules(compiled)  # type: ignore[arg-type]
    return fr


def _work(src: str, size: int, spec: list[tuple[str, bytes]], dst: str) -> tuple:
    """Render the batch in file `src` with the rules of `spec` ((type, pickled rules) each):
    ("ok", dst, size, (type, rule index) of each gid, skips), the versions left in file `dst`;
    or ("error", repr) if rendering raised anything but MissingField."""
    with pa.memory_map(src) as m:
        buf = m.read_buffer(size)
    b = pa.ipc.open_stream(buf).read_next_batch()
    frs = {t: _rules(blob) for t, blob in spec}
    # the cyclic GC paused, as in the parent's replay: a batch's decoded events are freed by
    # reference counting, and collections triggered by them walk them all (~6 % of the worker)
    gc.disable()
    try:
        r = render_batch(b, frs)
    except Exception as exc:  # noqa: BLE001 (the parent renders it again and raises it where it should)
        return ("error", repr(exc))
    finally:
        gc.enable()
    where = {id(f): (t, ri) for t, fr in frs.items() for ri, f in enumerate(fr.rules)}
    cols = {"row": pa.array(r.row), "gid": pa.array(r.gid), "key": r.keys, "text": r.texts, "meta": r.metas,
            "hash": r.hashes}
    if r.subjects is not None:
        cols["subject"] = r.subjects
    if r.tags is not None:
        cols["tags"] = r.tags
    t = pa.RecordBatch.from_pydict(cols)
    with pa.OSFile(dst, "wb") as f:
        with pa.ipc.new_stream(f, t.schema) as w:
            w.write_batch(t)
        out = f.tell()
    return ("ok", dst, out, [where[id(f)] for f in r.rules], r.skips)
