"""Text templates of projection rules: `"Order #{data.order_id} shipped at {time:%Y-%m-%d %H:%M}"`.

A field is an envelope attribute (`id`, `source`, `type`, `subject`, `time`, `recorded_at`, `seq`)
or a path into the event's JSON (`data.order_id`, `data.items.0.sku`, `meta.tags`). A format spec
after `:` is a strftime pattern for times and a Python format spec for numbers. Objects and lists
render as compact JSON, `true`/`false`/`null` as in JSON. `{{` and `}}` are literal braces.
`{data.assignee|unassigned}` renders `unassigned` when the path is absent or null.

Rendering is pure: the same event and template always give the same text. A path that is absent
from an event raises `MissingField`; the projector then skips the rule for that event and counts it.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from .events import utc_from_micros

ENVELOPE_FIELDS = ("id", "source", "type", "subject", "time", "recorded_at", "seq")
JSON_ROOTS = ("data", "meta")
TIME_FIELDS = ("time", "recorded_at")


class MissingField(Exception):
    """The event has no value at a template path."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class TemplateError(ValueError):
    """A template that can never render (bad syntax, unknown field)."""


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[tuple[str, tuple[str, ...] | None, str, str | None], ...]  # (literal, path, spec, default)

    def render(self, ctx: "EventContext") -> str:
        out: list[str] = []
        for literal, path, spec, default in self.parts:
            out.append(literal)
            if path is None:
                continue
            if default is None:
                out.append(_format(ctx.get(path), spec))
                continue
            try:
                value = ctx.get(path)
            except MissingField:
                value = None
            out.append(default if value is None else _format(value, spec))
        return "".join(out)


def compile_template(src: str) -> Template:
    """Parse and check a template; raises TemplateError naming the problem."""
    if not isinstance(src, str):
        raise TemplateError(f"expected a string, got {type(src).__name__}")
    parts = []
    try:
        parsed = list(string.Formatter().parse(src))
    except ValueError as exc:
        raise TemplateError(f"{exc} in {src!r} (write {{{{ and }}}} for literal braces)") from None
    for literal, field, spec, conv in parsed:
        if field is None:
            parts.append((literal, None, "", None))
            continue
        default = None
        if "|" in field:
            field, default = field.split("|", 1)
        if conv:
            raise TemplateError(f"conversion '!{conv}' is not supported in {{{field}!{conv}}}")
        if field == "":
            raise TemplateError(f"empty field {{}} in {src!r}: name a field, e.g. {{subject}} or {{data.id}}")
        path = tuple(field.split("."))
        if any(p == "" for p in path):
            raise TemplateError(f"bad field path {{{field}}}")
        root = path[0]
        if root in JSON_ROOTS:
            pass
        elif root in ENVELOPE_FIELDS:
            if len(path) > 1:
                raise TemplateError(f"{{{field}}}: `{root}` has no sub-fields")
        else:
            raise TemplateError(
                f"unknown field {{{field}}}: expected one of {', '.join(ENVELOPE_FIELDS)}, "
                "or a path under data. / meta."
            )
        if spec and "{" in spec:
            raise TemplateError(f"nested fields in a format spec are not supported: {{{field}:{spec}}}")
        if spec and root not in TIME_FIELDS:
            try:
                format(0, spec)
            except ValueError:
                try:
                    format("", spec)
                except ValueError:
                    raise TemplateError(f"bad format spec {{{field}:{spec}}}") from None
        parts.append((literal, path, spec or "", default))
    return Template(src, tuple(parts))


class EventContext:
    """Lazy view of one event for rendering: `data`/`meta` are decoded on first use only."""

    __slots__ = ("env", "_data_raw", "_meta_raw", "_data", "_meta", "time_us", "recorded_us")

    _UNSET = object()

    def __init__(self, env: dict[str, Any], data_raw: str, meta_raw: str | None,
                 time_us: int, recorded_us: int) -> None:
        self.env = env
        self._data_raw, self._meta_raw = data_raw, meta_raw
        self._data: Any = EventContext._UNSET
        self._meta: Any = EventContext._UNSET
        self.time_us, self.recorded_us = time_us, recorded_us

    @property
    def time_dt(self) -> datetime:
        return utc_from_micros(self.time_us)

    @property
    def recorded_dt(self) -> datetime:
        return utc_from_micros(self.recorded_us)

    @property
    def data(self) -> Any:
        if self._data is EventContext._UNSET:
            self._data = msgspec.json.decode(self._data_raw)
        return self._data

    @property
    def meta(self) -> Any:
        if self._meta is EventContext._UNSET:
            self._meta = None if self._meta_raw is None else msgspec.json.decode(self._meta_raw)
        return self._meta

    def get(self, path: tuple[str, ...]) -> Any:
        root = path[0]
        if root == "data" or root == "meta":
            return walk(self.data if root == "data" else self.meta, path)
        if root == "time":
            return self.time_dt
        if root == "recorded_at":
            return self.recorded_dt
        return self.env[root]


def walk(value: Any, path: tuple[str, ...]) -> Any:
    """The value at `path[1:]` inside the decoded JSON `value` (the root `path[0]` is `data` or
    `meta`); a list is indexed by a digit part. Raises MissingField naming the first absent step."""
    for i in range(1, len(path)):
        part = path[i]
        try:
            value = value[part]
        except KeyError:
            raise MissingField(".".join(path[: i + 1])) from None
        except TypeError:
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise MissingField(".".join(path[: i + 1])) from None
    return value


def _format(value: Any, spec: str) -> str:
    if type(value) is str and not spec:
        return value
    if isinstance(value, datetime):
        if spec:
            return value.strftime(spec)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, (dict, list)):
        return msgspec.json.encode(value).decode()
    if spec:
        try:
            return format(value, spec)
        except (ValueError, TypeError):
            return str(value)
    return str(value)

