"""codec.fast_batch (NDJSON decoded block by block straight into Arrow columns) gives exactly the
batch of the general path (decode_chunk + to_batch), or None where that path must decide (and
report errors with their line and field)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ctxdb.codec as codec
from ctxdb.codec import fast_batch
from ctxdb.errors import BadInput
from ctxdb.formats import ADAPTERS
from ctxdb.ingest import decode_chunk, lines_batch, to_batch

from conftest import events


@pytest.fixture(autouse=True)
def _lean_again(monkeypatch):
    monkeypatch.setattr(codec, "_skip_fast", 0)


def _lines(evs) -> list[bytes]:
    return [json.dumps(e, ensure_ascii=False).encode() for e in evs]


def _general(lines, source=""):
    d = decode_chunk(1, lines, ADAPTERS["ndjson"], "f", None)
    return to_batch(d, "f", source, None)


def _same(a, b) -> None:
    assert a.table.equals(b.table) and a.table.schema == b.table.schema
    assert np.array_equal(a.fp, b.fp) and a.lines == b.lines and a.json_bytes == b.json_bytes


def _varied(n: int) -> list[dict]:
    evs = events(n)
    for i, e in enumerate(evs):
        if i % 7 == 0:
            e["data"] = {"text": "grüße 😀 \"quoted\" \\ back", "list": [1, 2.5, None, True]}
        if i % 5 == 0:
            e["time"] = "2026-11-01T10:00:00.123456+02:00"
        if i % 11 == 0:
            e["data"] = [1, {"a": "b"}] if i % 2 else "just a string"
        if i % 13 == 0:
            del e["source"]
        if i % 3 == 0:
            e["subject"] = f"user:ü{i}"
    return evs


@pytest.mark.parametrize("n", [16, 100, codec.FAST_BLOCK, codec.FAST_BLOCK * 2 + 3])
def test_same_batch_as_the_general_path(n):
    lines = _lines(_varied(n))
    got = fast_batch(lines, "dflt", sum(map(len, lines)) + len(lines))
    assert got is not None and len(got) == n
    _same(got, _general(lines, "dflt"))
    got.table.validate(full=True)


def test_data_bytes_are_kept_as_received():
    lines = [b'{"id":"%d","type":"t","subject":"s","time":"2026-11-01T00:00:00Z","data": {"b" :1,  "a":[ 2 ]} }' % i
             for i in range(20)]
    got = fast_batch(lines)
    assert got is not None and got.table.column("data").to_pylist() == ['{"b" :1,  "a":[ 2 ]}'] * 20


@pytest.mark.parametrize("change", [
    lambda e: e.update(meta={"k": 1}),             # meta: a column of its own
    lambda e: e.update(specversion="1.0"),         # CloudEvents attribute -> ext
    lambda e: e.update(extra="x"),                 # extension -> ext
    lambda e: e.pop("id"),                         # content id assigned
    lambda e: e.update(id=""),                     # bad: empty id
    lambda e: e.update(type=""),
    lambda e: e.update(subject=""),
    lambda e: e.update(time="yesterday"),          # bad time
    lambda e: e.update(type=5),                    # bad type
    lambda e: e.pop("data"),                       # missing data
])
def test_anything_unusual_is_left_to_the_general_path(change):
    evs = events(40)
    change(evs[33])
    lines = _lines(evs)
    assert fast_batch(lines) is None
    codec._skip_fast = 0
    try:
        want = _general(lines)
    except BadInput as exc:
        with pytest.raises(BadInput) as ei:
            lines_batch(1, lines, ADAPTERS["ndjson"], "f", "", None)
        assert str(ei.value) == str(exc.located(file="f")) or ei.value.line == 34
        return
    records, got = lines_batch(1, lines, ADAPTERS["ndjson"], "f", "", None)
    assert records == 40
    _same(got, want)


@pytest.mark.parametrize("bad", [b"", b"   ", b"{not json", b'{"id":"x","type":"t","subject":"s","time":"2026-11-01T00:00:00Z","data":"\xff"}',
                                 b"[1,2]"])
def test_bad_or_blank_lines_are_left_to_the_general_path(bad):
    lines = _lines(events(30))
    lines[17] = bad
    assert fast_batch(lines) is None


def test_other_attributes_pause_fast_attempts(monkeypatch):
    monkeypatch.setattr(codec, "SKIP_AFTER_MISS", 3)
    evs = events(40)
    evs[0]["meta"] = {"k": 1}
    assert fast_batch(_lines(evs)) is None
    assert [fast_batch(_lines(events(40))) is None for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("t", ["2026-11-01t10:00:00z", "2026-11-01 10:00:00.1234567891Z", "2026-11-01T10:00:00-05:30"])
def test_times_arrow_cannot_cast_are_parsed_as_on_the_general_path(t):
    evs = events(40)
    evs[5]["time"] = t
    lines = _lines(evs)
    got = fast_batch(lines, "", 1)
    assert got is not None
    _same(got, to_batch(decode_chunk(1, lines, ADAPTERS["ndjson"], "f", None, 1), "f", "", None))


def test_small_batches_take_the_general_path():
    assert fast_batch(_lines(events(codec.SMALL_BATCH - 1))) is None


def _buffer(lines, tail_nl=True) -> bytes:
    return b"\n".join(lines) + (b"\n" if tail_nl else b"")


@pytest.mark.parametrize("block", [64, 1000, 128 << 10])
@pytest.mark.parametrize("tail_nl", [True, False])
def test_buffer_gives_the_same_batch(monkeypatch, block, tail_nl):
    monkeypatch.setattr(codec, "FAST_BUFFER_BLOCK", block)  # blocks shorter than a line, too
    lines = _lines(_varied(300))
    lines[7] = lines[7].replace(b'"data": ', b'"data": ' + b" " * 3000)  # a line over several blocks
    got = codec.fast_batch_buffer(_buffer(lines, tail_nl), len(lines), "dflt", 123)
    assert got is not None and len(got) == 300
    want = to_batch(decode_chunk(1, lines, ADAPTERS["ndjson"], "f", None, 123), "f", "dflt", None)
    _same(got, want)


def test_buffer_with_crlf_line_ends():
    lines = _lines(events(40))
    buf = b"\r\n".join(lines) + b"\r\n"
    got = codec.fast_batch_buffer(buf, 40, "", len(buf))
    assert got is not None
    _same(got, _general([x + b"\r" for x in lines]))


@pytest.mark.parametrize("bad", [b"", b"   ", b"{not json", b"[1]", b'{"id":"x","type":"t","subject":"s","time":"2026-11-01T00:00:00Z","data":"\xff"}'])
def test_buffer_with_blank_or_bad_lines_takes_the_general_path(bad):
    lines = _lines(events(40))
    lines[20] = bad
    assert codec.fast_batch_buffer(_buffer(lines), 40) is None
    lines.append(b"")  # a blank last line
    assert codec.fast_batch_buffer(_buffer(_lines(events(40)) + [b""]), 41) is None
