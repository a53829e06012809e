"""verify-purge's residue scanner on real stores: every marker planted in every format is found
(the WAL's zstd frames, zstd Parquet segments, items.duckdb and its snapshot copies, Arrow IPC
vector chunks, \\u-escaped JSON, .zst files), a clean store is clean, damaged files are reported
and do not stop the scan, and a store held open by its writer can be scanned."""
from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import ctxdb
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from ctxdb.verify_purge import CAP, Residue, ScanReport, format_report, scan_store
from ctxdb.wal import HEADER, HEADER_SIZE, MAGIC, RAW
from pyarrow import ipc

RULES = """
[[rules]]
on = "note.added"
key = "note:{subject}/{id}"
text = "{data.text}"
kind = "fact"

[agents.bot]
budget = 100000
subjects = ["user:*", "order:*"]
"""

SUBJECT = "user:42"
M_WAL = "MARKER-wal-7c1e90"          # in an event that stays in the WAL (never sealed in the test)
M_SEG = "MARKER-seg-4d2a55"          # in an event that is sealed into a Parquet segment
M_ITEM = "MARKER-item-b83f01"        # an item text (items.duckdb, its snapshot copy, the log)
M_UNI = "Zoë-9f3"                    # non-ASCII, for the JSON-escaped forms
M_VEC = "MARKER-vec-0a9d3c"          # planted in an Arrow IPC vectors chunk
M_ZST = "MARKER-zst-5e6b12"          # planted in a .zst file
ALL = [SUBJECT, M_WAL, M_SEG, M_ITEM, M_UNI, M_VEC, M_ZST]

_rng = random.Random(7)
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]


def filler(i: int, subject: str = "order:1") -> dict:
    text = " ".join(_rng.choice(WORDS) for _ in range(12)) + f" #{i}"
    return {"id": f"f-{i}", "source": "t", "type": "note.added", "subject": subject,
            "time": "2026-01-01T00:00:00Z", "data": {"text": text}}


def note(id: str, text: str, subject: str = SUBJECT) -> dict:
    return {"id": id, "source": "t", "type": "note.added", "subject": subject,
            "time": "2026-01-01T00:00:00Z", "data": {"text": text}}


def open_db(path: Path) -> ctxdb.Store:
    cfg = path.parent / (path.name + ".toml")
    cfg.write_text(RULES)
    return ctxdb.open(path, config=cfg, embedder=None, sync=False)


def hits(report: ScanReport, marker: str, fmt: str | None = None, file: str | None = None) -> list[Residue]:
    return [r for r in report.residues if r.marker == marker and (fmt is None or r.format == fmt)
            and (file is None or re.fullmatch(file, r.file))]


def plant_extras(root: Path) -> None:
    """Files a store may hold beside the log and item store: a vectors chunk, JSON, a .zst file."""
    vdir = root / "vectors" / "x"
    vdir.mkdir(parents=True, exist_ok=True)
    tbl = pa.table({"hash": pa.array(["h-1", f"h-{M_VEC}", "h-3"]),
                    "vec": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(12, np.float32)), 4)})
    # compressed IPC buffers: the marker is not in the file's bytes as such
    with ipc.new_file(str(vdir / "chunk-000001.arrow"), tbl.schema,
                      options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(tbl)
    (root / "extra").mkdir(exist_ok=True)
    (root / "extra" / "escaped.json").write_text(
        json.dumps({"people": [{"name": f"Dr. {M_UNI}"}], M_UNI: 1}, ensure_ascii=True))
    text = " ".join(_rng.choice(WORDS) for _ in range(4000))
    body = (text[:9000] + f" {M_ZST} " + text[9000:]).encode()
    (root / "extra" / "dump.ndjson.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(body))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One store, scanned twice: with M_WAL/M_SEG in the WAL, then after sealing (M_SEG and the
    rest in a segment) with a later M_WAL event in the WAL again. The writer stays open throughout."""
    root = tmp_path_factory.mktemp("vp") / "s"
    db = open_db(root)
    try:
        db.append([filler(i) for i in range(300)])
        db.append([note("n-seg", f"sealed {M_SEG}"), note("n-item", M_ITEM), note("n-uni", f"hi {M_UNI}")])
        db.append([filler(i) for i in range(300, 600)])
        assert db.wait(timeout=60)
        db.snapshot()
        before = scan_store(root, ALL)
        db.log.seal(force=True)
        db.append([filler(i) for i in range(600, 700)] + [note("n-wal", f"in the wal {M_WAL}")])
        assert db.wait(timeout=60)
        plant_extras(root)
        scanned: list[str] = []
        after = scan_store(root, ALL, progress=lambda done, total, f: scanned.append(f))
        yield root, before, after, scanned
    finally:
        db.close()


def test_wal_frames_are_decoded(built):
    root, before, after, _ = built
    wal = r"log/wal-\d+\.log"
    # before the seal every marker event is in the WAL, in zstd frames
    for m in (M_SEG, M_ITEM, SUBJECT):
        hs = hits(before, m, "wal-frame", wal)
        assert hs, m
        assert re.fullmatch(r"frame at offset \d+ seq \d+\.\.\d+ row \d+ \(seq \d+\) column (data|subject|id)", hs[0].where)
    # the frames holding them are compressed (not RAW): only decoding sees inside
    frames = list(_frames(next((root / "log").glob("wal-*.log"))))
    assert frames and all(not f & RAW for f in frames)
    # after the seal only the new event is in the (new) WAL
    assert hits(after, M_WAL, "wal-frame", wal)
    assert not hits(after, M_SEG, "wal-frame") and not hits(after, M_SEG, file=wal)
    assert not hits(before, M_WAL)


def _frames(path: Path):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        magic, flags, length, *_ = HEADER.unpack(data[pos:pos + HEADER_SIZE])
        assert magic == MAGIC
        yield flags
        pos += HEADER_SIZE + length


def test_parquet_segment_is_decoded(built):
    root, _, after, _ = built
    seg = r"log/seg-\d+-\d+\.parquet"
    segs = list((root / "log").glob("seg-*.parquet"))
    assert segs
    hs = hits(after, M_SEG, "parquet", seg)
    assert hs and re.fullmatch(r"row group 0 column data row \d+", hs[0].where)
    # the column is zstd-compressed: the segment's bytes as stored do not show the marker
    assert M_SEG.encode() not in b"".join(p.read_bytes() for p in segs)
    assert not hits(after, M_SEG, "raw", seg)
    assert hits(after, SUBJECT, "parquet", seg)
    # the non-ASCII marker is found in the event's JSON text, however it was spelled there
    assert hits(after, M_UNI, "parquet", seg)


def test_item_store_and_snapshot_copy(built):
    _, before, after, _ = built
    for rep in (before, after):
        hs = hits(rep, M_ITEM, "duckdb", "items.duckdb")
        assert hs and re.fullmatch(r"table item_versions column text rowid \d+", hs[0].where)
        assert hits(rep, M_ITEM, "duckdb", r"snapshots/\d+/items\.duckdb")
        assert any("column subject" in h.where for h in hits(rep, SUBJECT, "duckdb", "items.duckdb"))
    # the item store was read while its writer held it open, from a copy: nothing was skipped
    assert not [s for s in after.skipped if "duckdb" in s]


def test_vectors_json_and_zst(built):
    root, _, after, _ = built
    hs = hits(after, M_VEC, "arrow", r"vectors/x/chunk-000001\.arrow")
    assert hs and hs[0].where == "column hash row 1"
    js = hits(after, M_UNI, "json", r"extra/escaped\.json")
    assert {h.where for h in js} == {'$["people"][0]["name"]', f'$["{M_UNI}"] (key)'}
    # the file holds only the \u-escaped form; the raw layer finds that form too
    assert M_UNI.encode() not in (root / "extra" / "escaped.json").read_bytes()
    raw = hits(after, M_UNI, "raw", r"extra/escaped\.json")
    assert raw and all(h.where.endswith("(JSON-escaped)") for h in raw)
    z = hits(after, M_ZST, "zstd", r"extra/dump\.ndjson\.zst")
    assert z and z[0].where.startswith("decompressed offset ")
    assert not hits(after, M_ZST, "raw")     # only decompression sees it


def test_every_kind_of_file_is_scanned(built):
    _, _, after, scanned = built
    assert after.files == len(scanned) and after.bytes > 0
    patterns = [r"LOCK", r"items\.duckdb", r"log/wal-\d+\.log", r"log/seg-\d+-\d+\.parquet",
                r"log/keys-\d+-\d+\.npy", r"log/manifest\.json", r"snapshots/\d+/items\.duckdb",
                r"snapshots/\d+/manifest\.json", r"vectors/x/chunk-000001\.arrow", r"extra/escaped\.json",
                r"extra/dump\.ndjson\.zst"]
    for pat in patterns:
        assert any(re.fullmatch(pat, f) for f in scanned), pat
    assert not after.ok and after.seconds > 0
    assert not after.skipped, after.skipped


def test_clean_store_is_ok(tmp_path):
    root = tmp_path / "clean"
    db = open_db(root)
    try:
        db.append([filler(i) for i in range(200)])
        assert db.wait(timeout=60)
        db.snapshot()
        db.log.seal(force=True)
        db.append([filler(i) for i in range(200, 220)])
    finally:
        db.close()
    plant_extras(root)     # markers in the extras only: scan for the others
    seen: list[tuple[int, int, str]] = []
    rep = scan_store(root, [SUBJECT, M_WAL, M_SEG, M_ITEM], progress=lambda d, t, f: seen.append((d, t, f)))
    assert rep.ok and rep.residues == [] and not rep.omitted
    assert rep.files > 5 and rep.bytes > 0 and not rep.skipped
    files = [p for p in root.rglob("*") if p.is_file()]
    assert rep.files == len(files) and rep.bytes == sum(p.stat().st_size for p in files)
    assert [d for d, _, _ in seen] == list(range(1, rep.files + 1))
    assert {"LOCK", "items.duckdb"} <= {f for _, _, f in seen}
    assert format_report(rep).splitlines()[-1].startswith(f"0 residue(s) in 0 file(s); scanned {rep.files} files, ")


def test_damaged_files_are_skipped_not_fatal(tmp_path):
    root = tmp_path / "dmg"
    db = open_db(root)
    try:
        db.append([note("a", M_SEG), *[filler(i) for i in range(200)]])
        assert db.wait(timeout=60)
        db.log.seal(force=True)
        db.append([note("b", M_WAL), note("c", M_ITEM)])
        assert db.wait(timeout=60)
    finally:
        db.close()
    seg = next((root / "log").glob("seg-*.parquet"))
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) // 2])                     # truncated segment
    wal = next(p for p in (root / "log").glob("wal-*.log") if p.stat().st_size)
    whole = wal.read_bytes()
    wal.write_bytes(whole + whole[:HEADER_SIZE + 10])           # a torn frame at the tail
    (root / "vectors" / "y").mkdir(parents=True)
    (root / "vectors" / "y" / "chunk-000001.arrow").write_bytes(b"ARROW1\0\0garbage")
    (root / "bad.json").write_text('{"x": ')
    (root / "bad.zst").write_bytes(b"\x28\xb5\x2f\xfdgarbage")
    rep = scan_store(root, [M_WAL, M_ITEM, M_SEG])
    reasons = {s.split(" (", 1)[0]: s for s in rep.skipped}
    assert set(reasons) == {seg.relative_to(root).as_posix(), wal.relative_to(root).as_posix(),
                            "vectors/y/chunk-000001.arrow", "bad.json", "bad.zst"}, rep.skipped
    assert "(parquet)" in reasons[seg.relative_to(root).as_posix()]
    assert "torn tail" in reasons[wal.relative_to(root).as_posix()]
    # the scan went on: the WAL's intact frames and the item store were still searched
    assert hits(rep, M_WAL, "wal-frame") and hits(rep, M_ITEM, "duckdb", "items.duckdb")
    assert rep.files == sum(1 for p in root.rglob("*") if p.is_file())


def test_scan_while_the_writer_holds_the_store(tmp_path):
    root = tmp_path / "live"
    db = open_db(root)
    try:
        db.append([note("a", M_ITEM)])
        assert db.wait(timeout=60)
        db.snapshot()          # the projector's item versions reach items.duckdb
        with pytest.raises(duckdb.Error):      # the item store really is locked by the writer
            duckdb.connect(str(root / "items.duckdb"), read_only=True).close()
        rep = scan_store(root, [M_ITEM])
        assert hits(rep, M_ITEM, "duckdb", "items.duckdb") and hits(rep, M_ITEM, "wal-frame")
        assert not rep.skipped
        db.append([note("b", "still writable after the scan")])    # the writer was not disturbed
        assert db.wait(timeout=60)
    finally:
        db.close()


def test_cap_per_file_and_exact_counts(tmp_path):
    root = tmp_path / "cap"
    db = open_db(root)
    try:
        db.append([note(f"n{i}", f"text {i}") for i in range(40)])
        assert db.wait(timeout=60)
        db.log.seal(force=True)
    finally:
        db.close()
    rep = scan_store(root, [SUBJECT])
    seg = hits(rep, SUBJECT, "parquet", r"log/seg-.*")
    rows = [h for h in seg if "column subject row" in h.where]
    assert len(seg) == CAP and len(rows) == CAP     # the rows are listed first
    key = next(k for k in rep.omitted if k[1] == "parquet")
    # every hit is counted: 40 subject values, plus the column statistics that name the subject
    md = pq.ParquetFile(root / key[0]).metadata
    col = md.schema.names.index("subject")
    st = md.row_group(0).column(col).statistics
    n_stats = sum(SUBJECT in (v.decode() if isinstance(v, bytes) else v) for v in (st.min, st.max))
    assert n_stats >= 1
    assert rep.omitted[key] == 40 + n_stats - CAP
    dk = ("items.duckdb", "duckdb", SUBJECT)
    assert len(hits(rep, SUBJECT, "duckdb", "items.duckdb")) == CAP and rep.omitted[dk] > 0
    text = format_report(rep)
    assert f"... and {rep.omitted[key]} more location(s)" in text
    assert rows and all(r.where in text for r in rows)


def test_generic_duckdb_columns_wal_and_deleted_rows(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    con = duckdb.connect(str(root / "other.duckdb"))
    con.execute("CREATE TABLE t (id INT, s VARCHAR, tags VARCHAR[], b BLOB, j JSON, st STRUCT(a VARCHAR, n INT))")
    con.execute("INSERT INTO t SELECT i, 'row ' || i, ['x', 'y'], 'blob'::BLOB, '{}', {'a': 'z', 'n': i} FROM range(5000) r(i)")
    con.execute(f"INSERT INTO t VALUES (9001, 'a', ['q', '{M_ITEM}'], NULL, NULL, NULL),"
                f" (9002, NULL, NULL, '{M_SEG}'::BLOB, NULL, NULL),"
                f" (9003, NULL, NULL, NULL, '{json.dumps({'t': M_UNI})}', NULL),"
                f" (9004, NULL, NULL, NULL, NULL, {{'a': '{M_WAL}', 'n': 1}})")
    con.execute("CHECKPOINT")
    con.execute("DELETE FROM t WHERE id < 2500")
    con.execute("CHECKPOINT")
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("INSERT INTO t (id, s) VALUES (9005, 'only in the wal MARKER-w2')")
    con.close()
    assert (root / "other.duckdb.wal").exists()
    rep = scan_store(root, [M_ITEM, M_SEG, M_UNI, M_WAL, "MARKER-w2"])
    got = {(h.marker, h.where.split(" rowid")[0]) for h in rep.residues if h.format == "duckdb"}
    assert {(M_ITEM, "table t column tags"), (M_SEG, "table t column b"), (M_UNI, "table t column j"),
            (M_WAL, "table t column st"), ("MARKER-w2", "table t column s")} <= got
    assert any("table t keeps" in w and "deleted row" in w for w in rep.warnings), rep.warnings


def test_markers_must_be_nonempty(tmp_path):
    with pytest.raises(ValueError):
        scan_store(tmp_path, [""])
    with pytest.raises(ValueError):
        scan_store(tmp_path, [])


def test_nested_arrow_parquet_npy_and_gzip_locations(tmp_path):
    """Rows are located inside lists, dictionaries, structs and maps; stream-format IPC, Parquet
    key-value metadata, text .npy arrays (UTF-32) and .gz files are decoded too."""
    root = tmp_path / "n"
    root.mkdir()
    m = "MARKER-nested-61f"
    tbl = pa.table({
        "tags": pa.array([["a"], None, ["b", "c"], ["d", f"x{m}"]], pa.list_(pa.string())),
        "cat": pa.array(["p", "q", m, "p"]).dictionary_encode(),
        "st": pa.array([{"a": "z", "n": 1}, {"a": m, "n": 2}, None, {"a": "y", "n": 3}]),
        "kv": pa.array([[("k", "v")], [], [(m, "v")], None], pa.map_(pa.string(), pa.string())),
        "bin": pa.array([b"\x00", m.encode(), b"", None], pa.binary()),
    }).replace_schema_metadata({"note": f"made by {m}"})
    pq.write_table(tbl, root / "t.parquet", compression="zstd")
    with ipc.new_stream(str(root / "t.arrows"), tbl.schema) as w:
        w.write_table(tbl.slice(1))                     # a sliced table: rows count from the slice
    np.save(root / "names.npy", np.array(["ann", "bob", f"{m}!"]))
    (root / "log.gz").write_bytes(gzip.compress(b"x" * 5000 + m.encode() + b"y" * 10))
    rep = scan_store(root, [m], cap=50)
    assert not rep.skipped, rep.skipped
    got = {(r.file, r.where) for r in rep.residues if r.format != "raw"}
    for f, rows in (("t.parquet", {"tags[]": 3, "cat": 2, "st.a": 1, "kv{key}": 2, "bin": 1}),
                    ("t.arrows", {"tags[]": 2, "cat": 1, "st.a": 0, "kv{key}": 1, "bin": 0})):
        prefix = "row group 0 " if f.endswith(".parquet") else ""
        for col, row in rows.items():
            assert (f, f"{prefix}column {col} row {row}") in got, (f, col, sorted(got))
    assert ("t.parquet", "key-value metadata 'note' value") in got
    assert ("t.arrows", "schema metadata 'note'") in got
    assert ("names.npy", "element 2") in got
    assert ("log.gz", "decompressed offset 5000") in got
    # the npy holds UTF-32 text: the raw layer alone does not see it
    assert not [r for r in rep.residues if r.file == "names.npy" and r.format == "raw"]
