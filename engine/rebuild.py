"""`ctxdb rebuild`: replay the whole log into a fresh item store and swap it in atomically.

The fresh store is built beside the live one (`items.rebuild.duckdb`), with the live store's
token counts copied over (counting is deterministic; a rebuild never re-tokenizes known text).
Then both stores' item versions are hashed: a projection is deterministic, so a rebuild of an
intact store must report `identical`. The swap is an atomic rename; a crash before it leaves the
old store in place and a stale `items.rebuild.duckdb` that the next rebuild replaces.
"""
from __future__ import annotations

import gc
import os
import queue
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pyarrow as pa

from . import prerender
from .items import BulkWriter, ItemStore
from .erase import purged_stubs
from .prerender import Ahead
from .projector import PROJECT_COLUMNS, Projector
from .snapshot import ITEMS_FILE, _fsync_dir

if TYPE_CHECKING:
    from .live import Views
    from .store import Store


def rebuild(store: "Store", views: "Views", progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    log = store.log
    end = views.projector.seq
    views.persist()  # the live engine's write-behind lands first (it is digested below): not timed
    t0 = time.perf_counter()
    target = None if store.path is None or store.readonly else store.path / "items.rebuild.duckdb"
    proj = fresh_projector(store, target)
    fresh = proj.items
    replay_into(proj, log, end, progress, keep_projector=False)
    seconds = time.perf_counter() - t0
    views.persist()
    before = views.items.digest()
    after = fresh.digest()
    versions = fresh.count_versions()
    report = {"events": end, "versions": versions, "seconds": round(seconds, 3),
              "events_per_s": round(end / seconds) if seconds > 0 else None,
              "digest_before": before, "digest_after": after, "identical": before == after}
    if target is None:
        fresh.close()
        return report
    fresh.flush()
    fresh.close()
    views.close()
    views.items.close()
    live = store.path / ITEMS_FILE  # type: ignore[operator]
    live.with_name(ITEMS_FILE + ".wal").unlink(missing_ok=True)
    os.replace(target, live)
    _fsync_dir(live.parent)
    return report


def fresh_projector(store: "Store", target: "Path | None", purged: set[str] | None = None) -> Projector:
    """A projector over a fresh item store at `target` (None: in memory) that knows every purge
    of the log (or `purged`), with the live store's token counts copied in (counting is
    deterministic: known text is never re-tokenized)."""
    if target is not None:
        for f in (target, target.with_name(target.name + ".wal")):
            f.unlink(missing_ok=True)
    fresh = ItemStore(target, atrest=store.log.atrest)
    live = None if store.path is None else store.path / ITEMS_FILE
    if target is not None and live is not None and live.exists():
        fresh.copy_token_counts_from(live)
    return store._projector(fresh, purged_stubs(store.log) if purged is None else purged)


def prefetched(it: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """The items of `it`, read ahead by a thread (decompressing and decoding a segment releases
    the GIL, so it overlaps the projection on another core). Errors are raised where they would
    have been; closing the generator stops the thread."""
    q: "queue.Queue[tuple[bool, Any]]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for b in it:
                while not stop.is_set():
                    try:
                        q.put((True, b), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((False, None))
        except BaseException as exc:  # noqa: BLE001 (raised in the reading thread)
            q.put((False, exc))

    t = threading.Thread(target=work, name="ctxdb-replay-read", daemon=True)
    t.start()
    try:
        while True:
            ok, b = q.get()
            if not ok:
                if b is not None:
                    raise b
                return
            yield b
    finally:
        stop.set()
        t.join()


def replay_into(proj: Projector, log, end: int, progress: Callable[[int, int], None] | None = None, *,
                transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
                keep_projector: bool = True, in_memory: bool = False, worker: "prerender.Worker | None" = None) -> None:
    """Project events 1..end of `log` with `proj` (a fresh projector over a fresh item store,
    which nobody may read before this returns), reporting progress. `transform` maps every
    batch read (the re-reads after a rules change too) before it is projected.
    `keep_projector=False`: `proj` is thrown away afterwards (only its item store is used), so
    its current versions need not be made ItemVersions (Projector.run(materialise=False)).
    `in_memory=True` (a scratch store in memory, only read afterwards): the versions are kept as
    Arrow tables and adopted by the store (ItemStore.adopt_versions), not inserted. `worker`:
    a render worker started early (prerender.Worker; else one is started here if it helps)."""
    def read(to_seq: int) -> Iterator[pa.RecordBatch]:
        for b in log.read_batches(from_seq=1, to_seq=to_seq, columns=PROJECT_COLUMNS):
            yield b if transform is None else transform(b)

    def batches():
        done = 0
        for b in prefetched(read(end)):
            done += b.num_rows
            if progress is not None:
                progress(done, end)
            yield b

    # the store is fresh and read only when the replay is done: write it in bulk
    writer = BulkWriter(proj.items, in_memory=in_memory)
    # rules rendered ahead, partly by a worker process (prerender)
    ahead = None
    if writer.columnar and (worker is not None or prerender.wanted(proj.python_rules, log, end)):
        ahead = Ahead(proj, batches(), worker=True if worker is None else worker)
    with _no_cyclic_gc(), _reusing_pool():
        try:
            proj.run(batches() if ahead is None else ahead, end, lambda at: read(at - 1), deferred=writer,
                     materialise=keep_projector, ahead=ahead)
        except BaseException:
            writer.abort()
            raise
        finally:
            if ahead is not None:
                ahead.close()
        writer.finish()


@contextmanager
def _reusing_pool() -> Iterator[None]:
    """Arrow's default memory pool is jemalloc for the time of a replay, where pyarrow has it.
    A replay decodes a segment's row groups into fresh buffers and frees them a moment later,
    batch after batch; the default (mimalloc) hands the memory back to the kernel, which zeroes
    it again when it is faulted in: most of the reading threads' CPU went to clearing pages
    (perf, 10^6-event replay --verify). jemalloc keeps it for a while (pyarrow's decay: 1 s).
    Buffers remember their pool, so those made before or after are unaffected."""
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        yield
        return
    old = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(old)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: a replay allocates millions of short-lived
    containers (decoded event data, rendered rows) that reference counting frees, and each
    collection they trigger walks every object still alive, the projector's key state
    included (about a tenth of a replay's time). Reference counting still frees everything;
    the collector runs again afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
