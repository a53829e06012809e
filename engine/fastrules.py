"""The projector's fast path: template rules compiled to Python functions, and batch helpers.

A *simple* rule — a template rule that upserts (no `retract`, `summarize` or `llm`) — is compiled
into one function that renders its key, text, subject and tags for one event, given the event's
decoded `data`/`meta` and the batch's columns. The projector (Projector._fast_row) runs it for the
rows whose event type has only simple rules and does the version bookkeeping itself; every other
row (system events, Python rules, retracts, summaries, LLM requests, purged subjects) takes the
per-event path. Both paths must produce identical item versions; tests/test_fastpath.py compares
them on awkward inputs.

What makes the compiled functions exact copies of Template.render:
  - JSON paths are read with a plain subscript chain first; on any KeyError/TypeError the path
    is walked again by template.walk, the function EventContext.get uses (list indexes, the
    MissingField naming the first absent step);
  - values are formatted by template._format, except the two cases it returns unchanged
    (a str without spec) or as str() (an int without spec), which are inlined;
  - parts are evaluated in the order Template.render evaluates them (key, text, subject, tags),
    so the first missing field reported is the same.
Times (`{time}`, `{time:%Y-%m-%d}`, `{recorded_at...}`) are formatted for the whole batch with
pyarrow when the spec uses only directives whose output pyarrow and CPython agree on (checked by
the tests) and the time lies in 1970..9999; other rows fall back to datetime.strftime.
"""
from __future__ import annotations

import hashlib
import re
from operator import itemgetter
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import msgspec

from .codec import SMALL_BATCH  # below it, Python formats the times (pyarrow calls cost ~0.1 ms each)
from .config import Rule
from .digest import content_hash
from .redact import redact
from .events import utc_from_micros
from .redact import _PRECHECK
from .template import ENVELOPE_FIELDS, MissingField, Template, _format, walk

__all__ = ["ArrowBatch", "Batch", "BatchTimes", "FastRule", "FastRules", "Rendered", "compile_rule", "may_redact",
           "render_batch", "render_row", "render_rows", "seal", "seal_many", "seal_rendered", "seal_rows", "time_strings"]
_DECODER = msgspec.json.Decoder()

# strftime directives whose output pyarrow (C++ date library, "C" locale) and CPython/glibc agree
# on for years 1970..9999; names of days and months, %c, %x, %Z etc. are left to Python.
_ARROW_DIRECTIVES = set("YmdHMS%")
_MAX_US = 253_402_300_800_000_000  # 10000-01-01T00:00:00Z
_DIRECTIVE = re.compile(r"%(.)", re.S)

# A text can only be changed by redact() if one of its trigger substrings occurs in text.lower()
# or it could hold a card number: 13+ contiguous digits, or 4 digits followed by at least two
# separated groups of 3-6 digits (redact._card_at: a grouped card starts with 4 digits, the others
# have 3-6, and 13 digits need at least three groups). Texts matching neither are returned
# unchanged by redact(), so the projector skips the call.
_TRIGGER_RE = "|".join(re.escape(t) for t in _PRECHECK)
_CARD_RE = r"[0-9]{13}|[0-9]{4}[ -][0-9]{3,6}[ -][0-9]{3,6}"
_TRIGGER_RX = re.compile(_TRIGGER_RE)
_CARD_RX = re.compile(_CARD_RE)
_ANY_RE = f"{_CARD_RE}|(?i:{_TRIGGER_RE})"   # RE2: either, in one pass (digits have no case)


def may_redact(text: str) -> bool:
    """False only if redact(text) is certainly (text, ())."""
    return _CARD_RX.search(text) is not None or _TRIGGER_RX.search(text.lower()) is not None


def may_redact_many(texts: list[str], arr: pa.Array | None = None) -> list[bool]:
    """may_redact of each text, with RE2 over the whole list (`arr`: the texts as an Arrow
    array, if the caller has one); texts that are not ASCII (where str.lower() and RE2's case
    folding could differ) are checked by may_redact itself."""
    if not texts:
        return []
    if arr is None:
        try:
            arr = pa.array(texts, pa.string())
        except (UnicodeError, pa.ArrowException):  # e.g. a lone surrogate: let Python decide
            return [may_redact(t) for t in texts]
    hit = pc.match_substring_regex(arr, _ANY_RE).to_pylist()
    for i in pc.indices_nonzero(pc.invert(pc.string_is_ascii(arr))).to_pylist():
        hit[i] = may_redact(texts[i])
    return hit


def seal(text: str) -> tuple[str, str | None, str]:
    """(redacted text, item meta recording the redactions or None, content hash)."""
    meta = None
    if may_redact(text):
        text, meta = _redacted(text)
    return text, meta, content_hash(text)


def _redacted(text: str) -> tuple[str, str | None]:
    text, red = redact(text)
    return text, None if not red else msgspec.json.encode(
        {"redactions": [{"kind": r.kind, "start": r.start, "end": r.end} for r in red]}).decode()


def render_row(rules: list["FastRule"], needs_data: bool, needs_meta: bool, B: "Batch", r: int) -> list:
    """Render each rule for row r: (key, text, subject, tags) or the exception raised."""
    try:
        d = msgspec.json.decode(B.data[r]) if needs_data else None
        raw = B.meta[r] if needs_meta else None
        m = None if raw is None else msgspec.json.decode(raw)
    except Exception as exc:  # noqa: BLE001 (raised again where the per-event path would raise it)
        return [exc] * len(rules)
    out: list = []
    for f in rules:
        try:
            out.append(f.render(d, m, B, r))
        except Exception as exc:  # noqa: BLE001 (MissingField: a skip; anything else: raised later)
            out.append(exc)
    return out


def seal_rows(rows: list) -> list:
    """Redact and hash, in place, the texts of rendered rows (lists from render_row, or None):
    each (key, text, subject, tags) becomes (key, text, subject, tags, meta, hash)."""
    texts = [rec[1] for recs in rows if recs is not None for rec in recs if type(rec) is tuple]
    flags = may_redact_many(texts) if len(texts) > 64 else [may_redact(t) for t in texts]
    i = 0
    for recs in rows:
        if recs is None:
            continue
        for j, rec in enumerate(recs):
            if type(rec) is tuple:
                text, meta = rec[1], None
                if flags[i]:
                    text, meta = _redacted(text)
                recs[j] = (rec[0], text, rec[2], rec[3], meta, content_hash(text))
                i += 1
    return rows


class Batch:
    """Columns of one batch of events as Python lists (row r of each), plus the formatted times
    the compiled rules ask for: times[(field, spec)][r] is the text or None (format it in Python)."""

    __slots__ = ("seq", "id", "source", "type", "subject", "time_ts", "recorded_at", "data", "meta", "times")

    def __init__(self, cols: dict[str, list], times: dict[tuple[str, str], list]) -> None:
        self.seq, self.id, self.source = cols["seq"], cols["id"], cols["source"]
        self.type, self.subject = cols["type"], cols["subject"]
        self.time_ts, self.recorded_at = cols["time_ts"], cols["recorded_at"]
        self.data, self.meta = cols["data"], cols["meta"]
        self.times = times


class ArrowBatch:
    """A Batch over an Arrow record batch whose columns become Python lists when first read
    (row r of each), with the same attributes as Batch (the compiled rules read either)."""

    _INT = ("time_ts", "recorded_at")

    def __init__(self, b: pa.RecordBatch, times: dict[tuple[str, str], list]) -> None:
        self._b = b
        self.times = times

    def __getattr__(self, name: str) -> list:
        if name.startswith("_") or name not in self._b.schema.names:
            raise AttributeError(name)
        col = self._b.column(name)
        out = (col.cast(pa.int64()) if name in self._INT else col).to_pylist()
        setattr(self, name, out)
        return out


def seal_many(texts: list[str], arr: pa.Array | None = None
              ) -> tuple[list[str], list[str | None], list[str], pa.Array | None]:
    """seal() of each text: (redacted texts, item metas, content hashes, the redacted texts as
    an Arrow array if `arr` — the texts as one — still is)."""
    flags = may_redact_many(texts, arr) if len(texts) > 64 else [may_redact(t) for t in texts]
    metas: list[str | None] = [None] * len(texts)
    if any(flags):
        texts = list(texts)
        for i, f in enumerate(flags):
            if f:
                red, metas[i] = _redacted(texts[i])
                if red != texts[i]:
                    texts[i], arr = red, None
    b2 = hashlib.blake2b
    return texts, metas, [b2(t.encode(), digest_size=16).hexdigest() for t in texts], arr


class FastRule:
    """A simple rule compiled: `render(d, m, batch, r)` -> (key, text, subject, tags), or raises
    MissingField; d/m are the decoded data/meta of row r (None when the rule reads neither).
    `render_many(ds, ms, batch, rows)` renders many rows in one call (see compile_rule)."""

    __slots__ = ("rule", "render", "render_many", "needs_data", "needs_meta", "times", "ttl_us", "rule_subject")

    def __init__(self, rule: Rule, render: Callable, needs_data: bool, needs_meta: bool,
                 times: set[tuple[str, str]], render_many: Callable | None = None) -> None:
        self.rule = rule
        self.render = render
        self.render_many = render_many
        self.needs_data, self.needs_meta = needs_data, needs_meta
        self.times = times
        self.ttl_us = rule.ttl_us
        self.rule_subject = rule.subject.source != "{subject}"   # renders its own subject


def _time_fallback(us: int, spec: str) -> str:
    return _format(utc_from_micros(us), spec)


class _Gen:
    """Generates the body of one render function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.n = 0
        self.needs_data = self.needs_meta = False
        self.times: set[tuple[str, str]] = set()
        self.hoisted: dict[str, str] = {}   # expression on B -> local name bound before the rows
        self.memo: dict[tuple, str] = {}     # (path, spec, default) -> the variable already holding it

    def hoist(self, expr: str) -> str:
        """A local bound once per call to `expr` (a column of the batch, or its formatted times)."""
        name = self.hoisted.get(expr)
        if name is None:
            name = self.hoisted[expr] = f"_h{len(self.hoisted)}"
        return name

    def const(self, value: Any) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def template(self, t: Template) -> str:
        """Emit statements rendering `t`; returns the name of the variable holding the text."""
        fmt = []  # one f-string (every field is a str: {x} is x itself)
        for literal, path, spec, default in t.parts:
            if literal:
                fmt.append(literal.replace("{", "{{").replace("}", "}}"))
            if path is not None:
                fmt.append("{" + self.field(path, spec, default) + "}")
        out = f"_t{self.n}"
        self.n += 1
        self.lines.append(f"{out} = f{''.join(fmt)!r}")
        return out

    def field(self, path: tuple[str, ...], spec: str, default: str | None) -> str:
        """Emit statements formatting one field (once per row: rendering is pure, and a field
        that is missing raises at its first use, in the order Template.render reads them)."""
        memo = self.memo.get((path, spec, default))
        if memo is not None:
            return memo
        self.memo[(path, spec, default)] = s = self._field(path, spec, default)
        return s

    def _field(self, path: tuple[str, ...], spec: str, default: str | None) -> str:
        v = f"_v{self.n}"
        s = f"_s{self.n}"
        self.n += 1
        root = path[0]
        L = self.lines
        if root in ("time", "recorded_at"):
            # a datetime is never None: the default never applies
            self.times.add((root, spec))
            col = "time_ts" if root == "time" else "recorded_at"
            key = self.const((root, spec))
            L.append(f"{s} = {self.hoist(f'B.times[{key}]')}[r]")
            L.append(f"if {s} is None: {s} = _time_fallback(B.{col}[r], {spec!r})")
            return s
        if root in ("data", "meta"):
            src = "d" if root == "data" else "m"
            if root == "data":
                self.needs_data = True
            else:
                self.needs_meta = True
            chain = src + "".join(f"[{p!r}]" for p in path[1:])
            pc_ = self.const(path)
            L.append("try:")
            L.append(f"    {v} = {chain}")
            L.append("except (KeyError, TypeError, IndexError):")
            if default is None:
                L.append(f"    {v} = _walk({src}, {pc_})")
            else:
                L.append("    try:")
                L.append(f"        {v} = _walk({src}, {pc_})")
                L.append("    except _Missing:")
                L.append(f"        {v} = None")
        else:
            assert root in ENVELOPE_FIELDS
            L.append(f"{v} = {self.hoist(f'B.{root}')}[r]")
        # _format(v, "") returns a str unchanged and an int or float as str(v): inlined
        fmt = (f"{v} if type({v}) is str else (str({v}) if type({v}) is int or type({v}) is float "
               f"else _format({v}, ''))"
               if not spec else f"_format({v}, {spec!r})")
        if default is None:
            L.append(f"{s} = {fmt}")
        else:
            L.append(f"{s} = {default!r} if {v} is None else ({fmt})")
        return s


def compile_rule(rule: Rule) -> FastRule | None:
    """The compiled form of a simple rule, or None for a rule the per-event path must run."""
    if rule.retract is not None or rule.summarize is not None or rule.llm is not None:
        return None
    if rule.key is None or rule.text is None:
        return None
    g = _Gen()
    key = g.template(rule.key)
    text = g.template(rule.text)
    own_subject = rule.subject.source != "{subject}"
    subject = g.template(rule.subject) if own_subject else "B.subject[r]"
    tags = [g.template(t) for t in rule.tags]
    tags_expr = f"({''.join(t + ', ' for t in tags)})"
    prologue = [f"{name} = {expr}" for expr, name in g.hoisted.items()]
    # one row: render(d, m, B, r) -> (key, text, subject, tags)
    src = ("def render(d, m, B, r):\n" + "".join("    " + ln + "\n" for ln in prologue + g.lines)
           + f"    return {key}, {text}, {subject}, {tags_expr}\n")
    # many rows: render_many(ds, ms, B, rows) -> (positions rendered, keys, texts, subjects
    # (None: the rows' own subjects), tags, [(position, MissingField)]); ds/ms are the decoded
    # data/meta of rows[i] (or None); any other exception propagates
    body = "".join("            " + ln + "\n" for ln in g.lines)
    src += ("def render_many(ds, ms, B, rows):\n" + "".join("    " + ln + "\n" for ln in prologue)
            + ("    I = []; K = []; T = []; S = []; G = []; X = []\n" if own_subject
               else "    I = []; K = []; T = []; S = None; G = []; X = []\n")
            + "    d = m = None\n"
            + "    for i in range(len(rows)):\n"
            + "        r = rows[i]\n"
            + ("        d = ds[i]\n" if g.needs_data else "")
            + ("        m = ms[i]\n" if g.needs_meta else "")
            + "        try:\n" + body
            + "        except _Missing as exc:\n"
            + "            X.append((i, exc))\n"
            + "            continue\n"
            + f"        I.append(i); K.append({key}); T.append({text}); G.append({tags_expr})\n"
            + (f"        S.append({subject})\n" if own_subject else "")
            + "    return I, K, T, S, G, X\n")
    ns: dict[str, Any] = {"_walk": walk, "_Missing": MissingField, "_format": _format,
                          "_time_fallback": _time_fallback, **g.consts}
    exec(compile(src, f"<rule {rule.name}>", "exec"), ns)  # noqa: S102 (source built from parsed templates)
    return FastRule(rule, ns["render"], g.needs_data, g.needs_meta, g.times, ns["render_many"])


def _arrow_spec(spec: str) -> bool:
    return ("%" not in _DIRECTIVE.sub("", spec) and "\0" not in spec
            and all(c in _ARROW_DIRECTIVES for c in _DIRECTIVE.findall(spec)))


# Where each directive sits in pyarrow's text of a timestamp[s] ("YYYY-MM-DD HH:MM:SS"): slicing
# that text is several times faster than pc.strftime (checked at import; else strftime is used).
_ISO_SLICES = {"Y": (0, 4), "m": (5, 7), "d": (8, 10), "H": (11, 13), "M": (14, 16), "S": (17, 19)}


def _iso_text_ok() -> bool:
    try:
        got = pa.array([0, 253_402_300_799, 1_700_000_000], pa.int64()).cast(pa.timestamp("s")).cast(pa.string())
        return got.to_pylist() == ["1970-01-01 00:00:00", "9999-12-31 23:59:59", "2023-11-14 22:13:20"]
    except pa.ArrowException:
        return False


_ISO_TEXT = _iso_text_ok()


def _strftime(secs: pa.Array, spec: str) -> pa.Array:
    """pc.strftime(secs, spec) for a spec of directives YmdHMS% (years 1970..9999), from slices
    of the timestamp's text."""
    if not _ISO_TEXT:
        return pc.strftime(secs.cast(pa.timestamp("s", tz="UTC")), spec)
    iso = secs.cast(pa.timestamp("s")).cast(pa.string())
    parts: list = []
    lit: list[str] = []
    i = 0
    while i < len(spec):
        c = spec[i]
        if c == "%" and i + 1 < len(spec) and spec[i + 1] in _ISO_SLICES:
            if lit:
                parts.append("".join(lit))
                lit = []
            a, b = _ISO_SLICES[spec[i + 1]]
            parts.append(pc.utf8_slice_codeunits(iso, a, b))
            i += 2
            continue
        if c == "%" and i + 1 < len(spec) and spec[i + 1] == "%":
            i += 1
        lit.append(c)
        i += 1
    if lit:
        parts.append("".join(lit))
    if not any(isinstance(x, pa.Array) for x in parts):  # no directive: the literal text
        return pc.if_else(pc.is_valid(iso), pa.scalar("".join(parts)), pa.scalar(None, pa.string()))
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "")


def time_strings(us: pa.Array, spec: str, mask: pa.Array | None = None) -> list[str | None]:
    """`{time:<spec>}` for each microsecond timestamp in `us` (int64), formatted with pyarrow, or
    None where Python must format it (a spec pyarrow may disagree on, a time outside 1970..9999,
    or a row outside `mask`)."""
    n = len(us)
    if n < SMALL_BATCH or not _arrow_spec(spec):
        return [None] * n  # a few rows (a live append): Python formats them sooner than Arrow's calls return
    ok = pc.and_(pc.greater_equal(us, 0), pc.less(us, _MAX_US))
    if mask is not None:
        ok = pc.and_(ok, mask)
    ok = pc.fill_null(ok, False)
    safe = pc.if_else(ok, us, pa.scalar(None, pa.int64()))
    secs = pc.divide(safe, 1_000_000)
    if spec:
        return _strftime(secs, spec).to_pylist()
    # isoformat(): seconds, then .ffffff only when there are microseconds, then Z for +00:00
    frac = pc.cast(pc.add(pc.remainder(safe, 1_000_000), 1_000_000), pa.string())
    frac = pc.if_else(pc.equal(pc.remainder(safe, 1_000_000), 0), "",
                      pc.binary_join_element_wise(".", pc.utf8_slice_codeunits(frac, 1), ""))
    return pc.binary_join_element_wise(_strftime(secs, "%Y-%m-%dT%H:%M:%S"), frac, "Z", "").to_pylist()


# ---- rendering runs of rows at once (the columnar path of a replay) -----------------------------
class FastRules:
    """The compiled rules of one event type (all simple)."""

    __slots__ = ("rules", "needs_data", "needs_meta", "times")

    def __init__(self, rules: list[FastRule]) -> None:
        self.rules = rules
        self.needs_data = any(f.needs_data for f in rules)
        self.needs_meta = any(f.needs_meta for f in rules)
        self.times = set().union(*(f.times for f in rules))


class BatchTimes(dict):
    """Batch.times: the formatted times of one batch, computed (with pyarrow) the first time a
    compiled rule asks for a (field, spec), for the rows of the event types that need it
    (`fast_for(type)`: their compiled rules, or None); the others read None and format in
    Python, so a rules change inside the batch stays exact."""

    def __init__(self, b: pa.RecordBatch, fast_for: Callable[[str], "FastRules | None"]) -> None:
        super().__init__()
        self._fast_for, self._b = fast_for, b

    def __missing__(self, key: tuple[str, str]) -> list:
        field_, spec = key
        b = self._b
        want = [t for t in pc.unique(b.column("type")).to_pylist()
                if (fr := self._fast_for(t)) is not None and key in fr.times]
        mask = pc.is_in(b.column("type"), pa.array(want, pa.string()))
        col = b.column("time_ts" if field_ == "time" else "recorded_at").cast(pa.int64())
        self[key] = out = time_strings(col, spec, mask)
        return out


class Rendered:
    """The item versions rendered (and sealed: redacted and hashed) from rows of one batch, in
    projection order (row, then rule of the row's type):

      rules     the FastRule of each `gid`
      gid, row  per version: its rule (index into rules) and its row in the batch
      keys, texts, metas, hashes   string arrays
      subjects  None (every version's subject is its event's) or a string array (null: the event's)
      tags      None (no rule has tags) or a list<string> array
      skips     (row, rule's index in its type's rules, gid, MissingField path) of each rule
                skipped for a row
      key_list  the keys as Python strs, when the renderer has them (else None)
      token     set by whoever rendered it ahead: what the rules were then (see prerender.Ahead)"""

    __slots__ = ("rules", "gid", "row", "keys", "texts", "metas", "hashes", "subjects", "tags", "skips",
                 "key_list", "token")

    def __init__(self, rules: list, gid: np.ndarray, row: np.ndarray, keys: pa.Array, texts: pa.Array,
                 metas: pa.Array, hashes: pa.Array, subjects: pa.Array | None, tags: pa.Array | None,
                 skips: list, key_list: list[str] | None = None) -> None:
        self.rules, self.gid, self.row = rules, gid, row
        self.keys, self.texts, self.metas, self.hashes = keys, texts, metas, hashes
        self.subjects, self.tags, self.skips, self.key_list = subjects, tags, skips, key_list
        self.token: Any = None

    def __len__(self) -> int:
        return len(self.row)

    ARRAYS = ("keys", "texts", "metas", "hashes", "subjects", "tags")

    def select(self, rows: np.ndarray, orig: np.ndarray | None, n_orig: int) -> "Rendered":
        """The versions of `rows`, rows of a batch made from this one's by keeping rows `orig`
        (None: the same batch; n_orig: this one's row count), with their rows renumbered."""
        pos = rows if orig is None else orig[rows]
        want = np.zeros(n_orig, dtype=bool)
        want[pos] = True
        ix = np.flatnonzero(want[self.row])
        row = self.row[ix]
        if orig is not None:
            inv = np.full(n_orig, -1, dtype=np.int64)
            inv[orig] = np.arange(len(orig), dtype=np.int64)
            row = inv[row]
        skips = [(r if orig is None else int(inv[r]), ri, g, p) for r, ri, g, p in self.skips if want[r]]
        out = self.take(ix) if len(ix) < len(self.row) else self.take(None)
        out.row, out.skips = row, skips
        return out

    def take(self, ix: np.ndarray | None) -> "Rendered":
        """The versions at `ix` (None: all of them), skips kept."""
        arrays = [getattr(self, a) for a in self.ARRAYS]
        if ix is None:
            return Rendered(self.rules, self.gid, self.row, *arrays, self.skips, self.key_list)
        t = pa.array(ix, pa.int64())
        kl = None if self.key_list is None else [self.key_list[i] for i in ix.tolist()]
        return Rendered(self.rules, self.gid[ix], self.row[ix], *(None if x is None else x.take(t) for x in arrays),
                        self.skips, kl)


def render_rows(fast_for: Callable[[str], "FastRules | None"], B: "ArrowBatch", codes: np.ndarray,
                uniq: list[str], rows: np.ndarray) -> tuple:
    """Render the rules of `rows` of a batch (all of types with compiled rules; codes[r]: the
    index in uniq of row r's type): (rules, gid, row, keys, texts, subjects, tags, skips) of each
    version in projection order (row, then rule; see Rendered); subjects is None when every
    version's subject is its event's. Pure. MissingField makes a skip; any other exception
    propagates (the per-event path raises it at its row)."""
    rules: list[FastRule] = []
    parts = []        # (sort keys, rule indexes, rows, keys, texts, subjects, tags) per (type, rule)
    skips = []        # (row, rule index in its type, gid, path)
    rc = codes[rows]
    loads = _DECODER.decode
    types = np.unique(rc).tolist()
    frs = {c: fast_for(uniq[c]) for c in types}
    width = max(len(fr.rules) for fr in frs.values())  # type: ignore[union-attr]
    for c in types:
        fr = frs[c]
        assert fr is not None
        rt = rows[rc == c] if len(types) > 1 else rows
        rl = rt.tolist()
        ds = ms = None
        if fr.needs_data:
            data = B.data
            ds = [loads(data[r]) for r in rl]
        if fr.needs_meta:
            meta = B.meta
            ms = [None if meta[r] is None else loads(meta[r]) for r in rl]
        for ri, f in enumerate(fr.rules):
            gi = len(rules)
            rules.append(f)
            idx, keys, texts, subjects, tags, missing = f.render_many(ds, ms, B, rl)
            vr = rt[idx] if len(idx) != len(rl) else rt
            parts.append((vr * width + ri, gi, vr, keys, texts, subjects, tags))
            for i, exc in missing:
                skips.append((rl[i], ri, gi, exc.path))
    if all(p[5] is None for p in parts):
        parts = [p[:5] + ([],) + p[6:] for p in parts]
        own = False  # every version's subject is its event's
    else:  # rules naming their own subject: the others' versions get None (their event's)
        parts = [p if p[5] is not None else p[:5] + ([None] * len(p[2]),) + p[6:] for p in parts]
        own = True
    if len(parts) == 1:
        _, gi, vr, keys, texts, subjects, tags = parts[0]
        gid = np.full(len(vr), gi, dtype=np.int64)
    else:
        order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
        gid = np.concatenate([np.full(len(p[2]), p[1], dtype=np.int64) for p in parts])[order]
        vr = np.concatenate([p[2] for p in parts])[order]
        n = len(order)
        pick = itemgetter(*order.tolist()) if n > 1 else (lambda xs: (xs[0],)) if n else (lambda xs: ())
        keys, texts, tags = (list(pick(sum((p[k] for p in parts), []))) for k in (3, 4, 6))
        subjects = list(pick(sum((p[5] for p in parts), []))) if own else None
    return rules, gid, np.asarray(vr, dtype=np.int64), keys, texts, subjects if own else None, tags, skips


def seal_rendered(rendered: tuple) -> Rendered:
    """render_rows' versions redacted and hashed (seal_many), as a Rendered."""
    rules, gid, vr, keys, texts, subjects, tags, skips = rendered
    try:
        text_arr = pa.array(texts, pa.string())
    except (UnicodeError, pa.ArrowException):  # seal_many decides in Python
        text_arr = None
    texts, metas, hashes, text_arr = seal_many(texts, text_arr)
    return Rendered(
        rules, gid, vr, pa.array(keys, pa.string()), pa.array(texts, pa.string()) if text_arr is None else text_arr,
        pa.array(metas, pa.string()), pa.array(hashes, pa.string()),
        None if subjects is None else pa.array(subjects, pa.string()),
        pa.array(tags, pa.list_(pa.string())) if any(f.rule.tags for f in rules) else None,
        skips, key_list=keys)


def render_batch(b: pa.RecordBatch, frs: dict[str, FastRules]) -> Rendered:
    """Every version the compiled rules `frs` (by event type) render from the rows of batch `b`
    whose type they cover, sealed (what the columnar path renders for any of those rows, in
    any run of them: Rendered.select picks a run's)."""
    tcol = b.column("type")
    uniq_arr = pc.unique(tcol)
    uniq = uniq_arr.to_pylist()
    codes = pc.index_in(tcol, value_set=uniq_arr).to_numpy(zero_copy_only=False)
    covered = np.array([t in frs for t in uniq], dtype=bool)
    rows = np.flatnonzero(covered[codes]) if len(codes) else np.zeros(0, dtype=np.int64)
    if not len(rows):
        e = pa.array([], pa.string())
        return Rendered([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), e, e, e, e, None, None, [], [])
    B = ArrowBatch(b, BatchTimes(b, frs.get))
    return seal_rendered(render_rows(frs.get, B, codes, uniq, rows))
