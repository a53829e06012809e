"""The one exception tree of ctxdb. Lower-level errors (duckdb, zstd, pyarrow, msgspec, OS) are
mapped to these at the module boundary, never allowed to escape raw.

    CtxdbError
    ├── BadInput            bad records, files or arguments: names file, line, field, expectation
    │   └── ConfigError     bad ctxdb.toml (file, line, key)
    ├── CorruptionError     stored data fails a checksum or is missing: names file and offset
    ├── ConcurrencyError    the store is locked by another writer, or opened read-only
    │   └── LockedError
    ├── AccessDenied        a policy forbids the read
    └── Erased              the data was purged
"""
from __future__ import annotations


class CtxdbError(Exception):
    """Root of every error ctxdb raises on purpose."""

    exit_code = 1


class BadInput(CtxdbError):
    """Input that cannot be accepted. Nothing from the failed call has been committed."""

    exit_code = 65  # EX_DATAERR

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.file, self.line, self.field, self.expected = file, line, field, expected
        self.reason = message
        self.row: int | None = None  # index of the bad record within a batch, when known
        where = ":".join(str(p) for p in (file, line) if p is not None)
        parts = [f"{where}: " if where else "", message]
        if field:
            parts.append(f" (field `{field}`")
            parts.append(f": expected {expected})" if expected else ")")
        elif expected:
            parts.append(f" (expected {expected})")
        super().__init__("".join(parts))

    def located(self, *, file: str | None = None, line: int | None = None) -> "BadInput":
        """The same error with its location filled in (where it was still unknown)."""
        err = type(self)(
            self.reason,
            file=self.file or file,
            line=self.line if self.line is not None else line,
            field=self.field,
            expected=self.expected,
        )
        err.row = self.row
        return err


class ConfigError(BadInput):
    exit_code = 78  # EX_CONFIG


class CorruptionError(CtxdbError):
    """Stored data failed verification. Never skipped silently."""

    exit_code = 74  # EX_IOERR

    def __init__(self, message: str, *, file: str | None = None, offset: int | None = None) -> None:
        self.file, self.offset = file, offset
        where = file or ""
        if offset is not None:
            where += f" at byte offset {offset}"
        super().__init__(f"{where}: {message}" if where else message)


class ConcurrencyError(CtxdbError):
    exit_code = 75  # EX_TEMPFAIL


class LockedError(ConcurrencyError):
    def __init__(self, path: str, pid: int | None) -> None:
        self.path, self.pid = path, pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"{path} is locked by {who}: only one writer may open a store; "
            "open it read-only (ctxdb.open(path, readonly=True)) or stop the other writer"
        )


class ReadOnlyError(ConcurrencyError):
    def __init__(self, what: str) -> None:
        super().__init__(f"cannot {what}: the store was opened read-only")


class AccessDenied(CtxdbError):
    exit_code = 77  # EX_NOPERM


class Erased(CtxdbError):
    exit_code = 1
