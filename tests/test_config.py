"""ctxdb.toml: every config problem is a ConfigError naming file, line and key; valid configs parse
into the documented values; durations; globs; the built-in default; policy versions in the log."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ctxdb
import pytest
from ctxdb.config import (
    DEFAULT_BUDGET,
    check_glob,
    glob_match,
    load_file,
    loads,
    parse_duration,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "config"
MULTI = (FIXTURES / "multi_rule.toml").read_text()
US = 1_000_000
H = 3600 * US
D = 24 * H


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line number of the nth line that contains `needle` exactly once in the text."""
    hits = [i for i, ln in enumerate(text.splitlines(), 1) if needle in ln]
    assert len(hits) > nth, f"{needle!r} not in the config text"
    return hits[nth]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    return text.replace(old, new)


def config_error(tmp_path: Path, text: str, name: str = "ctxdb.toml") -> ctxdb.ConfigError:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ctxdb.ConfigError) as ei:
        load_file(p)
    err = ei.value
    assert err.file == str(p)
    return err


def test_fixture_is_valid():
    cfg = loads(MULTI, file="multi_rule.toml")
    assert len(cfg.rules) == 4 and sorted(cfg.agents) == ["ops", "support-bot"]


# (name, old text, new text, field, the text whose line the error must name)
REPLACEMENTS = [
    ("unknown rule key", "priority = 0.4", 'colour = "red"', "rules[2].colour", 'colour = "red"'),
    ("bad ttl duration", 'ttl = "2d"', 'ttl = "7 days"', "rules[2].ttl", 'ttl = "7 days"'),
    ("ttl as a bare number", 'ttl = "2d"', "ttl = 7", "rules[2].ttl", "ttl = 7"),
    ("bad on glob", 'on = "ticket.*"', 'on = "ticket.["', "rules[2].on", 'on = "ticket.["'),
    ("unknown template field", 'text = "Ticket {subject}: {data.title}"', 'text = "Ticket {foo}: {data.title}"',
     "rules[2].text", "{foo}"),
    ("unclosed template brace", 'key = "ticket:{subject}"', 'key = "ticket:{subject"', "rules[2].key",
     'key = "ticket:{subject"'),
    ("template conversion", 'tags = ["{data.team}"]', 'tags = ["{data.team!r}"]', "rules[2].tags", "{data.team!r}"),
    ("unknown kind", 'kind = "event"', 'kind = "gossip"', "rules[2].kind", 'kind = "gossip"'),
    ("priority out of range", "priority = 0.4", "priority = 1.5", "rules[2].priority", "priority = 1.5"),
    ("summarize every < 2 (inline table)", 'summarize = { group = "{subject}", every = 3 }',
     'summarize = { group = "{subject}", every = 1 }', "rules[2].summarize.every", "every = 1"),
    ("retract rule with a text", 'retract = "order:{data.order_id}/status"',
     'retract = "order:{data.order_id}/status"\ntext = "oops"', "rules[1].text", 'text = "oops"'),
    ("pinned not a boolean", "pinned = true", 'pinned = "yes"', "rules[3].pinned", 'pinned = "yes"'),
    ("agent history duration", 'history = "30d"', 'history = "30 days"', "agents.support-bot.history",
     'history = "30 days"'),
    ("agent subject glob", 'subjects = ["user:*", "order:*"]', 'subjects = ["user:*", "order:[0-9]"]',
     "agents.support-bot.subjects", "order:[0-9]"),
    ("agent budget", "budget = 300", "budget = 0", "agents.ops.budget", "budget = 0"),
    ("agent unknown key", "budget = 300", "budgett = 300", "agents.ops.budgett", "budgett = 300"),
    ("agent half-life", 'half_life = { event = "12h" }', 'half_life = { event = "12 hours" }',
     "agents.ops.half_life.event", "12 hours"),
    ("agent kinds", 'kinds = ["event", "summary"]', 'kinds = ["event", "gossip"]', "agents.ops.kinds", "gossip"),
    ("tokenizer", 'tokenizer = "whitespace"', 'tokenizer = "gpt4"', "view.tokenizer", 'tokenizer = "gpt4"'),
    ("agent half-life sub-table", 'half_life = { event = "12h" }', '\n[agents.ops.half_life]\nevent = "12 hours"',
     "agents.ops.half_life.event", 'event = "12 hours"'),
]


@pytest.mark.parametrize("name,old,new,field,marker", REPLACEMENTS, ids=[r[0] for r in REPLACEMENTS])
def test_error_names_file_line_and_key(tmp_path, name, old, new, field, marker):
    text = replace_once(MULTI, old, new)
    err = config_error(tmp_path, text)
    want = line_of(text, marker)
    assert (err.line, err.field) == (want, field), str(err)
    msg = str(err)
    assert msg.startswith(f"{err.file}:{want}: "), msg
    assert f"`{field}`" in msg


@pytest.mark.parametrize("missing,field", [('key = "ticket:{subject}"', "rules[2].key"),
                                           ('text = "Ticket {subject}: {data.title}"', "rules[2].text"),
                                           ('on = "ticket.*"', "rules[2].on")])
def test_missing_rule_field_points_at_its_rule(tmp_path, missing, field):
    text = replace_once(MULTI, missing + "\n", "")
    err = config_error(tmp_path, text)
    # the third [[rules]] table (index 2) is the one that lacks the field
    assert err.field == field
    assert err.line == line_of(text, "[[rules]]", nth=2), str(err)
    assert f"`{field.rsplit('.', 1)[1]}`" in err.reason


def test_unknown_top_level_table(tmp_path):
    text = MULTI + '\n[storage]\npath = "x"\n'
    err = config_error(tmp_path, text)
    assert err.field == "storage" and err.line == line_of(text, "[storage]")


def test_summarize_as_a_sub_table_of_an_array_element(tmp_path):
    """`[rules.summarize]` after a `[[rules]]` header is the summarize table of that rule (plain
    TOML): the error must point at the bad key inside it, not at the rule's header."""
    text = replace_once(MULTI, 'summarize = { group = "{subject}", every = 3 }\n', "")
    text = replace_once(text, 'tags = ["{data.team}"]\n',
                        'tags = ["{data.team}"]\n\n[rules.summarize]\ngroup = "{subject}"\nevery = 1\n')
    err = config_error(tmp_path, text)
    assert err.field == "rules[2].summarize.every"
    assert err.line == line_of(text, "every = 1"), str(err)


@pytest.mark.parametrize("old,new", [("priority = 0.4", "priority = = 0.4"),
                                     ('kind = "event"', 'kind = "event'),
                                     ("[agents.ops]", "[agents.ops")])
def test_toml_syntax_error_names_file_and_line(tmp_path, old, new):
    text = replace_once(MULTI, old, new)
    err = config_error(tmp_path, text)
    assert err.line == line_of(text, new), str(err)
    assert str(err).startswith(f"{err.file}:{err.line}: ")
    assert "TOML" in str(err)


def test_missing_and_non_utf8_config_files(tmp_path):
    with pytest.raises(ctxdb.ConfigError) as ei:
        load_file(tmp_path / "nope.toml")
    assert ei.value.file == str(tmp_path / "nope.toml")
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'[agents.bot]\nrole = "caf\xe9"\n')
    with pytest.raises(ctxdb.ConfigError) as ei:
        load_file(p)
    assert ei.value.file == str(p)


def test_open_with_bad_config_fails_before_writing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(replace_once(MULTI, 'ttl = "2d"', 'ttl = "7 days"'))
    with pytest.raises(ctxdb.ConfigError) as ei:
        ctxdb.open(tmp_path / "store", config=bad)
    assert ei.value.file == str(bad) and ei.value.field == "rules[2].ttl"
    assert not (tmp_path / "store").exists()


def test_open_memory_with_bad_config_never_serves_the_default(tmp_path):
    """A bad config must not be silently replaced by the built-in default: either open fails,
    or every use keeps failing with the ConfigError."""
    bad = tmp_path / "bad.toml"
    bad.write_text(replace_once(MULTI, 'text = "Ticket {subject}: {data.title}"', 'text = "Ticket {foo}"'))
    ev = {"type": "ticket.opened", "subject": "ticket:1", "time": "2027-01-01T00:00:00Z",
          "data": {"title": "x", "team": "a"}}
    try:
        db = ctxdb.open_memory(config=bad)
    except ctxdb.ConfigError as exc:
        assert exc.file == str(bad)
        return
    try:
        for _ in range(2):
            with pytest.raises(ctxdb.ConfigError):
                db.append([ev])
        with pytest.raises(ctxdb.ConfigError):
            db.view("default")
        assert db.last_seq == 0
    finally:
        db.close()


def test_cli_reports_bad_config_with_exit_78(tmp_path):
    bad = tmp_path / "bad.toml"
    text = replace_once(MULTI, "budget = 300", "budget = -5")
    bad.write_text(text)
    exe = Path(sys.executable).parent / "ctxdb"
    r = subprocess.run([str(exe), "view", "--agent", "ops", "--db", str(tmp_path / "db"), "--config", str(bad)],
                       capture_output=True, timeout=120, cwd=tmp_path, check=False)
    assert r.returncode == 78, r.stderr
    err = r.stderr.decode()
    assert f"{bad}:{line_of(text, 'budget = -5')}:" in err and "agents.ops.budget" in err
    assert "Traceback" not in err


# ---- valid configs -------------------------------------------------------------------------
def test_documented_example_parses_to_the_documented_values():
    cfg = load_file(FIXTURES / "support.toml")
    assert cfg.file == str(FIXTURES / "support.toml")
    shipped, cancelled, persona = cfg.rules
    assert shipped.on == "order.shipped" and shipped.kind == "fact" and shipped.priority == 0.8
    assert shipped.ttl_us == 7 * D and shipped.pinned is False
    assert [t.source for t in shipped.tags] == ["pii"]
    assert shipped.key.source == "order:{data.order_id}/status"
    assert shipped.summarize is not None and shipped.summarize.every == 5
    assert shipped.summarize.group.source == "{subject}" and shipped.summarize.priority == 0.8
    assert cancelled.retract is not None and cancelled.retract.source == "order:{data.order_id}/status"
    assert cancelled.key is None and cancelled.text is None
    assert persona.ttl_us == H + 30 * 60 * US and persona.priority == 0.5   # default priority

    bot = cfg.agent("support-bot")
    assert bot.subjects == ("user:*", "order:*")
    assert bot.kinds == ("persona", "fact", "event", "summary")
    assert bot.deny_tags == ("pii",) and bot.allow_tags is None
    assert bot.history_us == 30 * D and bot.budget == 2000
    assert bot.pinned == ("persona:support/*",) and bot.is_pinned("persona:support/tone")
    assert not bot.is_pinned("persona:sales/tone")
    # half-lives: built-in, then [defaults], then the agent's own
    assert bot.half_life("event") == D
    assert bot.half_life("fact") == 2 * D
    assert bot.half_life("summary") is None and bot.half_life("axiom") is None
    assert bot.weight("priority") == 1.0 and bot.weight("reinforcement") == 0.5
    assert bot.role == "agent"

    aud = cfg.agent("auditor")
    assert aud.role == "auditor" and aud.allow_tags == ("pii", "public")
    assert aud.budget == 777                                    # [defaults] budget
    assert aud.subjects == ("*",) and aud.kinds == ("axiom", "persona", "fact", "event", "summary")
    assert aud.weight("reinforcement") == 0.25 and aud.weight("recency") == 1.0
    assert aud.half_life("fact") == 2 * D and aud.half_life("event") == D
    assert cfg.agent("nobody") is None
    assert cfg.snapshot_every == 50 and cfg.snapshot_retain == 2 and cfg.tokenizer == "whitespace"


def test_empty_config_gets_defaults():
    cfg = loads("", file="empty.toml")
    assert cfg.rules == () and cfg.agents == {}
    assert cfg.tokenizer == "minilm" and cfg.snapshot_every > 0 and cfg.snapshot_retain >= 1
    cfg = loads("[agents.a]\n")
    assert cfg.agent("a").budget == DEFAULT_BUDGET and cfg.agent("a").subjects == ("*",)


def test_config_hash_is_canonical():
    a = loads('[agents.a]\nbudget = 5\nsubjects = ["x:*"]\n[agents.b]\nbudget = 6\n')
    b = loads('# comment\n[agents.b]\nbudget = 6\n\n[agents.a]\nsubjects = [ "x:*" ]\nbudget = 5\n')
    c = loads('[agents.a]\nbudget = 5\nsubjects = ["x:*"]\n[agents.b]\nbudget = 7\n')
    assert a.hash == b.hash
    assert a.hash != c.hash


# ---- durations and globs -------------------------------------------------------------------
@pytest.mark.parametrize("text,us", [("7d", 7 * D), ("24h", 24 * H), ("1h30m", 90 * 60 * US), ("90s", 90 * US),
                                     ("250ms", 250_000), ("2w", 14 * D), ("1.5h", 90 * 60 * US),
                                     ("1d12h", 36 * H), ("none", None), ("inf", None), ("forever", None)])
def test_valid_durations(text, us):
    assert parse_duration(text) == us


@pytest.mark.parametrize("text", ["7 days", "7days", "0s", "-1d", "", "d", "1y", "1h30", "h1", 7, 1.5, None, True])
def test_invalid_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_strings_in_a_config_file(tmp_path):
    cfg = loads('[[rules]]\non = "a"\nkey = "k"\ntext = "t"\nttl = "1h30m"\n[agents.x]\nhistory = "90s"\n'
                'half_life = { fact = "250ms", event = "inf" }\n')
    assert cfg.rules[0].ttl_us == 90 * 60 * US
    assert cfg.agent("x").history_us == 90 * US
    assert cfg.agent("x").half_life("fact") == 250_000 and cfg.agent("x").half_life("event") is None


def test_glob_semantics():
    assert glob_match("user:*", "user:42") and glob_match("user:*", "user:42x")
    assert glob_match("user:*", "user:")
    assert not glob_match("user:*", "users:1")
    assert not glob_match("user:42", "user:42x") and not glob_match("user:42", "xuser:42")
    assert glob_match("user:4?", "user:42") and not glob_match("user:4?", "user:4")
    assert not glob_match("user:4?", "user:421")
    assert glob_match("a.b", "a.b") and not glob_match("a.b", "aXb")        # '.' is literal
    assert glob_match("*", "") and glob_match("*", "anything at all")
    for bad in ["order.[", "a{b}", "x]", "", " user:*", 42]:
        with pytest.raises(ValueError):
            check_glob(bad)


# ---- which config a store uses ---------------------------------------------------------------
EV = {"type": "note.added", "subject": "user:1", "time": "2027-01-01T00:00:00Z", "data": {"text": "hello"}}


def policy_events(db) -> list:
    return list(db.read(type="ctxdb.policy"))


def test_default_config_when_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                 # no ./ctxdb.toml
    with ctxdb.open(tmp_path / "store") as db:
        seq = db.append([{**EV, "id": "e1", "source": "t"}])[0]
        assert db.wait(timeout=30)
        assert policy_events(db) == []
        cfg = db.config()
        assert sorted(cfg.agents) == ["default"] and cfg.agent("default").subjects == ("*",)
        v = db.view("default")
        assert v.policy_version == 0 and v.seq == seq
        assert [i.key for i in v.items] == ["event:t/e1"]
        assert "note.added on user:1" in v.text and '"text":"hello"' in v.text
        with pytest.raises(ctxdb.AccessDenied):
            db.view("support-bot")


def test_store_folder_config_is_found_and_versioned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    (store / "ctxdb.toml").write_text('[[rules]]\non = "note.*"\nkey = "note:{subject}"\ntext = "{data.text}"\n'
                                      'kind = "fact"\n[agents.bot]\nbudget = 100\n[view]\ntokenizer = "whitespace"\n')
    with ctxdb.open(store) as db:
        db.append([EV])
        db.wait(timeout=30)
        assert len(policy_events(db)) == 1
        assert db.view("bot").policy_version == 1 and db.view("bot").budget == 100
        assert [i.text for i in db.view("bot").items] == ["hello"]
    with ctxdb.open(store) as db:                                # same config: no new version
        db.wait(timeout=30)
        assert len(policy_events(db)) == 1
    (store / "ctxdb.toml").write_text((store / "ctxdb.toml").read_text().replace("budget = 100", "budget = 120"))
    with ctxdb.open(store) as db:                                # changed: a new version
        db.wait(timeout=30)
        pol = policy_events(db)
        assert len(pol) == 2 and pol[-1].json()["version"] == 2
        assert db.view("bot").policy_version == 2 and db.view("bot").budget == 120
        assert db.view("bot", seq=pol[-1].seq - 1).budget == 100
    (store / "ctxdb.toml").unlink()
    with ctxdb.open(store) as db:                                # no file: the log's policy stays
        db.wait(timeout=30)
        assert len(policy_events(db)) == 2 and db.view("bot").budget == 120
