"""Bad input: each case gets a clear error (file, line, field, expectation) and nothing is lost."""
from __future__ import annotations

import json

import pytest

import ctxdb

from conftest import events, write_ndjson

GOOD = json.dumps({"id": "g", "type": "t", "subject": "s", "time": "2026-11-01T00:00:00Z", "data": {}})


def _line(**over) -> str:
    ev = {"id": "x1", "type": "t", "subject": "s", "time": "2026-11-01T00:00:00Z", "data": {"a": 1}}
    ev.update(over)
    return json.dumps({k: v for k, v in ev.items() if v is not ...})


CASES = {
    "truncated_json": (b'{"id": "x", "type": "t", "subj', None, "not valid JSON"),
    "invalid_utf8_in_data": (b'{"id":"x","type":"t","subject":"s","time":"2026-11-01T00:00:00Z","data":"\xff\xfe"}', "data", "UTF-8"),
    "invalid_utf8_in_envelope": (b'{"id":"x\xff","type":"t","subject":"s","time":"2026-11-01T00:00:00Z","data":1}', None, "UTF-8"),
    "binary_garbage": (bytes(range(256)) * 3, None, "not valid JSON"),
    "missing_type": (_line(type=...).encode(), "type", "missing `type`"),
    "non_string_id": (_line(id=42).encode(), "id", "Expected `str | null`, got `int`"),
    "time_not_rfc3339": (_line(time="21/11/2026 10:00").encode(), "time", "RFC 3339"),
    "time_without_offset": (_line(time="2026-11-01T10:00:00").encode(), "time", "RFC 3339"),
    "data_absent": (_line(data=...).encode(), "data", "missing `data`"),
    "not_an_object": (b'[1, 2, 3]', None, "JSON"),
    "empty_type": (_line(type="").encode(), "type", "empty"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_record_rejects_whole_file_with_location(store, tmp_path, case):
    record, field, needle = CASES[case]
    store.append(events(3))
    f = tmp_path / f"{case}.ndjson"
    f.write_bytes(GOOD.encode() + b"\n\n" + record + b"\n" + json.dumps({**json.loads(GOOD), "id": "g2"}).encode() + b"\n")
    with pytest.raises(ctxdb.BadInput) as ei:
        store.ingest(f)
    err = ei.value
    msg = str(err)
    assert err.file == str(f) and err.line == 3, msg
    assert f"{f}:3:" in msg
    if field:
        assert err.field == field and f"`{field}`" in msg
    assert needle.lower() in msg.lower(), msg
    assert store.last_seq == 3  # nothing from the file, nothing before it lost
    assert [e.id for e in store.read()] == ["ev-0", "ev-1", "ev-2"]


def test_skip_bad_writes_rejects_with_reasons(store, tmp_path):
    f = tmp_path / "mixed.ndjson"
    lines = [_line(id="a"), _line(id="b", time="nope"), "{broken", _line(id="c"), _line(id=7)]
    f.write_text("\n".join(lines) + "\n")
    rej = tmp_path / "rejects.ndjson"
    rep = store.ingest(f, skip_bad=True, rejects=str(rej))
    assert rep.appended == 2 and rep.rejected == 3
    assert [e.id for e in store.read()] == ["a", "c"]
    bad = sorted((json.loads(x) for x in rej.read_text().splitlines()), key=lambda b: b["line"])
    assert [b["line"] for b in bad] == [2, 3, 5]
    assert "time" in bad[0]["reason"] and "JSON" in bad[1]["reason"] and "id" in bad[2]["reason"]
    assert bad[1]["record"] == "{broken"


def test_hundred_megabyte_line_is_rejected_without_losing_anything(store, tmp_path):
    store.append(events(2))
    f = tmp_path / "huge.ndjson"
    with open(f, "wb") as fh:
        fh.write(GOOD.encode() + b"\n")
        fh.write(b'{"id":"big","type":"t","subject":"s","time":"2026-11-01T00:00:00Z","data":"')
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            fh.write(chunk)
        fh.write(b'"}\n')
    with pytest.raises(ctxdb.BadInput) as ei:
        store.ingest(f)
    assert ei.value.line == 2 and "limit" in str(ei.value)
    assert store.last_seq == 2
    rep = store.ingest(f, skip_bad=True, rejects=str(tmp_path / "rej"))
    assert rep.appended == 1 and rep.rejected == 1


def test_empty_file_appends_nothing_and_is_not_an_error(store, tmp_path):
    f = tmp_path / "empty.ndjson"
    f.write_bytes(b"")
    rep = store.ingest(f)
    assert rep.appended == 0 and rep.records == 0 and store.last_seq == 0


def test_directory_and_missing_file_are_clear_errors(store, tmp_path):
    with pytest.raises(ctxdb.BadInput, match="is a directory"):
        store.ingest(tmp_path)
    with pytest.raises(ctxdb.BadInput, match="no such file") as ei:
        store.ingest(tmp_path / "absent.ndjson")
    assert ei.value.file == str(tmp_path / "absent.ndjson")


def test_duplicate_ids_inside_one_file_are_reported_as_duplicates(store, tmp_path):
    evs = events(5) + events(5)
    rep = store.ingest(write_ndjson(tmp_path / "dups.ndjson", evs))
    assert rep.appended == 5 and rep.duplicates == 5 and store.last_seq == 5


def test_bad_second_file_rolls_back_the_first(store, tmp_path):
    a = write_ndjson(tmp_path / "a.ndjson", events(5))
    b = tmp_path / "b.ndjson"
    b.write_text(_line(id="z", subject="") + "\n")
    with pytest.raises(ctxdb.BadInput) as ei:
        store.ingest([a, b])
    assert ei.value.file == str(b) and ei.value.field == "subject"
    assert store.last_seq == 0
    assert store.ingest([a]).appended == 5


def test_corrupt_gzip_is_bad_input(store, tmp_path):
    import gzip

    f = tmp_path / "x.ndjson.gz"
    data = gzip.compress(("\n".join(_line(id=str(i)) for i in range(2000)) + "\n").encode())
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ctxdb.BadInput, match="decompress") as ei:
        store.ingest(f)
    assert ei.value.file == str(f)
    assert store.last_seq == 0


def test_unknown_format_is_bad_input(store, tmp_path):
    with pytest.raises(ctxdb.BadInput, match="unknown format"):
        store.ingest(write_ndjson(tmp_path / "a.ndjson", events(1)), format="xml")


def test_utf8_bom_is_skipped_and_bytes_read_reported(store, tmp_path):
    f = tmp_path / "bom.ndjson"
    f.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n").encode())
    rep = store.ingest(f)
    assert rep.appended == 1 and rep.bytes_read == f.stat().st_size
