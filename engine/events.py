"""Events: the immutable facts in the log.

`Envelope` is what producers send (decoded from NDJSON/CloudEvents on the hot path, with `data`
and `meta` kept as raw JSON bytes); `Event` is what the log returns, with `seq` and `recorded_at`
assigned at append. Both are frozen values.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

#: Envelope attributes with a column of their own; every other top-level attribute of a record
#: (CloudEvents `specversion`, extensions...) is kept verbatim in `ext`.
CORE_FIELDS = ("id", "source", "type", "subject", "time", "data", "meta")
#: CloudEvents attributes recognised on the fast path (they go to `ext`).
CE_FIELDS = ("specversion", "datacontenttype", "dataschema")


class LeanEnvelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An envelope with only the six usual attributes: any other attribute (meta, extensions,
    CloudEvents attributes) fails its decode. Ingest's fast path decodes these."""

    type: str
    subject: str
    time: str
    data: msgspec.Raw
    id: str | None = None
    source: str | None = None


class Envelope(LeanEnvelope, forbid_unknown_fields=True, gc=False):
    """One incoming event. `id` may be absent (a content hash is assigned); `data` is required."""

    # Typed `Raw` with a None default (not `Raw | None`, which msgspec reads as "null only"):
    # absent -> None, present -> the value's raw bytes.
    meta: msgspec.Raw = None  # type: ignore[assignment]
    specversion: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    #: raw JSON object of the other attributes, filled by the slow path and by format adapters
    ext: msgspec.Raw = None  # type: ignore[assignment]


class Event(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: immutable, with its log position and transaction time."""

    seq: int
    recorded_at: datetime
    id: str
    source: str
    type: str
    subject: str
    time: str
    data: bytes
    meta: bytes | None = None
    ext: bytes | None = None

    def json(self) -> Any:
        """`data` decoded (the stored bytes are kept exactly as received)."""
        return msgspec.json.decode(self.data)

    def to_json(self) -> bytes:
        """One NDJSON line: the envelope with `seq` and `recorded_at`, `data` embedded verbatim,
        extension attributes (e.g. CloudEvents `specversion`) restored at top level."""
        out = _Out(
            seq=self.seq,
            recorded_at=self.recorded_at,
            id=self.id,
            source=self.source,
            type=self.type,
            subject=self.subject,
            time=self.time,
            data=msgspec.Raw(self.data),
            meta=msgspec.Raw(self.meta) if self.meta is not None else None,
        )
        line = _ENC.encode(out)
        if self.ext and self.ext.strip() not in (b"{}", b""):
            line = line[:-1] + b"," + self.ext.strip()[1:]
        return line

    def to_dict(self) -> dict[str, Any]:
        return msgspec.json.decode(self.to_json())


class _Out(msgspec.Struct, omit_defaults=True):
    seq: int
    recorded_at: datetime
    id: str
    source: str
    type: str
    subject: str
    time: str
    data: msgspec.Raw
    meta: msgspec.Raw | None = None


_ENC = msgspec.json.Encoder()


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utc_from_micros(us: int) -> datetime:
    """Exact (no float rounding) UTC datetime for microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=us)


def micros(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (naive ones are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
