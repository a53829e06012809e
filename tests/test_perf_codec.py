"""Fast paths of batch building give exactly what the general code gives: string columns (and
their null/empty checks on the Arrow arrays), the plain-UTC time check on raw bytes."""
from __future__ import annotations

import pyarrow as pa
import pytest

import ctxdb
from ctxdb.codec import _all_plain_utc, _str_column, build_batch, envelopes_from_objects


@pytest.mark.parametrize("values", [
    ["a", "bc", "", "def"], ["x"] * 5, [], ["é", "a"], ["a", None, "b"], ["😀", ""], ["\x00a", "b\x7f"],
])
def test_str_column_equals_pa_array(values):
    got = _str_column(values)
    want = pa.array(values, pa.string())
    got.validate(full=True)
    assert got.type == pa.string() and got.equals(want)


@pytest.mark.parametrize("values,plain", [
    (["2026-11-01T00:00:00Z", "1999-12-31T23:59:59Z"], True),
    (["2026-11-01T00:00:00Z", "2026-11-01t00:00:00Z"], False),   # valid RFC 3339, not the plain form
    (["2026-11-01T00:00:00z"], False),
    (["2026-11-01T00:00:00.5Z"], False),
    (["2026-11-01T00:00:00+01:00"], False),
    (["2026-11-01 00:00:00Z"], False),
    (["2026-11-0100:00:00Z0"], False),
    (["202a-11-01T00:00:00Z"], False),
    (["2026/11/01T00:00:00Z"], False),
    ([], False),
])
def test_plain_utc_check(values, plain):
    arr = pa.array(values, pa.string())
    assert _all_plain_utc(arr) is plain
    if len(values) > 1:
        assert _all_plain_utc(arr.slice(1)) is _all_plain_utc(pa.array(values[1:], pa.string()))


def _ev(i, t):
    return {"id": f"e{i}", "source": "s", "type": "t", "subject": "x", "time": t, "data": {"i": i}}


@pytest.mark.parametrize("t,ok", [
    ("2026-11-01T00:00:00Z", True), ("2026-11-01t00:00:00z", True), ("2026-11-01T00:00:00.123456789Z", True),
    ("2026-11-01T01:00:00+01:00", True), ("2026-13-01T00:00:00Z", False), ("2026-11-01T25:00:00Z", False),
    ("2026-11-01", False), ("2026-11-01T00:00:00", False), ("soon", False),
])
def test_times_in_plain_and_mixed_batches(t, ok):
    envs = envelopes_from_objects([_ev(0, "2026-11-01T00:00:00Z"), _ev(1, t)])
    if ok:
        ts = build_batch(envs).table.column("time_ts").cast(pa.int64()).to_pylist()
        assert ts[0] == 1793491200000000 and ts[1] is not None
    else:
        with pytest.raises(ctxdb.BadInput) as ei:
            build_batch(envs)
        assert ei.value.field == "time" and ei.value.row == 1
