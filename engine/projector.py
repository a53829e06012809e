"""The projector: a deterministic function from the log to item versions.

For each event, in seq order, the rules of the policy in force turn it into item operations
(upsert, retract; summaries fold groups of items). System events drive the projector itself:

    ctxdb.policy    a new config version; if its rules differ from the rules in force, the whole
                    log prefix is re-projected with the new rules *at that position* (old versions
                    close there, new ones open there), so later views see every past event through
                    the new rules and earlier views are untouched
    ctxdb.decision  a decision receipt: every item it lists is reinforced (decays slower)
    ctxdb.llm.output  a recorded LLM summary (derived event): its item replaces the items it
                    summarizes; a replay reads the recorded text and never calls a model
    ctxdb.forget    a tombstone for its subject: the subject's current items close at its
                    position and later events about the subject are not projected

Rules that ask for an LLM summary (`llm = {...}`, or `summarize = {..., llm = true}`) leave the
raw items in place and open a request (kept beside the checkpoint, `llm_open`); the summarizer
worker (llm.py) answers it by appending a ctxdb.llm.output event.

Supersession is by valid time: an upsert replaces the current version of its key only if its
event `time` is not older than the current version's. An older ("late") event is stored as a
version that never was current, for valid-time queries.

Positions: every write carries the checkpoint (the last seq projected), in one DuckDB transaction.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import Config, Rule, default_config, from_dict, glob_match, parse_duration
from .errors import ConfigError, CtxdbError
from .events import Event, utc_from_micros
from .items import ARROW_SCHEMA, ItemStore, ItemVersion, Policy, WriteBatch, rows_to_versions
from .fastrules import (ArrowBatch, Batch, BatchTimes, FastRules, Rendered, compile_rule, render_row, render_rows,
                        seal, seal_rendered, seal_rows)
from .template import EventContext, MissingField

SYSTEM_PREFIX = "ctxdb."
POLICY_TYPE = "ctxdb.policy"
DECISION_TYPE = "ctxdb.decision"
LLM_TYPE = "ctxdb.llm.output"
FORGET_TYPE = "ctxdb.forget"
HOLD_TYPE = "ctxdb.hold"         # data {"release": false|true}: a legal hold on its subject
PURGE_TYPE = "ctxdb.purge"
PURGED_PREFIX = "purged:"        # subjects (and ids) of the content-free stubs a purge leaves
_SKIP, _FAST, _SLOW = 0, 1, 2     # row classes of the columnar path (Projector._row_class)
_NO_FIRST = 1 << 62              # WriteBatch.first_vid of the columnar path: every close goes to wb.closes
_NO_TIME = -(1 << 63)            # a key without a last time (no int64 time is older)
PROJECT_COLUMNS = ["seq", "recorded_at", "id", "source", "type", "subject", "time", "time_ts", "data", "meta"]


@dataclass(frozen=True)
class Upsert:
    """An item operation returned by a Python rule."""

    key: str
    text: str
    kind: str = "event"
    priority: float = 0.5
    ttl: str | float | timedelta | None = None     # "7d", seconds, or a timedelta
    tags: tuple[str, ...] = ()
    pinned: bool = False
    subject: str | None = None


@dataclass(frozen=True)
class Retract:
    key: str


PythonRule = tuple[str, str, Callable[[Any], Iterable[Upsert | Retract] | None]]  # (name, glob, fn)


@dataclass
class Stats:
    events: int = 0
    matched: int = 0
    skipped: int = 0                 # rule skipped for an event (a template field was missing)
    last_skip: str = ""
    reprojections: int = 0


def rules_fingerprint(cfg: Config, python_rules: list[PythonRule]) -> str:
    raw = {"rules": cfg.raw.get("rules", []), "python": [n for n, _, _ in python_rules]}
    return msgspec.json.encode(raw).decode()


class Projector:
    """Owns the projected state (current items, summaries, reinforcement) of one item store."""

    _LAZY_HELD = 250_000   # rows the columnar path may keep for current versions left as vids (see _cur)

    def __init__(self, items: ItemStore, python_rules: list[PythonRule] | None = None,
                 stub_subject: Callable[[str], str] | None = None,
                 purged: set[str] | dict[str, int] | None = None) -> None:
        self.items = items
        self.python_rules = list(python_rules or [])
        # subject -> the salted stub subject a purge gives it (erase.Salt.stub_subject)
        self.stub_subject = stub_subject
        self.stats = Stats()
        self._load()
        # Events before this seq are checked against `purged` only by their stub subjects: a
        # purge rewrites every event of its subject before its tombstone into a stub, so a
        # replay that knows the purges from the start (with each one's tombstone seq) need not
        # hash every subject it meets before the first tombstone.
        self._purged_from = 0
        if purged:  # a replay knows every purge of the log from the start (erase.purged_stubs)
            self.purged |= set(purged)
            if isinstance(purged, dict):
                self._purged_from = min(purged.values())

    # ---- state ---------------------------------------------------------------------------
    def _load(self) -> None:
        self.seq, self.next_vid, stored_py = self.items.checkpoint()
        names = ",".join(n for n, _, _ in self.python_rules)
        if self.seq and stored_py != names:
            raise ConfigError(
                f"the item store was projected with Python rules [{stored_py}] but this process "
                f"registered [{names}]: register the same rules, or run `ctxdb rebuild`")
        self.policies: list[Policy] = self.items.policies()
        self.config = self._config_of(self.policies[-1]) if self.policies else default_config()
        self.current: dict[str, ItemVersion] = {v.key: v for v in self.items.current()}
        self.last_time: dict[str, int] = self.items.last_times(since_seq=self.epoch_start(self.seq))
        self.summaries: dict[tuple[str, str], tuple[int, list[str]]] = self.items.summary_state()
        self.uses: dict[str, int] = self.items.uses_at(self.seq)
        self._rule_cache: dict[str, list[Rule]] = {}
        self._fast_cache: dict[str, FastRules | None] = {}
        self._columnar = False
        # the columnar path leaves vids in `current` (see _cur): their keys, and the rows to
        # make them ItemVersions from
        self._lazy: set[str] = set()
        self._lazy_rows: list[tuple[np.ndarray, pa.Table]] = []   # (their vids, ascending; rows)
        self._lazy_firsts = np.zeros(0, dtype=np.int64)   # the first vid of each, once looked up (_rows_of)
        self._keep_rows = False   # run(): the writer keeps every row, so _compact need not run
        self._lazy_held = self._lazy_kept = 0   # rows kept; rows kept by the last _compact
        self._ov: _KeyState | None = None   # the columnar path's per-key state (see _supersede)
        self._spent = False                 # run(materialise=False) left current/last_time stale
        self._clean: set[str] = set()   # subjects neither forgotten nor purged (see _left_out)
        self._clean_state: tuple | None = None
        raw = self.items.get_meta("llm_open")
        self.llm_open: dict[str, dict] = msgspec.json.decode(raw) if raw else {}
        raw = self.items.get_meta("forgotten")
        self.forgotten: dict[str, int] = msgspec.json.decode(raw) if raw else {}   # subject -> tombstone seq
        raw = self.items.get_meta("purged")
        self.purged: set[str] = set(msgspec.json.decode(raw)) if raw else set()     # stub subjects of purges
        self._purged_seen: dict[str, bool] = {}
        raw = self.items.get_meta("holds")
        self.holds: dict[str, int] = msgspec.json.decode(raw) if raw else {}            # subject -> hold seq

    @staticmethod
    def _config_of(p: Policy) -> Config:
        return from_dict(msgspec.json.decode(p.config), file=f"<policy version {p.version} at seq {p.seq}>")

    def rule_epochs(self) -> list[int]:
        """Seqs of the policy events that changed the rules (re-projection points)."""
        out, prev = [], rules_fingerprint(default_config(), self.python_rules)
        for p in self.policies:
            fp = rules_fingerprint(self._config_of(p), self.python_rules)
            if fp != prev:
                out.append(p.seq)
            prev = fp
        return out

    def epoch_start(self, seq: int) -> int:
        """First seq of the rules epoch in force at `seq`: versions before it came from rules
        that were replaced (and re-projected) at it."""
        start = 0
        for e in self.rule_epochs():
            if e <= seq:
                start = e
        return start

    def policy_at(self, seq: int) -> tuple[Config, Policy | None]:
        """The config in force at `seq` (the built-in default before any policy event)."""
        chosen = None
        for p in self.policies:
            if p.seq <= seq:
                chosen = p
            else:
                break
        return (self._config_of(chosen) if chosen else default_config()), chosen

    def _rules_for(self, event_type: str) -> list[Rule]:
        r = self._rule_cache.get(event_type)
        if r is None:
            r = self._rule_cache[event_type] = rules_for(self.config, event_type)
        return r

    def _fast_for(self, event_type: str) -> "FastRules | None":
        """The compiled rules for `event_type` if every rule of it is simple (fastrules), else
        None (the per-event path)."""
        try:
            return self._fast_cache[event_type]
        except KeyError:
            pass
        fr = None
        rules = self._rules_for(event_type)
        if rules and not self.python_rules and not event_type.startswith(SYSTEM_PREFIX):
            compiled = [compile_rule(r) for r in rules]
            if all(c is not None for c in compiled):
                fr = FastRules(compiled)  # type: ignore[arg-type]
        self._fast_cache[event_type] = fr
        return fr

    # ---- projecting ----------------------------------------------------------------------
    def run(self, batches: Iterable[pa.RecordBatch], to_seq: int,
            read_prefix: Callable[[int], Iterator[pa.RecordBatch]] | None = None,
            deferred: Any = None, materialise: bool = True, ahead: Any = None) -> tuple[list, list]:
        """Project `batches` (events after self.seq, up to `to_seq`); write them with the
        checkpoint (or, with `deferred` — a list, or anything with `append(WriteBatch)` such as
        items.BulkWriter — hand the writes to the caller, who must write them in order before
        serving any past view). Returns (opened, closed) item versions for live
        views. `read_prefix(seq)` reads events 1..seq-1 (re-projection after a rules change).
        `materialise=False` (a replay whose projector is thrown away afterwards): `current` and
        `last_time` are left stale (the columnar path's key state is not written back to them),
        and the projector refuses to run again; its policies and item store stay usable.
        `ahead` (prerender.Ahead, columnar path only): `ahead.rendered(b)` is the Rendered of
        every row of batch `b` rendered ahead (or None), used if the rules are still those it was
        rendered with."""
        if self._spent:
            raise CtxdbError("this projector ran with materialise=False: its current versions are stale; "
                             "use a fresh projector")
        # A writer that takes new versions as Arrow tables (items.BulkWriter: a replay into a fresh
        # store, which nobody reads before it is done) gets runs of simple rules projected at
        # once (_fast_run); then no (opened, closed) versions are collected.
        self._columnar = columnar = bool(getattr(deferred, "columnar", False)) and not self.python_rules
        self._keep_rows = bool(getattr(deferred, "keeps_rows", False))
        opened: list[ItemVersion] = _Discard() if columnar else []  # type: ignore[assignment]
        closed: list[ItemVersion] = _Discard() if columnar else []  # type: ignore[assignment]
        try:
            for b in batches:
                wb = WriteBatch(to_seq=self.seq, next_vid=self.next_vid,
                                first_vid=_NO_FIRST if columnar else self.next_vid)
                pre = ahead.rendered(b) if ahead is not None and columnar else None
                self._project_batch(b, wb, opened, closed, read_prefix, pre=pre)
                self._flush(wb, deferred)
            if self.seq < to_seq:  # nothing matched at the end: still advance the checkpoint
                self.seq = to_seq
                self._flush(WriteBatch(to_seq=to_seq, next_vid=self.next_vid), deferred)
        finally:
            self._columnar = False
            if materialise:
                self._release()
                self._materialise()
            else:  # thrown away: the key state is not written back to current/last_time
                self._ov = None
                self._spent = True
        return ([], []) if columnar else (opened, closed)

    def _flush(self, wb: WriteBatch, deferred: Any = None) -> None:
        wb.to_seq, wb.next_vid = self.seq, self.next_vid
        wb.python_rules = ",".join(n for n, _, _ in self.python_rules)
        if deferred is not None:
            deferred.append(wb)
        else:
            self.items.write(wb)

    def _project_batch(self, b: pa.RecordBatch, wb: WriteBatch, opened: list, closed: list,
                       read_prefix, at: int | None = None, pre: Rendered | None = None) -> None:
        """`pre`: the rows of `b` rendered ahead (see run)."""
        n = b.num_rows
        if not n:
            return
        last = b.column("seq")[n - 1].as_py()
        if at is None and last <= self.seq:
            return
        self.stats.events += n
        orig = None  # the rows of the batch as given that the filters below keep (None: all)
        # Only rows that some rule (or the projector itself) cares about are converted to Python.
        # A batch holding a policy event takes the slow path: the rules change inside it.
        if not self.python_rules:
            uniq = pc.unique(b.column("type")).to_pylist()
            if POLICY_TYPE not in uniq:
                relevant = [t for t in uniq if self._rules_for(t) or t.startswith(SYSTEM_PREFIX)]
                if len(relevant) < len(uniq):
                    mask = pc.is_in(b.column("type"), pa.array(relevant, pa.string()))
                    b = b.filter(mask)
                    if pre is not None:
                        orig = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if at is None and b.num_rows and b.column("seq")[0].as_py() <= self.seq:
            mask = pc.greater(b.column("seq"), self.seq)
            b = b.filter(mask)
            if pre is not None:
                kept = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
                orig = kept if orig is None else orig[kept]
        if b.num_rows:
            B = ArrowBatch(b, BatchTimes(b, self._fast_for))
            if self._columnar:
                ahead = None if pre is None else (pre, orig, n)
                self._project_columnar(b, B, wb, opened, closed, read_prefix, at, ahead)
            else:
                # rules stay the same through the batch unless it holds a policy event: then
                # render row by row, after the rows before have been projected
                pre = None if POLICY_TYPE in B.type else self._prerender(B, b.num_rows)
                self._rows(B, 0, b.num_rows, pre, wb, opened, closed, read_prefix, at)
        if at is None:
            self.seq = max(self.seq, last)

    def _rows(self, B: ArrowBatch, lo: int, hi: int, pre: list | None, wb: WriteBatch, opened, closed,
              read_prefix, at: int | None) -> None:
        """Project rows lo..hi-1 of a batch one by one (`pre`: their rendered fast rules, by
        row, from _prerender; None: render here)."""
        types, subjects, seqs = B.type, B.subject, B.seq
        cols = None
        for r in range(lo, hi):
            t = types[r]
            fr = self._fast_for(t)
            if fr is not None:  # only simple template rules: the compiled fast path
                subj = subjects[r]
                if not (subj in self.forgotten or subj.startswith(PURGED_PREFIX)
                        or (self.purged and self._was_purged(subj))):
                    recs = pre[r] if pre is not None else seal_rows(
                        [render_row(fr.rules, fr.needs_data, fr.needs_meta, B, r)])[0]
                    self._fast_row(fr, recs, B, r, seqs[r] if at is None else at, wb, opened, closed)
                if at is None:
                    self.seq = seqs[r]
                continue
            if cols is None:
                cols = {c: getattr(B, c) for c in PROJECT_COLUMNS}
            row = {c: cols[c][r] for c in PROJECT_COLUMNS}
            rules = self._rules_for(t)
            system = t.startswith(SYSTEM_PREFIX)
            pos = row["seq"] if at is None else at
            subj = row["subject"]
            if t == FORGET_TYPE or t == HOLD_TYPE:
                if at is None:
                    if t == FORGET_TYPE:
                        self._forget(row, wb, closed)
                    else:
                        self._hold(row, wb)
                    self.seq = row["seq"]
                continue
            if subj in self.forgotten or subj.startswith(PURGED_PREFIX) or (self.purged and self._was_purged(subj)):
                if at is None:  # a forgotten subject, or a purge's stub: nothing to project
                    self.seq = row["seq"]
                continue
            if t == LLM_TYPE:
                self._llm_output(row, pos, wb, opened, closed)
            if system and at is None:
                self._system_event(row, wb, opened, closed, read_prefix)
            if rules or self.python_rules:
                self._apply(row, rules, pos, wb, opened, closed)
            if at is None:
                self.seq = row["seq"]

    # ---- the columnar path (replays into a bulk writer) ----------------------------------
    def _row_class(self, event_type: str) -> int:
        if self._fast_for(event_type) is not None:
            return _FAST
        if not self._rules_for(event_type) and not event_type.startswith(SYSTEM_PREFIX):
            return _SKIP
        return _SLOW

    def _project_columnar(self, b: pa.RecordBatch, B: ArrowBatch, wb: WriteBatch, opened, closed,
                          read_prefix, at: int | None, ahead: tuple | None = None) -> None:
        """Project a batch as runs of rows whose event types have only simple rules (or none),
        each run at once (_fast_run), and every other row one by one (_rows), in seq order. A
        policy event may change the rules: the rows after it are classified again. `ahead`:
        (the batch as given rendered ahead, the rows of it `b` kept, its row count)."""
        n = b.num_rows
        tcol = b.column("type")
        uniq_arr = pc.unique(tcol)
        codes = pc.index_in(tcol, value_set=uniq_arr).to_numpy(zero_copy_only=False)
        uniq = uniq_arr.to_pylist()
        i = 0
        while i < n:
            cls = np.array([self._row_class(t) for t in uniq], dtype=np.int8)[codes]
            slow = (np.flatnonzero(cls[i:] == _SLOW) + i).tolist()
            slow.append(n)
            for j in slow:
                if j > i:
                    self._fast_run(b, B, codes, uniq, cls, i, j, wb, opened, closed, read_prefix, at, ahead)
                i = j + 1
                if j == n:
                    break
                # the per-event path reads and changes current and last_time: the key state is
                # written back first (0.33-0.43 s for the 385 k keys of a 10^6-event replay) and
                # dropped, unless the row changes neither
                keyed = self._keyed(uniq[codes[j]], B.subject[j])
                if keyed:
                    self._release()
                self._rows(B, j, j + 1, None, wb, opened, closed, read_prefix, at)
                if keyed:
                    self._release()  # (a re-projection inside the row may have made one)
                if uniq[codes[j]] == POLICY_TYPE:
                    break  # the rules may have changed from here on

    def _keyed(self, event_type: str, subject: str) -> bool:
        """Whether the per-event path may read or change current versions or last times for an
        event (see keyed_event)."""
        return keyed_event(event_type, subject, self._rules_for(event_type))

    def _fast_run(self, b: pa.RecordBatch, B: ArrowBatch, codes, uniq: list[str], cls, lo: int, hi: int,
                  wb: WriteBatch, opened, closed, read_prefix, at: int | None, ahead: tuple | None = None) -> None:
        """Project rows lo..hi-1 of a batch, all of event types whose rules are all simple (or
        that no rule matches), at once: the rules render their rows type by type, the texts are
        sealed together, supersession is one pass over the keys, and the new versions go to the
        writer as one Arrow table. The versions, vids, checkpoint and stats are those of _rows;
        if a rendering raises anything but MissingField, _rows projects the run instead (and
        raises it where the per-event path would). `ahead` (see _project_columnar): the rows'
        versions are taken from it if the rules are still those it was rendered with (a policy
        event since may have changed them), else rendered here."""
        rows = np.flatnonzero(cls[lo:hi] == _FAST) + lo
        if len(rows):
            pp = getattr(B, "_purged_prefix", None)
            if pp is None:
                pp = B._purged_prefix = pc.starts_with(b.column("subject"), PURGED_PREFIX).to_numpy(
                    zero_copy_only=False)
            keep = ~pp[rows]
            check_purged = bool(self.purged) and (
                not self._purged_from or b.column("seq")[hi - 1].as_py() >= self._purged_from)
            if self.forgotten or check_purged:
                keep &= ~self._left_out(b.column("subject").take(pa.array(rows)), check_purged)
            rows = rows[keep]
        if len(rows):
            if ahead is not None and ahead[0].token is self._fast_cache:
                pre, orig, n_orig = ahead
                out = pre.select(rows, orig, n_orig)
            else:
                try:
                    out = seal_rendered(self._render_run(B, codes, uniq, rows))
                except Exception:  # noqa: BLE001 (raised again by the per-event path, at its row)
                    self._release()
                    self._rows(B, lo, hi, None, wb, opened, closed, read_prefix, at)
                    return
            self._count(B, codes, uniq, rows, out)
            self._put_run(b, out, wb, closed, at)
        if at is None:
            self.seq = b.column("seq")[hi - 1].as_py()

    def _left_out(self, subjects: pa.Array, check_purged: bool = True) -> np.ndarray:
        """Which of `subjects` are forgotten or (`check_purged`) purged (nothing about them is
        projected), each distinct subject checked once (and a subject found neither remembered
        as such, until a tombstone or a purge adds to the forgotten or purged ones)."""
        state = (id(self.forgotten), len(self.forgotten), id(self.purged), len(self.purged), check_purged)
        if self._clean_state != state:
            self._clean, self._clean_state = set(), state
        clean = self._clean
        new = [s for s in pc.unique(subjects).to_pylist() if s not in clean]
        forgotten, purged, was_purged = self.forgotten, self.purged and check_purged, self._was_purged
        out = [s for s in new if s in forgotten or (purged and was_purged(s))]
        if len(out) < len(new):
            clean.update(new)
            clean.difference_update(out)
        if not out:
            return np.zeros(len(subjects), dtype=bool)
        return pc.is_in(subjects, value_set=pa.array(out, pa.string())).to_numpy(zero_copy_only=False)

    def _render_run(self, B: ArrowBatch, codes, uniq: list[str], rows) -> tuple:
        """fastrules.render_rows of `rows` (all of fast types) with the rules in force."""
        return render_rows(self._fast_for, B, codes, uniq, rows)

    def _count(self, B: ArrowBatch, codes, uniq: list[str], rows, out: Rendered) -> None:
        """The stats of rendering `rows` (all of fast types) into `out`: each rule of a row's
        type matched it; the skips, and the last of them."""
        fast_for = self._fast_for
        nrules = np.array([len(fr.rules) if (fr := fast_for(t)) is not None else 0 for t in uniq], dtype=np.int64)
        st = self.stats
        st.matched += int(nrules[codes[rows]].sum())
        if out.skips:
            st.skipped += len(out.skips)
            r, _, gi, path = max(out.skips, key=lambda x: (x[0], x[1]))
            st.last_skip = f"{out.rules[gi].rule.name} at seq {B.seq[r]}: event has no `{path}`"

    def _put_run(self, b: pa.RecordBatch, out: Rendered, wb: WriteBatch, closed, at: int | None) -> None:
        """_put for every rendered version of a run (see _fast_run), as one Arrow table."""
        if out.subjects is not None and (self.forgotten or self.purged):
            # a rule naming a forgotten subject from another subject's event (None: the event's
            # own subject, which _fast_run checked)
            forgotten, purged, was_purged = self.forgotten, self.purged, self._was_purged
            ok = [s is None or not (s in forgotten or (purged and was_purged(s))) for s in out.subjects.to_pylist()]
            if not all(ok):
                out = out.take(np.flatnonzero(ok))
        rules, gid, vrow = out.rules, out.gid, out.row
        m = len(out)
        if not m:
            return
        # supersession: a version closes the current one of its key, unless it is late
        vid0 = self.next_vid
        self.next_vid += m
        ts_np = b.column("time_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)[vrow]
        pos_np = (b.column("seq").cast(pa.int64()).to_numpy(zero_copy_only=False)[vrow] if at is None
                  else np.full(m, at, dtype=np.int64))
        key_arr = out.keys
        to_seq = self._supersede(key_arr, ts_np, pos_np, vid0, wb, out.key_list)
        # the new versions as a table
        g = pa.array(gid)
        take = lambda vals, typ: pa.array(vals, typ).take(g)  # noqa: E731
        ttl = np.array([0 if f.ttl_us is None else f.ttl_us for f in rules], dtype=np.int64)[gid]
        no_ttl = np.array([f.ttl_us is None for f in rules], dtype=bool)[gid]
        offsets = pa.array(np.arange(m + 1, dtype=np.int32))
        vr = pa.array(vrow)
        if out.tags is not None:
            tag_arr = out.tags
        else:
            tag_arr = pa.ListArray.from_arrays(pa.array(np.zeros(m + 1, dtype=np.int32)), pa.array([], pa.string()),
                                               type=pa.list_(pa.string()))
        subjects = b.column("subject").take(vr).cast(pa.string())
        if out.subjects is not None:
            subjects = pc.coalesce(out.subjects, subjects)
        tbl = pa.Table.from_arrays([
            pa.array(np.arange(vid0, vid0 + m, dtype=np.int64)),
            key_arr,
            pa.array(["upsert"], pa.string()).take(pa.array(np.zeros(m, dtype=np.int32))),
            subjects,
            take([f.rule.kind for f in rules], pa.string()),
            out.texts,
            take([f.rule.priority for f in rules], pa.float64()),
            take([f.rule.pinned for f in rules], pa.bool_()),
            tag_arr,
            pa.array(ts_np),
            pa.array(ts_np + ttl, mask=no_ttl),
            out.hashes,
            pa.array(pos_np),
            to_seq,
            pa.ListArray.from_arrays(offsets, b.column("seq").take(vr).cast(pa.int64()), type=pa.list_(pa.int64())),
            pa.ListArray.from_arrays(offsets, b.column("id").take(vr).cast(pa.string()), type=pa.list_(pa.string())),
            take([f.rule.name for f in rules], pa.string()),
            out.metas,
        ], schema=ARROW_SCHEMA)
        wb.new_table = tbl if wb.new_table is None else pa.concat_tables([wb.new_table, tbl])
        self._lazy_rows.append((np.arange(vid0, vid0 + m, dtype=np.int64), tbl))
        self._lazy_held += m
        if self._lazy_held > max(self._LAZY_HELD, 3 * self._lazy_kept) and not self._keep_rows:
            self._compact()  # let the rows of versions superseded since go

    def _supersede(self, key_arr: pa.Array, ts: np.ndarray, pos: np.ndarray, vid0: int, wb: WriteBatch,
                   keys: list[str] | None = None) -> pa.Array:
        """The bookkeeping of _put for versions vid0, vid0+1, ... (in order) of keys `key_arr`
        (`keys`: the same as a list, if the caller has one),
        valid times `ts`, at positions `pos`, done per key: a version whose time is older than
        the newest time of its key so far is late (stored as [pos, pos), never current);
        every other one closes the key's version current before it; the last one of a key
        becomes current (left as its vid: see _cur). Returns the versions' to_seq."""
        m = len(ts)
        ov = self._ov
        if ov is None:
            ov = self._ov = _KeyState(fresh=not self.current and not self.last_time)
        codes, ukeys, uhashes, ucodes = ov.find(key_arr, keys)
        new = np.flatnonzero(ucodes < 0)
        if len(new):  # keys new to the key state: their last time and current version
            new_keys = ukeys.take(pa.array(new))
            if ov.fresh:  # nothing was current when the key state began (nor since, but by it)
                lts, vids = np.full(len(new), _NO_TIME, dtype=np.int64), np.full(len(new), -1, dtype=np.int64)
            else:
                nk = new_keys.to_pylist()
                lt_get, cur_get = self.last_time.get, self.current.get
                lts = np.array([lt_get(k, _NO_TIME) for k in nk], dtype=np.int64)
                vids = np.array([-1 if c is None else c if type(c) is int else c.vid for c in map(cur_get, nk)],
                                dtype=np.int64)
            ucodes[new] = ov.add(new_keys, uhashes[new], lts, vids)
        pre_t = ov.lt[ucodes]
        # versions grouped by key, in vid order inside a group
        order = np.argsort(codes, kind="stable")
        sc, st = codes[order], ts[order]
        first = np.ones(m, dtype=bool)
        first[1:] = sc[1:] != sc[:-1]
        gnum = np.cumsum(first) - 1                        # group number of each sorted version
        # late: older than the newest time before it in its group (or the key's last time):
        # a running max per group, over ranks so that group numbers can be stacked above them
        allt = np.concatenate([st, pre_t[sc[first]]])
        G = int(gnum[-1]) + 1
        lo, hi = int(st.min()), int(st.max())
        if (hi - lo + 3) * (G + 1) < (1 << 62):  # the times themselves, shifted, fit under the groups
            # (a last time older than every time here, or none, is below them all; a newer one
            # above them all: clipped, they order the same)
            rank = np.clip(allt, lo - 1, hi + 1) - (lo - 1)
        else:
            _, rank = np.unique(allt, return_inverse=True)
            rank = rank.reshape(-1)
        R = int(rank.max()) + 1
        ext = np.empty(m + G, dtype=np.int64)             # each group: its last time, then its versions
        at_v = np.arange(m) + gnum + 1
        starts = np.flatnonzero(first)
        at_g = starts + np.arange(G)
        ext[at_v] = rank[:m]
        ext[at_g] = rank[m:]
        base = np.empty(m + G, dtype=np.int64)
        base[at_v] = gnum * R
        base[at_g] = np.arange(G, dtype=np.int64) * R
        run_max = np.maximum.accumulate(ext + base) - base
        late = rank[:m] < run_max[at_v - 1]
        to_seq = np.zeros(m, dtype=np.int64)
        has_to = np.zeros(m, dtype=bool)
        lv = order[late]
        to_seq[lv] = pos[lv]
        has_to[lv] = True
        # the versions that are not late, by group: each closes the one before it
        ok = ~late
        idx, g = order[ok], sc[ok]
        if len(idx):
            same_next = g[:-1] == g[1:]
            closed_v, closer = idx[:-1][same_next], idx[1:][same_next]
            to_seq[closed_v] = pos[closer]
            has_to[closed_v] = True
            gfirst = np.ones(len(g), dtype=bool)
            gfirst[1:] = ~same_next
            glast = np.ones(len(g), dtype=bool)
            glast[:-1] = ~same_next
            # the first of a group closes the key's current version (_close; as arrays: only a
            # BulkWriter takes the columnar path's writes)
            fc = ucodes[g[gfirst]]
            pre_vid = ov.cur[fc]
            has = pre_vid >= 0
            if has.any():
                wb.close_arrays.append((pre_vid[has], pos[idx[gfirst]][has]))
            # the last of a group is the key's newest time and current version
            lc, li = ucodes[g[glast]], idx[glast]
            ov.lt[lc] = ts[li]
            ov.cur[lc] = li + vid0
            ov.dirty[lc] = True
        return pa.array(to_seq, mask=~has_to)

    def _sync(self) -> None:
        """Write what the columnar path keeps in its key state back to `current` (as vids:
        see _cur) and `last_time`."""
        ov = self._ov
        if ov is None:
            return
        d = np.flatnonzero(ov.dirty[:ov.n])
        if len(d):
            keys = ov.keys_of(d)
            self.last_time.update(zip(keys, ov.lt[d].tolist()))
            self.current.update(zip(keys, ov.cur[d].tolist()))
            self._lazy.update(keys)
            ov.dirty[d] = False

    def _release(self) -> None:
        """_sync, and drop the key state (the per-event path is about to change `current` or
        `last_time`)."""
        self._sync()
        self._ov = None

    def _cur(self, key: str) -> ItemVersion:
        """current[key], made an ItemVersion if the columnar path left its vid there."""
        v = self.current[key]
        if type(v) is int:
            v = self.current[key] = self._versions_of([v])[0]
        return v  # type: ignore[return-value]

    def _versions_of(self, vids: list[int]) -> list[ItemVersion]:
        """The versions of `vids` from the rows the columnar path keeps (_lazy_rows), in order."""
        want = np.array(vids, dtype=np.int64)
        out: list = [None] * len(vids)
        for i, tbl in self._rows_of(want):
            for j, v in zip(i.tolist(), rows_to_versions(tbl)):
                out[j] = v
        return out

    def _rows_of(self, want: np.ndarray) -> Iterator[tuple[np.ndarray, pa.Table]]:
        """(indexes into `want`, their rows) for the vids `want` among the rows kept."""
        # the vids ascend from one kept run to the next (there are many while the writer keeps
        # every row): each run is searched only for the vids in its range
        rows = self._lazy_rows
        if len(self._lazy_firsts) != len(rows):  # (runs are only appended, or all replaced)
            self._lazy_firsts = np.array([int(v[0]) for v, _ in rows], dtype=np.int64)
        which = np.searchsorted(self._lazy_firsts, want, side="right") - 1
        for w in np.unique(which[which >= 0]).tolist():
            sel = np.flatnonzero(which == w)
            varr, tbl = rows[w]
            at = np.minimum(np.searchsorted(varr, want[sel]), len(varr) - 1)
            hit = varr[at] == want[sel]
            if hit.any():
                yield sel[hit], tbl.take(pa.array(at[hit]))

    def _compact(self) -> None:
        """Keep only the rows of versions still current as vids (the others were superseded):
        those of the key state's changed keys, and of the keys written back before (_lazy; a
        key written back and changed since keeps a row too many, which does no harm)."""
        cur = self.current
        live = {k: v for k in self._lazy if type(v := cur.get(k)) is int}
        want = [np.fromiter(live.values(), dtype=np.int64, count=len(live))]
        ov = self._ov
        if ov is not None:
            want.append(ov.cur[:ov.n][ov.dirty[:ov.n]])
        want = np.unique(np.concatenate(want))
        parts = [(want[i], tbl) for i, tbl in self._rows_of(want)]
        if parts:
            varr = np.concatenate([v for v, _ in parts])
            order = np.argsort(varr, kind="stable")
            tbl = pa.concat_tables([t for _, t in parts]).take(pa.array(order))
            self._lazy_rows = [(varr[order], tbl)]
        else:
            self._lazy_rows = []
        self._lazy_firsts = np.zeros(0, dtype=np.int64)
        self._lazy = set(live)
        self._lazy_held = self._lazy_kept = len(want)

    def _materialise(self) -> None:
        """Every current version an ItemVersion again (see _cur); the rows kept for them go."""
        self._sync()
        if self._lazy:
            cur = self.current
            keys = [k for k in self._lazy if type(cur.get(k)) is int]
            for k, v in zip(keys, self._versions_of([cur[k] for k in keys])):
                cur[k] = v
        self._lazy = set()
        self._lazy_rows = []
        self._lazy_firsts = np.zeros(0, dtype=np.int64)
        self._lazy_held = self._lazy_kept = 0

    def _system_event(self, row: dict, wb: WriteBatch, opened, closed, read_prefix) -> None:
        if row["type"] == DECISION_TYPE:
            try:
                data = msgspec.json.decode(row["data"])
                # a purged item is listed by key hash only: it reinforces nothing
                keys = [it["key"] if isinstance(it, dict) else str(it) for it in data.get("items", [])
                        if not isinstance(it, dict) or "key" in it]
                agent = str(data.get("agent", ""))
            except (msgspec.DecodeError, AttributeError, KeyError, TypeError):
                return
            for k in sorted(set(keys)):
                self.uses[k] = self.uses.get(k, 0) + 1
                wb.uses.append((k, row["seq"], agent))
        elif row["type"] == POLICY_TYPE:
            try:
                data = msgspec.json.decode(row["data"])
                cfg = from_dict(data["config"], file=f"<policy event at seq {row['seq']}>")
            except (msgspec.DecodeError, KeyError, TypeError, ConfigError):
                return  # not a policy we can read: the previous one stays in force
            version = (self.policies[-1].version if self.policies else 0) + 1
            pol = Policy(version=version, seq=row["seq"], hash=cfg.hash,
                         config=msgspec.json.encode(cfg.raw).decode())
            old_rules = rules_fingerprint(self.config, self.python_rules)
            self.policies.append(pol)
            wb.policies.append(pol)
            self.config = cfg
            self._rule_cache = {}
            self._fast_cache = {}
            if rules_fingerprint(cfg, self.python_rules) != old_rules and read_prefix is not None and row["seq"] > 1:
                self._reproject(row["seq"], wb, opened, closed, read_prefix)

    def _forget(self, row: dict, wb: WriteBatch, closed) -> None:
        """A tombstone: the subject's current items close here; later events about it are skipped."""
        subject = row["subject"]
        if subject.startswith(PURGED_PREFIX):  # a purged subject's tombstone: later events stay out
            if subject not in self.purged:
                self.purged.add(subject)
                self._purged_seen.clear()
                wb.meta["purged"] = msgspec.json.encode(sorted(self.purged)).decode()
            return
        if subject in self.forgotten:
            return
        self.forgotten[subject] = row["seq"]
        self._materialise()
        for key in sorted(k for k, v in self.current.items() if v.subject == subject):
            self._close(self.current.pop(key), row["seq"], wb, closed)
        wb.meta["forgotten"] = msgspec.json.encode(self.forgotten).decode()

    def _hold(self, row: dict, wb: WriteBatch) -> None:
        try:
            release = bool((msgspec.json.decode(row["data"]) or {}).get("release", False))
        except (msgspec.DecodeError, AttributeError, TypeError):
            return
        if release:
            self.holds.pop(row["subject"], None)
        else:
            self.holds.setdefault(row["subject"], row["seq"])
        wb.meta["holds"] = msgspec.json.encode(self.holds).decode()

    def _was_purged(self, subject: str) -> bool:
        hit = self._purged_seen.get(subject)
        if hit is None:
            hit = self.stub_subject is not None and self.stub_subject(subject) in self.purged
            if len(self._purged_seen) > 1_000_000:
                self._purged_seen.clear()
            self._purged_seen[subject] = hit
        return hit

    def _reproject(self, at: int, wb: WriteBatch, opened, closed, read_prefix) -> None:
        """New rules at position `at`: close every current version there and project events
        1..at-1 again, every new version valid from `at`."""
        self.stats.reprojections += 1
        for key in sorted(self.current):
            v = self.current[key]
            self._close(v, at, wb, closed)
        self.current = {}
        self.last_time = {}
        for k in self.summaries:
            wb.summary_state[k] = (0, [])
        self.summaries = {}
        self.llm_open = {}
        wb.meta["llm_open"] = "{}"
        for b in read_prefix(at):
            self._project_batch(b, wb, opened, closed, None, at=at)

    # ---- item operations -----------------------------------------------------------------
    def _apply(self, row: dict, rules: list[Rule], pos: int, wb: WriteBatch, opened, closed) -> None:
        ctx = EventContext(
            {"id": row["id"], "source": row["source"], "type": row["type"], "subject": row["subject"],
             "seq": row["seq"]},
            row["data"], row["meta"], row["time_ts"], row["recorded_at"])
        for rule in rules:
            self.stats.matched += 1
            try:
                if rule.retract is not None:
                    self._retract(rule.retract.render(ctx), row, pos, wb, closed)
                    continue
                key = rule.key.render(ctx)  # type: ignore[union-attr]
                text = rule.text.render(ctx)  # type: ignore[union-attr]
                subject = row["subject"] if rule.subject.source == "{subject}" else rule.subject.render(ctx)
                tags = tuple(t.render(ctx) for t in rule.tags)
                group = rule.summarize.group.render(ctx) if rule.summarize else None
            except MissingField as exc:
                self.stats.skipped += 1
                self.stats.last_skip = f"{rule.name} at seq {row['seq']}: event has no `{exc.path}`"
                continue
            v = self._upsert(key, text, subject, rule.kind, rule.priority, rule.pinned, tags,
                             rule.ttl_us, row, pos, rule.name, wb, opened, closed)
            if rule.llm is not None and v is not None:
                self._request(wb, key=key, rule=rule.name, instruction=rule.llm, parts=[], versions=[v],
                              kind=v.kind, priority=v.priority, pinned=v.pinned, ttl_us=rule.ttl_us)
            if group is not None and v is not None:
                self._summarize(rule, group, key, pos, wb, opened, closed)
        system = row["type"].startswith(SYSTEM_PREFIX)
        for name, pattern, fn in self.python_rules:
            if not glob_match(pattern, row["type"]) or (system and not pattern.startswith(SYSTEM_PREFIX)):
                continue
            ev = Event(row["seq"], ctx.recorded_dt, row["id"], row["source"], row["type"], row["subject"],
                       row["time"], row["data"].encode(), row["meta"].encode() if row["meta"] else None)
            for op in fn(ev) or ():
                if isinstance(op, Retract):
                    self._retract(op.key, row, pos, wb, closed)
                elif isinstance(op, Upsert):
                    ttl = op.ttl
                    ttl_us = (None if ttl is None else parse_duration(ttl) if isinstance(ttl, str)
                              else int(ttl.total_seconds() * 1e6) if isinstance(ttl, timedelta) else int(ttl * 1e6))
                    self._upsert(op.key, op.text, op.subject or row["subject"], op.kind, float(op.priority),
                                 op.pinned, tuple(op.tags), ttl_us, row, pos, f"python:{name}", wb, opened, closed)
                else:
                    raise ConfigError(f"Python rule {name} returned {op!r}", expected="ctxdb.Upsert or ctxdb.Retract")

    def _prerender(self, B: Batch, n: int) -> list:
        """First pass over a batch: render the rules of every fast row (pure: reads no projector
        state), then redact and hash all texts at once. Entry r is None (not a fast row) or, per
        rule, (key, text, subject, tags, meta, hash) or the exception rendering raised (raised
        again, or counted as a skip, only if the second pass reaches the row)."""
        out: list = [None] * n
        fast_for, types = self._fast_for, B.type
        for r in range(n):
            fr = fast_for(types[r])
            if fr is not None:
                out[r] = render_row(fr.rules, fr.needs_data, fr.needs_meta, B, r)
        seal_rows(out)
        return out

    def _fast_row(self, fr: "FastRules", recs: list, B: Batch, r: int, pos: int, wb: WriteBatch,
                  opened, closed) -> None:
        """_apply for row r of a batch whose event type has only simple rules (fastrules);
        `recs` are the row's rendered rules (see _prerender)."""
        stats = self.stats
        t, seqs, ids = B.time_ts[r], (B.seq[r],), (B.id[r],)
        for f, rec in zip(fr.rules, recs):
            stats.matched += 1
            if type(rec) is not tuple:
                if isinstance(rec, MissingField):
                    stats.skipped += 1
                    stats.last_skip = f"{f.rule.name} at seq {B.seq[r]}: event has no `{rec.path}`"
                    continue
                raise rec
            key, text, subject, tags, meta, h = rec
            rule = f.rule
            self._put(key, text, meta, h, subject, rule.kind, rule.priority, rule.pinned, tags, f.ttl_us,
                      t, seqs, ids, pos, rule.name, wb, opened, closed)

    def _upsert(self, key, text, subject, kind, priority, pinned, tags, ttl_us, row, pos, rule, wb,
                opened, closed, *, time_us=None, lineage=None) -> ItemVersion | None:
        if subject in self.forgotten or (self.purged and self._was_purged(subject)):
            return None  # a rule naming a forgotten subject from another subject's event
        t = row["time_ts"] if time_us is None else time_us
        seqs, ids = lineage or ((row["seq"],), (row["id"],))
        text, meta, h = seal(text)  # secrets never enter an item (nor its embedding, index, snapshots)
        return self._put(key, text, meta, h, subject, kind, priority, pinned, tags, ttl_us, t, seqs, ids, pos, rule,
                         wb, opened, closed)

    def _put(self, key, text, meta, h, subject, kind, priority, pinned, tags, ttl_us, t, seqs, ids, pos, rule, wb,
             opened, closed) -> ItemVersion | None:
        """Store an upsert whose text is already redacted (`meta`) and hashed (`h`)."""
        if subject in self.forgotten or (self.purged and self._was_purged(subject)):
            return None  # a rule naming a forgotten subject from another subject's event
        cur = self.current.get(key)
        lt = self.last_time.get(key)
        late = lt is not None and t < lt
        v = ItemVersion(self.next_vid, key, "upsert", subject, kind, text, priority, pinned, tags, t,
                        None if ttl_us is None else t + ttl_us, h, pos, pos if late else None,
                        seqs, ids, rule, meta)
        self.next_vid += 1
        wb.new.append(v)
        if late:
            return None
        if cur is not None:
            self._close(cur, pos, wb, closed)
        self.current[key] = v
        self.last_time[key] = t
        opened.append(v)
        return v

    def _retract(self, key: str, row: dict, pos: int, wb: WriteBatch, closed) -> None:
        t = row["time_ts"]
        late = t < self.last_time.get(key, t)
        wb.new.append(ItemVersion(
            vid=self.next_vid, key=key, op="retract", subject=row["subject"], kind="", text="", priority=0.0,
            pinned=False, tags=(), time_us=t, expires_us=None, hash="", from_seq=pos, to_seq=pos,
            lineage_seqs=(row["seq"],), lineage_ids=(row["id"],), rule="retract"))
        self.next_vid += 1
        if late:
            return
        self.last_time[key] = t
        cur = self.current.pop(key, None)
        if cur is not None:
            self._close(cur, pos, wb, closed)

    def _close(self, v: "ItemVersion | int", seq: int, wb: WriteBatch, closed: list) -> None:
        # A version written in this same batch is closed before it is stored (vids are assigned
        # in order, so its index in wb.new is its distance from the batch's first vid). The
        # columnar path sends every close as wb.closes, and may hand a current version's vid.
        vid = v if type(v) is int else v.vid  # type: ignore[union-attr]
        if vid >= wb.first_vid:
            i = vid - wb.first_vid
            wb.new[i] = wb.new[i].closed(seq)
        else:
            wb.closes[vid] = seq
        closed.append(v)

    def _summarize(self, rule: Rule, group: str, key: str, pos: int, wb: WriteBatch, opened, closed) -> None:
        s = rule.summarize
        assert s is not None
        sk = (rule.name, group)
        n, pending = self.summaries.get(sk, (0, []))
        if key not in pending:
            pending = pending + [key]
        if len(pending) >= s.every and s.llm:
            # An LLM summary: the parts stay in views until the recorded summary arrives.
            parts = [self._cur(k) for k in pending if k in self.current]
            if parts:
                n += 1
                self._request(wb, key=f"summary:{group}/{rule.name}/{n}", rule=f"{rule.name}:summary",
                              instruction=s.instruction, parts=[p.key for p in parts], versions=parts,
                              kind="summary", priority=s.priority, pinned=False, ttl_us=s.ttl_us, group=group)
            pending = []
        elif len(pending) >= s.every:
            parts = [self._cur(k) for k in pending if k in self.current]
            if parts:
                n += 1
                texts = [p.text for p in parts]
                t0, t1 = min(p.time_us for p in parts), max(p.time_us for p in parts)
                fmt = "%Y-%m-%d %H:%M"
                text = (f"{len(parts)} {rule.on} on {group} ({utc_from_micros(t0).strftime(fmt)} to "
                        f"{utc_from_micros(t1).strftime(fmt)}): " + " | ".join(texts))
                subjects = sorted({p.subject for p in parts})
                subject = subjects[0] if len(subjects) == 1 else group
                tags = tuple(sorted({t for p in parts for t in p.tags}))
                seqs = tuple(sorted({q for p in parts for q in p.lineage_seqs}))
                ids = tuple(i for p in sorted(parts, key=lambda p: p.lineage_seqs) for i in p.lineage_ids)
                row = {"seq": pos, "id": "", "time_ts": t1}
                for p in parts:
                    # a retract row too, so valid-time views see the part folded away at t1
                    self._retract(p.key, {"seq": pos, "id": "", "subject": p.subject, "time_ts": t1},
                                  pos, wb, closed)
                self._upsert(f"summary:{group}/{rule.name}/{n}", text, subject, "summary", s.priority, False,
                             tags, s.ttl_us, row, pos, f"{rule.name}:summary", wb, opened, closed,
                             time_us=t1, lineage=(seqs, ids))
            pending = []
        self.summaries[sk] = (n, pending)
        wb.summary_state[sk] = (n, pending)

    # ---- recorded LLM summaries ------------------------------------------------------------
    def _request(self, wb: WriteBatch, *, key: str, rule: str, instruction: str | None, parts: list[str],
                 versions: list[ItemVersion], kind: str, priority: float, pinned: bool, ttl_us: int | None,
                 group: str | None = None) -> None:
        """Open an LLM request: everything the derived event must carry so that projecting it
        needs nothing but the event itself."""
        versions = sorted(versions, key=lambda p: (p.time_us, p.key))
        subjects = sorted({p.subject for p in versions})
        self.llm_open[key] = {
            "key": key, "rule": rule, "instruction": instruction, "parts": parts,
            "texts": [p.text for p in versions], "kind": kind, "priority": priority, "pinned": pinned,
            "ttl_us": ttl_us, "subject": subjects[0] if len(subjects) == 1 else (group or subjects[0]),
            "tags": sorted({t for p in versions for t in p.tags}),
            "time_us": max(p.time_us for p in versions),
            "source_seqs": sorted({q for p in versions for q in p.lineage_seqs}),
            "source_ids": [i for p in versions for i in p.lineage_ids],
        }
        wb.meta["llm_open"] = msgspec.json.encode(self.llm_open).decode()

    def _llm_output(self, row: dict, pos: int, wb: WriteBatch, opened, closed) -> None:
        try:
            d = msgspec.json.decode(row["data"])
            key, text = str(d["key"]), str(d["output"])
            parts = [str(k) for k in d.get("parts", [])]
            seqs = tuple(int(q) for q in d.get("source_seqs", [])) + (row["seq"],)
            ids = tuple(str(i) for i in d.get("source_ids", [])) + (row["id"],)
            time_us = int(d["time_us"])
            ttl = d.get("ttl_us")
            kind, subject = str(d.get("kind", "summary")), str(d.get("subject", row["subject"]))
            priority, pinned = float(d.get("priority", 0.5)), bool(d.get("pinned", False))
            tags = tuple(str(t) for t in d.get("tags", []))
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
            self.stats.skipped += 1
            self.stats.last_skip = f"{LLM_TYPE} at seq {row['seq']}: not a readable LLM output"
            return
        src = set(seqs)
        for k in parts:
            cur = self._cur(k) if k in self.current else None
            # fold a part away only if the version summarized is still the current one
            if cur is not None and set(cur.lineage_seqs) <= src:
                self._retract(k, {"seq": pos, "id": row["id"], "subject": cur.subject, "time_ts": time_us},
                              pos, wb, closed)
        self._upsert(key, text, subject, kind, priority, pinned, tags, None if ttl is None else int(ttl),
                     {"seq": row["seq"], "id": row["id"], "time_ts": time_us}, pos, str(d.get("rule", "llm")),
                     wb, opened, closed, time_us=time_us, lineage=(seqs, ids))
        if self.llm_open.pop(key, None) is not None:
            wb.meta["llm_open"] = msgspec.json.encode(self.llm_open).decode()



def rules_for(config: Config, event_type: str) -> list[Rule]:
    """The rules of `config` an event type triggers (a system event only rules on `ctxdb.*`)."""
    system = event_type.startswith(SYSTEM_PREFIX)
    return [rule for rule in config.rules if rule.matches(event_type) and (not system or rule.on.startswith(SYSTEM_PREFIX))]


def keyed_event(event_type: str, subject: str, rules: list) -> bool:
    """Whether projecting an event (matched by `rules`) may read or change item versions,
    current versions or last times: not for a system event that no rule matches and that is not
    a policy, an LLM output or a tombstone of a subject (a receipt, a legal hold, a purge or
    retention receipt, a purge's stub tombstone: these change uses, holds or the purged set)."""
    if not event_type.startswith(SYSTEM_PREFIX) or rules:
        return True
    if event_type in (POLICY_TYPE, LLM_TYPE):
        return True
    return event_type == FORGET_TYPE and not subject.startswith(PURGED_PREFIX)


def versions_final(log, items: ItemStore, python_rules: list, to_seq: int, limit: int = 1000) -> bool:
    """Whether projecting the events after `items`' checkpoint up to `to_seq` would leave its
    item versions as they are (at most `limit` events are looked at: more, and the answer is
    no). After a purge, the log ends with its stub tombstone and its receipt, which a replay's
    comparison need not project the live store for (that loads every current version)."""
    seq = items.checkpoint()[0]
    if seq >= to_seq:
        return True
    if python_rules or to_seq - seq > limit:
        return False
    policies = items.policies()
    cfg = Projector._config_of(policies[-1]) if policies else default_config()
    for b in log.read_batches(from_seq=seq + 1, to_seq=to_seq, columns=["type", "subject"]):
        for t, subj in zip(b.column("type").to_pylist(), b.column("subject").to_pylist()):
            if keyed_event(t, subj, rules_for(cfg, t)):
                return False
    return True


class _KeyState:
    """The columnar path's state of the keys it has seen (Projector._supersede): per key (by
    code), its newest valid time (_NO_TIME: none), its current version's vid (-1: none) and
    whether these changed since they were written back to the projector's dicts (_sync).

    Keys are found by code without a Python dict: each key's hash (Python's own, cached in the
    string) goes into an open-addressing table of NumPy arrays, probed for a whole batch at
    once, and a hit is confirmed by comparing the key itself (Arrow), so two keys sharing a
    hash stay two keys. (A dict lookup per distinct key of each batch took ~1 s of a
    10^6-event replay.)"""

    __slots__ = ("fresh", "n", "lt", "cur", "dirty", "hashes", "_chunks", "_starts", "_slot_code", "_slot_hash")

    def __init__(self, fresh: bool) -> None:
        self.fresh = fresh   # the projector's current and last_time were empty when it began
        self.n = 0
        self.lt = np.empty(1024, dtype=np.int64)
        self.cur = np.empty(1024, dtype=np.int64)
        self.dirty = np.zeros(1024, dtype=bool)
        self.hashes = np.empty(1024, dtype=np.int64)      # by code
        self._chunks: list[pa.Array] = []                  # the keys, by code
        self._starts = np.zeros(1, dtype=np.int64)        # the first code of each chunk
        self._slot_code = np.full(2048, -1, dtype=np.int64)
        self._slot_hash = np.zeros(2048, dtype=np.int64)

    def keys_of(self, codes: np.ndarray) -> list[str]:
        order = np.argsort(codes, kind="stable")
        out: list = [None] * len(codes)
        for i, k in zip(order.tolist(), self._take_sorted(codes[order]).to_pylist()):
            out[i] = k
        return out

    def _take_sorted(self, codes: np.ndarray) -> pa.Array:
        """The keys of `codes` (ascending), taken chunk by chunk (a take from a ChunkedArray
        costs as much as concatenating it)."""
        parts, lo = [], 0
        bounds = np.searchsorted(codes, self._starts[1:])
        for j, chunk in enumerate(self._chunks):
            hi = int(bounds[j]) if j < len(bounds) else len(codes)
            if hi > lo:
                parts.append(chunk.take(pa.array(codes[lo:hi] - self._starts[j])))
            lo = hi
        return parts[0] if len(parts) == 1 else pa.concat_arrays(parts) if parts else pa.array([], pa.string())

    def find(self, key_arr: pa.Array, keys: list[str] | None) -> tuple[np.ndarray, pa.Array, np.ndarray, np.ndarray]:
        """(for each of `key_arr`, its index among the distinct keys; the distinct keys; their
        hashes; the code of each, -1 for a key not seen yet)."""
        m = len(key_arr)
        if keys is None:
            keys = key_arr.to_pylist()
        hs = np.fromiter(map(_key_hash, keys), dtype=np.int64, count=m)
        # distinct hashes (np.unique, without its stable sort: any key of a group stands for it)
        order = np.argsort(hs)
        sh = hs[order]
        starts = np.ones(m, dtype=bool)
        starts[1:] = sh[1:] != sh[:-1]
        idx = np.empty(m, dtype=np.int64)
        idx[order] = np.cumsum(starts) - 1
        first = order[starts]
        uh = sh[starts]
        ukeys = key_arr.take(pa.array(first))
        if len(uh) < m and not pc.all(pc.equal(key_arr, ukeys.take(pa.array(idx)))).as_py():
            # two different keys of the batch share a hash: group them by the keys themselves
            enc = key_arr.dictionary_encode()
            idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            ukeys = enc.dictionary
            _, first = np.unique(idx, return_index=True)
            uh = hs[first]
        return idx, ukeys, uh, self._lookup(uh, ukeys)

    def _lookup(self, uh: np.ndarray, ukeys: pa.Array) -> np.ndarray:
        out = np.full(len(uh), -1, dtype=np.int64)
        if not self.n:
            return out
        mask = len(self._slot_code) - 1
        slot = uh & mask
        todo = np.arange(len(uh))
        while len(todo):
            s = slot[todo]
            c = self._slot_code[s]
            taken = c >= 0
            same = np.flatnonzero(taken & (self._slot_hash[s] == uh[todo]))
            hit = np.zeros(len(todo), dtype=bool)
            if len(same):
                same = same[np.argsort(c[same])]  # (in code order: the keys are read in order)
                i = todo[same]
                known = self._take_sorted(c[same])
                eq = pc.equal(ukeys.take(pa.array(i)), known).to_numpy(zero_copy_only=False)
                out[i[eq]] = c[same][eq]
                hit[same[eq]] = True
            todo = todo[taken & ~hit]
            slot[todo] = (slot[todo] + 1) & mask
        return out

    def add(self, new_keys: pa.Array, hashes: np.ndarray, last_times: np.ndarray, vids: np.ndarray) -> np.ndarray:
        """Codes for keys not in the state (distinct), with their hashes, last times and
        current vids."""
        c, k = self.n, len(new_keys)
        if c + k > len(self.lt):
            grow = max(c + k, 2 * len(self.lt)) - len(self.lt)
            self.lt = np.concatenate([self.lt, np.empty(grow, dtype=np.int64)])
            self.cur = np.concatenate([self.cur, np.empty(grow, dtype=np.int64)])
            self.dirty = np.concatenate([self.dirty, np.zeros(grow, dtype=bool)])
            self.hashes = np.concatenate([self.hashes, np.empty(grow, dtype=np.int64)])
        codes = np.arange(c, c + k, dtype=np.int64)
        self.lt[c:c + k] = last_times
        self.cur[c:c + k] = vids
        self.hashes[c:c + k] = hashes
        # a few chunks, each at least twice the size of the next (a take from many is slow; one
        # array, concatenated again for every batch, was ~0.2 s of a 10^6-event replay)
        chunks = self._chunks
        chunks.append(new_keys)
        while len(chunks) > 1 and len(chunks[-2]) <= 2 * len(chunks[-1]):
            chunks[-2:] = [pa.concat_arrays(chunks[-2:])]
        self._starts = np.cumsum([0] + [len(x) for x in chunks[:-1]]).astype(np.int64)
        self.n = c + k
        if 2 * self.n > len(self._slot_code):  # at most half full: probes stay short
            size = len(self._slot_code)
            while 4 * self.n > size:  # (a quarter full after growing: fewer rebuilds)
                size *= 2
            self._slot_code = np.full(size, -1, dtype=np.int64)
            self._slot_hash = np.zeros(size, dtype=np.int64)
            self._place(np.arange(self.n, dtype=np.int64))
        else:
            self._place(codes)
        return codes

    def _place(self, codes: np.ndarray) -> None:
        """Put `codes` (not in the table) in free slots, from their hash's slot on."""
        mask = len(self._slot_code) - 1
        h = self.hashes[codes]
        slot = h & mask
        todo = np.arange(len(codes))
        while len(todo):
            s = slot[todo]
            free = np.flatnonzero(self._slot_code[s] < 0)
            # of several codes wanting one free slot, the first gets it; the others probe on
            fs, first = np.unique(s[free], return_index=True)
            won = todo[free[first]]
            self._slot_code[fs] = codes[won]
            self._slot_hash[fs] = h[won]
            left = np.ones(len(todo), dtype=bool)
            left[free[first]] = False
            todo = todo[left]
            slot[todo] = (slot[todo] + 1) & mask


_key_hash = hash   # (tests give the key state a hash with collisions)


class _Discard(list):
    """A list that keeps nothing (the opened/closed versions nobody asked for)."""

    def append(self, _v: Any) -> None:
        pass


