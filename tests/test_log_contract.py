"""The log contract: every log implementation (MemoryLog, DiskLog) passes the same suite."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctxdb
from ctxdb.codec import build_batch, envelopes_from_objects
from ctxdb.log import MemoryLog
from ctxdb.log_disk import DiskLog

from conftest import events, make_event


def test_seqs_are_gapless_from_one(any_store):
    assert any_store.append(events(5)) == [1, 2, 3, 4, 5]
    assert any_store.append(events(3, start=5)) == [6, 7, 8]
    assert [e.seq for e in any_store.read()] == list(range(1, 9))


def test_duplicates_report_existing_seq_within_batch_and_across_calls(any_store):
    assert any_store.append(events(3)) == [1, 2, 3]
    batch = [make_event(1), make_event(10), make_event(10), make_event(2)]
    assert any_store.append(batch) == [2, 4, 4, 3]
    assert any_store.last_seq == 4
    assert [e.id for e in any_store.read()] == ["ev-0", "ev-1", "ev-2", "ev-10"]


def test_same_id_different_source_is_a_different_event(any_store):
    assert any_store.append([make_event(1, source="a"), make_event(1, source="b")]) == [1, 2]


def test_missing_id_gets_deterministic_content_id(any_store):
    ev = make_event(1)
    del ev["id"]
    first = any_store.append([ev])
    again = any_store.append([dict(ev)])
    assert first == again == [1]
    stored = next(any_store.read())
    assert stored.id.startswith("h-") and len(stored.id) == 34
    other = dict(ev, data={"different": True})
    assert any_store.append([other]) == [2]


def test_data_bytes_kept_verbatim(any_store):
    line = b'{"type":"t","subject":"s","time":"2026-11-01T00:00:00Z","data": { "b" : 1.50e2, "a":"\\u00e9" } }'
    any_store.append([line])
    assert next(any_store.read()).data == b'{ "b" : 1.50e2, "a":"\\u00e9" }'


def test_extension_attributes_are_kept(any_store):
    ev = dict(make_event(1), specversion="1.0", traceparent="00-abc-01", datacontenttype="application/json")
    any_store.append([ev])
    out = next(any_store.read()).to_dict()
    assert out["specversion"] == "1.0" and out["traceparent"] == "00-abc-01"
    assert out["datacontenttype"] == "application/json"


def test_read_filters(any_store):
    any_store.append(events(60))
    assert [e.seq for e in any_store.read(from_seq=10, to_seq=12)] == [10, 11, 12]
    subj = [e for e in any_store.read(subject="order:3")]
    assert subj and all(e.subject == "order:3" for e in subj)
    assert len(subj) == len([i for i in range(60) if i % 17 == 3])
    typed = list(any_store.read(type="order.*"))
    assert typed and {e.type for e in typed} == {"order.shipped"}
    assert list(any_store.read(subject="order:1?")) and all(
        e.subject in {f"order:1{d}" for d in range(10)} for e in any_store.read(subject="order:1?"))
    assert list(any_store.read(subject="order:3", from_seq=30, to_seq=40)) == [
        e for e in subj if 30 <= e.seq <= 40]


def test_glob_does_not_match_longer_subjects(any_store):
    any_store.append([make_event(1, subject="user:42"), make_event(2, subject="user:42x")])
    assert [e.subject for e in any_store.read(subject="user:42")] == ["user:42"]
    assert [e.subject for e in any_store.read(subject="user:4?")] == ["user:42"]


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


@pytest.fixture(params=["memory", "disk"])
def clocked(request, tmp_path):
    clock = Clock(1_700_000_000_000_000)
    log = MemoryLog(clock) if request.param == "memory" else DiskLog(tmp_path / "s", clock=clock, segment_events=3)
    yield log, clock
    log.close()


def _append(log, evs):
    return log.append_batch(build_batch(envelopes_from_objects(evs)))


def test_recorded_at_never_decreases_when_clock_steps_back(clocked):
    log, clock = clocked
    _append(log, events(2))
    clock.t -= 3_600_000_000  # the wall clock steps back an hour
    _append(log, events(2, start=2))
    clock.t += 10
    _append(log, events(1, start=4))
    recs = [e.recorded_at for e in log.read()]
    assert recs == sorted(recs)
    assert recs[2] == recs[1]  # held at the last value, not moved back


def test_as_of_maps_recorded_time_to_seq(clocked):
    log, clock = clocked
    t0 = clock.t
    _append(log, events(3))
    clock.t = t0 + 1_000_000
    _append(log, events(4, start=3))
    clock.t = t0 + 2_000_000
    _append(log, events(2, start=7))
    at = datetime.fromtimestamp(t0 / 1e6, tz=timezone.utc)
    assert log.seq_at(at) == 3
    assert log.seq_at(at + timedelta(seconds=1.5)) == 7
    assert log.seq_at(at - timedelta(seconds=1)) == 0
    assert [e.seq for e in log.read(as_of=at + timedelta(seconds=1))] == list(range(1, 8))
    assert [e.seq for e in log.read(as_of=(at + timedelta(seconds=1)).isoformat())] == list(range(1, 8))


def test_transaction_rollback_leaves_no_gap(any_store):
    any_store.append(events(2))
    with pytest.raises(RuntimeError):
        with any_store.transaction() as txn:
            txn.add(build_batch(envelopes_from_objects(events(5, start=2))))
            raise RuntimeError("boom")
    assert any_store.last_seq == 2
    assert any_store.append(events(5, start=2)) == [3, 4, 5, 6, 7]


def test_transaction_events_invisible_until_commit(any_store):
    with any_store.transaction() as txn:
        txn.add(build_batch(envelopes_from_objects(events(3))))
        assert any_store.last_seq == 0 and list(any_store.read()) == []
    assert any_store.last_seq == 3


def test_bad_event_in_append_appends_nothing(any_store):
    any_store.append(events(2))
    bad = events(3, start=2)
    bad[1]["time"] = "yesterday"
    with pytest.raises(ctxdb.BadInput) as ei:
        any_store.append(bad)
    assert ei.value.field == "time" and "#1" in str(ei.value)
    assert any_store.last_seq == 2


def test_python_objects_and_json_lines_accepted(any_store):
    seqs = any_store.append([make_event(1), msgspec.json.encode(make_event(2)), msgspec.json.encode(make_event(3)).decode()])
    assert seqs == [1, 2, 3]
    assert next(any_store.read(from_seq=2)).json() == make_event(2)["data"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(json_values, min_size=1, max_size=8), indent=st.sampled_from([-1, 0, 1, 3]),
       pad=st.sampled_from([b"", b" ", b"\t "]))
def test_property_append_read_roundtrip_preserves_data_bytes(tmp_path_factory, payloads, indent, pad):
    """`data` is the exact bytes of the JSON value (inner whitespace, escapes, number spelling);
    whitespace around the value belongs to the envelope, not to `data`."""
    path = tmp_path_factory.mktemp("prop")
    raws = [msgspec.json.format(msgspec.json.encode(p), indent=indent) for p in payloads]
    lines = [b'{"id":"%d","type":"t","subject":"s","time":"2026-11-01T00:00:00Z","data":%s%s%s}' % (i, pad, r, pad)
             for i, r in enumerate(raws)]
    with ctxdb.open(path / "db", segment_events=3) as db:
        db.append(lines[: len(lines) // 2])
        db.append(lines[len(lines) // 2 :])
    with ctxdb.open(path / "db") as db:
        got = [e.data for e in db.read()]
    assert got == raws
    assert [msgspec.json.decode(g) for g in got] == [msgspec.json.decode(r) for r in raws]


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=10), min_size=1, max_size=8))
def test_property_memory_and_disk_logs_agree(tmp_path_factory, ops):
    """The same appends (with random duplicates) give the same seqs on every backend."""
    path = tmp_path_factory.mktemp("agree")
    mem = ctxdb.open_memory()
    with ctxdb.open(path / "db", segment_events=7) as disk:
        for op in ops:
            evs = [make_event(i) for i in op]
            assert mem.append(evs) == disk.append(evs)
        assert [e.id for e in mem.read()] == [e.id for e in disk.read()]
        seqs = [e.seq for e in disk.read()]
        assert seqs == list(range(1, len(seqs) + 1))


def test_meta_objects_are_kept(any_store):
    line = b'{"type":"t","subject":"s:1","time":"2026-11-10T00:00:00Z","data":1,"meta": {"tags": ["pii"]}}'
    any_store.append([line, dict(make_event(2), meta={"tags": ["x"]})])
    got = list(any_store.read())
    assert got[0].meta == b'{"tags": ["pii"]}' and msgspec.json.decode(got[1].meta) == {"tags": ["x"]}


def test_cloudevents_attributes_without_specversion_are_kept(any_store):
    any_store.append([{"type": "a", "subject": "s", "time": "2026-01-01T00:00:00Z", "data": {},
                       "datacontenttype": "application/json", "dataschema": "https://example.com/s"}])
    d = next(any_store.read()).to_dict()
    assert d["datacontenttype"] == "application/json"
    assert d["dataschema"] == "https://example.com/s"
