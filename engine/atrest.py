"""Crypto-shredding at rest: subjects matching `[privacy] encrypt_subjects` globs get a data key
of their own (crypto.KeyStore, AES-256-GCM-SIV); their events' `data` and `meta` in the log and
their items' text in the item store are stored encrypted, and decrypted on read.

    log      `data`/`meta` become a JSON string "ctxdb-enc:1:<base64url>" (still valid JSON, so
             SQL over the segments works; the subject, type, seq and times stay in clear)
    items    the `text` column holds the same form

A purge destroys the subject's key before it rewrites any file: from that moment every copy of
the store taken earlier (a backup, a replica, a stolen disk image) holds only ciphertext nobody
can open. Keep the keys apart from such copies (`[privacy] keys_dir` on another volume, or
exclude `keys/` from backups): a copy that carries the key carries the data.

Reading an event or item whose key was destroyed gives `null` data / empty text, never an error:
a purged subject does not make the rest of a log unreadable.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .config import glob_match
from .crypto import TEXT_PREFIX, KeyDestroyed, KeyStore

_JSON_PREFIX = '"' + TEXT_PREFIX


class AtRest:
    def __init__(self, keys: KeyStore, globs: tuple[str, ...]) -> None:
        self.keys, self.globs = keys, tuple(globs)
        self._match: dict[str, bool] = {}

    @classmethod
    def for_store(cls, root: Path | None, globs: tuple[str, ...], keys_dir: str | None, *, readonly: bool) -> "AtRest":
        """Keys under `<keys_dir>/keys/` when `[privacy] keys_dir` is set, else `<store>/keys/`."""
        return cls(KeyStore(Path(keys_dir) if keys_dir is not None else root, readonly=readonly), globs)

    def applies(self, subject: str) -> bool:
        hit = self._match.get(subject)
        if hit is None:
            hit = any(glob_match(g, subject) for g in self.globs)
            if len(self._match) > 200_000:
                self._match.clear()
            self._match[subject] = hit
        return hit

    def _rows(self, subjects) -> list[int]:
        uniq = pc.unique(subjects).to_pylist()
        hit = [s for s in uniq if s is not None and self.applies(s)]
        if not hit:
            return []
        return pc.indices_nonzero(pc.is_in(subjects, pa.array(hit, pa.string()))).to_pylist()

    # ---- log batches -------------------------------------------------------------------------
    def encrypt_table(self, t: pa.RecordBatch) -> pa.RecordBatch:
        rows = self._rows(t.column("subject"))
        if not rows:
            return t
        subj = t.column("subject").to_pylist()
        cols = {}
        for name in ("data", "meta"):
            vals = t.column(name).to_pylist()
            for i in rows:
                if vals[i] is not None and not vals[i].startswith(_JSON_PREFIX):
                    vals[i] = '"' + self.keys.encrypt_text(subj[i], vals[i]) + '"'
            cols[name] = pa.array(vals, pa.string())
        return pa.RecordBatch.from_arrays([cols.get(f.name, t.column(f.name)) for f in t.schema], schema=t.schema)

    def decrypt_batch(self, b: pa.RecordBatch) -> pa.RecordBatch:
        names = b.schema.names
        if "subject" not in names or not any(n in names for n in ("data", "meta")):
            return b
        out = {}
        subj = None
        for name in ("data", "meta"):
            if name not in names:
                continue
            col = b.column(name)
            enc = pc.starts_with(col, _JSON_PREFIX)
            idx = pc.indices_nonzero(enc).to_pylist() if pc.any(enc).as_py() else []
            if not idx:
                continue
            subj = subj or b.column("subject").to_pylist()
            vals = col.to_pylist()
            for i in idx:
                try:
                    vals[i] = self.keys.decrypt_text(subj[i], vals[i][1:-1])
                except KeyDestroyed:
                    vals[i] = "null" if name == "data" else None
            out[name] = pa.array(vals, pa.string())
        if not out:
            return b
        return pa.RecordBatch.from_arrays([out.get(n, b.column(n)) for n in names], schema=b.schema)

    # ---- item texts --------------------------------------------------------------------------
    def encrypt_texts(self, t: pa.Table) -> pa.Table:
        rows = self._rows(t.column("subject"))
        if not rows:
            return t
        subj = t.column("subject").to_pylist()
        vals = t.column("text").to_pylist()
        for i in rows:
            if vals[i] and not vals[i].startswith(TEXT_PREFIX):
                vals[i] = self.keys.encrypt_text(subj[i], vals[i])
        return t.set_column(t.schema.get_field_index("text"), "text", pa.array(vals, pa.string()))

    def decrypt_texts(self, t: pa.Table) -> pa.Table:
        if "text" not in t.schema.names or "subject" not in t.schema.names or not t.num_rows:
            return t
        col = t.column("text")
        enc = pc.starts_with(col, TEXT_PREFIX)
        if not pc.any(enc).as_py():
            return t
        idx = pc.indices_nonzero(enc).to_pylist()
        subj = t.column("subject").to_pylist()
        vals = col.to_pylist()
        for i in idx:
            try:
                vals[i] = self.keys.decrypt_text(subj[i], vals[i])
            except KeyDestroyed:
                vals[i] = ""
        return t.set_column(t.schema.get_field_index("text"), "text", pa.array(vals, pa.string()))
