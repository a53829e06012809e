"""ctxdb: the event-sourced context database for AI agents (embedded API).

    import ctxdb
    with ctxdb.open("data") as db:
        db.append([{"type": "order.shipped", "subject": "order:1", "time": "2026-11-21T10:00:00Z",
                    "data": {"carrier": "UPS"}}])
        for ev in db.read(subject="order:*"):
            print(ev.seq, ev.type, ev.json())
"""
from .errors import (AccessDenied, BadInput, ConcurrencyError, ConfigError, CorruptionError, CtxdbError,
                     Erased, LockedError, ReadOnlyError)
from .events import Envelope, Event
from .ingest import IngestReport
from .store import Store, open, open_memory

__version__ = "0.1.0"
__all__ = [
    "open", "open_memory", "Store", "Event", "Envelope", "IngestReport", "CtxdbError", "BadInput",
    "ConfigError", "CorruptionError", "ConcurrencyError", "LockedError", "ReadOnlyError",
    "AccessDenied", "Erased", "__version__",
]
