"""Envelope decoding and batch normalisation: the hot path of ingest.

Records arrive as JSON lines (or as `Envelope`s built by a format adapter). The fast path decodes
only the envelope with a `msgspec.Struct`, keeping `data` as raw bytes; everything else is done
column-wise on a whole batch with Arrow (UTF-8 validation, RFC 3339 checks, time parsing) and NumPy
(key fingerprints), so the per-event Python cost is one decode and a few list comprehensions.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import BadInput
from .events import CE_FIELDS, CORE_FIELDS, Envelope, LeanEnvelope
from .keyindex import SMALL_BATCH, fingerprints  # (SMALL_BATCH: small batches are checked in Python)

#: Columns of a batch as written to the WAL (segments add `seq` and `recorded_at` in front).
BATCH_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("type", pa.string()),
        ("subject", pa.string()),
        ("time", pa.string()),
        ("time_ts", pa.timestamp("us", tz="UTC")),
        ("data", pa.string()),
        ("meta", pa.string()),
        ("ext", pa.string()),
    ]
)

RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
_RFC3339 = re.compile(RFC3339)
_RFC3339_ARROW = re.compile(RFC3339[:-1] + r"\Z", re.ASCII)  # as Arrow's RE2 reads RFC3339
_DEC = msgspec.json.Decoder(Envelope)


_LEAN = msgspec.json.Decoder(LeanEnvelope)
_RAW_OBJ = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STR = msgspec.json.Decoder(str)
_ENC = msgspec.json.Encoder()
_FIELD_RE = re.compile(r"`\$\.([A-Za-z0-9_]+)")
_MISSING_RE = re.compile(r"missing required field `([A-Za-z0-9_]+)`")
_EXPECT = {
    "id": "a non-empty string",
    "source": "a string",
    "type": "a non-empty string",
    "subject": "a non-empty string",
    "time": "an RFC 3339 timestamp string, e.g. 2026-11-21T10:00:00Z",
    "data": "any JSON value (the field must be present)",
    "meta": "a JSON value",
}


def _bad(msg: str, field: str | None = None, *, expected: str | None = None) -> BadInput:
    return BadInput(msg, field=field, expected=expected or _EXPECT.get(field or "", None))


def decode_line(line: bytes | memoryview) -> Envelope:
    """Decode one JSON envelope. Raises BadInput naming the field and what was expected."""
    try:
        return _DEC.decode(line)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith("Object contains unknown field"):
            return _decode_with_extensions(line)
        raise _from_msgspec(text) from None
    except msgspec.DecodeError as exc:
        raise _bad(f"not valid JSON ({exc})", expected="one JSON object per line") from None
    except UnicodeDecodeError as exc:
        raise _bad(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", expected="UTF-8 encoded JSON") from None


def _from_msgspec(text: str) -> BadInput:
    m = _MISSING_RE.search(text)
    if m:
        return _bad(f"missing `{m.group(1)}`", m.group(1))
    m = _FIELD_RE.search(text)
    field = m.group(1) if m else None
    if text.startswith("Expected `object`"):
        return _bad(f"record is not a JSON object ({text})", expected="a JSON object (an event envelope)")
    return _bad(text, field)


def _decode_with_extensions(line: bytes | memoryview) -> Envelope:
    """Slow path for records with attributes beyond the known ones: keep the extras in `ext`."""
    try:
        attrs = _RAW_OBJ.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _bad(f"not valid JSON ({exc})", expected="one JSON object per line") from None
    extra = {k: v for k, v in attrs.items() if k not in CORE_FIELDS and k not in CE_FIELDS}
    for k in extra:
        try:  # also validates UTF-8 inside the extension attributes
            msgspec.json.decode(extra[k])
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise _bad(f"attribute `{k}` is not valid JSON/UTF-8", k, expected="valid JSON") from None
    core = {k: v for k, v in attrs.items() if k not in extra}
    if extra:
        core["ext"] = msgspec.Raw(_ENC.encode(dict(sorted(extra.items()))))
    return envelope_from_mapping(core, raw=True)


def envelope_from_mapping(obj: Mapping[str, Any], *, raw: bool = False) -> Envelope:
    """Build an Envelope from a dict (the Python API, format adapters). Values that are already
    `msgspec.Raw` (or, with raw=True, every value) are taken as JSON bytes verbatim; `data` given as
    Python objects is encoded canonically with msgspec."""
    if not isinstance(obj, Mapping):
        raise _bad(f"event is a {type(obj).__name__}", expected="a mapping (dict) with the envelope fields")
    if "data" not in obj:
        raise _bad("missing `data`", "data")
    vals: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise _bad(f"attribute name {k!r} is not a string", expected="string attribute names")
        if k in ("data", "meta", "ext"):
            if isinstance(v, msgspec.Raw):
                vals[k] = v
            elif isinstance(v, (bytes, bytearray, memoryview)) and k == "ext":
                vals[k] = msgspec.Raw(bytes(v))
            else:
                vals[k] = None if (k != "data" and v is None) else msgspec.Raw(_encode_value(k, v))
        elif k in CORE_FIELDS or k in CE_FIELDS:
            if isinstance(v, msgspec.Raw):
                try:
                    v = msgspec.json.decode(v)
                except msgspec.DecodeError:
                    raise _bad(f"`{k}` is not valid JSON", k) from None
            vals[k] = v
        else:
            extra[k] = v
    if extra:
        enc = {k: (v if isinstance(v, msgspec.Raw) else msgspec.Raw(_encode_value(k, v))) for k, v in sorted(extra.items())}
        vals["ext"] = msgspec.Raw(_ENC.encode(enc))
    for k in ("type", "subject", "time"):
        if k not in vals or vals[k] is None:
            raise _bad(f"missing `{k}`", k)
    for k in ("type", "subject", "time", "id", "source", *CE_FIELDS):
        if k in vals and vals[k] is not None and not isinstance(vals[k], str):
            raise _bad(f"`{k}` is {type(vals[k]).__name__} {vals[k]!r}", k, expected=_EXPECT.get(k, "a string"))
    return Envelope(**vals)


def _encode_value(field: str, v: Any) -> bytes:
    try:
        return _ENC.encode(v)
    except (TypeError, msgspec.EncodeError) as exc:
        raise _bad(f"`{field}` cannot be encoded as JSON ({exc})", field, expected="a JSON-serialisable value") from None


def content_id(source: str, env: Envelope) -> str:
    """The deterministic id of an event sent without one: a hash of everything that identifies its
    content, so re-ingesting the same record is a no-op."""
    h = hashlib.blake2b(digest_size=16)
    for part in (source, env.type, env.subject, env.time):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    h.update(bytes(env.data))
    if env.meta is not None:
        h.update(b"\x1f")
        h.update(bytes(env.meta))
    return "h-" + h.hexdigest()


def _ext(env: Envelope) -> bytes | None:
    ce = {k: getattr(env, k) for k in CE_FIELDS if getattr(env, k) is not None}
    if not ce:
        return bytes(env.ext) if env.ext is not None else None
    if env.ext is not None:
        ce.update(_RAW_OBJ.decode(env.ext))
    return _ENC.encode(dict(sorted(ce.items())))


def _raw_column(values: Sequence[Any], field: str) -> pa.Array:
    """Arrow string column from raw JSON bytes (None = null), built from one joined buffer and
    validated as UTF-8 in C++."""
    n = len(values)
    has_null = None in values
    if has_null:
        validity = pa.array([v is not None for v in values], pa.bool_()).buffers()[1]
        values = [b"" if v is None else v for v in values]
    else:
        validity = None
    data = b"".join(values)
    large = len(data) >= 1 << 31
    offsets = np.empty(n + 1, dtype=np.int64 if large else np.int32)
    offsets[0] = 0
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=n), out=offsets[1:])
    arr = pa.Array.from_buffers(
        pa.large_string() if large else pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        raise _BadRow(_first_bad_utf8(values), field) from None
    return arr.cast(pa.string()) if large else arr


def _first_bad_utf8(values: Sequence[Any]) -> int:
    for i, v in enumerate(values):
        try:
            bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return i
    return 0


class _BadRow(Exception):
    def __init__(self, row: int, field: str, message: str | None = None) -> None:
        self.row, self.field, self.message = row, field, message


@dataclass(frozen=True, slots=True)
class Batch:
    """Normalised events ready for the log: Arrow columns (BATCH_SCHEMA), key fingerprints, the
    origin line of each row (for error messages and rejects), and the JSON bytes they came from.
    `ipc` is the table already serialised as an Arrow IPC stream (by a parallel-decode worker),
    which the WAL then writes without serialising it again."""

    table: pa.RecordBatch
    fp: np.ndarray
    lines: list[int] | None
    json_bytes: int
    ipc: Any = None

    def __len__(self) -> int:
        return self.table.num_rows

    def take(self, mask: np.ndarray) -> "Batch":
        idx = np.nonzero(mask)[0]
        lines = [self.lines[i] for i in idx] if self.lines is not None else None
        return Batch(self.table.take(pa.array(idx)), self.fp[idx], lines, self.json_bytes)


def build_batch(
    envs: Sequence[Envelope],
    *,
    lines: list[int] | None = None,
    default_source: str = "",
    json_bytes: int = 0,
) -> Batch:
    """Validate and normalise envelopes into a Batch. Raises BadInput for the first bad row, with
    its line (when `lines` is given) and field."""
    try:
        return _build(envs, default_source, lines, json_bytes)
    except _BadRow as bad:
        env = envs[bad.row]
        value = getattr(env, bad.field, None)
        shown = value if isinstance(value, str) else None
        msg = bad.message or (f"`{bad.field}` is {shown!r}" if shown is not None else f"bad `{bad.field}`")
        if bad.field in ("data", "meta", "ext"):
            msg = f"`{bad.field}` is not valid UTF-8"
        err = _bad(msg, bad.field, expected="valid UTF-8 JSON" if bad.field in ("data", "meta", "ext") else None)
        err = err.located(line=lines[bad.row] if lines else None)
        err.row = bad.row
        raise err from None


def _build(envs: Sequence[Envelope], default_source: str, lines: list[int] | None, json_bytes: int) -> Batch:
    n = len(envs)
    # One list comprehension per field; every check on a whole column is done on its Arrow
    # array (null counts, lengths), not by comparing Python objects.
    sources = [e.source for e in envs]
    src_arr = _str_column(sources)
    if src_arr.null_count:
        sources = [default_source if x is None else x for x in sources]
        src_arr = _str_column(sources)
    ids = [e.id for e in envs]
    id_arr = _str_column(ids)
    if id_arr.null_count:
        for i, e in enumerate(envs):
            if e.id is None:
                ids[i] = content_id(sources[i], e)
        id_arr = _str_column(ids)
    if _has_empty(id_arr, ids):
        raise _BadRow(ids.index(""), "id", "`id` is empty")
    types = [e.type for e in envs]
    subjects = [e.subject for e in envs]
    type_arr, subject_arr = _str_column(types), _str_column(subjects)
    for arr, col, name in ((type_arr, types, "type"), (subject_arr, subjects, "subject")):
        if _has_empty(arr, col):
            raise _BadRow(col.index(""), name, f"`{name}` is empty")
    times = [e.time for e in envs]
    metas = [e.meta for e in envs]
    # Any extension attribute in the batch (CloudEvents ones may come without specversion).
    has_ext = any([x.count(None) < n for x in ([e.ext for e in envs], [e.specversion for e in envs],
                                               [e.datacontenttype for e in envs], [e.dataschema for e in envs])])
    exts = [_ext(e) for e in envs] if has_ext else None
    time_arr = _str_column(times)
    time_ts = _parse_times(time_arr, times)
    datas = [e.data for e in envs]
    table = pa.RecordBatch.from_arrays(
        [
            id_arr,
            src_arr,
            type_arr,
            subject_arr,
            time_arr,
            time_ts,
            _raw_column(datas, "data"),
            _raw_column(metas, "meta") if metas.count(None) < n else pa.nulls(n, pa.string()),
            _raw_column(exts, "ext") if exts is not None else pa.nulls(n, pa.string()),
        ],
        schema=BATCH_SCHEMA,
    )
    if not json_bytes:
        json_bytes = sum(map(len, datas)) + 100 * n
    return Batch(table, fingerprints(src_arr, id_arr), lines, json_bytes)


def _str_column(values: list[Any]) -> pa.Array:
    return pa.array(values, pa.string())


def _has_empty(arr: pa.Array, values: list | None = None) -> bool:
    """Whether a string column (`arr`, built from `values` when given) holds an empty string."""
    if values is not None and len(values) < SMALL_BATCH:
        return "" in values
    return len(arr) > 0 and pc.min(pc.binary_length(arr)).as_py() == 0


_PLAIN = np.frombuffer(b"0000-00-00T00:00:00Z", dtype=np.uint8)
_PLAIN_DIGITS = _PLAIN == ord("0")


def _all_plain_utc(arr: pa.Array) -> bool:
    """True if every value is `YYYY-MM-DDTHH:MM:SSZ` (the usual form; a strict subset of RFC 3339),
    checked on the bytes of the column at once."""
    n = len(arr)
    if not n or arr.null_count or arr.type != pa.string():
        return False
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    if hi - lo != 20 * n or (np.diff(offsets) != 20).any():
        return False
    m = np.frombuffer(bufs[2], dtype=np.uint8, count=hi - lo, offset=lo).reshape(n, 20)
    digits = m[:, _PLAIN_DIGITS]
    return bool(((digits >= ord("0")) & (digits <= ord("9"))).all()
                and (m[:, ~_PLAIN_DIGITS] == _PLAIN[~_PLAIN_DIGITS]).all())


def _parse_times(arr: pa.Array, times: list[str] | None) -> pa.Array:
    """`times`: the column as a list (None: taken from `arr` where needed)."""
    if times is None and (len(arr) < SMALL_BATCH or not _all_plain_utc(arr)):
        times = arr.to_pylist()
    if len(arr) < SMALL_BATCH:
        for i, t in enumerate(times):
            if not isinstance(t, str) or not _RFC3339_ARROW.match(t):
                raise _BadRow(i, "time")
    elif times is not None and not _all_plain_utc(arr):
        ok = pc.match_substring_regex(arr, RFC3339)
        if not pc.all(ok).as_py():
            raise _BadRow(ok.to_pylist().index(False), "time")
    try:
        return pc.cast(arr, pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        if times is None:
            times = arr.to_pylist()
        return pa.array([_parse_time_slow(i, t) for i, t in enumerate(times)], pa.timestamp("us", tz="UTC"))


#: lines decoded at a time by fast_batch: their objects are turned into Arrow columns while they
#: are still in the CPU cache, and freed before the next block (so their memory is reused)
FAST_BLOCK = 1024
FAST_BUFFER_BLOCK = 128 << 10
_STRING = pa.string()


def fast_batch(lines: Sequence[bytes], default_source: str = "", json_bytes: int = 0) -> Batch | None:
    """The Batch of NDJSON records in the usual form (the six LeanEnvelope attributes, every `id`
    given, times in RFC 3339), decoded block by block straight into Arrow columns; None for
    anything else (meta or extension attributes, a missing id, any bad record, blank lines,
    small batches): the caller then takes the general path (decode_line/build_batch), which
    gives the same batch or the error with its line and field."""
    n = len(lines)
    if n < SMALL_BATCH or not _try_fast():
        return None
    dec = _LEAN.decode
    return _fast(((list(map(dec, lines[k : k + FAST_BLOCK])) for k in range(0, n, FAST_BLOCK))), n,
                 default_source, json_bytes)


def fast_batch_buffer(data: bytes, lines: int, default_source: str = "", json_bytes: int = 0) -> Batch | None:
    """fast_batch of `lines` whole NDJSON lines in one buffer (newline-terminated but maybe the
    last), decoded FAST_BUFFER_BLOCK bytes at a time without first splitting them into lines."""
    if lines < SMALL_BATCH or not _try_fast():
        return None
    return _fast(_buffer_blocks(data), lines, default_source, json_bytes)


def _buffer_blocks(data: bytes):
    mv = memoryview(data)
    size, a = len(data), 0
    dec = _LEAN.decode_lines
    while a < size:
        b = size if a + FAST_BUFFER_BLOCK >= size else data.rfind(b"\n", a, a + FAST_BUFFER_BLOCK) + 1
        if b <= a:  # a line longer than a block
            b = data.find(b"\n", a + FAST_BUFFER_BLOCK) + 1 or size
        yield dec(mv[a:b])
        a = b


def _try_fast() -> bool:
    global _skip_fast
    if _skip_fast:
        _skip_fast -= 1
        return False
    return True


def _fast(blocks, n: int, default_source: str, json_bytes: int) -> Batch | None:
    """The batch of `n` records decoded as blocks of LeanEnvelopes (None: take the general path)."""
    global _skip_fast
    cols: list[list[pa.Array]] = [[], [], [], [], []]
    datas: list[bytes] = []
    lens: list[int] = []
    try:
        for envs in blocks:
            for out, vals in zip(cols, ([e.id for e in envs], [e.source for e in envs], [e.type for e in envs],
                                        [e.subject for e in envs], [e.time for e in envs])):
                out.append(pa.array(vals, _STRING))
            raws = [e.data for e in envs]
            datas.append(b"".join(raws))
            lens += map(len, raws)
    except msgspec.ValidationError:
        _skip_fast = SKIP_AFTER_MISS  # meta/extension attributes (or a bad field): likely in the next batches too
        return None
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if len(lens) != n:  # blank lines (skipped by decode_lines; the general path numbers them)
        return None
    id_arr, src_arr, type_arr, subject_arr, time_arr = (
        c[0] if len(c) == 1 else pa.concat_arrays(c) for c in cols)
    if id_arr.null_count or _has_empty(id_arr) or _has_empty(type_arr) or _has_empty(subject_arr):
        return None
    if src_arr.null_count:
        src_arr = pc.fill_null(src_arr, default_source)
    try:
        time_ts = _parse_times(time_arr, None)
    except _BadRow:
        return None
    data = b"".join(datas)
    if len(data) >= 1 << 31:
        return None
    offsets = np.empty(n + 1, dtype=np.int32)
    offsets[0] = 0
    np.cumsum(np.array(lens, dtype=np.int64), out=offsets[1:])
    data_arr = pa.Array.from_buffers(_STRING, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        data_arr.validate(full=True)
    except pa.ArrowInvalid:
        return None
    nulls = pa.nulls(n, _STRING)
    table = pa.RecordBatch.from_arrays(
        [id_arr, src_arr, type_arr, subject_arr, time_arr, time_ts, data_arr, nulls, nulls], schema=BATCH_SCHEMA)
    if not json_bytes:
        json_bytes = len(data) + 100 * n
    return Batch(table, fingerprints(src_arr, id_arr), None, json_bytes)


#: batches not tried by fast_batch after one had other attributes (or a wrongly typed field)
SKIP_AFTER_MISS = 64
_skip_fast = 0


def _parse_time_slow(row: int, t: str) -> datetime:
    """RFC 3339 forms Arrow's cast rejects: lower-case t/z, more than 6 fractional digits."""
    m = _RFC3339.match(t)
    if not m:
        raise _BadRow(row, "time")
    s = t[:10] + "T" + t[11:]
    s = s[:-1] + "+00:00" if s[-1] in "zZ" else s
    frac = m.group(1)
    if frac and len(frac) > 7:
        s = s.replace(frac, frac[:7], 1)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise _BadRow(row, "time") from None
    return dt.astimezone(timezone.utc)


def envelopes_from_objects(events: Iterable[Any]) -> list[Envelope]:
    """The Python API's input: dicts, Envelopes, or JSON lines (str/bytes)."""
    out: list[Envelope] = []
    for i, ev in enumerate(events):
        try:
            if isinstance(ev, Envelope):
                out.append(ev)
            elif isinstance(ev, (bytes, bytearray, memoryview)):
                out.append(decode_line(bytes(ev)))
            elif isinstance(ev, str):
                out.append(decode_line(ev.encode()))
            else:
                out.append(envelope_from_mapping(ev))
        except BadInput as exc:
            raise BadInput(f"event #{i}: {exc.reason}", field=exc.field, expected=exc.expected) from None
    return out
