"""Recorded semantic ETL: the worker that answers LLM summary requests with derived events.

Rules ask for a summary (`llm = { instruction = ... }` per event, `summarize = { ..., llm = true }`
per window); the projector opens a request and keeps the raw items in views. This worker, a
background thread of the writer process, calls the configured summarizer (summarize.py: the
deterministic template summarizer, or an OpenAI-compatible endpoint) and appends the answer as a
`ctxdb.llm.output` event carrying the model, the prompt hash, the source seqs and the output text.
The projector builds the summary item from that event alone, so rebuilds, as-of views and
replays read the recorded text and never call a model.

Failures never block ingest: the summarizer retries with backoff inside one attempt; a request that
still fails is tried again later (30 s, doubling up to 10 min) and the raw items stay meanwhile.
The derived event's id is a hash of (request key, prompt hash): a request answered twice (e.g.
after a crash between append and projection) appends once.
"""
from __future__ import annotations

import hashlib
import threading
import time as _time
from typing import Any, Callable

from .errors import CtxdbError
from .events import utc_from_micros
from .projector import LLM_TYPE
from .summarize import Summarizer, prompt_hash

RETRY_FIRST, RETRY_MAX = 30.0, 600.0


class LLMWorker:
    def __init__(self, summarizer: Summarizer, open_requests: Callable[[], dict[str, dict]],
                 append: Callable[[list[dict]], Any], *, name: str = "ctxdb-llm") -> None:
        self.summarizer = summarizer
        self._open, self._append = open_requests, append
        self._wake = threading.Event()
        self._stop = False
        self._sent: set[str] = set()                  # answered, not yet projected
        self._retry: dict[str, tuple[float, float]] = {}   # key -> (next try, delay)
        self.answered = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """New projection: look for requests."""
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def pending(self) -> int:
        return len(self._open())

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop:
                break
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - reported in stats, retried on the next wake
                self.last_error = f"{type(exc).__name__}: {exc}"

    def step(self) -> int:
        """Answer every open request that is due; returns how many were answered."""
        reqs = self._open()
        self._sent &= set(reqs)            # projected ones are gone from the open set
        now = _time.monotonic()
        done = 0
        for key in sorted(reqs):
            if self._stop:
                break
            if key in self._sent or self._retry.get(key, (0.0, 0.0))[0] > now:
                continue
            req = reqs[key]
            prompt = self.summarizer.build_prompt(req["texts"], req.get("instruction"))
            try:
                out = self.summarizer.summarize(req["texts"], instruction=req.get("instruction"))
            except CtxdbError as exc:
                self.failures += 1
                self.last_error = f"{key}: {exc}"
                delay = min(RETRY_MAX, 2 * self._retry.get(key, (0.0, RETRY_FIRST / 2))[1])
                self._retry[key] = (_time.monotonic() + delay, delay)
                continue
            ph = prompt_hash(self.summarizer.model_id, prompt)
            data = {k: v for k, v in req.items() if k != "texts"}
            data.update(output=out, model=self.summarizer.model_id, prompt_hash=ph)
            eid = "llm-" + hashlib.blake2b(f"{key}\x00{ph}".encode(), digest_size=16).hexdigest()
            self._append([{"id": eid, "source": "ctxdb", "type": LLM_TYPE, "subject": req["subject"],
                           "time": utc_from_micros(int(req["time_us"])).isoformat().replace("+00:00", "Z"),
                           "data": data}])
            self._sent.add(key)
            self._retry.pop(key, None)
            self.answered += 1
            done += 1
        return done
