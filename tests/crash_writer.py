"""A writer process for the crash tests: appends deterministic batches and prints an ACK line
after each append returns (i.e. after its fsync). The parent kills it with SIGKILL."""
from __future__ import annotations

import sys

import ctxdb


def batch(k: int, size: int) -> list[dict]:
    return [{"id": f"b{k}-{i}", "source": "crash", "type": "t.x", "subject": f"s:{(k * size + i) % 97}",
             "time": "2026-11-01T00:00:00Z", "data": {"k": k, "i": i, "pad": "x" * (i % 50)}}
            for i in range(size)]


def main() -> None:
    path, start, count, size, seg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    with ctxdb.open(path, segment_events=seg) as db:
        print("OPEN", flush=True)
        for k in range(start, start + count):
            seqs = db.append(batch(k, size))
            print(f"ACK {k} {min(seqs)} {max(seqs)}", flush=True)


if __name__ == "__main__":
    main()
