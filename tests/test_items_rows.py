"""rows_to_versions: item_versions rows (Arrow) to ItemVersions, with the list columns built from
flat values and offsets; every shape of list column gives what the row-by-row conversion gives."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

from ctxdb.items import ARROW_SCHEMA, COLUMNS, ItemVersion, _tuples, rows_to_versions


def reference(tbl: pa.Table) -> list[ItemVersion]:
    """The plain conversion: each row to a dict, lists to tuples (NULL -> ())."""
    out = []
    for r in tbl.to_pylist():
        for c in ("tags", "lineage_seqs", "lineage_ids"):
            r[c] = tuple(r[c] or ())
        out.append(ItemVersion(**r))
    return out


def table(n: int, shape: str, seed: int = 3) -> pa.Table:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        if shape == "one":       # lineage of a plain rule: one event each
            k = 1
        elif shape == "none":
            k = 0
        else:                    # summaries: several; some NULL
            k = rnd.randrange(4)
        seqs = None if shape == "mixed" and i % 5 == 2 else [rnd.randrange(10**9) for _ in range(k)]
        rows.append({
            "vid": i + 1, "key": f"k{i}", "op": "upsert", "subject": f"s{i % 7}", "kind": "fact",
            "text": "t" * (i % 9), "priority": 0.5, "pinned": bool(i % 2),
            "tags": None if i % 4 == 1 else [f"tag{j}" for j in range(i % 3)],
            "time_us": i * 10, "expires_us": None if i % 3 else i, "hash": f"h{i}",
            "from_seq": i, "to_seq": None if i % 2 else i + 5,
            "lineage_seqs": seqs, "lineage_ids": None if seqs is None else [f"e{s}" for s in seqs],
            "rule": "r", "meta": None})
    return pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)


@pytest.mark.parametrize("shape", ["one", "none", "mixed", "many"])
def test_same_as_row_by_row(shape):
    t = table(300, shape)
    assert rows_to_versions(t) == reference(t)
    # chunked, and a slice (offsets not starting at 0)
    assert rows_to_versions(pa.concat_tables([t.slice(0, 100), t.slice(100)])) == reference(t)
    s = t.slice(37, 150)
    assert rows_to_versions(s) == reference(s)
    assert rows_to_versions(t.slice(0, 0)) == []


def test_tuples_shapes():
    arr = pa.array([["a"], [], None, ["b", "c"]], pa.list_(pa.string()))
    assert _tuples(arr) == [("a",), (), (), ("b", "c")]
    assert _tuples(arr.slice(1)) == [(), (), ("b", "c")]
    assert _tuples(pa.array([[1], [2]], pa.list_(pa.int64()))) == [(1,), (2,)]
    assert _tuples(pa.array([[], []], pa.list_(pa.int64()))) == [(), ()]
    assert _tuples(pa.chunked_array([pa.array([[1, 2]]), pa.array([[3]])])) == [(1, 2), (3,)]
    assert len(COLUMNS) == len(ARROW_SCHEMA)


@pytest.mark.parametrize("shape", ["one", "mixed", "many"])
def test_a_bulk_writer_in_memory_stores_what_one_into_duckdb_stores(shape):
    """BulkWriter(in_memory=True) (replay --verify's scratch store): the rows handed to the store
    as an Arrow table, out of vid order, with closes of rows sent in earlier and later batches,
    read and digested like rows inserted into DuckDB by the plain BulkWriter."""
    from ctxdb.items import BulkWriter, ItemStore, WriteBatch

    full = table(400, shape)
    # the rows still open (to_seq NULL) are sent open and closed by a later batch's closes
    to_seq = full.column("to_seq").to_pylist()
    open_tbl = full.set_column(COLUMNS.index("to_seq"), "to_seq", pa.nulls(full.num_rows, pa.int64()))
    order = list(range(full.num_rows))
    random.Random(5).shuffle(order)
    stores = []
    for in_memory in (False, True):
        st = ItemStore(None)
        w = BulkWriter(st, chunk=50, in_memory=in_memory)
        for at in range(0, len(order), 40):
            part = order[at:at + 40]
            wb = WriteBatch(to_seq=at + 40, next_vid=401)
            wb.new_table = open_tbl.take(pa.array(part))
            # close, in this batch, the rows sent in the batch before (and this one's evens)
            prev = order[max(0, at - 40):at] + part[::2]
            wb.closes = {full.column("vid")[i].as_py(): to_seq[i] for i in prev if to_seq[i] is not None}
            w.append(wb)
        last = WriteBatch(to_seq=500, next_vid=401)
        last.closes = {full.column("vid")[i].as_py(): to_seq[i] for i in order if to_seq[i] is not None}
        w.append(last)
        w.finish()
        assert (st._adopted is not None) == in_memory
        stores.append(st)
    plain, mem = stores
    assert mem.digest() == plain.digest()
    assert mem.count_versions() == plain.count_versions() == 400
    assert mem.checkpoint() == plain.checkpoint() == (500, 401, "")
    assert mem.versions_at(120) == plain.versions_at(120) and mem.versions_at(120)
    assert reference(mem._q("SELECT * FROM item_versions ORDER BY vid")) == reference(full)


@pytest.mark.parametrize("rows", [1, 7, 50])
def test_digest_is_in_vid_order_whatever_the_insertion_order(monkeypatch, rows):
    """ItemStore.digest reads a table's rows as inserted (DuckDB keeps insertion order) when
    their vids ascend, and sorts them otherwise: rows inserted in vid order, reversed, or out
    of order only across the batches it reads (`rows` per batch) digest the same."""
    from ctxdb import items as items_mod
    from ctxdb.items import ItemStore

    monkeypatch.setattr(items_mod, "DIGEST_ROWS", rows)
    full = table(120, "mixed")
    n = full.num_rows
    orders = {"ascending": list(range(n)), "descending": list(range(n))[::-1],
              "swapped": list(range(60, n)) + list(range(60)),   # each part ascends; the second starts lower
              "one_pair": [0, 2, 1] + list(range(3, n))}
    digests = {}
    for name, order in orders.items():
        st = ItemStore(None)
        st._con.register("_rows", full.take(pa.array(order)))
        st._con.execute("INSERT INTO item_versions SELECT * FROM _rows")
        st._con.unregister("_rows")
        assert st._q("SELECT vid FROM item_versions").column("vid").to_pylist() == \
            full.column("vid").take(pa.array(order)).to_pylist()   # (DuckDB kept the insertion order)
        digests[name] = st.digest()
        st.close()
    assert len(set(digests.values())) == 1, digests
