"""Snapshots of the projected state: `snapshots/<seq>/items.duckdb` plus a manifest.

A snapshot is a copy of the item store taken between projection batches (after a DuckDB
CHECKPOINT, with writes held), so it is the exact state at its seq. The manifest records the
seq, the policy version and hash in force, the rules fingerprint and each file's size and
BLAKE2b hash; a snapshot whose files do not match its manifest is never restored.

Opening a store whose item store is missing or unreadable restores the newest valid snapshot
and projects only the log after it, instead of replaying the whole log.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import CorruptionError
from .wal import fsync_dir as _fsync_dir

MANIFEST = "manifest.json"
ITEMS_FILE = "items.duckdb"


@dataclass
class Manifest:
    seq: int
    policy_version: int
    policy_hash: str
    rules: str
    files: dict[str, dict]
    created_at: float
    path: str = ""


def file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Snapshots:
    def __init__(self, root: Path) -> None:
        self.root = root

    def list(self) -> list[Manifest]:
        out = []
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            if not d.is_dir() or not d.name.isdigit():
                continue
            try:
                m = Manifest(**json.loads((d / MANIFEST).read_text()))
            except (OSError, ValueError, TypeError):
                continue
            m.path = str(d)
            out.append(m)
        return sorted(out, key=lambda m: m.seq)

    def take(self, items_file: Path, *, seq: int, policy_version: int, policy_hash: str, rules: str) -> Manifest:
        """Copy the (checkpointed, quiescent) item store file into a new snapshot directory."""
        final = self.root / f"{seq:012d}"
        if final.exists():
            return Manifest(**{**json.loads((final / MANIFEST).read_text()), "path": str(final)})
        tmp = self.root / f".{seq:012d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        dst = tmp / ITEMS_FILE
        shutil.copyfile(items_file, dst)
        with open(dst, "rb+") as f:
            os.fsync(f.fileno())
        m = Manifest(seq=seq, policy_version=policy_version, policy_hash=policy_hash, rules=rules,
                     files={ITEMS_FILE: {"size": dst.stat().st_size, "blake2b": file_hash(dst)}},
                     created_at=time.time())
        (tmp / MANIFEST).write_text(json.dumps({k: v for k, v in asdict(m).items() if k != "path"}, indent=1))
        with open(tmp / MANIFEST, "rb+") as f:
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        m.path = str(final)
        return m

    def prune(self, retain: int) -> list[int]:
        snaps = self.list()
        gone = []
        for m in snaps[: max(0, len(snaps) - retain)]:
            shutil.rmtree(m.path, ignore_errors=True)
            gone.append(m.seq)
        for d in self.root.glob(".*.tmp") if self.root.is_dir() else []:
            shutil.rmtree(d, ignore_errors=True)
        return gone

    def verify(self, m: Manifest) -> None:
        for name, info in m.files.items():
            p = Path(m.path) / name
            if not p.exists():
                raise CorruptionError("snapshot file is missing", file=str(p))
            if p.stat().st_size != info["size"] or file_hash(p) != info["blake2b"]:
                raise CorruptionError("snapshot file does not match its manifest (size or BLAKE2b)", file=str(p))

    def restore_latest(self, dest: Path, max_seq: int) -> Manifest | None:
        """Copy the newest valid snapshot at or before `max_seq` to `dest` (atomically)."""
        for m in reversed(self.list()):
            if m.seq > max_seq:
                continue
            try:
                self.verify(m)
            except CorruptionError:
                continue
            tmp = dest.with_name(dest.name + ".restore")
            shutil.copyfile(Path(m.path) / ITEMS_FILE, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
            return m
        return None
