"""The facade: `ctxdb.open()` wires a log into a Store and exposes the embedded API.

    db = ctxdb.open("data")          # or: with ctxdb.open() as db:
    db.append([{...}, ...])          # -> seqs (a duplicate reports its existing seq)
    db.ingest("events.ndjson.gz")    # -> IngestReport
    for ev in db.read(subject="order:*", as_of="2h ago"): ...
    db.stats()
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from .codec import build_batch, envelopes_from_objects
from .config import KINDS, Config
from .config import load_file as load_config
from .errors import AccessDenied, BadInput, ConfigError, CorruptionError, CtxdbError, ReadOnlyError
from .events import Event
from .ingest import Ingest, IngestReport, Progress
from .items import ItemStore
from .live import Subscription, Views
from .log import BaseLog, Transaction
from .log_disk import DEFAULT_SEGMENT_EVENTS, DiskLog, Recovery
from .projector import DECISION_TYPE, FORGET_TYPE, HOLD_TYPE, POLICY_TYPE, PythonRule, Projector, rules_fingerprint
from .snapshot import ITEMS_FILE, Manifest, Snapshots
from .view import View
from .embed import Embedder, get_embedder
from .semantic import Hit, Semantic

if TYPE_CHECKING:
    from .audit import AuditReport, ReplayReport
    from .erase import PurgeReport
    from .retention import RetentionReport
    from .verify_purge import ScanReport
    from .etl import LLMWorker
from .vectors import EmbeddingStore, stored_embedding_state

VECTORS_DIR = "vectors"

DEFAULT_PATH = "data"


def default_path() -> str:
    return os.environ.get("CTXDB_PATH") or DEFAULT_PATH


class Store:
    """An open ctxdb store. Thread-safe; one writer process per store (others open read-only).

    Wiring: a log (events), an item store (DuckDB item versions), a projector (rules -> items),
    live views (materialized per agent, pushed to subscribers), snapshots, and the semantic side
    (embedder, stored embeddings, keyword index) behind query-aware views and search. The item side is
    assembled on first use (a view, a subscription, `wait`), so Python rules registered with
    `@db.rule` before that apply from the first event."""

    def __init__(self, log: BaseLog, path: Path | None = None, *, config: str | os.PathLike | None = None,
                 readonly: bool = False, embedder: "Embedder | None | str" = "config") -> None:
        self.path = path
        self._embedder_arg = embedder
        self.log = log
        self.readonly = readonly
        self._config_arg = config
        self._python_rules: list[PythonRule] = []
        self._engine: Views | None = None
        self._engine_lock = threading.RLock()   # also held by a purge while files change
        from .erase import Salt

        self._salt = Salt(path)
        self._setup_atrest()
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._last_snapshot = 0
        self.restored_from: Manifest | None = None
        self._policy_checked = False
        self._llm: "LLMWorker | None" = None

    def _setup_atrest(self) -> None:
        """[privacy] encrypt_subjects (from the config file; without one, from `privacy.json`,
        which records the last config's settings): payloads and item texts of matching subjects
        are encrypted at rest (atrest.py). Never reads the log, so opening stays cheap."""
        import json as _json

        try:
            cfg = self._resolve_config()
        except CtxdbError:
            cfg = None  # a bad config file is reported by the first append or view
        rec = None if self.path is None else self.path / "privacy.json"
        globs, keys_dir = (), None
        if cfg is not None:
            globs, keys_dir = cfg.encrypt_subjects, cfg.keys_dir
            if rec is not None and not self.readonly and (globs or rec.exists()):
                from .segment import write_atomic

                want = _json.dumps({"encrypt_subjects": list(globs), "keys_dir": keys_dir}).encode()
                if not rec.exists() or rec.read_bytes() != want:
                    write_atomic(rec, want)
        elif rec is not None and rec.exists():
            try:
                d = _json.loads(rec.read_bytes())
                globs, keys_dir = tuple(d.get("encrypt_subjects", ())), d.get("keys_dir")
            except (ValueError, AttributeError, OSError):
                globs = ()
        if globs or (rec is not None and rec.exists()):
            from .atrest import AtRest

            self.log.atrest = AtRest.for_store(self.path, tuple(globs), keys_dir, readonly=self.readonly)

    # ---- writing -------------------------------------------------------------------------
    def append(self, events: Iterable[Any], *, source: str = "") -> list[int]:
        """Append events atomically (all or none). Each event is a dict with the envelope fields
        (`type`, `subject`, `time`, `data`, optional `id`, `source`, `meta`, other attributes),
        a JSON line, or an `Envelope`. Returns one seq per input event; a duplicate (same
        `source` and `id` as a logged event, or as an earlier event of this call) gets the seq
        of the event it duplicates and appends nothing."""
        if not self._policy_checked:
            self._ensure_policy(self._resolve_config())  # a bad config raises here, never the default
        envs = envelopes_from_objects(events)
        if not envs:
            return []
        try:
            batch = build_batch(envs, default_source=source)
        except BadInput as exc:
            raise BadInput(f"event #{exc.row}: {exc.reason}" if exc.row is not None else exc.reason,
                           field=exc.field, expected=exc.expected) from None
        return self.log.append_batch(batch).tolist()

    def ingest(
        self, path_or_file: str | os.PathLike | IO[bytes] | list, format: str = "auto", *,
        skip_bad: bool = False, rejects: str | None = None, progress: Progress | None = None,
        stream: bool = False, source: str = "", batch_events: int | None = None,
        idle_commit: float = 1.0,
    ) -> IngestReport:
        """Ingest files ('-' is stdin). Without `stream`, the whole call is one transaction: a
        bad record raises BadInput (file, line, field) and nothing is appended. With `stream`,
        every batch commits on its own, when full or after `idle_commit` seconds without input."""
        if not self._policy_checked:
            self._ensure_policy(self._resolve_config())  # a bad config raises here, never the default
        sources = path_or_file if isinstance(path_or_file, list) else [path_or_file]
        kw: dict[str, Any] = {}
        if batch_events:
            kw["batch_events"] = batch_events
        job = Ingest(self.log, format=format, skip_bad=skip_bad, rejects=rejects, progress=progress,
                     default_source=source, idle_commit=idle_commit, **kw)
        return job.run(sources, stream=stream)

    def transaction(self) -> Transaction:
        return self.log.transaction()

    # ---- rules, policies and views -------------------------------------------------------
    def rule(self, pattern: str, *, name: str | None = None) -> Callable:
        """Register a Python projector for event types matching `pattern` (a glob):

            @db.rule("order.*")
            def order_status(event):            # -> iterable of ctxdb.Upsert / ctxdb.Retract
                yield ctxdb.Upsert(key=f"order:{event.json()['id']}/status", text=..., kind="fact")

        Register before the first view, subscription or wait: a rule must see every event."""
        from .config import check_glob

        try:
            check_glob(pattern)
        except ValueError as exc:
            raise ConfigError(f"@db.rule: {exc}", field="pattern") from None

        def deco(fn: Callable) -> Callable:
            if self._engine is not None:
                raise ConfigError(f"@db.rule({pattern!r}) registered after projection started: register "
                                  "Python rules right after ctxdb.open(), before the first view")
            self._python_rules.append((name or getattr(fn, "__name__", "rule"), pattern, fn))
            return fn
        return deco

    def config(self) -> "Config":
        """The config (rules and agent policies) in force at the projected position."""
        return self._views().projector.config

    def view(self, agent: str, *, as_of: datetime | str | None = None, seq: int | None = None,
             budget: int | None = None, explain: bool = False, valid_at: datetime | str | None = None,
             query: str | None = None, auditor: str | None = None) -> View:
        """The context view of `agent`: current (materialized), at a log position (`seq`), as the
        log stood at a time (`as_of`: datetime, RFC 3339 or '2h ago'), or what was true at a
        time as known now (`valid_at`). A past view equals the one served live then, byte for
        byte. With `query`, relevance to it joins priority and recency in the score (the same
        position and query give the same bytes later).

        Access: the agent's own read runs under the policy in force at the position, narrowed by
        the grants it holds now and with every forgotten subject left out. `auditor` names a
        principal with role "auditor" in the current config: it reads the view exactly as it
        was, tombstoned data included. Raises AccessDenied for an agent without a policy (then or
        now) or an auditor without the role."""
        return self._views().view(agent, as_of=as_of, seq=seq, budget=budget, explain=explain, valid_at=valid_at,
                                  query=query, auditor=auditor)

    def search(self, agent: str, query: str, *, k: int = 10, as_of: datetime | str | None = None,
               seq: int | None = None, auditor: str | None = None) -> "list[Hit]":
        """The `k` items most relevant to `query` (vector similarity fused with BM25) among the
        items `agent` may see at the position (default: now); identical texts count once.
        Access as for view()."""
        return self._views().search(agent, query, k=k, as_of=as_of, seq=seq, auditor=auditor)

    def forget(self, subject: str, *, reason: str | None = None) -> int:
        """Tombstone `subject`: from the returned position on, its items are out of every view
        and search (live and as of later positions), and later events about it are not
        projected. Agents never read it again at any position; an auditor still reads views as
        they were before the tombstone. The events stay in the log: purge() erases them."""
        _check_subject(subject)
        data: dict[str, Any] = {}
        if reason is not None:
            data["reason"] = str(reason)
        return self.append([{"id": "forget-" + uuid.uuid4().hex, "source": "ctxdb", "type": FORGET_TYPE,
                             "subject": subject, "time": _now_iso(), "data": data}])[0]

    def purge(self, subject: str, *, progress: Callable[[str], None] | None = None) -> "PurgeReport":
        """Erase `subject`'s personal data from every file of the store (tombstoning it first if
        needed): log segments keep content-free stubs, the item store is rewritten without it,
        its embeddings and the vector index, snapshots and set-aside files go; a purge receipt
        (counts and a salted subject hash) is appended. Crash-safe: an interrupted purge is
        completed by the next open. Views that never held the subject keep their hashes;
        receipts that listed its items still verify (by the kept item hashes). Raises
        AccessDenied for a subject under legal hold."""
        from .erase import purge

        return purge(self, subject, progress)

    def retain(self, *, now: datetime | str | None = None, dry_run: bool = False,
               progress: Callable[[str], None] | None = None) -> "RetentionReport":
        """Apply the config's [[retention]] entries: erase (as a purge does, leaving content-free
        stubs) every event whose time is older than its entry allows at `now` (default: the
        wall clock), except ctxdb's own events and events about subjects under legal hold.
        Items are re-derived without them; receipts that listed erased item versions keep
        placeholders and still verify; a ctxdb.retention receipt records the counts. With
        `dry_run`, only reports what would go. Crash-safe like purge()."""
        from .retention import retain

        return retain(self, now=now, dry_run=dry_run, progress=progress)

    def hold(self, subject: str, *, release: bool = False, reason: str | None = None) -> int:
        """Put `subject` under legal hold (or release it): a held subject cannot be purged and
        retention skips it. Returns the seq of the hold event."""
        _check_subject(subject)
        data: dict[str, Any] = {"release": bool(release)}
        if reason is not None:
            data["reason"] = str(reason)
        seq = self.append([{"id": "hold-" + uuid.uuid4().hex, "source": "ctxdb", "type": HOLD_TYPE,
                            "subject": subject, "time": _now_iso(), "data": data}])[0]
        self.wait(seq)
        return seq

    def holds(self) -> dict[str, int]:
        """Subjects under legal hold and the seq each hold began."""
        views = self._views()
        views.catch_up()
        return dict(views.projector.holds)

    def verify_purge(self, subject: str, markers: Iterable[str] = ()) -> "ScanReport":
        """Scan every file of the store by its format for `subject` and `markers` (texts you
        know were the subject's); `report.ok` is True when nothing is found."""
        from .verify_purge import scan_store

        if self.path is None:
            raise BadInput("verify-purge scans files: it needs a store on disk", field="store")
        return scan_store(self.path, [subject, *markers])

    def forgotten(self) -> dict[str, int]:
        """Tombstoned subjects (not yet purged) and the seq of each tombstone."""
        return dict(self._views().projector.forgotten)

    def subscribe(self, agent: str) -> Subscription:
        """Updates of `agent`'s view as it changes (sync or async iterator of ViewUpdate); the
        first update is the current view. Each update is assembled under the policy in force at
        its position; if a policy change removes the agent, iteration raises AccessDenied."""
        return self._views().subscribe(agent)

    def record_decision(self, agent: str, view: View, *, output: Any = None, meta: Any = None) -> str:
        """Append a decision receipt (agent, view seq and hash, every item's key and hash); the
        items it lists are reinforced from its position on. Returns the decision id."""
        did = "d-" + uuid.uuid4().hex
        data = {"agent": agent, "view_seq": view.seq, "view_hash": view.hash, "policy_version": view.policy_version,
                "policy_hash": view.policy_hash, "tokenizer": view.tokenizer, "renderer": view.renderer,
                "budget": view.budget, "items": [{"key": i.key, "kind": i.kind, "hash": i.hash} for i in view.items]}
        if view.valid_at is not None:
            data["valid_at"] = view.valid_at
        if view.query is not None:
            data["query"] = view.query
        if output is not None:
            data["output"] = output
        if meta is not None:
            data["meta"] = meta
        self.append([{"id": did, "source": "ctxdb", "type": DECISION_TYPE, "subject": f"agent:{agent}",
                      "time": _now_iso(), "data": data}])
        return did

    def audit(self, decision_id: str) -> "AuditReport":
        """Re-assemble the view a decision receipt names (as of its seq, with its query and
        budget), check its hash and every item's, with lineage back to the source events."""
        from .audit import audit

        return audit(self, decision_id)

    def replay_verify(self, progress: Callable[[int, int], None] | None = None) -> "ReplayReport":
        """Rebuild every projection from the log alone into a scratch store and re-verify every
        decision receipt against it; also compares the scratch item versions with the live item
        store. `report.ok` is False on any mismatch."""
        from .audit import replay_verify

        return replay_verify(self, progress)

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Replay the whole log into a fresh item store and swap it in. Reports whether the
        rebuilt item versions are identical to the ones they replace."""
        from .rebuild import rebuild

        views = self._views()
        views.catch_up()
        report = rebuild(self, views, progress=progress)
        self._close_engine()
        return report

    def snapshot(self) -> Manifest:
        """Take a snapshot of the projected state now (also taken every [snapshots] every events)."""
        views = self._views()
        views.catch_up()
        with views._lock:
            return self._take_snapshot(views.projector.seq)

    def snapshots(self) -> list[Manifest]:
        return Snapshots(self._snap_root()).list() if self.path else []

    # ---- reading -------------------------------------------------------------------------
    def read(self, *, from_seq: int | None = None, to_seq: int | None = None,
             as_of: datetime | str | None = None, subject: str | None = None,
             type: str | None = None, agent: str | None = None) -> Iterator[Event]:
        """Events in seq order, streamed lazily. `as_of` (a datetime, RFC 3339 or '2h ago') keeps
        what the log had recorded by then; `subject`/`type` match exactly or as globs.

        `agent`: a read made on behalf of an agent: only events about subjects its current policy
        grants, never a forgotten subject's. Asking for an exact subject it may not read raises
        AccessDenied (a glob is narrowed instead)."""
        if agent is None:
            return self.log.read(from_seq=from_seq, to_seq=to_seq, as_of=as_of, subject=subject, type=type)
        from .log import events_from_batch

        return (ev for b in self.read_batches(from_seq=from_seq, to_seq=to_seq, as_of=as_of, subject=subject,
                                              type=type, agent=agent) for ev in events_from_batch(b))

    def read_batches(self, *, agent: str | None = None, **kw: Any) -> Iterator[pa.RecordBatch]:
        """Like read(), as Arrow record batches (for bulk consumers)."""
        if agent is None:
            return self.log.read_batches(**kw)
        from .access import event_policy, may_read_subject_glob, subject_mask

        views = self._views()
        views.catch_up()  # the grants and tombstones in force now
        pol = event_policy(views.projector.config, agent, views.projector.forgotten)
        subj = kw.get("subject")
        if subj is not None and not may_read_subject_glob(pol, subj):
            raise AccessDenied(f"agent {agent!r} may not read events about {subj!r} (its policy grants "
                               f"{', '.join(pol.subjects)})")
        # Raw events carry no tags or kinds: an event is hidden when any item it produced is one
        # the policy denies (deny_tags / allow_tags / kinds), so the log never leaks what views hide.
        hidden = None
        if pol.deny_tags or pol.allow_tags is not None or set(pol.kinds) != set(KINDS):
            views.persist()
            hidden = pa.array(views.items.lineage_denied(pol.kinds, pol.deny_tags, pol.allow_tags), pa.int64())

        def keep(b: pa.RecordBatch) -> pa.RecordBatch:
            mask = subject_mask(b.column("subject"), pol)
            if hidden is not None and len(hidden):
                mask = pc.and_(mask, pc.invert(pc.is_in(b.column("seq"), hidden)))
            return b.filter(mask)
        return (f for f in (keep(b) for b in self.log.read_batches(**kw)) if f.num_rows)

    def seq_at(self, as_of: datetime | str) -> int:
        return self.log.seq_at(as_of)

    @property
    def last_seq(self) -> int:
        return self.log.last_seq

    def wait(self, seq: int | None = None, timeout: float | None = None) -> bool:
        """Block until `seq` (default: the current end of the log) is visible and covered by every
        background projector: items and views, and embeddings. False on timeout."""
        target = self.log.last_seq if seq is None else seq
        deadline = None if timeout is None else time.monotonic() + timeout
        left = lambda: None if deadline is None else max(0.0, deadline - time.monotonic())  # noqa: E731
        if not self.log.wait_for(target, timeout):
            return False
        views = self._views()
        if not views.wait(target, left()):
            return False
        if views.semantic is not None and views.live:
            return views.semantic.wait(target, left())
        return True

    def refresh(self) -> None:
        self.log.refresh()

    def stats(self) -> dict[str, Any]:
        out = dict(self.log.stats())  # type: ignore[attr-defined]
        eng = self._engine
        if eng is not None:
            p = eng.projector
            out["projected_seq"] = p.seq
            out["projector_lag"] = max(0, self.log.last_seq - p.seq)
            out["live_items"] = len(p.current)
            out["policy_version"] = p.policies[-1].version if p.policies else 0
            out["rules_skipped"] = p.stats.skipped
            if p.stats.last_skip:
                out["last_skip"] = p.stats.last_skip
            sem = eng.semantic
            if sem is not None:
                out.update(embedding_model=sem.embedder.model_id, embedded_seq=sem.seq,
                           embedder_lag=max(0, self.log.last_seq - sem.seq), embeddings=len(sem.store),
                           embed_queue=sem.pending())
                if sem.error is not None:
                    out["embedder_error"] = str(sem.error)
            if p.llm_open or self._llm is not None:
                out["llm_requests_open"] = len(p.llm_open)
            if self._llm is not None:
                out.update(llm_model=self._llm.summarizer.model_id, llm_answered=self._llm.answered,
                           llm_failures=self._llm.failures)
                if self._llm.last_error:
                    out["llm_last_error"] = self._llm.last_error
        elif self.path is not None:
            st = stored_embedding_state(self.path / VECTORS_DIR)
            if st is not None:
                out.update(embedding_model=st.model, embedded_seq=st.seq,
                           embedder_lag=max(0, self.log.last_seq - st.seq), embeddings=st.n)
        return out

    @property
    def recovery(self) -> Recovery:
        return getattr(self.log, "recovery", Recovery([]))

    # ---- assembling the item side ---------------------------------------------------------
    def _snap_root(self) -> Path:
        assert self.path is not None
        return self.path / "snapshots"

    def _views(self) -> Views:
        eng = self._engine
        if eng is not None:
            return eng
        with self._engine_lock:
            if self._engine is None:
                cfg = self._resolve_config()  # read once per build; a bad config raises here, every time
                self._engine = self._build_engine(cfg)
                self._ensure_policy(cfg)
                self._engine.start()
                self._llm = self._build_llm_worker(self._engine, cfg or self._engine.projector.config)
            return self._engine

    def _build_llm_worker(self, eng: Views, cfg: Config) -> "LLMWorker | None":
        """The summarizer worker, when a rule asks for LLM summaries (writer processes only)."""
        if self.readonly:
            return None
        wants = any(r.llm is not None or (r.summarize is not None and r.summarize.llm) for r in cfg.rules)
        if not wants and not eng.projector.llm_open:
            return None
        from .etl import LLMWorker
        from .summarize import summarizer_from_config

        def open_requests() -> dict[str, dict]:
            with eng._lock:
                return dict(eng.projector.llm_open)

        w = LLMWorker(summarizer_from_config(cfg.summarizer), open_requests, self.append)
        w.start()
        w.poke()
        return w

    def _projector(self, items: ItemStore, purged: "set[str] | dict[str, int] | None" = None) -> Projector:
        """A projector over `items` with this store's Python rules and purge salt (`purged`: a
        replay's knowledge of every purge, see erase.purged_stubs)."""
        return Projector(items, self._python_rules, stub_subject=self._salt.stub_subject, purged=purged)

    def _build_engine(self, cfg: "Config | None") -> Views:
        items = self._open_items()
        projector = self._projector(items)
        self._last_snapshot = projector.seq
        return Views(self.log, items, projector, live=not self.readonly, on_projected=self._on_projected,
                     semantic=self._build_semantic(cfg or projector.config))

    def _build_semantic(self, cfg: Config) -> "Semantic | None":
        """The embedder the config names (CTXDB_EMBEDDINGS=off turns it off for this process),
        its stored embeddings under vectors/, and the keyword index."""
        emb = self._embedder_arg
        if emb == "config":
            name = os.environ.get("CTXDB_EMBEDDINGS") or cfg.embed_model
            emb = get_embedder(name)
        if emb is None:
            return None
        root = None if self.path is None else self.path / VECTORS_DIR
        store = EmbeddingStore(root, emb.model_id, emb.dim, readonly=self.readonly)
        return Semantic(emb, store, live=not self.readonly, index_kind=cfg.index_kind, flat_max=cfg.index_flat_max)

    def _open_items(self) -> ItemStore:
        if self.path is None:
            return ItemStore(None, atrest=self.log.atrest)
        snaps = Snapshots(self._snap_root())
        if self.readonly:
            # The writer process holds items.duckdb; read from a private copy of the newest
            # snapshot (or from nothing) and project the rest of the log in memory.
            self._scratch = tempfile.TemporaryDirectory(prefix="ctxdb-ro-")
            dest = Path(self._scratch.name) / ITEMS_FILE
            self.restored_from = snaps.restore_latest(dest, self.log.last_seq)
            return ItemStore(dest if self.restored_from else None, atrest=self.log.atrest)
        f = self.path / ITEMS_FILE
        if not f.exists():
            self.restored_from = snaps.restore_latest(f, self.log.last_seq)
        try:
            items = ItemStore(f, atrest=self.log.atrest)
            seq = items.checkpoint()[0]
        except CtxdbError:
            # Unreadable item store: keep it aside for inspection, restore or re-project.
            aside = f.with_name(f"{ITEMS_FILE}.unreadable-{int(time.time())}")
            os.replace(f, aside)
            wal = f.with_name(ITEMS_FILE + ".wal")
            if wal.exists():
                os.replace(wal, aside.with_name(aside.name + ".wal"))
            self.restored_from = snaps.restore_latest(f, self.log.last_seq)
            items = ItemStore(f, atrest=self.log.atrest)
            seq = items.checkpoint()[0]
        if seq > self.log.last_seq:
            raise CorruptionError(f"the item store is at seq {seq} but the log ends at {self.log.last_seq}: "
                                  "the log lost committed events; restore the log or run `ctxdb rebuild`",
                                  file=str(f))
        return items

    def _resolve_config(self) -> "Config | None":
        if self._config_arg is not None:
            return load_config(self._config_arg)
        for cand in ([self.path / "ctxdb.toml"] if self.path else []) + [Path.cwd() / "ctxdb.toml"]:
            if cand.is_file():
                return load_config(cand)
        return None

    def _ensure_policy(self, cfg: "Config | None") -> None:
        """Append a policy event when the config file (`cfg`, as resolved) differs from the
        policy the log holds."""
        if self._policy_checked:
            return
        self._policy_checked = True
        if cfg is None or self.readonly:
            return
        # One scan of the log's policy events gives both the newest policy and the count.
        policies = list(self.log.read(type=POLICY_TYPE))
        try:
            latest = policies[-1].json().get("hash") if policies else None
        except (ValueError, AttributeError):  # a policy event we cannot read: append ours
            latest = None
        if cfg.hash == latest:
            return
        version = len(policies) + 1
        self.append([{"id": f"policy-{version}-{cfg.hash}", "source": "ctxdb", "type": POLICY_TYPE,
                      "subject": "ctxdb:policy", "time": _now_iso(),
                      "data": {"version": version, "hash": cfg.hash, "file": cfg.file, "config": cfg.raw}}])

    def _on_projected(self, seq: int) -> None:
        if self._llm is not None:
            self._llm.poke()
        eng = self._engine
        if eng is None or self.path is None or self.readonly:
            return
        every = eng.projector.config.snapshot_every
        if every and seq - self._last_snapshot >= every:
            self._take_snapshot(seq)

    def _take_snapshot(self, seq: int) -> Manifest:
        eng = self._views() if self._engine is None else self._engine
        if self.path is None or self.readonly:
            raise ReadOnlyError("take a snapshot")
        p = eng.projector
        eng.persist()
        with eng.items._lock:
            eng.items.flush()
            m = Snapshots(self._snap_root()).take(
                self.path / ITEMS_FILE, seq=seq, policy_version=p.policies[-1].version if p.policies else 0,
                policy_hash=p.config.hash, rules=rules_fingerprint(p.config, p.python_rules))
        Snapshots(self._snap_root()).prune(p.config.snapshot_retain)
        self._last_snapshot = seq
        return m

    def _close_engine(self) -> None:
        with self._engine_lock:
            eng, self._engine = self._engine, None
            llm, self._llm = self._llm, None
            self._policy_checked = True
        if llm is not None:
            llm.close()
        if eng is not None:
            eng.close()
            eng.items.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # ---- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self._close_engine()
        self.log.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open(
    path: str | os.PathLike | None = None, *, readonly: bool = False,
    segment_events: int | None = None, sync: bool = True,
    clock: Callable[[], int] | None = None, config: str | os.PathLike | None = None,
    embedder: "Embedder | None | str" = "config",
) -> Store:
    """Open (creating if needed) the store at `path` (default $CTXDB_PATH or ./data).

    One writer per store: a second writer raises LockedError naming the holder's pid; any number
    of `readonly=True` opens may read alongside. `sync=False` skips fsync (tests/benchmarks
    only: acknowledged events may be lost on power failure).

    `config`: a ctxdb.toml path; default `ctxdb.toml` in the store folder, else in the working
    directory, else the policy the log already holds (else a built-in default). A config that
    differs from the log's current policy is appended as a new policy version.

    `embedder`: "config" (default: the model [embeddings] names, all-MiniLM-L6-v2), None for no
    embeddings (no query-aware views or search), or any object with model_id, dim and encode()."""
    p = Path(path if path is not None else default_path())
    if segment_events is None:
        segment_events = int(os.environ.get("CTXDB_SEGMENT_EVENTS") or DEFAULT_SEGMENT_EVENTS)
    if config is not None:
        load_config(config)  # a bad config fails at open, before anything is written
    log = DiskLog(p, readonly=readonly, segment_events=segment_events, clock=clock, sync=sync)
    store = Store(log, p, config=config, readonly=readonly, embedder=embedder)
    if not readonly:
        from .erase import resume

        try:
            rep = resume(store)  # a purge interrupted by a crash is completed before anything else
        except BaseException:
            store.close()
            raise
        if rep is not None:
            what = "retention run" if type(rep).__name__ == "RetentionReport" else "purge"
            log.recovery.messages.append(f"completed an interrupted {what} (receipt at seq {rep.receipt_seq})")
    return store


def open_memory(clock: Callable[[], int] | None = None, *, config: str | os.PathLike | None = None,
                embedder: "Embedder | None | str" = "config") -> Store:
    """A store with nothing on disk (tests, notebooks)."""
    from .log import MemoryLog

    return Store(MemoryLog(clock), config=config, embedder=embedder)


def _check_subject(subject: str) -> None:
    if not isinstance(subject, str) or not subject.strip():
        raise BadInput(f"expected a subject such as \"user:42\", got {subject!r}", field="subject",
                       expected="a non-empty subject string")
    if "*" in subject or "?" in subject:
        raise BadInput(f"{subject!r} is a glob: forget and purge name one subject exactly", field="subject",
                       expected="an exact subject such as \"user:42\"")
    if subject.startswith(("ctxdb:", "agent:", "purged:")):
        raise BadInput(f"{subject!r} is a system subject", field="subject",
                       expected="a data subject such as \"user:42\"")


def _now_iso() -> str:
    from datetime import timezone

    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
