"""Parallel decode for large plain NDJSON files: worker processes turn byte ranges of the file
into validated Arrow batches (with key fingerprints); the parent only deduplicates, assigns seqs
and writes. Decoding is per-event Python work, so on one core it caps ingest; this spreads it
over the machine's cores.

Used only where it cannot change the outcome: uncompressed files in the NDJSON envelope format,
without --skip-bad. Errors are re-raised in the parent with the absolute line number, in file
order, so the message and the all-or-nothing behaviour are those of the sequential path.

A worker hands its batch back as an Arrow IPC stream in a file under /dev/shm (when there is a
writable one; else pickled through the pool's pipe): the parent maps it without copying, and the
WAL writes that same stream without serialising the batch again. The file is unlinked as soon as
it is mapped; at most a few ranges are in flight, and files left by a process that died are
removed by the next parallel ingest.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import secrets
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from .codec import Batch, fast_batch_buffer
from .errors import BadInput

MIN_BYTES = 64 << 20  # below this, process start-up costs more than it saves
RANGE_BYTES = 8 << 20
HEAD_RANGES = 3  # ranges the parent decodes itself while its workers start (~0.4 s)


def ranges(path: str, size: int, step: int, max_record: int) -> list[tuple[int, int]] | None:
    """Byte ranges of whole lines covering the file, or None when a line crossing a range end is
    over max_record (the sequential path then reports it without reading it into memory)."""
    out, start = [], 0
    with open(path, "rb") as f:
        while start < size:
            end = min(size, start + step)
            if end < size:
                f.seek(end)
                tail = f.readline(max_record + 1)
                if not tail.endswith(b"\n") and end + len(tail) < size:
                    return None
                end += len(tail)
            out.append((start, end))
            start = end
    return out


SHM_DIR = "/dev/shm"
SWEEP_AGE_S = 600
_PREFIX = "ctxdb-ingest-"


@dataclass(frozen=True)
class _Shipped:
    """A worker's batch, its table left in a shared-memory file."""

    path: str
    size: int
    fp: np.ndarray
    lines: list[int] | None
    json_bytes: int


def _work(args: tuple) -> tuple[int, Batch | _Shipped | None, BadInput | None]:
    """(lines in the range, batch or None, error with a range-relative line)."""
    from .ingest import lines_batch
    from .formats import ADAPTERS

    path, start, end, source, max_record, ship_to = args
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    ends_nl = not data or data.endswith(b"\n")
    n_lines = data.count(b"\n") + (0 if ends_nl else 1)
    nbytes = len(data) + (0 if ends_nl else 1)
    batch = None
    if len(data) <= max_record:  # no line can be over the limit: try the buffer as it is
        batch = fast_batch_buffer(data, n_lines, source, nbytes)
    if batch is None:
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if len(data) > max_record and lines and max(map(len, lines)) > max_record:
            for i, line in enumerate(lines):
                if len(line) > max_record:
                    return n_lines, None, BadInput(
                        f"record is {len(line):,} bytes, over the {max_record:,}-byte limit", line=i + 1,
                        expected=f"records under {max_record:,} bytes (max_record_bytes)")
        try:
            _, batch = lines_batch(1, lines, ADAPTERS["ndjson"], path, source, None, nbytes)
        except BadInput as exc:
            return n_lines, None, exc
    if batch is not None and ship_to is not None:
        shipped = _ship(batch, ship_to)
        if shipped is not None:
            return n_lines, shipped, None
    return n_lines, batch, None


def _ship(batch: Batch, path: str) -> _Shipped | None:
    try:
        with pa.OSFile(path, "wb") as f:  # the name is unique to this ingest and range
            with pa.ipc.new_stream(f, batch.table.schema) as w:
                w.write_batch(batch.table)
            size = f.tell()
    except (OSError, pa.ArrowException):  # full or unusable: send the batch through the pipe instead
        _unlink(path)
        return None
    return _Shipped(path, size, batch.fp, batch.lines, batch.json_bytes)


def _receive(item: Batch | _Shipped | None) -> Batch | None:
    if not isinstance(item, _Shipped):
        return item
    try:
        with pa.memory_map(item.path) as m:
            buf = m.read_buffer(item.size)
    finally:
        _unlink(item.path)
    table = pa.ipc.open_stream(buf).read_next_batch()
    return Batch(table, item.fp, item.lines, item.json_bytes, ipc=buf)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _ship_dir() -> str | None:
    d = os.environ.get("CTXDB_SHM_DIR", SHM_DIR)
    if not d or not os.path.isdir(d) or not os.access(d, os.W_OK | os.X_OK):
        return None
    _sweep(d)
    return d


def _sweep(d: str) -> None:
    """Remove files left by ingests whose process is gone (killed before it could unlink them).
    Only files over SWEEP_AGE_S old are considered: a pid that looks dead may belong to another
    PID namespace sharing the directory, whose files in flight live for seconds."""
    try:
        names = [n for n in os.listdir(d) if n.startswith(_PREFIX)]
    except OSError:
        return
    now = time.time()
    for n in names:
        p = os.path.join(d, n)
        try:
            pid = int(n[len(_PREFIX):].split("-", 1)[0])
            if now - os.stat(p).st_mtime < SWEEP_AGE_S:
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            _unlink(p)
        except (ValueError, OSError):
            continue


# ---- the forkserver ---------------------------------------------------------------------------
# Workers are forked by a forkserver that imports what they need once. Importing `ctxdb.parallel`
# the usual way runs the package's __init__, which imports the whole store (DuckDB, views, ...):
# ~0.4 s of CPU that a decode worker never uses. So the forkserver first imports a small boot
# module (written to a private temp dir, on its PYTHONPATH) that registers the package without running __init__
# (it runs on first use of a package attribute that is not a submodule), then marks the
# parent's main script as imported without running it (multiprocessing would import it in
# every worker; nothing sent to a worker refers to it, and a script that imports ctxdb, as the
# CLI and most callers do, would load the whole store there: 1M-event ingest, 5 alternating
# rounds, 3.96 core-s and 1.88 s with it, 3.68 core-s and 1.71 s without), then the ingest and
# rendering modules.
_BOOT = "_ctxdb_forkserver_boot"
_BOOT_SRC = """\
# Written by ctxdb.parallel for its forkserver (see there).
import importlib, importlib.machinery, importlib.util, os, sys

def _install(name, init, main_path, main_name):
    if name not in sys.modules:
        here = os.path.dirname(init)
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[here])
        mod = importlib.util.module_from_spec(spec)

        def __getattr__(attr):
            if not attr.startswith("__") and (os.path.exists(os.path.join(here, attr + ".py"))
                                              or os.path.isdir(os.path.join(here, attr))):
                return importlib.import_module(name + "." + attr)
            mod.__dict__.pop("__getattr__", None)  # first real use: run __init__ now
            spec.loader.exec_module(mod)
            return getattr(mod, attr)

        mod.__getattr__ = __getattr__
        sys.modules[name] = mod
    if main_path or main_name:
        # A worker started by this server imports the parent's main script first unless it
        # looks imported already; nothing a worker is sent refers to it: mark it imported
        main = sys.modules["__main__"]
        if main_path:
            main.__file__ = main_path
        else:
            main.__spec__ = importlib.machinery.ModuleSpec(main_name, None)

_install(%r, %r, %r, %r)
"""
_boot_lock = threading.Lock()


def _start_forkserver(ctx) -> None:
    """Start the forkserver (if this process has none yet) with the light preload; falls back
    to importing ctxdb.parallel the usual way if the boot module cannot be written."""
    import multiprocessing.forkserver as fs
    from multiprocessing import spawn

    pkg = __name__.rpartition(".")[0]
    mods = [__name__, pkg + ".ingest", pkg + ".formats", pkg + ".prerender"]
    with _boot_lock:
        if getattr(fs._forkserver, "_forkserver_pid", None) is not None:
            fs.ensure_running()  # running (or restarted with the preload it was given)
            return
        prep = spawn.get_preparation_data("ctxdb")
        main_path, main_name = prep.get("init_main_from_path"), prep.get("init_main_from_name")
        try:
            d = tempfile.mkdtemp(prefix="ctxdb-boot-")
            with open(os.path.join(d, _BOOT + ".py"), "w") as f:
                f.write(_BOOT_SRC % (pkg, os.path.join(os.path.dirname(__file__), "__init__.py"), main_path, main_name))
        except OSError:
            ctx.set_forkserver_preload(mods)
            with _environ(_worker_env(None)):
                fs.ensure_running()
            return
        atexit.register(shutil.rmtree, d, True)
        ctx.set_forkserver_preload([_BOOT, *mods])
        with _environ(_worker_env(d)):
            fs.ensure_running()


def _worker_env(boot_dir: str | None) -> dict[str, str]:
    """What the forkserver's environment (and so every decode worker's) adds to this process's:
    - the boot module's dir on PYTHONPATH: the forkserver's sys.path is its interpreter's
      default (3.11 ignores the sys_path it is given). If it cannot import it (e.g. -E), it
      imports ctxdb.parallel the usual way;
    - Arrow's memory pool the system allocator (unless the user chose one): a worker builds
      and frees Arrow columns range after range, and mimalloc, the default, gives the freed
      memory back to the kernel, which zeroes it again when it is next faulted in; jemalloc,
      used before, does better, the system allocator better still (1M-event ingest, 10
      alternating rounds: 2.165 s with jemalloc in the workers, 1.963 s with it);
    - one OpenBLAS thread (unless set): workers never call BLAS, and the idle BLAS thread NumPy
      starts in every process spins for a while first."""
    env = {}
    if boot_dir is not None:
        old = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = boot_dir if not old else boot_dir + os.pathsep + old
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        env["OPENBLAS_NUM_THREADS"] = "1"
    return env


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ with `env` added, for the moment a child process is started."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


def plan(path: str, size: int, max_record: int) -> list[tuple[int, int]] | None:
    step = int(os.environ.get("CTXDB_PARALLEL_RANGE_BYTES") or RANGE_BYTES)
    return ranges(path, size, step, max_record)


def batches(path: str, spans: list[tuple[int, int]], source: str, max_record: int,
            workers: int | None = None) -> Iterator[tuple[Batch | None, int]]:
    """(batch, lines) per range, in file order; raises the first bad record's BadInput with its
    absolute line number.

    At most two ranges per worker are in flight, bounding memory. This process decodes the
    first HEAD_RANGES ranges itself while the workers start (a worker is forked by a
    forkserver that first has to start an interpreter and import ctxdb), then, until the first
    ranges are submitted to the workers, the ranges nobody has taken yet; later, whenever the
    next range in file order is not back from a worker yet, the next range nobody has started
    instead of waiting."""
    workers = workers or max(2, os.cpu_count() or 2)
    ctx = mp.get_context("forkserver")
    ship = _ship_dir() if len(spans) > 1 else None
    tag = f"{_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
    jobs = [(path, a, b, source, max_record, None if ship is None else os.path.join(ship, f"{tag}-{i}"))
            for i, (a, b) in enumerate(spans)]
    if not jobs:
        return
    futures: dict[int, Future] = {}
    local: dict[int, tuple] = {}  # ranges decoded here, waiting for their turn
    head = min(HEAD_RANGES, len(jobs))  # decoded here while the workers start
    nxt = head  # the next range neither submitted nor decoded here
    line_base = 0

    def run_here(i: int) -> tuple:
        return _work(jobs[i][:5] + (None,))  # no shipping: the result is already here

    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            claim_lock = threading.Lock()

            def claim() -> int | None:
                """Take the next range nobody has taken (for a worker or for this thread)."""
                nonlocal nxt
                with claim_lock:
                    if nxt >= len(jobs):
                        return None
                    nxt += 1
                    return nxt - 1

            # Why there are no workers (they could not start, or one died): from then on every
            # range not yet handed out is decoded here -- the same outcome, only slower.
            no_workers: list[Exception] = []

            def fill() -> None:
                while len(futures) < 2 * workers and not no_workers:
                    j = claim()
                    if j is None:
                        return
                    try:
                        futures[j] = pool.submit(_work, jobs[j])
                    except BrokenProcessPool as exc:  # range j is then decoded here in its turn
                        no_workers.append(exc)

            # Starting a worker blocks until the forkserver has imported ctxdb: start it and
            # submit the ranges after the head from a thread while this one decodes the head
            # and, until that thread is done, ranges nobody has taken (and its batches are
            # written).
            def start() -> None:
                try:
                    _start_forkserver(ctx)
                    fill()
                except Exception as exc:  # noqa: BLE001 -- e.g. a main script without the __main__ guard
                    no_workers.append(exc)

            warned = False
            starter = threading.Thread(target=start, daemon=True)
            starter.start()
            try:
                for i in range(len(jobs)):
                    if i < head:
                        res = run_here(i)
                    else:
                        # The workers are still starting: decode here what nobody has taken
                        # (range i itself, or up to HEAD_RANGES ahead if the starter took it).
                        while (i not in local and i not in futures and starter.is_alive()
                               and len(local) < HEAD_RANGES):
                            j = claim()
                            if j is None:
                                break
                            local[j] = run_here(j)
                        if i in local:
                            res = local.pop(i)
                        else:
                            starter.join()
                            if i not in futures:  # nobody has taken it yet
                                fill()
                            fut = futures.get(i)
                            while fut is not None and not fut.done() and not local:
                                j = claim()
                                if j is None:
                                    break
                                local[j] = run_here(j)
                            res = None
                            if fut is not None:
                                try:
                                    res = fut.result()
                                except BrokenProcessPool as exc:  # a worker died
                                    no_workers.append(exc)
                                del futures[i]
                            if res is None:  # no workers
                                res = run_here(i)
                        if no_workers and not warned:
                            warned = True
                            warnings.warn(f"ctxdb: parallel decode unavailable ({no_workers[0]!r:.200}); "
                                          "decoding in this process", RuntimeWarning, stacklevel=2)
                    if not starter.is_alive():
                        fill()
                    n_lines, item, err = res
                    batch = _receive(item)
                    if err is not None:
                        line = line_base + (err.line or 1)
                        raise BadInput(err.reason, file=path, line=line, field=err.field, expected=err.expected)
                    line_base += n_lines
                    yield batch, n_lines
            finally:
                starter.join()
                for fut in futures.values():  # not consumed (an error, or the caller stopped)
                    fut.cancel()
    finally:
        for fut in futures.values():  # the pool has finished those that were running: drop their files
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                _, item, _ = fut.result()
                if isinstance(item, _Shipped):
                    _unlink(item.path)
