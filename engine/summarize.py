"""Summarizers: turn one text or a window of texts into a short summary.

Two implementations of the `Summarizer` protocol:

* `TemplateSummarizer` (the default, `model_id = "template/1"`): deterministic, no model, no I/O.
  The exact output format is::

      "0 items"                      for no texts
      "1 item: <t1>"                 for one text
      "<N> items: <t1>; <t2>; ...; <tN>"

  where every text has its whitespace runs (newlines included) collapsed to one space and is
  stripped; texts that are empty after that are still counted but rendered as `""`
  (two double quotes) so the count always matches. With `max_item_chars` set, a longer text is
  cut to `max_item_chars - 1` characters plus `…`. The `instruction` is ignored (there is no
  model to follow it), so the output depends on the texts alone.

* `OpenAIChatSummarizer` (`model_id = "openai:<model>@<host>[:<port>]"`): a client for any
  OpenAI-compatible `POST {base_url}/chat/completions` endpoint (llama.cpp server, vLLM, Ollama,
  a hosted API). Stdlib HTTP only. Connection errors, timeouts, HTTP 408/429/5xx and a dropped
  connection are retried up to `max_retries` times with jitter-free exponential backoff
  (`min(backoff * 2**k, max_backoff)` before retry k = 0, 1, ...; a `Retry-After` header in
  seconds or as an HTTP date replaces that delay, still capped by `max_backoff`). Other HTTP
  errors (400, 401, 403, 404, ...), a redirect, a body that is not the expected JSON and an
  empty completion fail at once with `SummarizerError(retryable=False)`. Error messages name the
  URL, the status and an excerpt of the response body, and never contain the API key.

`prompt_hash(model_id, prompt)` is the stable identity of a request, recorded with the derived
event that holds the output; both summarizers have `build_prompt(texts, instruction)` so the
caller can compute it uniformly. For the chat client that is the user message only: the system
prompt, temperature and max_tokens are not part of it.

`summarizer_from_config({"kind": "template"} | {"kind": "openai", ...})` builds one from a
config table; bad values raise `BadInput` naming the field and what was expected.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import ipaddress
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import msgspec

from .errors import BadInput, CtxdbError

__all__ = [
    "Summarizer", "TemplateSummarizer", "OpenAIChatSummarizer", "SummarizerError", "prompt_hash",
    "summarizer_from_config", "DEFAULT_SYSTEM_PROMPT", "DEFAULT_INSTRUCTION", "TEMPLATE_MODEL_ID",
]

TEMPLATE_MODEL_ID = "template/1"
DEFAULT_SYSTEM_PROMPT = (
    "You summarize records for an AI agent's working context. Be factual and concise, keep names, "
    "numbers and dates exact, and do not add anything that is not in the records. "
    "Reply with the summary text only."
)
DEFAULT_INSTRUCTION = "Summarize the following items in one to three sentences."
#: HTTP statuses worth retrying besides 5xx
RETRYABLE_STATUSES = frozenset({408, 429})
_EXCERPT = 200


class SummarizerError(CtxdbError):
    """A summary could not be produced.

    `retryable` is True when the failure was transient (connection refused, timeout, 408, 429,
    5xx) and the retries ran out; a later attempt may succeed. `attempts` is how many HTTP
    requests were made, `status` the last HTTP status seen (None when no response arrived)."""

    exit_code = 69  # EX_UNAVAILABLE

    def __init__(self, message: str, *, retryable: bool, attempts: int, status: int | None = None,
                 url: str | None = None) -> None:
        self.retryable, self.attempts, self.status, self.url = retryable, attempts, status, url
        super().__init__(message)


@runtime_checkable
class Summarizer(Protocol):
    model_id: str

    def summarize(self, texts: list[str], *, instruction: str | None = None) -> str: ...


def prompt_hash(model_id: str, prompt: str) -> str:
    """Stable hex identity of (model, prompt): blake2b, 16-byte digest, over the UTF-8 of
    `model_id`, a NUL and `prompt`. Never depends on the Python process (no `hash()`)."""
    h = hashlib.blake2b(digest_size=16, person=b"ctxdb-summary")
    h.update(model_id.encode("utf-8"))
    h.update(b"\x00")
    h.update(prompt.encode("utf-8"))
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Template summarizer


class TemplateSummarizer:
    """Deterministic default: `"N items: a; b; c"` (see the module docstring for the exact format)."""

    model_id = TEMPLATE_MODEL_ID

    def __init__(self, *, max_item_chars: int | None = None) -> None:
        if max_item_chars is not None and (isinstance(max_item_chars, bool) or not isinstance(max_item_chars, int)
                                           or max_item_chars < 2):
            raise BadInput(f"bad max_item_chars {max_item_chars!r}", field="max_item_chars",
                           expected="an integer >= 2")
        self.max_item_chars = max_item_chars

    def _item(self, text: str) -> str:
        t = " ".join(str(text).split())
        if not t:
            return '""'
        if self.max_item_chars is not None and len(t) > self.max_item_chars:
            t = t[: self.max_item_chars - 1] + "…"
        return t

    def build_prompt(self, texts: list[str], instruction: str | None = None) -> str:
        """The rendered summary is its own prompt: the template has no other input."""
        return self.summarize(texts, instruction=instruction)

    def summarize(self, texts: list[str], *, instruction: str | None = None) -> str:
        n = len(texts)
        if n == 0:
            return "0 items"
        head = "1 item" if n == 1 else f"{n} items"
        return f"{head}: " + "; ".join(self._item(t) for t in texts)

    def __repr__(self) -> str:
        return f"TemplateSummarizer(max_item_chars={self.max_item_chars!r})"


# --------------------------------------------------------------------------------------------
# OpenAI-compatible chat-completions client


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would silently turn into a GET without the body: report it instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Attempt(Exception):
    """Internal: one failed HTTP attempt."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        self.message, self.retryable, self.status, self.retry_after = message, retryable, status, retry_after
        super().__init__(message)


class OpenAIChatSummarizer:
    """Client for `POST {base_url}/chat/completions` of an OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int | None = 256,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.strip():
            raise BadInput("missing base_url", field="base_url", expected='a URL like "http://127.0.0.1:8080/v1"')
        parts = urllib.parse.urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"bad base_url {base_url!r}", field="base_url",
                           expected='an http(s) URL like "http://127.0.0.1:8080/v1"')
        if not isinstance(model, str) or not model.strip():
            raise BadInput("missing model", field="model", expected='a model name like "qwen2.5-0.5b-instruct"')
        host = parts.hostname
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        path = parts.path.rstrip("/")
        self.base_url = urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.model_id = f"openai:{model}@{netloc}"
        self._api_key = api_key or None
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self._sleep = sleep
        if self.timeout <= 0:
            raise BadInput(f"bad timeout {timeout!r}", field="timeout", expected="a positive number of seconds")
        if self.max_retries < 0:
            raise BadInput(f"bad max_retries {max_retries!r}", field="max_retries", expected="an integer >= 0")
        if self.backoff < 0 or self.max_backoff < 0:
            raise BadInput("negative backoff", field="backoff", expected="a number of seconds >= 0")
        handlers: list[Any] = [_NoRedirect()]
        if _is_loopback(parts.hostname):
            handlers.append(urllib.request.ProxyHandler({}))  # a local server is never behind a proxy
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return (f"OpenAIChatSummarizer({self.base_url!r}, {self.model!r}, "
                f"api_key={'***' if self._api_key else None}, timeout={self.timeout}, "
                f"max_retries={self.max_retries})")

    # ---- prompt

    def build_prompt(self, texts: list[str], instruction: str | None = None) -> str:
        """The user message, deterministic in (texts, instruction)::

            <instruction or DEFAULT_INSTRUCTION>

            Items:
            [1] <text 1, stripped>
            [2] <text 2, stripped>
        """
        lines = [(instruction or DEFAULT_INSTRUCTION).strip(), "", "Items:"]
        lines += [f"[{i}] {str(t).strip()}" for i, t in enumerate(texts, 1)]
        return "\n".join(lines)

    def request_body(self, prompt: str) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ],
            "temperature": self.temperature,
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return msgspec.json.encode(body)

    # ---- call

    def summarize(self, texts: list[str], *, instruction: str | None = None) -> str:
        if not texts:
            raise BadInput("nothing to summarize", field="texts", expected="at least one text")
        return self.complete(self.build_prompt(texts, instruction))

    def complete(self, prompt: str) -> str:
        """Send one prompt, retrying transient failures; return the stripped completion."""
        body = self.request_body(prompt)
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._once(body)
            except _Attempt as exc:
                if not exc.retryable:
                    raise SummarizerError(
                        f"summarizer {self.model_id}: {exc.message}",
                        retryable=False, attempts=attempts, status=exc.status, url=self.url) from None
                if attempts > self.max_retries:
                    raise SummarizerError(
                        f"summarizer {self.model_id}: gave up after {attempts} attempt(s): {exc.message}",
                        retryable=True, attempts=attempts, status=exc.status, url=self.url) from None
                self._sleep(self._delay(attempts - 1, exc.retry_after))

    def _delay(self, k: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        return min(self.backoff * (2 ** k), self.max_backoff)

    def _redact(self, text: str) -> str:
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text

    def _excerpt(self, raw: bytes) -> str:
        text = raw[: _EXCERPT * 4].decode("utf-8", "replace")
        text = " ".join(text.split())
        text = self._redact(text)
        return text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else "")

    def _once(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "ctxdb-summarizer"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        where = f"POST {self.url}"
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status = resp.status
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read() or b""
            except Exception:  # noqa: BLE001 - the body of an error response is best effort
                raw = b""
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            retryable = status in RETRYABLE_STATUSES or 500 <= status <= 599
            hint = ""
            if status in (401, 403):
                hint = " (check the API key)"
            elif status == 404:
                hint = " (check base_url, which should end in /v1 for most servers, and the model name)"
            elif 300 <= status < 400:
                hint = f" (redirected to {exc.headers.get('Location')!r}; use that URL as base_url)"
            raise _Attempt(f"{where} -> HTTP {status}{hint}: {self._excerpt(raw)!r}",
                           retryable=retryable, status=status, retry_after=retry_after) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                what = f"timed out after {self.timeout:g}s"
            else:
                what = f"connection failed: {reason}"
            raise _Attempt(f"{where} {self._redact(what)}", retryable=True) from None
        except (TimeoutError, socket.timeout):
            raise _Attempt(f"{where} timed out after {self.timeout:g}s", retryable=True) from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise _Attempt(f"{where} failed: {type(exc).__name__}: {self._redact(str(exc))}",
                           retryable=True) from None
        return self._parse(raw, status, where)

    def _parse(self, raw: bytes, status: int, where: str) -> str:
        def bad(why: str) -> _Attempt:
            return _Attempt(f"{where} -> HTTP {status}: {why}: {self._excerpt(raw)!r}", retryable=False,
                            status=status)

        try:
            doc = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise bad("response body is not JSON") from None
        if not isinstance(doc, dict):
            raise bad("response body is not a JSON object")
        if "error" in doc and not doc.get("choices"):
            raise bad("server returned an error object")
        choices = doc.get("choices")
        if not isinstance(choices, list) or not choices:
            raise bad("response has no `choices`")
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict) or "content" not in message:
            raise bad("response has no `choices[0].message.content`")
        content = message["content"]
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict)
                              and isinstance(p.get("text"), str))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise bad("`choices[0].message.content` is not a string")
        text = content.strip()
        if not text:
            reason = first.get("finish_reason") if isinstance(first, dict) else None
            raise bad(f"empty completion (finish_reason={reason!r})")
        return text


def _retry_after(value: str | None) -> float | None:
    """`Retry-After: 3` or `Retry-After: <HTTP date>` -> seconds (None when absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
        return secs if secs >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


# --------------------------------------------------------------------------------------------
# Config

_TEMPLATE_KEYS = {"kind", "max_item_chars"}
_OPENAI_KEYS = {"kind", "base_url", "model", "api_key_env", "timeout", "max_retries", "backoff", "max_backoff",
                "temperature", "max_tokens", "system_prompt"}


def _fail(field: str, message: str, expected: str) -> BadInput:
    return BadInput(f"summarizer: {message}", field=field, expected=expected)


def _seconds(d: Mapping[str, Any], key: str, default: float, *, allow_zero: bool = False) -> float:
    if key not in d:
        return default
    v = d[key]
    expected = f'a duration like "30s" or "500ms", or a number of seconds {">= 0" if allow_zero else "> 0"}'
    if isinstance(v, bool):
        raise _fail(key, f"bad {key} {v!r}", expected)
    if isinstance(v, (int, float)):
        secs = float(v)
    elif isinstance(v, str):
        from .config import parse_duration  # lazy: config may import this module

        try:
            us = parse_duration(v)
        except ValueError:
            raise _fail(key, f"bad {key} {v!r}", expected) from None
        if us is None:
            raise _fail(key, f"bad {key} {v!r}: must be finite", expected)
        secs = us / 1_000_000
    else:
        raise _fail(key, f"bad {key} {v!r}", expected)
    if secs != secs or secs < 0 or (secs == 0 and not allow_zero) or secs == float("inf"):
        raise _fail(key, f"bad {key} {v!r}", expected)
    return secs


def _int(d: Mapping[str, Any], key: str, default: int | None, *, minimum: int, allow_none: bool = False) -> int | None:
    if key not in d:
        return default
    v = d[key]
    if allow_none and v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _fail(key, f"bad {key} {v!r}", f"an integer >= {minimum}")
    return v


def _str(d: Mapping[str, Any], key: str, expected: str, *, required: bool) -> str | None:
    if key not in d:
        if required:
            raise _fail(key, f"missing `{key}`", expected)
        return None
    v = d[key]
    if not isinstance(v, str) or not v.strip():
        raise _fail(key, f"bad {key} {v!r}", expected)
    return v.strip()


def summarizer_from_config(d: Mapping[str, Any] | None, *, environ: Mapping[str, str] | None = None,
                           sleep: Callable[[float], None] = time.sleep) -> Summarizer:
    """Build a summarizer from a config table.

        {"kind": "template"}                                  # the default (also for None / {})
        {"kind": "template", "max_item_chars": 200}
        {"kind": "openai", "base_url": "http://127.0.0.1:8080/v1", "model": "qwen2.5-0.5b-instruct",
         "api_key_env": "OPENAI_API_KEY",   # optional; the variable must then be set and non-empty
         "timeout": "30s",                   # or a number of seconds
         "max_retries": 5, "backoff": "500ms", "max_backoff": "30s",
         "temperature": 0.0, "max_tokens": 256, "system_prompt": "..."}

    The API key itself is never read from the config (configs are logged as policy events);
    `api_key` in the table is rejected. Unknown keys are rejected. Every problem raises `BadInput`
    naming the field and what was expected.
    """
    if d is None:
        return TemplateSummarizer()
    if not isinstance(d, Mapping):
        raise _fail("summarizer", f"bad summarizer config {d!r}", 'a table like {kind = "template"}')
    env = os.environ if environ is None else environ
    kind = d.get("kind", "template")
    if kind == "template":
        for k in d:
            if k not in _TEMPLATE_KEYS:
                raise _fail(k, f"unknown key `{k}` for kind \"template\"", "one of " + ", ".join(sorted(_TEMPLATE_KEYS)))
        return TemplateSummarizer(max_item_chars=_int(d, "max_item_chars", None, minimum=2, allow_none=True))
    if kind != "openai":
        raise _fail("kind", f"unknown summarizer kind {kind!r}", '"template" or "openai"')
    for k in d:
        if k == "api_key":
            raise _fail("api_key", "the API key must not be written in the config",
                        'the name of an environment variable holding it, in `api_key_env` (e.g. "OPENAI_API_KEY")')
        if k not in _OPENAI_KEYS:
            raise _fail(k, f"unknown key `{k}` for kind \"openai\"", "one of " + ", ".join(sorted(_OPENAI_KEYS)))
    base_url = _str(d, "base_url", 'an http(s) URL like "http://127.0.0.1:8080/v1"', required=True)
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail("base_url", f"bad base_url {base_url!r}", 'an http(s) URL like "http://127.0.0.1:8080/v1"')
    model = _str(d, "model", 'a model name like "qwen2.5-0.5b-instruct"', required=True)
    api_key = None
    key_env = _str(d, "api_key_env", 'an environment variable name like "OPENAI_API_KEY"', required=False)
    if key_env is not None:
        api_key = env.get(key_env) or None
        if api_key is None:
            raise _fail("api_key_env", f"environment variable {key_env} is not set",
                        f"{key_env} to hold the API key (or drop `api_key_env` for a server without one)")
    temperature = d.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise _fail("temperature", f"bad temperature {temperature!r}", "a number between 0 and 2")
    system_prompt = DEFAULT_SYSTEM_PROMPT
    if "system_prompt" in d:
        system_prompt = _str(d, "system_prompt", "a non-empty string", required=True)
    return OpenAIChatSummarizer(
        base_url, model,
        api_key=api_key,
        timeout=_seconds(d, "timeout", 30.0),
        max_retries=_int(d, "max_retries", 5, minimum=0),
        backoff=_seconds(d, "backoff", 0.5, allow_zero=True),
        max_backoff=_seconds(d, "max_backoff", 30.0, allow_zero=True),
        temperature=float(temperature),
        max_tokens=_int(d, "max_tokens", 256, minimum=1, allow_none=True),
        system_prompt=system_prompt,
        sleep=sleep,
    )
