"""Format adapters end to end: fixture files -> db.ingest(format=...) -> db.read().

Each fixture under tests/fixtures/formats/ is a few realistic producer records. For every format
the mapped envelope (id, source, type, subject, time) is checked against hand-written expectations,
and `data` against the exact bytes of the producer's payload, sliced out of the fixture line by
msgspec.Raw (never re-encoded), so any adapter that re-serialises the payload fails.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import msgspec
import pytest
import zstandard

import ctxdb

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
RAW_OBJ = msgspec.json.Decoder(dict[str, msgspec.Raw])
CONTENT_ID = re.compile(r"^h-[0-9a-f]{32}$")


def lines(name: str) -> list[bytes]:
    return [x for x in (FIXTURES / name).read_bytes().split(b"\n") if x.strip()]


def field_bytes(record: bytes, *path: str) -> bytes:
    """The exact bytes of a (nested) top-level value of a JSON record."""
    raw: bytes = record
    for key in path:
        raw = bytes(RAW_OBJ.decode(raw)[key])
    return raw


def ingest(tmp_path: Path, src, fmt: str, name: str = "db"):
    db = ctxdb.open(tmp_path / name, sync=False)
    rep = db.ingest(src, format=fmt)
    return db, rep, list(db.read())


def envelope(ev: ctxdb.Event) -> tuple:
    return (ev.id, ev.source, ev.type, ev.subject, ev.time)


# ---- expectations per fixture --------------------------------------------------------------
GH_SRC = "https://github.com/acme-shop/storefront"
GITHUB = [
    ("3f6c8e20-a09b-11f0-8d4e-2a7c1e5b9d31", GH_SRC, "com.github.issues.opened",
     "issue:acme-shop/storefront#412", "2026-11-12T09:41:18Z"),
    ("8a2d41c0-a0a0-11f0-9f3e-d7c5a1b20e44", GH_SRC, "com.github.issue_comment.created",
     "issue:acme-shop/storefront#412", "2026-11-12T10:03:52Z"),
    # a comment on a pull request shares the PR's subject
    ("d41f7b62-a0ac-11f0-8c11-5e3b0f6a7c92", GH_SRC, "com.github.issue_comment.created",
     "pr:acme-shop/storefront#415", "2026-11-12T12:47:30Z"),
    ("0b7e5f14-a0b5-11f0-8b2f-9c4d1e7a3f68", GH_SRC, "com.github.pull_request.closed",
     "pr:acme-shop/storefront#415", "2026-11-12T13:58:19Z"),
    ("5e9a0c88-a0b5-11f0-9a73-0f2e6d4c8b15", GH_SRC, "com.github.push",
     "repo:acme-shop/storefront", "2026-11-12T14:58:19+01:00"),
]
SLACK_CH = "slack:T04ACMESH0P/C05SUPP0RT1"
SLACK = [
    ("Ev07ABCD1E2F", "slack:T04ACMESH0P", "slack.message", SLACK_CH, "2026-11-12T09:20:14.519109Z"),
    ("Ev07ABCD9K3L", "slack:T04ACMESH0P", "slack.message_changed", SLACK_CH, "2026-11-12T09:23:47.108822Z"),
    ("Ev07ABCE0M4N", "slack:T04ACMESH0P", "slack.message_deleted", SLACK_CH, "2026-11-12T09:31:02.774512Z"),
    ("Ev07ABDF7P8Q", "slack:T04ACMESH0P", "slack.reaction_added", SLACK_CH, "2026-11-12T14:05:51.300160Z"),
]
JIRA_SITE = "https://acme-shop.atlassian.net"
JIRA = [  # Jira bodies carry no delivery id: id is a content hash (None here)
    (None, JIRA_SITE, "jira.issue_created", "jira:SUP-17", "2026-11-12T09:14:03.521Z"),
    (None, JIRA_SITE, "jira.issue_updated", "jira:SUP-17", "2026-11-12T09:36:40.090Z"),
    (None, JIRA_SITE, "jira.comment_created", "jira:SUP-17", "2026-11-12T09:38:12.611Z"),
    (None, JIRA_SITE, "jira.issue_updated", "jira:SUP-17", "2026-11-12T14:10:27.338Z"),
]
DBZ_SRC = "debezium:shopdb/shop"
DEBEZIUM = [
    (None, DBZ_SRC, "orders.snapshot", "orders:1000", "2026-11-12T08:50:00.113Z"),
    (None, DBZ_SRC, "orders.created", "orders:1001", "2026-11-12T08:55:31.130Z"),
    (None, DBZ_SRC, "orders.updated", "orders:1001", "2026-11-12T08:56:02.741Z"),
    (None, DBZ_SRC, "orders.deleted", "orders:1002", "2026-11-12T09:45:00.502Z"),
    (None, DBZ_SRC, "orders.updated", "orders:1003", "2026-11-12T15:47:20.031Z"),
]
CLOUDEVENTS = [
    ("b7d1f3e0-6c2a-4f1e-9a3b-1c2d3e4f5a60", "https://shop.acme.example/orders", "com.acme.shop.order.placed",
     "order:20431", "2026-11-13T08:12:45.318Z"),
    ("c2e4a6b8-0d1f-4a3c-8e5b-7f9a1c3e5b70", "https://shop.acme.example/fulfilment", "com.acme.shop.order.shipped",
     "order:20431", "2026-11-13T15:40:02+01:00"),
    ("1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", "urn:acme:payments:stripe-bridge", "com.acme.shop.refund.issued",
     "order:20417", "2026-11-13T16:03:59.5Z"),
]
ENVELOPES = [
    ("evt-000101", "shop-backend", "user.registered", "user:318", "2026-11-10T08:01:12Z"),
    ("evt-000102", "shop-backend", "order.placed", "order:20417", "2026-11-10T08:14:55.250Z"),
    (None, "support-desk", "comment.added", "order:20417", "2026-11-11T17:30:00+01:00"),
    ("evt-000104", "", "order.shipped", "order:20417", "2026-11-10T15:20:00Z"),
]


def _debezium_data(line: bytes) -> bytes:
    obj = RAW_OBJ.decode(line)
    if "key" in obj and "value" in obj:
        return bytes(obj["value"])
    if "schema" in obj and "payload" in obj:
        return bytes(obj["payload"])
    return line


def _cloudevents_records(name: str) -> list[bytes]:
    return [bytes(r) for r in msgspec.json.decode((FIXTURES / name).read_bytes(), type=list[msgspec.Raw])]


CASES = {
    # format: (fixture, expected envelopes, records, expected data bytes of one record)
    "github": ("github.ndjson", GITHUB, lambda: lines("github.ndjson"), lambda r: field_bytes(r, "body")),
    "slack": ("slack.ndjson", SLACK, lambda: lines("slack.ndjson"), lambda r: field_bytes(r, "event")),
    "jira": ("jira.ndjson", JIRA, lambda: lines("jira.ndjson"), lambda r: r),
    "debezium": ("debezium.ndjson", DEBEZIUM, lambda: lines("debezium.ndjson"), _debezium_data),
    "cloudevents": ("cloudevents.json", CLOUDEVENTS, lambda: _cloudevents_records("cloudevents.json"),
                    lambda r: field_bytes(r, "data")),
    "ndjson": ("envelopes.ndjson", ENVELOPES, lambda: lines("envelopes.ndjson"), lambda r: field_bytes(r, "data")),
}


def check_events(fmt: str, events: list[ctxdb.Event]) -> None:
    fixture, expected, records, data_of = CASES[fmt]
    recs = records()
    assert len(events) == len(expected) == len(recs)
    assert [ev.seq for ev in events] == list(range(1, len(expected) + 1))
    for ev, exp, rec in zip(events, expected, recs):
        got = envelope(ev)
        if exp[0] is None:
            assert CONTENT_ID.match(ev.id), ev.id
            got = (None, *got[1:])
        assert got == exp
        assert ev.data == data_of(rec)
    ids = [ev.id for ev in events]
    assert len(set(ids)) == len(ids)


# ---- mapping, byte-exact data, detection, idempotency ------------------------------------------
@pytest.mark.parametrize("fmt", list(CASES))
@pytest.mark.parametrize("how", ["explicit", "auto"])
def test_fixture_maps_to_envelopes(tmp_path, fmt, how):
    path = FIXTURES / CASES[fmt][0]
    db, rep, events = ingest(tmp_path, path, fmt if how == "explicit" else "auto")
    try:
        assert rep.formats == {str(path): fmt}
        assert rep.records == rep.appended == len(CASES[fmt][1])
        assert rep.duplicates == 0 and rep.rejected == 0
        check_events(fmt, events)
    finally:
        db.close()


@pytest.mark.parametrize("fmt", list(CASES))
def test_reingest_is_all_duplicates(tmp_path, fmt):
    path = FIXTURES / CASES[fmt][0]
    db, first, events = ingest(tmp_path, path, "auto")
    try:
        again = db.ingest(path, format=fmt)
        assert first.appended == len(events) > 0
        assert again.appended == 0
        assert again.duplicates == again.records == len(events)
        assert again.first_seq is None
        assert [envelope(e) for e in db.read()] == [envelope(e) for e in events]
    finally:
        db.close()


@pytest.mark.parametrize("fmt", ["jira", "debezium", "ndjson"])
def test_content_ids_are_stable_across_stores(tmp_path, fmt):
    """Records without a producer id get the same content id in any store, so a second
    delivery (or a replay into a fresh store) deduplicates."""
    path = FIXTURES / CASES[fmt][0]
    db1, _, ev1 = ingest(tmp_path, path, fmt, "one")
    db2, _, ev2 = ingest(tmp_path, path, "auto", "two")
    db1.close()
    db2.close()
    assert [e.id for e in ev1] == [e.id for e in ev2]
    assert any(CONTENT_ID.match(e.id) for e in ev1)


def test_data_survives_reopen_byte_for_byte(tmp_path):
    db, _, before = ingest(tmp_path, [FIXTURES / "github.ndjson", FIXTURES / "slack.ndjson"], "auto")
    db.close()
    with ctxdb.open(tmp_path / "db") as db:
        after = list(db.read())
    assert [(e.seq, e.id, e.data, e.meta) for e in after] == [(e.seq, e.id, e.data, e.meta) for e in before]
    assert len(after) == len(GITHUB) + len(SLACK)


def test_auto_detects_each_file_of_one_call(tmp_path):
    paths = [FIXTURES / CASES[f][0] for f in CASES]
    db, rep, events = ingest(tmp_path, paths, "auto")
    db.close()
    assert rep.formats == {str(FIXTURES / CASES[f][0]): f for f in CASES}
    assert len(events) == sum(len(CASES[f][1]) for f in CASES)
    assert {e.type for e in events} >= {"com.github.push", "slack.reaction_added", "jira.comment_created",
                                        "orders.deleted", "com.acme.shop.refund.issued", "user.registered"}


# ---- per-format details ------------------------------------------------------------------------
def test_github_body_is_the_exact_slice_of_the_line(tmp_path):
    db, _, events = ingest(tmp_path, FIXTURES / "github.ndjson", "github")
    db.close()
    for ev, line in zip(events, lines("github.ndjson")):
        start = line.index(b', "body": ') + len(b', "body": ')
        assert line.endswith(b"}}")
        assert ev.data == line[start:-1]
        assert b'": ' in ev.data  # the capture's own spacing, not a re-encoding
        headers = json.loads(line)["headers"]
        assert json.loads(ev.meta) == {"headers": headers}


def test_slack_keeps_escaped_slashes_and_meta(tmp_path):
    db, _, events = ingest(tmp_path, FIXTURES / "slack.ndjson", "slack")
    db.close()
    assert b"https:\\/\\/github.com\\/acme-shop" in events[0].data
    assert events[0].json()["text"].endswith("https://github.com/acme-shop/storefront/issues/412")
    changed = events[1].json()
    assert changed["subtype"] == "message_changed" and "three customers" in changed["message"]["text"]
    assert events[2].json()["deleted_ts"] == events[2].json()["previous_message"]["ts"]
    meta = json.loads(events[0].meta)
    assert meta["team_id"] == "T04ACMESH0P" and meta["api_app_id"] == "A07SUPB0T01"


def test_debezium_data_is_the_change_payload(tmp_path):
    db, _, events = ingest(tmp_path, FIXTURES / "debezium.ndjson", "debezium")
    db.close()
    for ev in events:
        change = ev.json()
        assert set(change) >= {"before", "after", "source", "op"}  # never the schema or the Kafka key
        assert change["source"]["table"] == "orders"
    assert events[3].json()["after"] is None and events[3].json()["before"]["id"] == 1002
    assert events[4].json()["after"]["status"] == "shipped"


def test_jira_data_is_the_whole_webhook_body(tmp_path):
    db, _, events = ingest(tmp_path, FIXTURES / "jira.ndjson", "jira")
    db.close()
    body = events[1].json()
    assert body["changelog"]["items"][0]["toString"] == "In Progress"
    assert "Jürgen Vogt".encode() in events[1].data
    assert events[2].json()["comment"]["id"] == "10107"


def test_cloudevents_batch_keeps_specversion_and_extensions(tmp_path):
    db, rep, events = ingest(tmp_path, FIXTURES / "cloudevents.json", "auto")
    db.close()
    assert rep.formats == {str(FIXTURES / "cloudevents.json"): "cloudevents"}
    ext = [json.loads(e.ext) for e in events]
    assert ext[0] == {
        "specversion": "1.0", "datacontenttype": "application/json",
        "dataschema": "https://shop.acme.example/schemas/order-placed/v2.json",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "partitionkey": "user:318",
    }
    assert ext[1]["tracestate"] == "acme=t61rcWkgMzE"
    assert ext[2] == {"specversion": "1.0", "datacontenttype": "application/json"}
    assert b'"unit_price":11.90' in events[0].data  # the producer's decimals, not 11.9
    for ev, rec in zip(events, _cloudevents_records("cloudevents.json")):
        out = json.loads(ev.to_json())
        original = json.loads(rec)
        assert "ext" not in out
        for k, v in original.items():  # every attribute back at top level, unchanged
            assert out[k] == v, k
        assert ev.to_json().count(field_bytes(rec, "data")) == 1


def test_cloudevents_single_pretty_printed_event(tmp_path):
    path = FIXTURES / "cloudevents-single.json"
    text = path.read_bytes()
    assert text.count(b"\n") > 10  # the point: one event spread over many lines
    db, rep, events = ingest(tmp_path, path, "auto")
    db.close()
    assert rep.formats == {str(path): "cloudevents"}
    assert [envelope(e) for e in events] == [(
        "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d", "https://support.acme.example/tickets",
        "com.acme.support.ticket.escalated", "ticket:SUP-23", "2026-11-14T09:05:00Z")]
    ev = events[0]
    start = text.index(b'"data": ') + len(b'"data": ')
    end = text.rindex(b"}")  # the object's closing brace; data ends just before its newline
    assert ev.data == text[start:end].rstrip()
    assert b'\n    "orders": [\n      20417,' in ev.data
    ext = json.loads(ev.ext)
    assert ext["specversion"] == "1.0" and ext["comacmeregion"] == "eu-central"
    assert ext["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    top = ev.to_dict()
    assert top["comacmeregion"] == "eu-central" and top["specversion"] == "1.0"
    assert top["data"] == json.loads(text)["data"]


def test_envelope_meta_is_kept(tmp_path):
    db, _, events = ingest(tmp_path, FIXTURES / "envelopes.ndjson", "ndjson")
    db.close()
    assert events[0].meta == field_bytes(lines("envelopes.ndjson")[0], "meta") == b'{"tags": ["pii"]}'
    assert [e.meta for e in events[1:]] == [None, None, None]



@pytest.mark.parametrize("fmt", ["jira", "debezium", "github", "slack", "ndjson"])
def test_crlf_line_ends_are_not_part_of_the_data(tmp_path, fmt):
    """A file saved with Windows line ends: the payload is still exactly the producer's bytes."""
    path = tmp_path / CASES[fmt][0]
    path.write_bytes((FIXTURES / CASES[fmt][0]).read_bytes().replace(b"\n", b"\r\n"))
    db, _, events = ingest(tmp_path, path, "auto")
    db.close()
    check_events(fmt, events)
    assert not any(b"\r" in ev.data for ev in events)


# ---- compressed input --------------------------------------------------------------------------
def _compress(kind: str, data: bytes) -> bytes:
    return gzip.compress(data) if kind == "gz" else zstandard.ZstdCompressor(level=3).compress(data)


@pytest.mark.parametrize("kind", ["gz", "zst"])
@pytest.mark.parametrize("fmt", ["github", "debezium", "cloudevents"])
def test_compressed_input(tmp_path, kind, fmt):
    plain = FIXTURES / CASES[fmt][0]
    packed = tmp_path / f"{plain.name}.{kind}"
    packed.write_bytes(_compress(kind, plain.read_bytes()))
    assert packed.read_bytes()[:4] != plain.read_bytes()[:4]
    db, rep, events = ingest(tmp_path, packed, "auto")
    db.close()
    assert rep.formats == {str(packed): fmt}
    check_events(fmt, events)


def test_compressed_name_does_not_matter(tmp_path):
    """Compression is found by magic bytes: a zstd file named .ndjson is still read."""
    packed = tmp_path / "slack-export.ndjson"
    packed.write_bytes(_compress("zst", (FIXTURES / "slack.ndjson").read_bytes()))
    db, rep, events = ingest(tmp_path, packed, "slack")
    db.close()
    check_events("slack", events)


# ---- bad records -------------------------------------------------------------------------------
def _without_delivery(line: bytes) -> bytes:
    rec = json.loads(line)
    del rec["headers"]["X-GitHub-Delivery"]
    return json.dumps(rec).encode()


def _url_verification(_: bytes) -> bytes:
    return json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"}).encode()


def _op_x(line: bytes) -> bytes:
    rec = json.loads(line)
    rec["op"] = "x"
    return json.dumps(rec, separators=(",", ":")).encode()


def _no_timestamp(line: bytes) -> bytes:
    rec = json.loads(line)
    del rec["timestamp"]
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def _tombstone(_: bytes) -> bytes:
    return b'{"key":{"id":1002},"value":null}'


def _no_subject(line: bytes) -> bytes:
    rec = json.loads(line)
    del rec["subject"]
    return json.dumps(rec).encode()


BAD = [
    # (format, fixture, how to spoil the first record, field named in the error, words in the reason)
    ("github", "github.ndjson", _without_delivery, "headers.X-GitHub-Delivery", "missing"),
    ("slack", "slack.ndjson", _url_verification, "type", "url_verification"),
    ("debezium", "debezium.ndjson", _op_x, "op", "'x'"),
    ("debezium", "debezium.ndjson", _tombstone, "value", "tombstone"),
    ("jira", "jira.ndjson", _no_timestamp, "timestamp", "missing"),
    ("ndjson", "envelopes.ndjson", _no_subject, "subject", "missing"),
]


@pytest.mark.parametrize("how", ["explicit", "auto"])
@pytest.mark.parametrize("fmt,fixture,spoil,field,words", BAD, ids=[f"{b[0]}-{b[3]}" for b in BAD])
def test_bad_record_names_file_line_and_field(tmp_path, how, fmt, fixture, spoil, field, words):
    good = lines(fixture)
    path = tmp_path / f"bad-{fixture}"
    path.write_bytes(b"\n".join([good[0], spoil(good[0]), *good[1:]]) + b"\n")
    db = ctxdb.open(tmp_path / "db", sync=False)
    try:
        with pytest.raises(ctxdb.BadInput) as err:
            db.ingest(path, format=fmt if how == "explicit" else "auto")
        assert list(db.read()) == []  # the whole call is one transaction
    finally:
        db.close()
    exc = err.value
    assert (exc.file, exc.line, exc.field) == (str(path), 2, field)
    msg = str(exc)
    assert msg.startswith(f"{path}:2: ")
    assert f"`{field}`" in msg and words in msg


def test_slack_url_verification_first_is_still_detected_as_slack(tmp_path):
    path = tmp_path / "slack-handshake.ndjson"
    path.write_bytes(_url_verification(b"") + b"\n" + b"\n".join(lines("slack.ndjson")) + b"\n")
    db = ctxdb.open(tmp_path / "db", sync=False)
    try:
        with pytest.raises(ctxdb.BadInput) as err:
            db.ingest(path)
        rep = db.ingest(path, skip_bad=True, rejects=str(tmp_path / "rejects.ndjson"))
        events = list(db.read())
    finally:
        db.close()
    assert (err.value.line, err.value.field) == (1, "type")
    assert "event_callback" in str(err.value)
    assert (rep.rejected, rep.appended) == (1, len(SLACK))
    rejected = json.loads((tmp_path / "rejects.ndjson").read_bytes().splitlines()[0])
    assert rejected["line"] == 1 and "url_verification" in rejected["reason"]
    check_events("slack", events)


def test_cloudevents_bad_element_names_the_field(tmp_path):
    recs = [json.loads(r) for r in _cloudevents_records("cloudevents.json")]
    del recs[1]["specversion"]
    recs[2].pop("data")
    recs[2]["data_base64"] = "UERGLTEuNwo="
    path = tmp_path / "ce-batch.json"
    for bad, field in ((1, "specversion"), (2, "data_base64")):
        path.write_text(json.dumps([recs[0], recs[bad]]))
        with ctxdb.open(tmp_path / "db", sync=False) as db:
            with pytest.raises(ctxdb.BadInput) as err:
                db.ingest(path, format="cloudevents")
            assert list(db.read()) == []
        assert err.value.file == str(path) and err.value.field == field
        assert f"`{field}`" in str(err.value)


def test_unknown_format_is_rejected(tmp_path):
    with ctxdb.open(tmp_path / "db", sync=False) as db:
        with pytest.raises(ctxdb.BadInput) as err:
            db.ingest(FIXTURES / "github.ndjson", format="gitlab")
    assert err.value.field == "format" and "github" in str(err.value)


# ---- the bundled sample ------------------------------------------------------------------------
SAMPLES = Path(ctxdb.__file__).parent / "samples"


def test_support_sample_ingests_as_envelopes(tmp_path):
    path = SAMPLES / "support.ndjson"
    recs = [x for x in path.read_bytes().split(b"\n") if x]
    assert 300 <= len(recs) <= 600
    db, rep, events = ingest(tmp_path, path, "auto")
    db.close()
    assert rep.formats == {str(path): "ndjson"}
    assert rep.appended == len(recs) == len(events)
    times = [e.time for e in events]
    assert times == sorted(times)
    assert "2026-11-10T00:00:00Z" <= times[0] and times[-1] <= "2026-11-20T23:59:59Z"
    assert (events[0].type, events[0].subject) == ("persona.defined", "persona:support")
    assert {"name", "tone", "rules"} <= set(events[0].json())
    for ev, rec in zip(events, recs):
        assert ev.data == field_bytes(rec, "data")
        assert re.fullmatch(r"(persona:support|user:\d+|order:\d{5}|ticket:SUP-\d+|channel:support)", ev.subject)
    users = [e for e in events if e.type == "user.registered"]
    assert users and all(json.loads(e.meta) == {"tags": ["pii"]} and "@" in e.json()["email"] for e in users)
    types = {e.type for e in events}
    assert types == {"persona.defined", "user.registered", "order.placed", "order.shipped", "order.delivered",
                     "order.cancelled", "refund.issued", "comment.added", "ticket.created", "ticket.updated",
                     "slack.message"}
    # every ticket and order a text mentions exists
    text = b"\n".join(recs).decode()
    tickets = {e.subject[len("ticket:"):] for e in events if e.type == "ticket.created"}
    assert set(re.findall(r"SUP-\d+", text)) <= tickets
    orders = {e.json()["order_id"] for e in events if e.type == "order.placed"}
    assert {int(n) for n in re.findall(r"#(\d{5})\b", text)} <= orders


def test_support_sample_generator_is_deterministic(tmp_path):
    import runpy

    gen = runpy.run_path(str(SAMPLES / "make_support.py"), run_name="make_support")
    out = tmp_path / "support.ndjson"
    assert gen["main"](["make_support.py", str(out)]) == 0
    assert out.read_bytes() == (SAMPLES / "support.ndjson").read_bytes()
