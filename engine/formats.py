"""Format adapters: turn producer records into envelopes.

Every adapter takes one record's JSON bytes and returns an `Envelope`, keeping the producer's
payload byte-for-byte in `data` (top-level values are decoded as `msgspec.Raw`, never re-encoded).
Identity rules (what becomes `id`, `subject`, `type`, `time`) are documented in docs/formats.md.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

import msgspec

from .codec import decode_line, envelope_from_mapping
from .errors import BadInput
from .events import Envelope

FORMATS = ("auto", "ndjson", "cloudevents", "debezium", "github", "slack", "jira")
_RAW_OBJ = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ANY = msgspec.json.Decoder()


def _obj(record: bytes) -> dict[str, msgspec.Raw]:
    try:
        return _RAW_OBJ.decode(record)
    except msgspec.ValidationError:
        raise BadInput("record is not a JSON object", expected="a JSON object") from None
    except msgspec.DecodeError as exc:
        raise BadInput(f"not valid JSON ({exc})", expected="one JSON object per line") from None


def _val(obj: dict[str, msgspec.Raw], key: str, default: Any = None) -> Any:
    raw = obj.get(key)
    if raw is None:
        return default
    try:
        return _ANY.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadInput(f"`{key}` is not valid JSON ({exc})", field=key) from None


def _need(value: Any, field: str, expected: str) -> Any:
    if value is None or value == "":
        raise BadInput(f"missing `{field}`", field=field, expected=expected)
    return value


def ms_to_rfc3339(ms: Any, field: str) -> str:
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        raise BadInput(f"`{field}` is {ms!r}", field=field, expected="epoch milliseconds (a number)")
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def s_to_rfc3339(s: Any, field: str) -> str:
    try:
        secs = float(s)
    except (TypeError, ValueError):
        raise BadInput(f"`{field}` is {s!r}", field=field, expected="epoch seconds") from None
    return ms_to_rfc3339(secs * 1000, field)


# ---- NDJSON envelopes and CloudEvents ------------------------------------------------------
def ndjson(record: bytes) -> Envelope:
    return decode_line(record)


def cloudevents(record: bytes) -> Envelope:
    """CloudEvents 1.0 structured mode maps 1:1 (`specversion` and extensions are kept in ext)."""
    try:
        env = ndjson(record)
    except BadInput as exc:
        if exc.field == "data" and b'"data_base64"' in record:
            raise BadInput("`data_base64` (binary data) is not supported", field="data_base64",
                           expected="a JSON `data` attribute") from None
        raise
    if env.specversion is None:
        raise BadInput("missing `specversion`", field="specversion", expected='"1.0" (CloudEvents structured mode)')
    if env.id is None:
        raise BadInput("missing `id`", field="id", expected="a string (CloudEvents requires id)")
    return env


# ---- GitHub webhooks -----------------------------------------------------------------------
def github(record: bytes) -> Envelope:
    """`{"headers": {...}, "body": {...}}`: id from X-GitHub-Delivery, type
    com.github.<event>.<action>, subject the issue/PR/repository, data the body verbatim."""
    obj = _obj(record)
    headers = _val(obj, "headers")
    if not isinstance(headers, dict):
        raise BadInput("missing `headers`", field="headers", expected="an object of HTTP headers")
    if "body" not in obj:
        raise BadInput("missing `body`", field="body", expected="the webhook JSON body")
    h = {str(k).lower(): v for k, v in headers.items()}
    delivery = _need(h.get("x-github-delivery"), "headers.X-GitHub-Delivery", "the delivery GUID")
    event = _need(h.get("x-github-event"), "headers.X-GitHub-Event", "the event name, e.g. issues")
    body = _val(obj, "body")
    if not isinstance(body, dict):
        raise BadInput("`body` is not an object", field="body", expected="the webhook JSON body")
    action = body.get("action")
    repo = (body.get("repository") or {}).get("full_name") or (body.get("organization") or {}).get("login") or "unknown"
    subject = _github_subject(body, repo)
    time = _github_time(body, event)
    return envelope_from_mapping({
        "id": str(delivery),
        "source": f"https://github.com/{repo}",
        "type": f"com.github.{event}" + (f".{action}" if action else ""),
        "subject": subject,
        "time": time,
        "data": obj["body"],
        "meta": {"headers": headers},
    })


def _github_subject(body: dict, repo: str) -> str:
    """issue:<repo>#<n>, pr:<repo>#<n> or discussion:<repo>#<n>, else repo:<repo>. GitHub sends
    comments on a pull request as `issue_comment` with an `issue` that has a `pull_request` link;
    they get the PR's subject so that a PR's comments and its own events share one subject."""
    for kind, key in (("pr", "pull_request"), ("issue", "issue"), ("discussion", "discussion")):
        obj = body.get(key)
        if isinstance(obj, dict) and obj.get("number") is not None:
            if kind == "issue" and isinstance(obj.get("pull_request"), dict):
                kind = "pr"
            return f"{kind}:{repo}#{obj['number']}"
    return f"repo:{repo}"


def _github_time(body: dict, event: str) -> str:
    for key in ("comment", "review", "pull_request", "issue", "release", "discussion", "check_run", "workflow_run"):
        obj = body.get(key)
        if isinstance(obj, dict):
            for f in ("updated_at", "submitted_at", "created_at"):
                if isinstance(obj.get(f), str):
                    return obj[f]
    head = body.get("head_commit")
    if isinstance(head, dict) and isinstance(head.get("timestamp"), str):
        return head["timestamp"]
    repo = body.get("repository") or {}
    for f in ("pushed_at", "updated_at"):
        v = repo.get(f)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return s_to_rfc3339(v, f"body.repository.{f}")
        if isinstance(v, str):
            return v
    raise BadInput(f"no timestamp in the {event} webhook body", field="body.*.updated_at",
                   expected="an updated_at/created_at of the issue, PR or comment, or head_commit.timestamp")


# ---- Slack Events API ----------------------------------------------------------------------
def slack_ts_to_rfc3339(ts: Any, field: str) -> str:
    """Slack's "1794475214.519109" to "2026-11-12T09:20:14.519109Z", digit for digit (a float
    would round the microseconds, and a ts is also the message's identity)."""
    text = str(ts) if isinstance(ts, (str, int)) and not isinstance(ts, bool) else ""
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or not (frac == "" or frac.isdigit()):
        if isinstance(ts, float):
            return s_to_rfc3339(ts, field)
        raise BadInput(f"`{field}` is {ts!r}", field=field, expected='a Slack timestamp, e.g. "1794475214.519109"')
    dt = datetime.fromtimestamp(int(whole), tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


_SLACK_OWN_TYPES = ("message_changed", "message_deleted")


def slack(record: bytes) -> Envelope:
    """Event callbacks: id = event_id, type slack.<event type>[.<subtype>] except that
    message_changed and message_deleted are their own types, subject the channel."""
    obj = _obj(record)
    kind = _val(obj, "type")
    if kind != "event_callback":
        raise BadInput(f"`type` is {kind!r}", field="type", expected='"event_callback" (a Slack Events API callback)')
    event_id = _need(_val(obj, "event_id"), "event_id", "the Slack event id, e.g. Ev0123")
    event = _val(obj, "event")
    if not isinstance(event, dict) or not event.get("type"):
        raise BadInput("missing `event`", field="event", expected="the inner event object with a type")
    team = _val(obj, "team_id") or "unknown"
    sub = event.get("subtype")
    etype = f"slack.{sub}" if sub in _SLACK_OWN_TYPES else f"slack.{event['type']}" + (f".{sub}" if sub else "")
    channel = event.get("channel") or (event.get("item") or {}).get("channel")
    subject = f"slack:{team}/{channel}" if channel else f"slack:{team}"
    if event.get("event_ts") is not None:
        time = slack_ts_to_rfc3339(event["event_ts"], "event.event_ts")
    elif event.get("ts") is not None:
        time = slack_ts_to_rfc3339(event["ts"], "event.ts")
    else:
        time = s_to_rfc3339(_need(_val(obj, "event_time"), "event_time", "epoch seconds"), "event_time")
    meta = {k: _val(obj, k) for k in ("team_id", "api_app_id", "event_context", "authorizations") if k in obj}
    return envelope_from_mapping({
        "id": str(event_id), "source": f"slack:{team}", "type": etype, "subject": subject,
        "time": time, "data": obj["event"], "meta": meta or None,
    })


# ---- Jira webhooks -------------------------------------------------------------------------
def jira(record: bytes) -> Envelope:
    """type jira.<webhookEvent>, subject jira:<issue key>, time from `timestamp` (ms), data the
    whole body; Jira sends no delivery id in the body, so id is a content hash (re-delivery of
    the same body is a duplicate)."""
    obj = _obj(record)
    hook = _need(_val(obj, "webhookEvent"), "webhookEvent", "e.g. jira:issue_updated")
    ts = _need(_val(obj, "timestamp"), "timestamp", "epoch milliseconds")
    issue = _val(obj, "issue") or {}
    key = issue.get("key") if isinstance(issue, dict) else None
    project = ((issue.get("fields") or {}).get("project") or {}).get("key") if isinstance(issue, dict) else None
    subject = f"jira:{key}" if key else f"jira:{project or 'site'}"
    site = "jira"
    self_url = issue.get("self") if isinstance(issue, dict) else None
    if isinstance(self_url, str) and "/rest/" in self_url:
        site = self_url.split("/rest/")[0]
    if site == "jira":
        for part in ("comment", "worklog", "user"):  # e.g. comment_deleted sends no issue.self
            other = _val(obj, part)
            url = other.get("self") if isinstance(other, dict) else None
            if isinstance(url, str) and "/rest/" in url:
                site = url.split("/rest/")[0]
                break
    name = str(hook).split(":", 1)[-1]
    return envelope_from_mapping({
        "source": site, "type": f"jira.{name}", "subject": subject,
        "time": ms_to_rfc3339(ts, "timestamp"), "data": msgspec.Raw(record.strip()),
    })


# ---- Debezium change events ----------------------------------------------------------------
_OPS = {"c": "created", "u": "updated", "d": "deleted", "r": "snapshot", "t": "truncated"}


def debezium(record: bytes) -> Envelope:
    """A Debezium change event (bare payload, {schema, payload}, or {key, value}): type
    <table>.<created|updated|deleted|snapshot>, subject <table>:<primary key>, time source.ts_ms."""
    obj = _obj(record)
    raw = msgspec.Raw(record.strip())
    key_obj = None
    if "value" in obj and "key" in obj:
        key_obj = _val(obj, "key")
        raw = obj["value"]
        obj = _unwrap(raw, "value")
    if "payload" in obj and "op" not in obj:
        raw = obj["payload"]
        obj = _unwrap(raw, "payload")
    if isinstance(key_obj, dict) and "payload" in key_obj:
        key_obj = key_obj["payload"]
    op = _val(obj, "op")
    if op not in _OPS:
        raise BadInput(f"`op` is {op!r}", field="op", expected="one of c, u, d, r (t)")
    src = _val(obj, "source")
    if not isinstance(src, dict):
        raise BadInput("missing `source`", field="source", expected="the Debezium source block")
    table = _need(src.get("table") or src.get("collection"), "source.table", "the table name")
    ts = _need(src.get("ts_ms"), "source.ts_ms", "epoch milliseconds")
    row = _val(obj, "after") if op != "d" else _val(obj, "before")
    subject = f"{table}:{_row_key(key_obj, row, op, str(table))}"
    server = src.get("name") or src.get("connector") or "debezium"
    db = src.get("db")
    return envelope_from_mapping({
        "source": f"debezium:{server}" + (f"/{db}" if db else ""),
        "type": f"{table}.{_OPS[op]}", "subject": subject,
        "time": ms_to_rfc3339(ts, "source.ts_ms"), "data": raw,
    })


def _unwrap(raw: msgspec.Raw, field: str) -> dict[str, msgspec.Raw]:
    if bytes(raw).strip() == b"null":
        raise BadInput(f"`{field}` is null (a Kafka tombstone, which carries no change)", field=field,
                       expected="a change event; drop tombstones (tombstones.on.delete=false) or use skip_bad")
    try:
        return _RAW_OBJ.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise BadInput(f"`{field}` is not an object", field=field, expected="a Debezium change event") from None


def _row_key(key_obj: Any, row: Any, op: str, table: str = "") -> str:
    if isinstance(key_obj, dict) and key_obj:
        return ",".join(str(v) for v in key_obj.values())
    if key_obj is not None and not isinstance(key_obj, (dict, list)):
        return str(key_obj)
    if op == "t":
        return "*"
    if isinstance(row, dict):
        for k in ("id", "ID", "Id", "_id", "uuid", "key"):
            if k in row:
                return str(row[k])
        # orders -> order_id before any other *_id column (customer_id is a foreign key)
        for k in (f"{table}_id", f"{table[:-1]}_id" if table.endswith("s") else ""):
            if k and k in row:
                return str(row[k])
        ids = [k for k in row if k.endswith("_id")]
        if ids:
            return str(row[ids[0]])
    raise BadInput("cannot tell the row's primary key", field="key",
                   expected="a {key, value} record or an `id`/`*_id` column in after/before")


ADAPTERS: dict[str, Callable[[bytes], Envelope]] = {
    "ndjson": ndjson, "cloudevents": cloudevents, "debezium": debezium,
    "github": github, "slack": slack, "jira": jira,
}


def detect(record: bytes) -> str:
    """Guess the format from one record (the first of a file)."""
    try:
        obj = _ANY.decode(record)
    except msgspec.DecodeError:
        return "ndjson"  # let the envelope decoder report the error with its line
    if not isinstance(obj, dict):
        return "ndjson"
    if "specversion" in obj:
        return "cloudevents"
    if "headers" in obj and "body" in obj:
        return "github"
    if obj.get("type") == "event_callback" and "event_id" in obj:
        return "slack"
    if obj.get("type") in ("url_verification", "app_rate_limited") and "token" in obj:
        return "slack"  # so the adapter names the record that is not an event callback
    if "webhookEvent" in obj:
        return "jira"
    inner = obj.get("payload") if isinstance(obj.get("payload"), dict) else obj.get("value") if isinstance(obj.get("value"), dict) else obj
    if isinstance(inner, dict) and isinstance(inner.get("payload"), dict):
        inner = inner["payload"]
    if isinstance(inner, dict) and inner.get("op") in _OPS and isinstance(inner.get("source"), dict):
        return "debezium"
    return "ndjson"
