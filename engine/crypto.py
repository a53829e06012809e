"""Crypto-shredding: one random 256-bit data key per subject, destroyable on purge.

Personal payloads and item text of a subject are stored encrypted under that subject's data key.
A purge destroys the key first; from then on every copy of the ciphertext (old segments, backups,
exports, caches anywhere) is unreadable, and the subject's kept item hashes (`keyed_hash`) can no
longer be used to confirm a guessed text.

Which subjects are encrypted is the caller's decision (e.g. with `ctxdb.config.glob_match` over
configured subject globs); this module encrypts whatever it is asked to.

API (all methods thread-safe; one lock per `KeyStore`)::

    subject_id(subject) -> str                       # blake2b-128 hex: the name used on disk
    ks = KeyStore(root: Path | None, *, readonly=False)   # root = store dir; None = in memory
    ks.encrypt(subject, data: bytes, *, recreate=False) -> bytes
    ks.decrypt(subject, blob: bytes) -> bytes
    ks.encrypt_text(subject, text: str, *, recreate=False) -> str    # "ctxdb-enc:1:<base64url>"
    ks.decrypt_text(subject, s: str) -> str
    is_encrypted(s) -> bool                          # also KeyStore.is_encrypted
    ks.keyed_hash(subject, *parts: str, recreate=False) -> str       # 32 hex chars
    ks.ensure_key(subject, *, recreate=False) -> bool                # True if it created one
    ks.destroy(subject) -> bool                      # True if a key existed
    ks.has_key(subject) -> bool; ks.destroyed(subject) -> bool; ks.subjects_count() -> int
    ks.key_path(subject) -> Path | None; ks.drop_cache(); ks.verify(repair=False) -> KeyCheck

Errors: `KeyDestroyed` (a subclass of `Erased`, so of `CtxdbError`) when the subject's key was
destroyed; `CorruptionError` when a key file or a ciphertext fails verification (tampered,
truncated, moved to another subject, key file missing); `ReadOnlyError` when a read-only store
would have to create or destroy a key; `BadInput` for a non-string subject or text.

On disk (under ``<root>/keys/``)::

    keys/<h[0:2]>/<h>.key        live data key of the subject whose subject_id is h
    keys/<h[0:2]>/<h>.destroyed  tombstone: the subject's key was destroyed (no key material)
    keys/tmp/*.tmp               files being written; removed when a writer opens the store

`h = subject_id(subject)` = blake2b(subject utf-8, digest 16, person "ctxdb-subject"), hex. The
subject never appears in clear in a file name or a file's content. The 256-way fan-out keeps
directories small at 100k+ subjects. Nothing is read at open: a subject's key file is read on first
need and cached (the cache of a long-lived read-only reader is not invalidated by a writer's
destroy in another process: call `drop_cache()` after a purge).

Key file (56 bytes, big-endian)::

    0  4  magic b"CTXK"
    4  1  format version (1)
    5  1  reserved (0)
    6  2  key generation (1 for the first key, +1 each time a destroyed subject is recreated)
    8  32 data key (os.urandom)
    40 16 checksum: blake2b(bytes 0..40 + h, digest 16, person "ctxdb-keyfile")

Tombstone file (24 bytes): b"CTXD", version 1, reserved 0, u16 destroyed generation (0 if the
subject never had a key), 16-byte checksum of the first 8 bytes + h. A tombstone is honoured even if
damaged (a damaged tombstone can only be reported, it never lets a key be silently regenerated).
The checksums bind a file to its name: a key file copied under another subject's name fails.

Crash safety. Key creation: write keys/tmp/<h>.<rand>.tmp, fsync it, hard-link it to its final name
(`link` fails if the name exists, so two writers racing on one subject both end up with the first
key, never overwrite it), fsync the directory, unlink the temp file. The key is durable before any
ciphertext made with it is returned. Destroy: write the tombstone (temp + fsync + rename), unlink
the key file, fsync the directory (and keys/tmp). If a crash leaves both files, the tombstone wins
everywhere (the subject reads as destroyed) and the next writer access to that subject, a repeated
`destroy()` (which is idempotent: purge recovery calls it again) or `verify(repair=True)` unlinks
the key. Unlink does not overwrite the freed blocks: the guarantee is at file-system level (no live
file holds the key), which is why the key lives alone in its own small file and is never copied
into another live file (temp files included: they are the same inode, hard-linked then unlinked).

Encryption: AES-256-GCM-SIV (RFC 8452), deterministic. The nonce is synthesised as
blake2b(key=nonce_key, AD || plaintext)[:12]. Deterministic encryption is required so that
deriving the same item text twice gives byte-identical ciphertext (stable digests, reproducible
rebuilds and snapshots). GCM-SIV is nonce-misuse resistant: a repeated nonce only reveals that two
plaintexts are equal, never the key stream; deriving the nonce from the plaintext makes distinct
plaintexts use distinct nonces (GCM-SIV then derives fresh per-nonce keys, giving better bounds
than a fixed nonce). What leaks: equality of two plaintexts of the same subject, and lengths.
Nothing is comparable across subjects (different keys, and the subject is associated data).

Blob layout: version byte (1) | u16 key generation | 12-byte nonce | ciphertext | 16-byte tag
(31 bytes of overhead). Generation 0 is never valid. A blob whose generation is older than the
subject's live key raises KeyDestroyed (it was made under a destroyed key; a tampered generation
field can therefore also surface as KeyDestroyed, never as plaintext); a newer one raises
CorruptionError (keys directory restored from an older backup). The associated data is
b"ctxdb-enc\\0" + the 3-byte header + the subject (utf-8): a ciphertext cannot be moved to another
subject nor to another key generation. Text form: "ctxdb-enc:1:" + unpadded base64url of the blob
(ASCII, safe in VARCHAR/JSON/Parquet strings).

Sub-keys are derived from the data key with keyed BLAKE2b and distinct personalisations:
AES key ("ctxdb-aes"), nonce key ("ctxdb-nonce"), hash key ("ctxdb-hash").

Residual facts: subject ids are unsalted hashes, so whoever can list keys/ and guesses a subject
name can confirm that it has (or had) a key; generations > 1 reveal an earlier destroy. Keys are
stored unwrapped (protect the directory like the data; a KEK could wrap them later).
"""
from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from .errors import BadInput, CorruptionError, CtxdbError, Erased, ReadOnlyError

__all__ = [
    "TEXT_PREFIX",
    "KeyCheck",
    "KeyDestroyed",
    "KeyStore",
    "is_encrypted",
    "subject_id",
]

TEXT_PREFIX = "ctxdb-enc:1:"
_ANY_PREFIX = "ctxdb-enc:"
_BLOB_VERSION = 1
_HEADER = struct.Struct(">BH")  # version, key generation
_NONCE = 12
_TAG = 16
_OVERHEAD = _HEADER.size + _NONCE + _TAG
_AD_DOMAIN = b"ctxdb-enc\x00"

_KEY_MAGIC = b"CTXK"
_TOMB_MAGIC = b"CTXD"
_FILE_VERSION = 1
_FILE_HEAD = struct.Struct(">4sBBH")  # magic, version, reserved, generation
_KEY_LEN = 32
_SUM_LEN = 16
_KEY_FILE_LEN = _FILE_HEAD.size + _KEY_LEN + _SUM_LEN  # 56
_TOMB_FILE_LEN = _FILE_HEAD.size + _SUM_LEN  # 24
_MAX_GEN = 0xFFFF


class KeyDestroyed(Erased):
    """The subject's data key was destroyed (crypto-shredded): its data cannot be read any more,
    and new data for it is refused unless the caller asks to `recreate` a key."""

    def __init__(self, subject_id: str, detail: str = "") -> None:
        self.subject_id = subject_id
        msg = f"the data key of subject {subject_id} was destroyed (crypto-shredded)"
        super().__init__(msg + (f": {detail}" if detail else ""))


def subject_id(subject: str) -> str:
    """The stable, non-reversible name of a subject on disk and in error messages (32 hex)."""
    _check_subject(subject)
    return hashlib.blake2b(subject.encode("utf-8"), digest_size=16, person=b"ctxdb-subject").hexdigest()


def is_encrypted(s: object) -> bool:
    """True if `s` is a ciphertext string made by `encrypt_text` (any format version)."""
    return isinstance(s, str) and s.startswith(_ANY_PREFIX)


def _check_subject(subject: object) -> None:
    if not isinstance(subject, str) or not subject:
        raise BadInput("subject must be a non-empty string", field="subject",
                       expected="a string such as 'user:42'")


def _checksum(head: bytes, sid: str) -> bytes:
    return hashlib.blake2b(head + bytes.fromhex(sid), digest_size=_SUM_LEN, person=b"ctxdb-keyfile").digest()


from .wal import fsync_dir as _fsync_dir  # noqa: E402


@dataclass(frozen=True)
class _Key:
    """A live data key and everything derived from it (cached per subject)."""

    gen: int
    aead: AESGCMSIV
    nonce_key: bytes
    hash_key: bytes
    raw: bytes = field(repr=False)

    @classmethod
    def derive(cls, gen: int, raw: bytes) -> _Key:
        def sub(person: bytes, size: int = 32) -> bytes:
            return hashlib.blake2b(b"", key=raw, digest_size=size, person=person).digest()

        return cls(gen, AESGCMSIV(sub(b"ctxdb-aes")), sub(b"ctxdb-nonce"), sub(b"ctxdb-hash"), raw)


@dataclass(frozen=True)
class _Destroyed:
    gen: int  # the destroyed generation; 0 if no key was known


@dataclass
class KeyCheck:
    """What `KeyStore.verify` found (and, with repair=True, fixed)."""

    keys: int = 0
    destroyed: int = 0
    half_destroyed: int = 0  # key file still present next to its tombstone (crash mid-destroy)
    temp_files: int = 0  # leftovers of interrupted writes
    stray: list[str] = field(default_factory=list)  # unexpected names
    corrupt: list[str] = field(default_factory=list)  # files failing verification
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.stray and (self.repaired or not (self.half_destroyed or self.temp_files))


# --------------------------------------------------------------------------------------------
# backends: where key records live


class _MemBackend:
    dir = "memory"

    def __init__(self) -> None:
        self.keys: dict[str, tuple[int, bytes]] = {}
        self.tombs: dict[str, int] = {}

    def key_path(self, sid: str) -> None:
        return None

    def read_key(self, sid: str) -> tuple[int, bytes] | None:
        return self.keys.get(sid)

    def key_exists(self, sid: str) -> bool:
        return sid in self.keys

    def read_tomb(self, sid: str) -> int | None:
        return self.tombs.get(sid)

    def tomb_exists(self, sid: str) -> bool:
        return sid in self.tombs

    def key_gen_hint(self, sid: str) -> int:
        rec = self.keys.get(sid)
        return rec[0] if rec else 0

    def create_key(self, sid: str, gen: int, raw: bytes) -> tuple[int, bytes]:
        return self.keys.setdefault(sid, (gen, raw))

    def write_tomb(self, sid: str, gen: int) -> None:
        self.tombs[sid] = gen

    def remove_tomb(self, sid: str) -> None:
        self.tombs.pop(sid, None)

    def unlink_key(self, sid: str) -> bool:
        return self.keys.pop(sid, None) is not None

    def count(self) -> int:
        return sum(1 for sid in self.keys if sid not in self.tombs)

    def verify(self, repair: bool) -> KeyCheck:
        rep = KeyCheck(keys=self.count(), destroyed=len(self.tombs))
        rep.half_destroyed = sum(1 for sid in self.keys if sid in self.tombs)
        if repair:
            for sid in [s for s in self.keys if s in self.tombs]:
                del self.keys[sid]
            rep.repaired = True
        return rep


class _DirBackend:
    def __init__(self, root: Path, readonly: bool) -> None:
        self.dir = Path(root) / "keys"
        self.tmp = self.dir / "tmp"
        self.readonly = readonly
        self._made: set[Path] = set()
        if not readonly:
            self._clean_tmp()

    # paths ---------------------------------------------------------------------------------
    def _sub(self, sid: str) -> Path:
        return self.dir / sid[:2]

    def key_path(self, sid: str) -> Path:
        return self._sub(sid) / f"{sid}.key"

    def tomb_path(self, sid: str) -> Path:
        return self._sub(sid) / f"{sid}.destroyed"

    def _mkdir(self, path: Path) -> None:
        """Create keys/ (and the store root if needed) and `path` under it, durably."""
        if path in self._made:
            return
        for d in (self.dir, path):
            if d in self._made:
                continue
            if not d.is_dir():
                d.mkdir(parents=True, exist_ok=True)
                _fsync_dir(d.parent)
            self._made.add(d)

    def _clean_tmp(self) -> int:
        """Remove leftovers of writes interrupted by a crash (never referenced by a final name
        except through a hard link already completed, so removing them loses nothing)."""
        n = 0
        try:
            entries = list(os.scandir(self.tmp))
        except FileNotFoundError:
            return 0
        for e in entries:
            if e.name.endswith(".tmp"):
                try:
                    os.unlink(e.path)
                    n += 1
                except FileNotFoundError:
                    pass
        if n:
            _fsync_dir(self.tmp)
        return n

    # reading --------------------------------------------------------------------------------
    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read(_KEY_FILE_LEN + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CorruptionError(f"cannot read key file: {e.strerror or e}", file=str(path)) from e

    def read_key(self, sid: str) -> tuple[int, bytes] | None:
        path = self.key_path(sid)
        buf = self._read(path)
        if buf is None:
            return None
        return self._parse_key(buf, sid, path)

    @staticmethod
    def _parse_key(buf: bytes, sid: str, path: Path) -> tuple[int, bytes]:
        if len(buf) != _KEY_FILE_LEN:
            raise CorruptionError(f"damaged key file: {len(buf)} bytes, expected {_KEY_FILE_LEN}",
                                  file=str(path))
        magic, ver, _res, gen = _FILE_HEAD.unpack_from(buf)
        if magic != _KEY_MAGIC:
            raise CorruptionError("damaged key file: bad magic (not a ctxdb key file)", file=str(path), offset=0)
        if ver != _FILE_VERSION:
            raise CorruptionError(f"key file format version {ver} is not supported (expected "
                                  f"{_FILE_VERSION}; written by a newer ctxdb?)", file=str(path), offset=4)
        body = buf[: _FILE_HEAD.size + _KEY_LEN]
        if buf[len(body):] != _checksum(body, sid):
            raise CorruptionError("damaged key file: checksum mismatch (the key was altered, or the file "
                                  "was copied from another subject)", file=str(path), offset=len(body))
        return gen, bytes(buf[_FILE_HEAD.size: _FILE_HEAD.size + _KEY_LEN])

    def key_exists(self, sid: str) -> bool:
        return self.key_path(sid).exists()

    def tomb_exists(self, sid: str) -> bool:
        return self.tomb_path(sid).exists()

    def read_tomb(self, sid: str) -> int | None:
        """The destroyed generation, or None if there is no tombstone. A damaged tombstone still
        counts as destroyed (generation 0 = unknown)."""
        buf = self._read(self.tomb_path(sid))
        if buf is None:
            return None
        if len(buf) == _TOMB_FILE_LEN and buf[:4] == _TOMB_MAGIC:
            head = buf[: _FILE_HEAD.size]
            if buf[_FILE_HEAD.size:] == _checksum(head, sid):
                return _FILE_HEAD.unpack(head)[3]
        return 0

    def key_gen_hint(self, sid: str) -> int:
        """Generation of a key file, even a damaged one (for the tombstone of a destroy)."""
        buf = self._read(self.key_path(sid))
        if buf and len(buf) >= _FILE_HEAD.size and buf[:4] == _KEY_MAGIC:
            return _FILE_HEAD.unpack_from(buf)[3]
        return 0

    # writing --------------------------------------------------------------------------------
    def _write_tmp(self, sid: str, data: bytes) -> Path:
        self._mkdir(self.tmp)
        tmp = self.tmp / f"{sid}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def create_key(self, sid: str, gen: int, raw: bytes) -> tuple[int, bytes]:
        """Persist a new key unless one exists; returns the key that is now on disk."""
        head = _FILE_HEAD.pack(_KEY_MAGIC, _FILE_VERSION, 0, gen) + raw
        sub = self._sub(sid)
        self._mkdir(sub)
        final = self.key_path(sid)
        tmp = self._write_tmp(sid, head + _checksum(head, sid))
        try:
            try:
                os.link(tmp, final)
            except FileExistsError:
                existing = self.read_key(sid)  # another writer won the race: use its key
                if existing is not None:
                    return existing
                os.replace(tmp, final)
            except OSError as e:  # file systems without hard links
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                    raise
                if final.exists():
                    existing = self.read_key(sid)
                    if existing is not None:
                        return existing
                os.replace(tmp, final)
            _fsync_dir(sub)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return gen, raw

    def write_tomb(self, sid: str, gen: int) -> None:
        head = _FILE_HEAD.pack(_TOMB_MAGIC, _FILE_VERSION, 0, gen)
        sub = self._sub(sid)
        self._mkdir(sub)
        tmp = self._write_tmp(sid, head + _checksum(head, sid))
        os.replace(tmp, self.tomb_path(sid))
        _fsync_dir(sub)

    def remove_tomb(self, sid: str) -> None:
        try:
            os.unlink(self.tomb_path(sid))
        except FileNotFoundError:
            return
        _fsync_dir(self._sub(sid))

    def unlink_key(self, sid: str) -> bool:
        try:
            os.unlink(self.key_path(sid))
        except FileNotFoundError:
            return False
        _fsync_dir(self._sub(sid))
        if self.tmp.is_dir():  # make earlier temp-name unlinks durable too
            _fsync_dir(self.tmp)
        return True

    # scanning (names only, no file is read) --------------------------------------------------
    def _names(self):
        try:
            subs = [e for e in os.scandir(self.dir) if e.is_dir() and e.name != "tmp"]
        except FileNotFoundError:
            return
        for d in subs:
            for e in os.scandir(d.path):
                yield d.name, e

    def count(self) -> int:
        keys: set[str] = set()
        tombs: set[str] = set()
        for _sub, e in self._names():
            stem, _dot, ext = e.name.partition(".")
            if ext == "key":
                keys.add(stem)
            elif ext == "destroyed":
                tombs.add(stem)
        return len(keys - tombs)

    def verify(self, repair: bool) -> KeyCheck:
        rep = KeyCheck()
        keys: dict[str, Path] = {}
        tombs: set[str] = set()
        temps: list[str] = []
        for sub, e in self._names():
            stem, _dot, ext = e.name.partition(".")
            ok_name = len(stem) == 32 and stem[:2] == sub and all(c in "0123456789abcdef" for c in stem)
            if e.name.endswith(".tmp"):
                temps.append(e.path)
            elif ok_name and ext == "key":
                keys[stem] = Path(e.path)
            elif ok_name and ext == "destroyed":
                tombs.add(stem)
            else:
                rep.stray.append(e.path)
        try:
            temps += [e.path for e in os.scandir(self.tmp) if e.name.endswith(".tmp")]
        except FileNotFoundError:
            pass
        rep.temp_files = len(temps)
        for sid in sorted(keys):
            if sid in tombs:
                rep.half_destroyed += 1
                continue
            rep.keys += 1
            try:
                self.read_key(sid)
            except CorruptionError:
                rep.corrupt.append(str(keys[sid]))
        for sid in sorted(tombs):
            rep.destroyed += 1
            buf = self._read(self.tomb_path(sid))
            if not (buf and len(buf) == _TOMB_FILE_LEN and buf[:4] == _TOMB_MAGIC
                    and buf[_FILE_HEAD.size:] == _checksum(buf[: _FILE_HEAD.size], sid)):
                rep.corrupt.append(str(self.tomb_path(sid)))
        if repair:
            if self.readonly:
                raise ReadOnlyError("repair the key store")
            for path in temps:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            for sid in keys:
                if sid in tombs:
                    self.unlink_key(sid)
            for d in {Path(p).parent for p in temps}:
                _fsync_dir(d)
            rep.repaired = True
        return rep


# --------------------------------------------------------------------------------------------


class KeyStore:
    """Per-subject data keys under `<root>/keys/` (root None: in memory only).

    Keys are created lazily the first time a subject's data is encrypted (or hashed). A read-only
    store never creates, destroys or repairs anything on disk."""

    def __init__(self, root: Path | str | None, *, readonly: bool = False) -> None:
        self.root = Path(root) if root is not None else None
        self.readonly = readonly
        self._lock = threading.RLock()
        self._cache: dict[str, _Key | _Destroyed] = {}
        self._b: _MemBackend | _DirBackend = _MemBackend() if root is None else _DirBackend(Path(root), readonly)

    def __repr__(self) -> str:
        where = str(self._b.dir) if isinstance(self._b, _DirBackend) else "memory"
        return f"KeyStore({where}{', readonly' if self.readonly else ''})"

    # key lifecycle ---------------------------------------------------------------------------
    def _load(self, sid: str) -> _Key | _Destroyed | None:
        """Cached state of a subject: live key, destroyed, or None (no key, no tombstone)."""
        st = self._cache.get(sid)
        if st is not None:
            return st
        gen = self._b.read_tomb(sid)
        if gen is not None:
            if not self.readonly and self._b.key_exists(sid):
                self._b.unlink_key(sid)  # finish a destroy interrupted by a crash
            st = _Destroyed(gen)
        else:
            rec = self._b.read_key(sid)
            if rec is None:
                return None
            st = _Key.derive(*rec)
        self._cache[sid] = st
        return st

    def _key(self, subject: str, *, create: bool, recreate: bool = False) -> tuple[str, _Key]:
        sid = subject_id(subject)
        with self._lock:
            st = self._load(sid)
            if isinstance(st, _Key):
                return sid, st
            if isinstance(st, _Destroyed) and not recreate:
                raise KeyDestroyed(sid, "its data cannot be decrypted; to store new data for this "
                                        "subject pass recreate=True (a new key, old data stays unreadable)")
            if not create:
                return sid, None  # type: ignore[return-value]
            if self.readonly:
                raise ReadOnlyError("create a data key for a subject")
            gen = 1 if st is None else max(st.gen, self._b.key_gen_hint(sid)) + 1
            if gen > _MAX_GEN:
                raise BadInput(f"subject {sid} was recreated too many times (key generation > {_MAX_GEN})")
            try:
                rec = self._b.create_key(sid, gen, os.urandom(_KEY_LEN))
                if st is not None:
                    self._b.remove_tomb(sid)
            except OSError as e:
                raise CtxdbError(f"cannot write the data key of subject {sid} under {self._b.dir}: "
                                 f"{e.strerror or e}") from e
            key = self._cache[sid] = _Key.derive(*rec)
            return sid, key

    def ensure_key(self, subject: str, *, recreate: bool = False) -> bool:
        """Make sure the subject has a live key; True if one was created now."""
        sid = subject_id(subject)
        with self._lock:
            had = isinstance(self._load(sid), _Key)
            self._key(subject, create=True, recreate=recreate)
            return not had

    def destroy(self, subject: str) -> bool:
        """Destroy the subject's data key (crypto-shred). Idempotent; True if a key file existed
        (including a key left behind by a destroy interrupted by a crash). Leaves a tombstone so
        that later encryption for the subject is refused unless `recreate=True`."""
        sid = subject_id(subject)
        with self._lock:
            if self.readonly:
                raise ReadOnlyError("destroy a data key")
            self._cache.pop(sid, None)
            tomb = self._b.read_tomb(sid)
            gen = tomb if tomb is not None else self._b.key_gen_hint(sid)
            try:
                if tomb is None:
                    self._b.write_tomb(sid, gen)  # tombstone first: a crash never allows a silent new key
                existed = self._b.unlink_key(sid)
            except OSError as e:
                raise CtxdbError(f"cannot destroy the data key of subject {sid} under {self._b.dir}: "
                                 f"{e.strerror or e}") from e
            self._cache[sid] = _Destroyed(gen)
            return existed

    def has_key(self, subject: str) -> bool:
        """True if the subject has a live (not destroyed) data key."""
        sid = subject_id(subject)
        with self._lock:
            st = self._cache.get(sid)
            if st is not None:
                return isinstance(st, _Key)
            return not self._b.tomb_exists(sid) and self._b.key_exists(sid)

    def destroyed(self, subject: str) -> bool:
        """True if the subject's key was destroyed (and not recreated)."""
        sid = subject_id(subject)
        with self._lock:
            st = self._cache.get(sid)
            if st is not None:
                return isinstance(st, _Destroyed)
            return self._b.tomb_exists(sid)

    def subjects_count(self) -> int:
        """Number of subjects with a live key (scans file names, reads no file)."""
        with self._lock:
            return self._b.count()

    def key_path(self, subject: str) -> Path | None:
        """Where the subject's key file lives (whether or not it exists); None in memory."""
        return self._b.key_path(subject_id(subject))

    def drop_cache(self) -> None:
        """Forget cached keys (a long-lived reader should call this after another process purged)."""
        with self._lock:
            self._cache.clear()

    def verify(self, *, repair: bool = False) -> KeyCheck:
        """Scan every key file and tombstone: checksums, leftovers, interrupted destroys. With
        repair=True (writer only), remove temp files and finish interrupted destroys."""
        with self._lock:
            rep = self._b.verify(repair)
            if repair:
                self._cache.clear()
            return rep

    def _data_key(self, subject: str) -> bytes:
        """Test hook: the raw data key (never use outside tests)."""
        return self._key(subject, create=False)[1].raw

    # encryption ------------------------------------------------------------------------------
    def encrypt(self, subject: str, data: bytes, *, recreate: bool = False) -> bytes:
        """Deterministic authenticated encryption of `data` under the subject's key."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BadInput("data to encrypt must be bytes", field="data", expected="bytes")
        _sid, key = self._key(subject, create=True, recreate=recreate)
        header = _HEADER.pack(_BLOB_VERSION, key.gen)
        ad = _AD_DOMAIN + header + subject.encode("utf-8")
        h = hashlib.blake2b(ad, key=key.nonce_key, digest_size=_NONCE)
        h.update(data)
        nonce = h.digest()
        return header + nonce + key.aead.encrypt(nonce, bytes(data), ad)

    def decrypt(self, subject: str, blob: bytes) -> bytes:
        """Verify and decrypt a blob made by `encrypt` for the same subject. Raises KeyDestroyed
        if the key (of the blob's generation) was destroyed, CorruptionError if it fails to verify."""
        sid = subject_id(subject)
        blob = bytes(blob)
        if len(blob) < _OVERHEAD:
            raise CorruptionError(f"ciphertext of subject {sid} is truncated ({len(blob)} bytes, "
                                  f"at least {_OVERHEAD} expected)")
        ver, gen = _HEADER.unpack_from(blob)
        if ver != _BLOB_VERSION:
            raise CorruptionError(f"ciphertext of subject {sid} has unknown format version {ver}", offset=0)
        if gen == 0:
            raise CorruptionError(f"ciphertext of subject {sid} names key generation 0 (never valid)", offset=1)
        with self._lock:
            st = self._load(sid)
        if isinstance(st, _Destroyed):
            raise KeyDestroyed(sid, "the data cannot be decrypted")
        if st is None:
            path = self._b.key_path(sid)
            raise CorruptionError(f"no data key for subject {sid} and no tombstone: the key file is missing "
                                  "(keys directory lost or restored from an older backup?)",
                                  file=str(path) if path else None)
        if gen < st.gen:
            raise KeyDestroyed(sid, f"this data was encrypted under key generation {gen}, destroyed "
                                    f"before the current generation {st.gen} was created")
        if gen > st.gen:
            raise CorruptionError(f"ciphertext of subject {sid} names key generation {gen} but the store "
                                  f"holds generation {st.gen} (keys directory restored from an older backup?)",
                                  file=str(self._b.key_path(sid)) if self.root else None)
        ad = _AD_DOMAIN + blob[: _HEADER.size] + subject.encode("utf-8")
        nonce = blob[_HEADER.size: _HEADER.size + _NONCE]
        try:
            return st.aead.decrypt(nonce, blob[_HEADER.size + _NONCE:], ad)
        except InvalidTag:
            raise CorruptionError(f"ciphertext of subject {sid} failed authentication (tampered, truncated, "
                                  "or encrypted for another subject)") from None

    def encrypt_text(self, subject: str, text: str, *, recreate: bool = False) -> str:
        """`encrypt` for strings: returns "ctxdb-enc:1:" + unpadded base64url (ASCII)."""
        if not isinstance(text, str):
            raise BadInput("text to encrypt must be a string", field="text", expected="str")
        blob = self.encrypt(subject, text.encode("utf-8"), recreate=recreate)
        return TEXT_PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")

    def decrypt_text(self, subject: str, s: str) -> str:
        """Inverse of `encrypt_text`."""
        if not isinstance(s, str) or not s.startswith(_ANY_PREFIX):
            raise CorruptionError(f"value for subject {subject_id(subject)} is not a ctxdb ciphertext "
                                  f"(expected the prefix {TEXT_PREFIX!r})")
        if not s.startswith(TEXT_PREFIX):
            raise CorruptionError(f"ciphertext for subject {subject_id(subject)} has an unsupported text "
                                  f"format {s[:len(TEXT_PREFIX) + 2]!r} (written by a newer ctxdb?)")
        body = s[len(TEXT_PREFIX):]
        try:
            raw = body.encode("ascii")
            if len(raw) % 4 == 1 or b"=" in raw or b"+" in raw or b"/" in raw:
                raise ValueError("bad length or characters")
            blob = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raise CorruptionError(f"ciphertext for subject {subject_id(subject)} is not valid base64url") from None
        data = self.decrypt(subject, blob)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:  # authenticated but not text: made by encrypt(), not encrypt_text()
            raise CorruptionError(f"ciphertext for subject {subject_id(subject)} holds bytes, not UTF-8 "
                                  "text (decrypt it with decrypt())") from None

    is_encrypted = staticmethod(is_encrypted)

    def keyed_hash(self, subject: str, *parts: str, recreate: bool = False) -> str:
        """Per-subject keyed BLAKE2b (16 bytes, hex) of `parts` (length-prefixed, so part
        boundaries matter). Once the key is destroyed nobody can compute it again, so a kept hash
        cannot confirm a guessed text. Creates the subject's key if needed (not read-only)."""
        for p in parts:
            if not isinstance(p, str):
                raise BadInput("keyed_hash parts must be strings", field="parts", expected="str")
        _sid, key = self._key(subject, create=True, recreate=recreate)
        h = hashlib.blake2b(digest_size=16, key=key.hash_key, person=b"ctxdb-hash")
        for p in parts:
            b = p.encode("utf-8")
            h.update(len(b).to_bytes(8, "big"))
            h.update(b)
        return h.hexdigest()
