"""Summarizers against a real HTTP server on loopback that serves scripted completions and failures.

Backoff is observed by injecting `sleep` (it records the delays instead of sleeping), so no test
depends on wall-clock timing; only the timeout tests really wait (a 0.2 s client timeout).
"""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from ctxdb.errors import BadInput, CtxdbError
from ctxdb.summarize import (DEFAULT_INSTRUCTION, DEFAULT_SYSTEM_PROMPT, OpenAIChatSummarizer, Summarizer,
                             SummarizerError, TemplateSummarizer, prompt_hash, summarizer_from_config)

API_KEY = "sk-test-SECRET-9f8e7d"


# --------------------------------------------------------------------------------------------
# the canned server


@dataclass
class Reply:
    status: int = 200
    body: Any = None          # dict/list -> JSON, str/bytes -> raw
    delay: float = 0.0        # seconds before answering (after reading the request)
    headers: dict = field(default_factory=dict)
    drop: bool = False        # close the connection without answering


def completion(text: Any, finish_reason: str = "stop") -> dict:
    return {"id": "cmpl-1", "object": "chat.completion", "model": "canned",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}]}


class CannedServer:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                           "json": msgspec.json.decode(raw) if raw else None})
                    reply = outer.script.pop(0) if outer.script else Reply(500, "unscripted request")
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                body = reply.body
                if isinstance(body, (dict, list)):
                    body = msgspec.json.encode(body)
                elif isinstance(body, str):
                    body = body.encode()
                body = body or b""
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def queue(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)


@pytest.fixture
def server():
    srv = CannedServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


def client(server: CannedServer, delays: list | None = None, **kw) -> OpenAIChatSummarizer:
    kw.setdefault("backoff", 0.5)
    kw.setdefault("max_retries", 3)
    return OpenAIChatSummarizer(server.base_url, kw.pop("model", "canned-model"),
                                sleep=(delays.append if delays is not None else _no_sleep), **kw)


def _no_sleep(_: float) -> None:
    raise AssertionError("this test expects no retry")


# --------------------------------------------------------------------------------------------
# success


def test_success_returns_text_and_sends_model_messages_and_auth(server):
    server.queue(Reply(body=completion("  Order 1 shipped via UPS.\n")))
    s = client(server, api_key=API_KEY)
    out = s.summarize(["order 1 shipped", "carrier UPS"], instruction="Summarize the order.")
    assert out == "Order 1 shipped via UPS."
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert req["headers"]["Content-Type"] == "application/json"
    body = req["json"]
    assert body["model"] == "canned-model"
    assert body["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "Summarize the order.\n\nItems:\n[1] order 1 shipped\n[2] carrier UPS"},
    ]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 256


def test_no_key_no_auth_header_and_trailing_slash_and_options(server):
    server.queue(Reply(body=completion("ok")))
    s = OpenAIChatSummarizer(server.base_url + "/", "m1", max_tokens=None, temperature=0.3,
                             system_prompt="Be brief.", sleep=_no_sleep)
    assert s.url == server.base_url + "/chat/completions"
    assert s.model_id == f"openai:m1@127.0.0.1:{server.port}"
    assert s.summarize(["x"]) == "ok"
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert "Authorization" not in req["headers"]
    assert "max_tokens" not in req["json"]
    assert req["json"]["temperature"] == 0.3
    assert req["json"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_content_parts_are_joined(server):
    server.queue(Reply(body=completion([{"type": "text", "text": "Part one. "}, {"type": "text", "text": "Two."}])))
    assert client(server).summarize(["a"]) == "Part one. Two."


def test_build_prompt_is_deterministic_with_exact_format():
    s = OpenAIChatSummarizer("http://127.0.0.1:9/v1", "m")
    p = s.build_prompt(["  first line\nsecond  ", "b"])
    assert p == f"{DEFAULT_INSTRUCTION}\n\nItems:\n[1] first line\nsecond\n[2] b"
    assert s.build_prompt(["  first line\nsecond  ", "b"]) == p
    assert s.build_prompt(["b", "  first line\nsecond  "]) != p
    assert s.build_prompt(["a"], "Say it short.").startswith("Say it short.\n\nItems:\n[1] a")


def test_summarize_nothing_is_bad_input():
    with pytest.raises(BadInput) as ei:
        OpenAIChatSummarizer("http://127.0.0.1:9/v1", "m").summarize([])
    assert ei.value.field == "texts"


# --------------------------------------------------------------------------------------------
# retries


def test_500_500_200_succeeds_after_two_retries_with_exponential_delays(server):
    server.queue(Reply(500, "boom"), Reply(502, "bad gateway"), Reply(body=completion("done")))
    delays: list[float] = []
    assert client(server, delays, backoff=0.25).summarize(["a"]) == "done"
    assert delays == [0.25, 0.5]
    assert len(server.requests) == 3
    assert server.requests[0]["json"] == server.requests[2]["json"]  # the same request is resent


def test_5xx_exhausts_retries_with_retryable_error(server):
    server.queue(*[Reply(503, {"error": "overloaded, try later"})] * 3)
    delays: list[float] = []
    with pytest.raises(SummarizerError) as ei:
        client(server, delays, max_retries=2, backoff=0.5).summarize(["a"])
    e = ei.value
    assert (e.retryable, e.attempts, e.status) == (True, 3, 503)
    assert delays == [0.5, 1.0]
    assert len(server.requests) == 3
    msg = str(e)
    assert server.base_url + "/chat/completions" in msg and "503" in msg and "overloaded" in msg
    assert isinstance(e, CtxdbError)


def test_backoff_is_capped_by_max_backoff(server):
    server.queue(*[Reply(500, "x")] * 5, Reply(body=completion("ok")))
    delays: list[float] = []
    assert client(server, delays, max_retries=5, backoff=1.0, max_backoff=3.0).summarize(["a"]) == "ok"
    assert delays == [1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize("retry_after, max_backoff, expected", [("3", 30.0, 3.0), ("100", 10.0, 10.0),
                                                                 ("0.5", 30.0, 0.5)])
def test_429_honours_retry_after_capped(server, retry_after, max_backoff, expected):
    server.queue(Reply(429, {"error": "rate limited"}, headers={"Retry-After": retry_after}),
                 Reply(body=completion("ok")))
    delays: list[float] = []
    assert client(server, delays, backoff=0.1, max_backoff=max_backoff).summarize(["a"]) == "ok"
    assert delays == [expected]


def test_429_without_retry_after_uses_backoff(server):
    server.queue(Reply(429, "slow down"), Reply(429, "slow down"), Reply(body=completion("ok")))
    delays: list[float] = []
    assert client(server, delays, backoff=0.1).summarize(["a"]) == "ok"
    assert delays == [0.1, 0.2]


def test_timeout_is_retried_then_succeeds(server):
    server.queue(Reply(body=completion("late")), Reply(body=completion("on time")))
    server.script[0].delay = 1.0
    delays: list[float] = []
    t0 = time.monotonic()
    assert client(server, delays, timeout=0.2, backoff=0.1).summarize(["a"]) == "on time"
    assert delays == [0.1]
    assert len(server.requests) == 2
    assert time.monotonic() - t0 < 5  # generous upper bound: the client did not wait for the server


def test_always_timing_out_raises_retryable_after_all_attempts(server):
    server.queue(*[Reply(body=completion("never seen"), delay=0.6)] * 3)
    delays: list[float] = []
    with pytest.raises(SummarizerError) as ei:
        client(server, delays, timeout=0.2, max_retries=2, backoff=0.1).summarize(["a"])
    e = ei.value
    assert (e.retryable, e.attempts, e.status) == (True, 3, None)
    assert "timed out" in str(e) and server.base_url in str(e)
    assert delays == [0.1, 0.2]


def test_connection_refused_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on `port` any more
    delays: list[float] = []
    summ = OpenAIChatSummarizer(f"http://127.0.0.1:{port}/v1", "m", api_key=API_KEY, max_retries=2,
                                backoff=0.5, sleep=delays.append)
    with pytest.raises(SummarizerError) as ei:
        summ.summarize(["a"])
    e = ei.value
    assert (e.retryable, e.attempts, e.status) == (True, 3, None)
    assert delays == [0.5, 1.0]
    assert f"127.0.0.1:{port}" in str(e) and "connection failed" in str(e)
    assert API_KEY not in str(e)


def test_dropped_connection_is_retried(server):
    server.queue(Reply(drop=True), Reply(body=completion("ok")))
    delays: list[float] = []
    assert client(server, delays, backoff=0.5).summarize(["a"]) == "ok"
    assert delays == [0.5]
    assert len(server.requests) == 2


# --------------------------------------------------------------------------------------------
# non-retryable failures


def test_401_fails_at_once_without_leaking_the_key(server):
    server.queue(Reply(401, {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}),
                 Reply(body=completion("must not be reached")))
    s = client(server, api_key=API_KEY)
    with pytest.raises(SummarizerError) as ei:
        s.summarize(["a"])
    e = ei.value
    assert (e.retryable, e.attempts, e.status) == (False, 1, 401)
    assert len(server.requests) == 1
    msg = str(e)
    assert "401" in msg and server.base_url + "/chat/completions" in msg and "Incorrect API key" in msg
    assert API_KEY not in msg and API_KEY not in repr(e) and API_KEY not in repr(s)


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_client_errors_are_not_retried(server, status):
    server.queue(Reply(status, {"error": f"nope {status}"}), Reply(body=completion("not reached")))
    with pytest.raises(SummarizerError) as ei:
        client(server).summarize(["a"])
    assert (ei.value.retryable, ei.value.attempts, ei.value.status) == (False, 1, status)
    assert f"nope {status}" in str(ei.value) and str(status) in str(ei.value)
    assert len(server.requests) == 1


def test_redirect_is_not_followed(server):
    server.queue(Reply(307, "", headers={"Location": "http://127.0.0.1:9/elsewhere"}))
    with pytest.raises(SummarizerError) as ei:
        client(server).summarize(["a"])
    assert (ei.value.retryable, ei.value.status) == (False, 307)
    assert "elsewhere" in str(ei.value)


@pytest.mark.parametrize("body, why", [
    ("<html>Bad Gateway</html>", "not JSON"),
    ([1, 2, 3], "not a JSON object"),
    ({"choices": []}, "no `choices`"),
    ({"object": "chat.completion"}, "no `choices`"),
    ({"choices": [{"index": 0, "message": {"role": "assistant"}}]}, "message.content"),
    ({"choices": [{"index": 0, "text": "completions-style"}]}, "message.content"),
    ({"error": {"message": "model not loaded"}}, "error object"),
    (completion(42), "not a string"),
])
def test_malformed_body_is_not_retried(server, body, why):
    server.queue(Reply(body=body), Reply(body=completion("not reached")))
    with pytest.raises(SummarizerError) as ei:
        client(server).summarize(["a"])
    e = ei.value
    assert (e.retryable, e.attempts, e.status) == (False, 1, 200)
    assert why in str(e) and server.base_url in str(e)
    assert len(server.requests) == 1


@pytest.mark.parametrize("content", ["", "   \n ", None])
def test_empty_completion_is_an_error(server, content):
    server.queue(Reply(body=completion(content, finish_reason="length")))
    with pytest.raises(SummarizerError) as ei:
        client(server).summarize(["a"])
    assert (ei.value.retryable, ei.value.attempts) == (False, 1)
    assert "empty completion" in str(ei.value) and "length" in str(ei.value)


def test_long_error_body_is_excerpted(server):
    server.queue(Reply(400, "x" * 5000))
    with pytest.raises(SummarizerError) as ei:
        client(server).summarize(["a"])
    assert "xxxx" in str(ei.value) and len(str(ei.value)) < 600


# --------------------------------------------------------------------------------------------
# template summarizer


def test_template_summarizer_format_is_exact():
    t = TemplateSummarizer()
    assert t.model_id == "template/1"
    assert t.summarize([]) == "0 items"
    assert t.summarize(["only one"]) == "1 item: only one"
    assert t.summarize(["a", "b  c", "  d\n e "]) == "3 items: a; b c; d e"
    assert t.summarize(["a", "   ", "c"]) == '3 items: a; ""; c'


def test_template_summarizer_is_deterministic_and_ignores_instruction():
    t = TemplateSummarizer()
    texts = [f"event number {i}\nwith text" for i in range(20)]
    first = t.summarize(texts)
    assert all(TemplateSummarizer().summarize(list(texts)) == first for _ in range(3))
    assert t.summarize(texts, instruction="make it rhyme") == first
    assert first.startswith("20 items: event number 0 with text; event number 1 with text;")
    assert t.build_prompt(texts) == first


def test_template_summarizer_truncates_items():
    t = TemplateSummarizer(max_item_chars=5)
    assert t.summarize(["abcdefgh", "abc"]) == "2 items: abcd…; abc"
    with pytest.raises(BadInput):
        TemplateSummarizer(max_item_chars=1)


def test_both_satisfy_the_protocol():
    assert isinstance(TemplateSummarizer(), Summarizer)
    assert isinstance(OpenAIChatSummarizer("http://127.0.0.1:9/v1", "m"), Summarizer)


# --------------------------------------------------------------------------------------------
# prompt hash


def test_prompt_hash_is_stable_and_sensitive():
    h = prompt_hash("template/1", "3 items: a; b; c")
    assert h == prompt_hash("template/1", "3 items: a; b; c")
    assert h == "1ad895d4861d20e31a8ccc8ecbb8d88e"  # pinned: a change here invalidates recorded hashes
    ref = hashlib.blake2b(b"template/1\x003 items: a; b; c", digest_size=16, person=b"ctxdb-summary")
    assert h == ref.hexdigest()  # the documented construction
    assert len(h) == 32 and int(h, 16) >= 0
    assert prompt_hash("openai:m@127.0.0.1:8080", "3 items: a; b; c") != h
    assert prompt_hash("template/1", "3 items: a; b; d") != h
    assert prompt_hash("ab", "c") != prompt_hash("a", "bc")  # the boundary is part of the hash


# --------------------------------------------------------------------------------------------
# config


def test_config_template_default():
    assert isinstance(summarizer_from_config(None), TemplateSummarizer)
    assert isinstance(summarizer_from_config({}), TemplateSummarizer)
    t = summarizer_from_config({"kind": "template", "max_item_chars": 10})
    assert isinstance(t, TemplateSummarizer) and t.max_item_chars == 10


def test_config_openai_builds_a_working_client(server):
    server.queue(Reply(500, "x"), Reply(body=completion("configured")))
    delays: list[float] = []
    s = summarizer_from_config(
        {"kind": "openai", "base_url": server.base_url, "model": "cfg-model", "api_key_env": "MY_KEY",
         "timeout": "250ms", "max_retries": 1, "backoff": "2s", "max_backoff": 60, "max_tokens": 64},
        environ={"MY_KEY": API_KEY}, sleep=delays.append)
    assert isinstance(s, OpenAIChatSummarizer)
    assert (s.timeout, s.max_retries, s.backoff, s.max_backoff) == (0.25, 1, 2.0, 60.0)
    assert s.summarize(["a"]) == "configured"
    assert delays == [2.0]
    assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert server.requests[-1]["json"]["model"] == "cfg-model"
    assert server.requests[-1]["json"]["max_tokens"] == 64
    assert summarizer_from_config({"kind": "openai", "base_url": server.base_url, "model": "m",
                                   "timeout": 12}).timeout == 12.0


OK = {"kind": "openai", "base_url": "http://127.0.0.1:8080/v1", "model": "m"}


@pytest.mark.parametrize("cfg, fld, expect_in_msg", [
    ({"kind": "gpt"}, "kind", '"openai"'),
    ({"kind": "template", "model": "x"}, "model", "unknown key"),
    ({"kind": "openai", "model": "m"}, "base_url", "http"),
    ({**OK, "base_url": "ftp://host/v1"}, "base_url", "http"),
    ({**OK, "base_url": 8080}, "base_url", "http"),
    ({k: v for k, v in OK.items() if k != "model"}, "model", "model name"),
    ({**OK, "timeout": "soon"}, "timeout", "duration"),
    ({**OK, "timeout": -1}, "timeout", "> 0"),
    ({**OK, "timeout": 0}, "timeout", "> 0"),
    ({**OK, "timeout": True}, "timeout", "duration"),
    ({**OK, "timeout": "inf"}, "timeout", "finite"),
    ({**OK, "max_retries": -1}, "max_retries", "integer >= 0"),
    ({**OK, "max_retries": "5"}, "max_retries", "integer >= 0"),
    ({**OK, "backoff": "x"}, "backoff", "duration"),
    ({**OK, "temperature": 5}, "temperature", "between 0 and 2"),
    ({**OK, "max_tokens": 0}, "max_tokens", "integer >= 1"),
    ({**OK, "api_key": API_KEY}, "api_key", "api_key_env"),
    ({**OK, "api_key_env": "CTXDB_TEST_UNSET_KEY"}, "api_key_env", "CTXDB_TEST_UNSET_KEY"),
    ({**OK, "retries": 3}, "retries", "unknown key"),
])
def test_config_errors_name_the_field(cfg, fld, expect_in_msg):
    with pytest.raises(BadInput) as ei:
        summarizer_from_config(cfg, environ={})
    e = ei.value
    assert e.field == fld
    assert f"`{fld}`" in str(e) and expect_in_msg in str(e)
    assert API_KEY not in str(e)
