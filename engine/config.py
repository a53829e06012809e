"""ctxdb.toml: projection rules and per-agent policies.

    [[rules]]
    on = "order.shipped"                       # event type glob
    key = "order:{data.order_id}/status"       # same key later = the new version supersedes
    text = "Order #{data.order_id} shipped via {data.carrier}."
    kind = "fact"                              # axiom | persona | fact | event | summary
    priority = 0.8                             # 0..1
    ttl = "7d"                                 # from the event's time
    tags = ["pii"]                             # templates allowed
    pinned = false
    subject = "{subject}"                      # default: the event's subject
    summarize = { group = "{subject}", every = 5 }

    [[rules]]
    on = "order.cancelled"
    retract = "order:{data.order_id}/status"

    [agents.support-bot]
    subjects = ["user:*", "order:*"]           # globs; default ["*"]
    kinds = ["persona", "fact", "event", "summary"]
    deny_tags = ["pii"]
    history = "30d"
    budget = 2000
    pinned = ["persona:support/*"]             # item key globs
    half_life = { event = "1d" }               # per kind, merged over [defaults]
    weights = { priority = 1.0, recency = 1.0, reinforcement = 0.5, relevance = 10.0 }

    [defaults]                                  # optional: half_life, weights, budget
    [snapshots]                                 # every = 100000 (events), retain = 3
    [view]                                      # tokenizer = "minilm" | "whitespace"
    [embeddings]                                # model = "minilm" | "off", index = "auto" | "flat" | "hnsw",
                                                # flat_max = 20000 (auto: exact search up to this many)
    [privacy]                                   # encrypt_subjects = ["user:*"], keys_dir = "..."

    [[retention]]                               # `ctxdb retain` erases events older than this
    type = "slack.*"                            # event type glob ...
    retain = "90d"
    [[retention]]
    kind = "event"                              # ... or the kind of the items an event projects into
    retain = "30d"

Every problem is a ConfigError naming the file, the line and the key. A config is identified by
the hash of its canonical JSON; the store appends it to the log as a policy event whenever it
changes, so views at earlier positions keep the policy that was in force then.
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .errors import BadInput, ConfigError
from .log import glob_body
from .template import Template, TemplateError, compile_template

KINDS = ("axiom", "persona", "fact", "event", "summary")
#: infinite half-life (no decay) is written as "none" / "inf"
DEFAULT_HALF_LIFE = {"axiom": None, "persona": None, "fact": "7d", "event": "1d", "summary": "3d"}
DEFAULT_WEIGHTS = {"priority": 1.0, "recency": 1.0, "reinforcement": 0.5, "relevance": 10.0}
INDEX_KINDS = ("auto", "flat", "hnsw")
DEFAULT_BUDGET = 2000
DEFAULT_SNAPSHOT_EVERY = 100_000
DEFAULT_SNAPSHOT_RETAIN = 3
TOKENIZERS = ("minilm", "whitespace")

_UNITS_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000,
             "d": 86_400_000_000, "w": 604_800_000_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> int | None:
    """'7d', '24h', '1h30m', '90s', '250ms' -> microseconds; 'none'/'inf' -> None (forever).
    Raises ValueError for anything else."""
    if isinstance(value, str):
        s = value.strip().lower().replace(" ", "")
        if s in ("none", "inf", "forever"):
            return None
        pos, total = 0, 0.0
        while pos < len(s):
            m = _DURATION.match(s, pos)
            if not m:
                break
            total += float(m.group(1)) * _UNITS_US[m.group(2)]
            pos = m.end()
        if s and pos == len(s) and total > 0:
            return int(total)
    raise ValueError(f"expected a duration like \"7d\", \"24h\", \"1h30m\" or \"90s\", got {value!r}")


def check_glob(pattern: Any) -> str:
    """Globs: `*` any run of characters, `?` one character; everything else literal."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"expected a non-empty glob string like \"user:*\", got {pattern!r}")
    bad = set(pattern) & set("[]{}")
    if bad:
        raise ValueError(f"glob {pattern!r} uses {''.join(sorted(bad))}: only * and ? are supported")
    if pattern != pattern.strip():
        raise ValueError(f"glob {pattern!r} has leading or trailing spaces")
    return pattern


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def glob_match(pattern: str, value: str) -> bool:
    rx = _GLOB_CACHE.get(pattern)
    if rx is None:
        rx = _GLOB_CACHE[pattern] = re.compile(glob_body(pattern), re.S)
    return rx.fullmatch(value) is not None


@dataclass(frozen=True)
class Summarize:
    group: Template
    every: int
    priority: float
    ttl_us: int | None
    llm: bool = False                # summarize the window with the configured [summarizer]
    instruction: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    on: str
    key: Template | None = None
    text: Template | None = None
    subject: Template = field(default_factory=lambda: compile_template("{subject}"))
    kind: str = "event"
    priority: float = 0.5
    ttl_us: int | None = None
    tags: tuple[Template, ...] = ()
    pinned: bool = False
    retract: Template | None = None
    summarize: Summarize | None = None
    llm: str | None = None           # instruction: replace the item's text by an LLM summary of it

    def matches(self, event_type: str) -> bool:
        return glob_match(self.on, event_type)


@dataclass(frozen=True)
class AgentPolicy:
    name: str
    subjects: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] = KINDS
    deny_tags: tuple[str, ...] = ()
    allow_tags: tuple[str, ...] | None = None
    history_us: int | None = None
    budget: int = DEFAULT_BUDGET
    pinned: tuple[str, ...] = ()
    half_life_us: tuple[tuple[str, int | None], ...] = ()
    weights: tuple[tuple[str, float], ...] = tuple(DEFAULT_WEIGHTS.items())
    role: str = "agent"
    # Set only on the policy an agent's own read runs under (see access.reader_policy): the
    # grants it holds now (a past view never shows what a revoked grant allowed) and the
    # subjects forgotten by now (tombstones reach back for agents; auditors see history).
    grants: tuple[str, ...] | None = None
    exclude: frozenset[str] = frozenset()

    def half_life(self, kind: str) -> int | None:
        return dict(self.half_life_us).get(kind)

    def weight(self, name: str) -> float:
        return dict(self.weights)[name]

    def allows_subject(self, subject: str) -> bool:
        if subject in self.exclude or subject.startswith("purged:"):
            return False
        if self.grants is not None and not any(glob_match(p, subject) for p in self.grants):
            return False
        return any(glob_match(p, subject) for p in self.subjects)

    @property
    def restricted(self) -> bool:
        return self.grants is not None or bool(self.exclude)

    def is_pinned(self, key: str) -> bool:
        return any(glob_match(p, key) for p in self.pinned)


@dataclass(frozen=True)
class Retention:
    """One [[retention]] entry: events of a type (glob), or events behind items of a kind, whose
    time is more than `retain_us` before the retention run's now are erased (engine/retention.py)."""
    type: str | None
    kind: str | None
    retain_us: int
    retain: str                      # as written ("90d")

    def label(self) -> str:
        return f"type {self.type}" if self.type is not None else f"kind {self.kind}"


@dataclass(frozen=True)
class Config:
    rules: tuple[Rule, ...]
    agents: dict[str, AgentPolicy]
    snapshot_every: int
    snapshot_retain: int
    tokenizer: str
    raw: dict[str, Any]          # the parsed TOML, as stored in the policy event
    hash: str
    file: str | None = None
    embed_model: str = "minilm"  # [embeddings] model: "minilm" or "off"
    index_kind: str = "auto"     # [embeddings] index: auto | flat | hnsw
    index_flat_max: int = 20_000 # [embeddings] flat_max: auto uses exact search up to this many vectors
    summarizer: dict = field(default_factory=dict)   # [summarizer]: kind = "template" | "openai", ...
    encrypt_subjects: tuple[str, ...] = ()           # [privacy] encrypt_subjects: per-subject keys at rest
    keys_dir: str | None = None                      # [privacy] keys_dir (default <store>/keys)
    retention: tuple[Retention, ...] = ()            # [[retention]] entries, in file order

    def agent(self, name: str) -> AgentPolicy | None:
        return self.agents.get(name)


def canonical_hash(raw: dict[str, Any]) -> str:
    blob = msgspec.json.encode(_sorted(raw))
    return "p-" + hashlib.blake2b(blob, digest_size=12).hexdigest()


def _sorted(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sorted(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted(x) for x in v]
    return v


def load_file(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist", file=str(p)) from None
    except IsADirectoryError:
        raise ConfigError(f"{p} is a directory, expected a ctxdb.toml file", file=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=str(p)) from None
    return loads(text, file=str(p))


def loads(text: str, *, file: str | None = None) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else None
        raise ConfigError(f"TOML syntax error: {str(exc).split(' (at line')[0]}", file=file, line=line,
                          expected="valid TOML") from None
    return from_dict(raw, file=file, locate=_Locator(text))


def from_dict(raw: dict[str, Any], *, file: str | None = None, locate: "_Locator | None" = None) -> Config:
    """Validate a parsed config (from TOML or from a policy event)."""
    loc = locate or _Locator("")

    def fail(path: tuple, message: str, expected: str | None = None) -> ConfigError:
        return ConfigError(message, file=file, line=loc.line(path), field=_dotted(path), expected=expected)

    _only(raw, ("rules", "agents", "defaults", "snapshots", "view", "embeddings", "summarizer", "privacy",
                "retention"), (), fail)
    priv = _table(raw, ("privacy",), fail)
    _only(priv, ("encrypt_subjects", "keys_dir"), ("privacy",), fail)
    enc = priv.get("encrypt_subjects", [])
    if not isinstance(enc, list):
        raise fail(("privacy", "encrypt_subjects"), "must be an array of subject globs", '["user:*"]')
    for i, g in enumerate(enc):
        try:
            check_glob(g)
        except ValueError as exc:
            raise fail(("privacy", "encrypt_subjects"), f"entry {i}: {exc}", '["user:*"]') from None
    keys_dir = priv.get("keys_dir")
    if keys_dir is not None and (not isinstance(keys_dir, str) or not keys_dir.strip()):
        raise fail(("privacy", "keys_dir"), "must be a directory path", '"/secure/ctxdb-keys"')
    defaults = _table(raw, ("defaults",), fail)
    _only(defaults, ("half_life", "weights", "budget"), ("defaults",), fail)
    base_hl = _half_lives(DEFAULT_HALF_LIFE, defaults.get("half_life", {}), ("defaults", "half_life"), fail)
    base_w = _weights(DEFAULT_WEIGHTS, defaults.get("weights", {}), ("defaults", "weights"), fail)
    base_budget = _int(defaults, "budget", DEFAULT_BUDGET, ("defaults",), fail, minimum=1)

    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise fail(("rules",), "`rules` must be an array of tables", "[[rules]] tables")
    rules = tuple(_rule(r, i, fail) for i, r in enumerate(rules_raw))

    agents_raw = _table(raw, ("agents",), fail)
    agents = {}
    for name in sorted(agents_raw):
        agents[name] = _agent(name, agents_raw[name], base_hl, base_w, base_budget, fail)

    snaps = _table(raw, ("snapshots",), fail)
    _only(snaps, ("every", "retain"), ("snapshots",), fail)
    view = _table(raw, ("view",), fail)
    _only(view, ("tokenizer",), ("view",), fail)
    tok = view.get("tokenizer", "minilm")
    if tok not in TOKENIZERS:
        raise fail(("view", "tokenizer"), f"unknown tokenizer {tok!r}", " or ".join(TOKENIZERS))
    summ_cfg = _table(raw, ("summarizer",), fail)
    try:
        from .summarize import summarizer_from_config

        summarizer_from_config(summ_cfg, environ={k: "x" for k in [summ_cfg.get("api_key_env")] if isinstance(k, str)})
    except BadInput as exc:
        raise fail(("summarizer",) + ((exc.field,) if getattr(exc, "field", None) else ()), str(exc)) from None
    emb = _table(raw, ("embeddings",), fail)
    _only(emb, ("model", "index", "flat_max"), ("embeddings",), fail)
    model = emb.get("model", "minilm")
    if model not in ("minilm", "off"):
        raise fail(("embeddings", "model"), f"unknown embedding model {model!r}", "minilm | off")
    kind = emb.get("index", "auto")
    if kind not in INDEX_KINDS:
        raise fail(("embeddings", "index"), f"unknown index kind {kind!r}", " | ".join(INDEX_KINDS))
    return Config(
        summarizer=summ_cfg, embed_model=model, index_kind=kind,
        index_flat_max=_int(emb, "flat_max", 20_000, ("embeddings",), fail, minimum=1),
        rules=rules, agents=agents,
        snapshot_every=_int(snaps, "every", DEFAULT_SNAPSHOT_EVERY, ("snapshots",), fail, minimum=0),
        snapshot_retain=_int(snaps, "retain", DEFAULT_SNAPSHOT_RETAIN, ("snapshots",), fail, minimum=1),
        tokenizer=tok, raw=raw, hash=canonical_hash(raw), file=file,
        encrypt_subjects=tuple(enc), keys_dir=keys_dir, retention=_retention(raw.get("retention", []), fail),
    )


def _retention(entries: Any, fail) -> tuple[Retention, ...]:
    if not isinstance(entries, list):
        raise fail(("retention",), "`retention` must be an array of tables", '[[retention]] with type or kind, and retain')
    out = []
    for i, r in enumerate(entries):
        path = ("retention", i)
        if not isinstance(r, dict):
            raise fail(path, "each [[retention]] entry must be a table", 'type = "slack.*", retain = "90d"')
        _only(r, ("type", "kind", "retain"), path, fail)
        if ("type" in r) == ("kind" in r):
            raise fail(path, "a [[retention]] entry names exactly one of `type` or `kind`",
                       'type = "slack.*" or kind = "event"')
        if "retain" not in r:
            raise fail(path + ("retain",), "missing `retain`", 'a duration like "90d"')
        retain_us = _duration(r["retain"], path + ("retain",), fail)
        if retain_us is None:
            raise fail(path + ("retain",), f"retain = {r['retain']!r} keeps events forever: leave the entry out",
                       'a finite duration like "90d"')
        typ = kind = None
        if "type" in r:
            typ = _glob(r["type"], path + ("type",), fail)
            if typ.startswith("ctxdb."):
                raise fail(path + ("type",), "ctxdb's own events (policies, receipts, tombstones, holds) are not "
                           "subject to retention", "an application event type glob")
        else:
            kind = r["kind"]
            if kind not in KINDS:
                raise fail(path + ("kind",), f"unknown kind {kind!r}", " | ".join(KINDS))
        out.append(Retention(type=typ, kind=kind, retain_us=retain_us, retain=str(r["retain"])))
    return tuple(out)


RULE_KEYS = ("on", "key", "text", "kind", "priority", "ttl", "tags", "pinned", "subject", "retract", "summarize",
             "llm")


def _rule(r: Any, i: int, fail) -> Rule:
    path = ("rules", i)
    if not isinstance(r, dict):
        raise fail(path, "each rule must be a table", "[[rules]]")
    _only(r, RULE_KEYS, path, fail)
    if "on" not in r:
        raise fail(path + ("on",), "rule has no `on`", "an event type glob, e.g. on = \"order.*\"")
    on = _glob(r["on"], path + ("on",), fail)
    tpl = lambda k: _template(r[k], path + (k,), fail) if k in r else None  # noqa: E731
    if "retract" in r:
        extra = sorted(set(r) - {"on", "retract", "subject"})
        if extra:
            raise fail(path + (extra[0],), f"a retract rule takes only `on` and `retract`, not `{extra[0]}`")
        return Rule(name=f"rules[{i}]", on=on, retract=tpl("retract"))
    for k in ("key", "text"):
        if k not in r:
            raise fail(path + (k,), f"rule has no `{k}`",
                       "a template, e.g. key = \"order:{data.order_id}/status\"" if k == "key"
                       else "a template, e.g. text = \"Order #{data.order_id} shipped\"")
    kind = r.get("kind", "event")
    if kind not in KINDS:
        raise fail(path + ("kind",), f"unknown kind {kind!r}", " | ".join(KINDS))
    prio = _float(r, "priority", 0.5, path, fail)
    ttl = _duration(r["ttl"], path + ("ttl",), fail) if "ttl" in r else None
    tags = r.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise fail(path + ("tags",), "`tags` must be a list of strings", "e.g. tags = [\"pii\"]")
    pinned = r.get("pinned", False)
    if not isinstance(pinned, bool):
        raise fail(path + ("pinned",), "`pinned` must be true or false", "a boolean")
    summ = None
    if "summarize" in r:
        s = r["summarize"]
        sp = path + ("summarize",)
        if not isinstance(s, dict):
            raise fail(sp, "`summarize` must be a table", "{ group = \"{subject}\", every = 5 }")
        _only(s, ("group", "every", "priority", "ttl", "llm", "instruction"), sp, fail)
        if "group" not in s or "every" not in s:
            raise fail(sp, "`summarize` needs `group` and `every`", "{ group = \"{subject}\", every = 5 }")
        every = _int(s, "every", 0, sp, fail, minimum=2)
        summ = Summarize(group=_template(s["group"], sp + ("group",), fail), every=every,
                         priority=_float(s, "priority", prio, sp, fail),
                         ttl_us=_duration(s["ttl"], sp + ("ttl",), fail) if "ttl" in s else None,
                         llm=_bool(s, "llm", False, sp, fail), instruction=_opt_str(s, "instruction", sp, fail))
    llm = None
    if "llm" in r:
        lp = path + ("llm",)
        if not isinstance(r["llm"], dict):
            raise fail(lp, "`llm` must be a table", "llm = { instruction = \"Summarize this ticket in one sentence.\" }")
        _only(r["llm"], ("instruction",), lp, fail)
        llm = _opt_str(r["llm"], "instruction", lp, fail) or "Summarize this in one or two sentences."
    return Rule(
        name=f"rules[{i}]", on=on, key=tpl("key"), text=tpl("text"),
        subject=tpl("subject") or compile_template("{subject}"), kind=kind, priority=prio, ttl_us=ttl,
        tags=tuple(_template(t, path + ("tags",), fail) for t in tags), pinned=pinned, summarize=summ, llm=llm,
    )


def _bool(d: dict, k: str, default: bool, path: tuple, fail) -> bool:
    v = d.get(k, default)
    if not isinstance(v, bool):
        raise fail(path + (k,), f"`{k}` must be true or false", "a boolean")
    return v


def _opt_str(d: dict, k: str, path: tuple, fail) -> str | None:
    v = d.get(k)
    if v is not None and (not isinstance(v, str) or not v.strip()):
        raise fail(path + (k,), f"`{k}` must be a non-empty string", "text")
    return v


AGENT_KEYS = ("subjects", "kinds", "deny_tags", "allow_tags", "history", "budget", "pinned",
              "half_life", "weights", "role")


def _agent(name: str, a: Any, base_hl, base_w, base_budget, fail) -> AgentPolicy:
    path = ("agents", name)
    if not isinstance(a, dict):
        raise fail(path, f"agent {name!r} must be a table", f"[agents.{name}]")
    _only(a, AGENT_KEYS, path, fail)
    subjects = tuple(_glob(s, path + ("subjects",), fail) for s in _strlist(a, "subjects", ["*"], path, fail))
    kinds = tuple(_strlist(a, "kinds", list(KINDS), path, fail))
    for k in kinds:
        if k not in KINDS:
            raise fail(path + ("kinds",), f"unknown kind {k!r}", " | ".join(KINDS))
    allow = a.get("allow_tags")
    role = a.get("role", "agent")
    if role not in ("agent", "auditor"):
        raise fail(path + ("role",), f"unknown role {role!r}", "\"agent\" or \"auditor\"")
    return AgentPolicy(
        name=name, subjects=subjects, kinds=kinds,
        deny_tags=tuple(_strlist(a, "deny_tags", [], path, fail)),
        allow_tags=tuple(_strlist(a, "allow_tags", [], path, fail)) if allow is not None else None,
        history_us=_duration(a["history"], path + ("history",), fail) if "history" in a else None,
        budget=_int(a, "budget", base_budget, path, fail, minimum=1),
        pinned=tuple(_glob(p, path + ("pinned",), fail) for p in _strlist(a, "pinned", [], path, fail)),
        half_life_us=tuple(sorted(_half_lives(base_hl, a.get("half_life", {}), path + ("half_life",), fail).items())),
        weights=tuple(sorted(_weights(base_w, a.get("weights", {}), path + ("weights",), fail).items())),
        role=role,
    )


# ---- small validators -------------------------------------------------------------------
def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out


def _only(d: dict, allowed: tuple, path: tuple, fail) -> None:
    for k in d:
        if k not in allowed:
            raise fail(path + (k,), f"unknown key `{k}`", "one of " + ", ".join(allowed))


def _table(raw: dict, path: tuple, fail) -> dict:
    v = raw.get(path[-1], {})
    if not isinstance(v, dict):
        raise fail(path, f"`{path[-1]}` must be a table", f"[{path[-1]}]")
    return v


def _template(v: Any, path: tuple, fail) -> Template:
    try:
        return compile_template(v)
    except TemplateError as exc:
        raise fail(path, f"bad template: {exc}", "a template like \"Order #{data.order_id}\"") from None


def _glob(v: Any, path: tuple, fail) -> str:
    try:
        return check_glob(v)
    except ValueError as exc:
        raise fail(path, f"bad glob: {exc}") from None


def _duration(v: Any, path: tuple, fail) -> int | None:
    try:
        return parse_duration(v)
    except ValueError as exc:
        raise fail(path, f"bad duration {v!r}", str(exc).split("expected ", 1)[-1].split(", got")[0]) from None


def _float(d: dict, k: str, default: float, path: tuple, fail) -> float:
    v = d.get(k, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= float(v) <= 1.0):
        raise fail(path + (k,), f"bad {k} {v!r}", "a number from 0 to 1")
    return float(v)


def _int(d: dict, k: str, default: int, path: tuple, fail, *, minimum: int) -> int:
    v = d.get(k, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise fail(path + (k,), f"bad {k} {v!r}", f"an integer >= {minimum}")
    return v


def _strlist(d: dict, k: str, default: list, path: tuple, fail) -> list[str]:
    v = d.get(k, default)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise fail(path + (k,), f"`{k}` must be a list of strings", f"e.g. {k} = [\"...\"]")
    return v


def _half_lives(base: dict, over: Any, path: tuple, fail) -> dict[str, int | None]:
    if not isinstance(over, dict):
        raise fail(path, "`half_life` must be a table of kind = duration", "{ event = \"1d\" }")
    merged = dict(base)
    for k, v in over.items():
        if k not in KINDS:
            raise fail(path + (k,), f"unknown kind {k!r}", " | ".join(KINDS))
        merged[k] = v
    out: dict[str, int | None] = {}
    for k, v in merged.items():
        out[k] = v if (v is None or isinstance(v, int)) and not isinstance(v, bool) else _duration(v, path + (k,), fail)
    return out


def _weights(base: dict, over: Any, path: tuple, fail) -> dict[str, float]:
    if not isinstance(over, dict):
        raise fail(path, "`weights` must be a table", "{ priority = 1.0, recency = 1.0, reinforcement = 0.5 }")
    out = dict(base)
    for k, v in over.items():
        if k not in DEFAULT_WEIGHTS:
            raise fail(path + (k,), f"unknown weight `{k}`", " | ".join(DEFAULT_WEIGHTS))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise fail(path + (k,), f"bad weight {v!r}", "a number >= 0")
        out[k] = float(v)
    return out


class _Locator:
    """Finds the line of a key in TOML text: enough of TOML's table structure to point a person at
    the right line (tables, arrays of tables, plain and inline keys)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
    _KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.-]+)\s*=")

    def __init__(self, text: str) -> None:
        self.entries: list[tuple[tuple, int]] = []
        table: tuple = ()
        counts: dict[tuple, int] = {}
        for n, line in enumerate(text.splitlines(), 1):
            m = self._HEADER.match(line)
            if m:
                name = tuple(_unquote(p) for p in _split_dotted(m.group(2)))
                if m.group(1) == "[[":
                    idx = counts.get(name, -1) + 1
                    counts[name] = idx
                    table = name + (idx,)
                else:
                    # [rules.summarize] is a sub-table of the latest [[rules]] element
                    table = name
                    for k in range(len(name) - 1, 0, -1):
                        if name[:k] in counts:
                            table = name[:k] + (counts[name[:k]],) + name[k:]
                            break
                self.entries.append((table, n))
                continue
            k = self._KEY.match(line)
            if k:
                key = tuple(_unquote(p) for p in _split_dotted(k.group(1)))
                self.entries.append((table + key, n))
                # inline table keys on the same line: `summarize = { group = ..., every = 5 }`
                for sub in re.finditer(r"[{,]\s*([A-Za-z0-9_-]+)\s*=", line[k.end():]):
                    self.entries.append((table + key + (sub.group(1),), n))

    def line(self, path: tuple) -> int | None:
        path = tuple(path)
        while path:
            for p, n in self.entries:
                if p == path:
                    return n
            path = path[:-1]
        return None


def _split_dotted(s: str) -> list[str]:
    return [p.strip() for p in re.findall(r"\"[^\"]*\"|'[^']*'|[^.]+", s)]


def _unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'" else s


#: used when neither a config file nor a policy event exists: every event becomes an event item,
#: one agent `default` sees everything.
DEFAULT_TOML = """
[[rules]]
on = "*"
key = "event:{source}/{id}"
text = "{type} on {subject}: {data}"
kind = "event"

[agents.default]
budget = 2000
"""


def default_config() -> Config:
    return loads(DEFAULT_TOML, file="<built-in default>")
