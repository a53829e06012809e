"""Crypto-shredding key store (ctxdb.crypto): round trips, determinism, tamper detection, key
files, crash safety, and the shredding property itself."""
from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from ctxdb.crypto import TEXT_PREFIX, KeyDestroyed, KeyStore, is_encrypted, subject_id
from ctxdb.errors import BadInput, CorruptionError, CtxdbError, Erased, ReadOnlyError

TEXTS = ["", "hello", "héllo wörld ✓ 日本語 🙂", "line1\nline2\ttab\x00nul", "x" * 10_000]


@pytest.fixture(params=["disk", "memory"])
def ks(request, tmp_path):
    return KeyStore(tmp_path / "store" if request.param == "disk" else None)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1:]


# --- round trip, format, determinism --------------------------------------------------------


def test_round_trip_text_and_bytes(ks):
    for t in TEXTS:
        c = ks.encrypt_text("user:42", t)
        assert ks.decrypt_text("user:42", c) == t
        assert t == "" or t not in c
    for b in [b"", b"\x00\xff" * 100, os.urandom(257)]:
        blob = ks.encrypt("user:42", b)
        assert ks.decrypt("user:42", blob) == b
        assert len(blob) == len(b) + 31  # header 3 + nonce 12 + tag 16
    assert ks.has_key("user:42") and not ks.destroyed("user:42")
    assert ks.subjects_count() == 1


def test_text_format_is_prefixed_ascii_base64url(ks):
    for t in TEXTS:
        c = ks.encrypt_text("user:42", t)
        assert c.startswith(TEXT_PREFIX) and c.isascii() and "=" not in c
        body = c[len(TEXT_PREFIX):]
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert is_encrypted(c) and ks.is_encrypted(c)
    for plain in ["hello", "", "ctxdb", "ctxdb-enc", None, b"ctxdb-enc:1:"]:
        assert not is_encrypted(plain)


def test_deterministic_per_subject(tmp_path):
    ks = KeyStore(tmp_path)
    a1, a2 = ks.encrypt_text("user:42", "same text"), ks.encrypt_text("user:42", "same text")
    assert a1 == a2
    assert ks.encrypt("user:42", b"same") == ks.encrypt("user:42", b"same")
    assert ks.encrypt_text("user:42", "other text") != a1
    b = ks.encrypt_text("user:7", "same text")
    assert b != a1 and b[len(TEXT_PREFIX) + 4:] != a1[len(TEXT_PREFIX) + 4:]
    # nonces of different plaintexts differ (synthetic nonce from the plaintext)
    n1 = ks.encrypt("user:42", b"a")[3:15]
    n2 = ks.encrypt("user:42", b"b")[3:15]
    assert n1 != n2
    # stable across reopen (a rebuild gives byte-identical ciphertext)
    assert KeyStore(tmp_path).encrypt_text("user:42", "same text") == a1
    assert KeyStore(tmp_path, readonly=True).decrypt_text("user:42", a1) == "same text"


# --- tampering and misuse --------------------------------------------------------------------


def test_tamper_every_byte_is_detected(ks):
    blob = ks.encrypt("user:42", b"pay 100 EUR to alice")
    sid = subject_id("user:42")
    for i in range(len(blob)):
        with pytest.raises(CtxdbError) as ei:
            ks.decrypt("user:42", flip(blob, i))
        assert sid in str(ei.value)
        assert isinstance(ei.value, CorruptionError)
    for cut in (0, 5, 30, len(blob) - 1):
        with pytest.raises(CorruptionError, match=sid):
            ks.decrypt("user:42", blob[:cut])
    with pytest.raises(CorruptionError, match=sid):
        ks.decrypt("user:42", blob + b"\x00")
    assert ks.decrypt("user:42", blob) == b"pay 100 EUR to alice"


def test_tamper_text(ks):
    c = ks.encrypt_text("user:42", "secret diagnosis")
    sid = subject_id("user:42")
    body = c[len(TEXT_PREFIX):]
    blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    for i in (0, 3, 10, 20, len(blob) - 1):
        t = TEXT_PREFIX + base64.urlsafe_b64encode(flip(blob, i)).rstrip(b"=").decode()
        with pytest.raises(CorruptionError, match=sid):
            ks.decrypt_text("user:42", t)
    mid = len(TEXT_PREFIX) + 20
    t = c[:mid] + ("A" if c[mid] != "A" else "B") + c[mid + 1:]
    with pytest.raises(CorruptionError, match=sid):
        ks.decrypt_text("user:42", t)
    for bad in ["secret diagnosis", c[:-1] + "!", c + "=", "ctxdb-enc:9:AAAA", c.replace("ctxdb-enc:1:", "ctxdb-enc:2:")]:
        with pytest.raises(CorruptionError):
            ks.decrypt_text("user:42", bad)
    bin_ct = TEXT_PREFIX + base64.urlsafe_b64encode(ks.encrypt("user:42", b"\xff\xfe")).rstrip(b"=").decode()
    with pytest.raises(CorruptionError, match="not UTF-8"):
        ks.decrypt_text("user:42", bin_ct)


def test_ciphertext_cannot_move_to_another_subject(ks):
    c42 = ks.encrypt_text("user:42", "hello")
    ks.encrypt_text("user:7", "x")
    with pytest.raises(CorruptionError, match=subject_id("user:7")):
        ks.decrypt_text("user:7", c42)
    assert ks.decrypt_text("user:42", c42) == "hello"


def test_bad_arguments(ks):
    for subj in ["", None, 42]:
        with pytest.raises(BadInput):
            ks.encrypt_text(subj, "x")
    with pytest.raises(BadInput):
        ks.encrypt_text("user:1", b"bytes")
    with pytest.raises(BadInput):
        ks.encrypt("user:1", "str")
    with pytest.raises(BadInput):
        ks.keyed_hash("user:1", 5)


# --- keyed hashes ------------------------------------------------------------------------------


def test_keyed_hash(tmp_path):
    ks = KeyStore(tmp_path)
    h = ks.keyed_hash("user:42", "order:1/status", "shipped")
    assert len(h) == 32 and int(h, 16) >= 0
    assert ks.keyed_hash("user:42", "order:1/status", "shipped") == h
    assert KeyStore(tmp_path).keyed_hash("user:42", "order:1/status", "shipped") == h
    assert ks.keyed_hash("user:7", "order:1/status", "shipped") != h
    assert ks.keyed_hash("user:42", "ab", "c") != ks.keyed_hash("user:42", "a", "bc")
    assert ks.keyed_hash("user:42", "abc") != ks.keyed_hash("user:42", "abc", "")
    import hashlib
    assert h != hashlib.blake2b(b"order:1/statusshipped", digest_size=16).hexdigest()
    assert ks.destroy("user:42") is True
    with pytest.raises(KeyDestroyed):
        ks.keyed_hash("user:42", "order:1/status", "shipped")
    with pytest.raises(KeyDestroyed):
        KeyStore(tmp_path).keyed_hash("user:42", "order:1/status", "shipped")
    h2 = ks.keyed_hash("user:42", "order:1/status", "shipped", recreate=True)
    assert h2 != h


# --- persistence, key files ------------------------------------------------------------------


def test_persistence_and_lazy_loading(tmp_path):
    ks = KeyStore(tmp_path)
    cts = {f"user:{i}": ks.encrypt_text(f"user:{i}", f"text {i}") for i in range(20)}
    assert ks.subjects_count() == 20
    files = [p for p in all_files(tmp_path / "keys") if p.suffix == ".key"]
    assert len(files) == 20 and all(p.stat().st_size == 56 for p in files)
    assert ks.key_path("user:3") in files
    ks2 = KeyStore(tmp_path)
    assert ks2._cache == {}  # nothing read at open
    assert ks2.decrypt_text("user:3", cts["user:3"]) == "text 3"
    assert list(ks2._cache) == [subject_id("user:3")]  # only what was needed
    ro = KeyStore(tmp_path, readonly=True)
    assert all(ro.decrypt_text(s, c) == f"text {s[5:]}" for s, c in cts.items())
    assert ro.subjects_count() == 20 and ro.has_key("user:0") and not ro.has_key("user:99")
    assert ks2.verify().ok and ks2.verify().keys == 20


@pytest.mark.parametrize("damage", ["flip_key", "flip_sum", "truncate", "magic", "version", "empty", "other_subject"])
def test_damaged_key_file_raises_corruption_naming_it(tmp_path, damage):
    ks = KeyStore(tmp_path)
    c = ks.encrypt_text("user:42", "hello")
    ks.encrypt_text("user:7", "x")
    path = ks.key_path("user:42")
    raw = path.read_bytes()
    bad = {
        "flip_key": lambda: flip(raw, 20),
        "flip_sum": lambda: flip(raw, 50),
        "truncate": lambda: raw[:40],
        "magic": lambda: b"XXXX" + raw[4:],
        "version": lambda: raw[:4] + b"\x09" + raw[5:],
        "empty": lambda: b"",
        "other_subject": lambda: ks.key_path("user:7").read_bytes(),
    }[damage]()
    path.write_bytes(bad)
    ks2 = KeyStore(tmp_path)
    for call in (lambda: ks2.decrypt_text("user:42", c), lambda: ks2.encrypt_text("user:42", "y"),
                 lambda: ks2.keyed_hash("user:42", "k")):
        with pytest.raises(CorruptionError) as ei:
            call()
        assert ei.value.file == str(path) and str(path) in str(ei.value)
    assert path.read_bytes() == bad  # never silently replaced
    rep = ks2.verify()
    assert rep.corrupt == [str(path)] and not rep.ok
    assert ks2.decrypt_text("user:7", ks2.encrypt_text("user:7", "x")) == "x"


def test_missing_key_file_is_corruption_not_silence(tmp_path):
    ks = KeyStore(tmp_path)
    c = ks.encrypt_text("user:42", "hello")
    ks.key_path("user:42").unlink()
    with pytest.raises(CorruptionError, match="missing") as ei:
        KeyStore(tmp_path).decrypt_text("user:42", c)
    assert ei.value.file == str(ks.key_path("user:42"))


def test_readonly_cannot_create_or_destroy(tmp_path):
    ro = KeyStore(tmp_path / "nothing", readonly=True)
    with pytest.raises(ReadOnlyError, match="read-only"):
        ro.encrypt_text("user:1", "x")
    with pytest.raises(ReadOnlyError):
        ro.keyed_hash("user:1", "x")
    with pytest.raises(ReadOnlyError):
        ro.destroy("user:1")
    assert not (tmp_path / "nothing").exists()
    assert ro.subjects_count() == 0 and not ro.has_key("user:1")
    ks = KeyStore(tmp_path)
    c = ks.encrypt_text("user:1", "x")
    ro2 = KeyStore(tmp_path, readonly=True)
    assert ro2.decrypt_text("user:1", c) == "x" and ro2.encrypt_text("user:1", "x") == c
    with pytest.raises(ReadOnlyError):
        ro2.encrypt_text("user:2", "x")
    ks.destroy("user:1")
    with pytest.raises(ReadOnlyError):
        KeyStore(tmp_path, readonly=True).encrypt_text("user:1", "x", recreate=True)
    assert not ks.has_key("user:2")


# --- crash safety ------------------------------------------------------------------------------


def test_leftover_temp_files_are_ignored_and_cleaned(tmp_path):
    ks = KeyStore(tmp_path)
    c = ks.encrypt_text("user:42", "hello")
    tmpdir = tmp_path / "keys" / "tmp"
    sid = subject_id("user:9")
    # a crash after writing the temp file, before linking it: the subject has no key yet
    leftover = tmpdir / f"{sid}.abcdef.tmp"
    leftover.write_bytes(ks.key_path("user:42").read_bytes())
    stray = ks.key_path("user:42").parent / "junk.tmp"
    stray.write_bytes(b"partial")
    ro = KeyStore(tmp_path, readonly=True)
    assert leftover.exists()  # a reader never modifies anything
    assert not ro.has_key("user:9") and ro.subjects_count() == 1
    ks2 = KeyStore(tmp_path)
    assert not leftover.exists()  # cleaned on open by a writer
    assert ks2.subjects_count() == 1 and not ks2.has_key("user:9")
    assert ks2.decrypt_text("user:42", c) == "hello"
    c9 = ks2.encrypt_text("user:9", "new")
    assert ks2.decrypt_text("user:9", c9) == "new"
    assert ks2._data_key("user:9") != ks2._data_key("user:42")
    rep = ks2.verify()
    assert rep.temp_files == 1 and not rep.ok
    assert ks2.verify(repair=True).repaired and not stray.exists()
    assert ks2.verify().ok
    assert list(tmpdir.iterdir()) == []  # key creation leaves no temp file behind


def test_interrupted_destroy_completes(tmp_path):
    """A crash after the tombstone was written but before the key file was unlinked."""
    ks = KeyStore(tmp_path)
    c = ks.encrypt_text("user:42", "hello")
    path = ks.key_path("user:42")
    key_bytes = path.read_bytes()
    assert ks.destroy("user:42") is True and not path.exists()
    path.write_bytes(key_bytes)  # back to the crash state: tombstone + key file
    ro = KeyStore(tmp_path, readonly=True)
    assert ro.destroyed("user:42") and not ro.has_key("user:42")
    with pytest.raises(KeyDestroyed):
        ro.decrypt_text("user:42", c)
    assert path.exists() and ro.subjects_count() == 0
    assert KeyStore(tmp_path).verify().half_destroyed == 1
    with pytest.raises(KeyDestroyed):
        KeyStore(tmp_path).decrypt_text("user:42", c)
    assert not path.exists()  # the writer finished the destroy
    path.write_bytes(key_bytes)
    assert KeyStore(tmp_path).destroy("user:42") is True and not path.exists()  # idempotent retry
    assert KeyStore(tmp_path).destroy("user:42") is False


# --- destroy / recreate --------------------------------------------------------------------------


def test_destroy_semantics(ks):
    c = ks.encrypt_text("user:42", "hello")
    assert isinstance(KeyDestroyed("x"), Erased) and isinstance(KeyDestroyed("x"), CtxdbError)
    assert ks.destroy("user:42") is True
    assert ks.destroyed("user:42") and not ks.has_key("user:42") and ks.subjects_count() == 0
    assert ks.destroy("user:42") is False
    for call in (lambda: ks.encrypt_text("user:42", "hello"), lambda: ks.decrypt_text("user:42", c),
                 lambda: ks.encrypt("user:42", b"x"), lambda: ks.ensure_key("user:42")):
        with pytest.raises(KeyDestroyed, match=subject_id("user:42")):
            call()
    # a subject that never had a key can be destroyed too: nothing existed, but new data is refused
    assert ks.destroy("user:never") is False
    with pytest.raises(KeyDestroyed):
        ks.encrypt_text("user:never", "x")
    # recreate: a new key; the old data stays unreadable
    c2 = ks.encrypt_text("user:42", "hello", recreate=True)
    assert c2 != c and ks.decrypt_text("user:42", c2) == "hello"
    assert ks.has_key("user:42") and not ks.destroyed("user:42")
    with pytest.raises(KeyDestroyed, match="generation 1"):
        ks.decrypt_text("user:42", c)
    assert ks.destroy("user:42") is True
    c3 = ks.encrypt_text("user:42", "hello", recreate=True)
    assert ks.decrypt("user:42", ks.encrypt("user:42", b"z")) == b"z"
    for old in (c, c2):
        with pytest.raises(KeyDestroyed):
            ks.decrypt_text("user:42", old)
    assert len({c, c2, c3}) == 3


def test_keys_restored_from_older_backup_is_reported(tmp_path):
    ks = KeyStore(tmp_path)
    ks.encrypt_text("user:42", "hello")
    shutil.copytree(tmp_path / "keys", tmp_path / "old-keys")
    ks.destroy("user:42")
    c2 = ks.encrypt_text("user:42", "hello", recreate=True)
    shutil.rmtree(tmp_path / "keys")
    shutil.copytree(tmp_path / "old-keys", tmp_path / "keys")
    with pytest.raises(CorruptionError, match="generation 2 but the store holds generation 1"):
        KeyStore(tmp_path).decrypt_text("user:42", c2)


# --- the shredding property ------------------------------------------------------------------------


def test_shredding_proof(tmp_path):
    store = tmp_path / "store"
    ks = KeyStore(store)
    texts42 = ["Alice Example, born 1990-01-01", "diagnosis: flu", "address: 1 Main St"]
    texts7 = ["Bob's order 123", "Bob likes tea"]
    ct42 = [ks.encrypt_text("user:42", t) for t in texts42]
    ct7 = [ks.encrypt_text("user:7", t) for t in texts7]
    h42 = ks.keyed_hash("user:42", "user:42/profile", texts42[0])
    data_file = store / "items.txt"
    data_file.write_text("\n".join(ct42 + ct7) + "\n")

    # a backup of the store data taken before the purge
    backup = tmp_path / "backup"
    backup.mkdir()
    shutil.copy2(data_file, backup / "items.txt")

    key42 = ks._data_key("user:42")
    key7 = ks._data_key("user:7")
    key_file = ks.key_path("user:42")
    assert key42 in key_file.read_bytes()  # the scan below would find it if it were still there
    assert ks.destroy("user:42") is True

    # the key file is gone from disk, and no file under the store holds the old key bytes
    assert not key_file.exists()
    keys_files = all_files(store / "keys")
    assert keys_files, "tombstone and user:7's key remain"
    for p in all_files(store):
        assert key42 not in p.read_bytes(), p
    assert any(key7 in p.read_bytes() for p in keys_files)  # the scan does find live keys

    # a fresh KeyStore on the same root cannot read the pre-purge copy
    fresh = KeyStore(store)
    lines = (backup / "items.txt").read_text().splitlines()
    assert lines[:3] == ct42
    for line in lines[:3]:
        with pytest.raises(KeyDestroyed):
            fresh.decrypt_text("user:42", line)
        with pytest.raises(KeyDestroyed):
            KeyStore(store, readonly=True).decrypt_text("user:42", line)
    # no plaintext in the backup copy, and a kept hash can no longer be recomputed
    backup_bytes = (backup / "items.txt").read_bytes()
    assert not any(t.encode() in backup_bytes for t in texts42 + texts7)
    with pytest.raises(KeyDestroyed):
        fresh.keyed_hash("user:42", "user:42/profile", texts42[0])
    # the other subject is untouched
    assert [fresh.decrypt_text("user:7", line) for line in lines[3:]] == texts7
    assert fresh.subjects_count() == 1 and fresh.destroyed("user:42") and not fresh.destroyed("user:7")
    # recreating does not bring the old data back
    fresh.encrypt_text("user:42", "new era", recreate=True)
    with pytest.raises(KeyDestroyed):
        fresh.decrypt_text("user:42", lines[0])
    assert fresh.keyed_hash("user:42", "user:42/profile", texts42[0]) != h42
    assert fresh._data_key("user:42") != key42


def test_no_subject_in_clear_on_disk(tmp_path):
    ks = KeyStore(tmp_path)
    subjects = ["user:42", "alice@example.com", "order:123", "Ünïcödé/subject", "a", "user:42:extra"]
    for s in subjects:
        ks.encrypt_text(s, f"text of {s}")
        ks.keyed_hash(s, "k")
    ks.destroy("order:123")
    ks.destroy("user:never-had-a-key")
    subjects.append("user:never-had-a-key")
    paths = [p for p in (tmp_path / "keys").rglob("*")]
    assert any(p.name.endswith(".destroyed") for p in paths)
    assert len(paths) > len(subjects)
    names = "\n".join(str(p.relative_to(tmp_path)) for p in paths)
    contents = b"".join(p.read_bytes() for p in paths if p.is_file())
    for s in subjects:
        if len(s) > 2:
            assert s not in names
            assert s.encode() not in contents
        assert subject_id(s) in names  # files are named by the hash instead
    assert all(p.stat().st_size in (56, 24) for p in paths if p.is_file())


# --- concurrency and scale ------------------------------------------------------------------------


def test_threads_and_two_instances_agree_on_one_key_per_subject(tmp_path):
    a, b = KeyStore(tmp_path), KeyStore(tmp_path)
    results: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(t: int) -> None:
        ks = a if t % 2 else b
        try:
            start.wait()
            for i in range(60):
                results[(t, i)] = ks.encrypt_text(f"user:{i % 30}", "same")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    by_subject: dict[int, set[str]] = {}
    for (t, i), c in results.items():
        by_subject.setdefault(i % 30, set()).add(c)
    assert all(len(v) == 1 for v in by_subject.values())  # one key per subject, everywhere
    assert KeyStore(tmp_path).subjects_count() == 30
    assert KeyStore(tmp_path).verify().ok


def test_performance_100k_texts_1k_subjects(tmp_path):
    ks = KeyStore(tmp_path)
    subjects = [f"user:{i}" for i in range(1000)]
    t0 = time.perf_counter()
    for s in subjects:
        ks.ensure_key(s)
    t1 = time.perf_counter()
    texts = [(subjects[i % 1000], f"order {i} shipped via UPS to customer {i % 1000}") for i in range(100_000)]
    cts = [ks.encrypt_text(s, t) for s, t in texts]
    t2 = time.perf_counter()
    outs = [ks.decrypt_text(s, c) for (s, _t), c in zip(texts, cts)]
    t3 = time.perf_counter()
    assert outs == [t for _s, t in texts]
    assert len(set(cts)) == 100_000 and ks.subjects_count() == 1000
    cold = KeyStore(tmp_path)
    t4 = time.perf_counter()
    assert [cold.decrypt_text(s, c) for (s, _t), c in zip(texts[:1000], cts[:1000])] == [t for _s, t in texts[:1000]]
    t5 = time.perf_counter()
    print(f"\nkey creation: {1000 / (t1 - t0):,.0f} keys/s (fsync'd); "
          f"encrypt_text: {100_000 / (t2 - t1):,.0f} texts/s; decrypt_text: {100_000 / (t3 - t2):,.0f} texts/s; "
          f"cold key load: {1000 / (t5 - t4):,.0f} subjects/s")
