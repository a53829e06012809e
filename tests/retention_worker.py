"""Subprocess for the retention crash test: open a store, say "ready", apply retention, say
"done". The test kills it with SIGKILL at a random moment in between."""
import sys

import ctxdb

path, cfg, now = sys.argv[1], sys.argv[2], sys.argv[3]
db = ctxdb.open(path, config=cfg, embedder=None)
db.wait()
print("ready", flush=True)
rep = db.retain(now=now)
print("done", rep.receipt_seq, flush=True)
db.close()
