"""The result store: one SQLite file (WAL mode) per campaign directory.

SQLite's write-ahead log makes every committed batch survive a killed
process (``synchronous=NORMAL`` gives up only durability against a power
loss), and its locking lets several engines, in one process or many, read
and write one store at once (a writer waits up to ``busy_timeout`` for
another's commit). Values are serialised with cloudpickle.

The file carries an application id of its own: a database that is not an
asyncflow store, or a file that is not a database or was cut short, gives
a :class:`~asyncflow.errors.CacheError` naming the file, and nothing is
written to it or anywhere else.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import CacheError

__all__ = ["FILE_NAME", "CacheEntry", "Hit", "ResultCache", "store_path"]

logger = logging.getLogger("asyncflow.cache")

FILE_NAME = "asyncflow-cache.sqlite"
APPLICATION_ID = 0x4146_4C57  # "AFLW"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, name TEXT NOT NULL, "
    "value BLOB NOT NULL, session TEXT NOT NULL, task TEXT NOT NULL, created REAL NOT NULL, "
    "size INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS results_by_name ON results (name)",
    f"PRAGMA application_id={APPLICATION_ID}",
    f"PRAGMA user_version={SCHEMA_VERSION}",
)


def _dumps(value: Any) -> bytes:
    """``value`` pickled: the standard pickler for plain data (fast), cloudpickle
    for what it cannot carry (lambdas, classes defined in ``__main__``...)."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 - any pickling failure: try cloudpickle
        import cloudpickle

        return bytes(cloudpickle.dumps(value, protocol=5))


class Hit(NamedTuple):
    """A stored result: the value and who produced it."""

    value: Any
    session: str
    task: str


class CacheEntry(NamedTuple):
    """One row of the store, without its value (for listings)."""

    key: str
    name: str
    session: str
    task: str
    created: float
    size: int


def store_path(directory: str | os.PathLike[str]) -> Path:
    """The store file of a campaign directory."""
    return Path(directory) / FILE_NAME


@contextlib.contextmanager
def _opening(path: Path) -> Iterator[None]:
    """Hold the store's directory exclusively (``flock``) while the store is
    opened, so that engines opening one new store at once take turns.

    The lock is on the directory, never on the store file: closing any file
    descriptor of the store file drops every POSIX lock this process holds on
    it, SQLite's included (SQLite's "How To Corrupt" 2.2). A connection whose
    shared lock was dropped that way lets another process's connection think
    it is the last one: that one then checkpoints and deletes the write-ahead
    log under the first, whose later commits can be lost.

    Where the directory cannot be opened for that, the store is opened
    without the lock.
    """
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# Store files this process has a connection to, with how many. Their header
# is not read again: closing the descriptor it is read through would drop the
# locks of those connections (see _opening).
_CONNECTED: dict[str, int] = {}
_CONNECTED_LOCK = threading.Lock()


def _connected(key: str, change: int) -> None:
    """Count a connection to the store file ``key`` made (1) or closed (-1)."""
    with _CONNECTED_LOCK:
        now = _CONNECTED.get(key, 0) + change
        if now > 0:
            _CONNECTED[key] = now
        else:
            _CONNECTED.pop(key, None)


def _check_header(path: Path) -> None:
    """Refuse a file that is not an SQLite database or was cut short."""
    try:
        if not path.exists():
            return  # SQLite makes a new database
        with open(path, "rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError as exc:
        raise CacheError(f"result cache {path} cannot be read: {exc}") from None
    if not header:
        return  # an empty file: SQLite makes it a new database
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise CacheError(
            f"{path} is not an asyncflow result cache (not an SQLite database); "
            "move it away or choose another campaign directory"
        )
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = struct.unpack(">II", header[24:32])
    valid_for = struct.unpack(">I", header[92:96])[0]
    if valid_for == change_counter and pages and size < pages * page_size:
        raise CacheError(
            f"result cache {path} is damaged: {size} bytes where its header promises "
            f"{pages * page_size} (the file was cut short); move it away to start a new one"
        )


class ResultCache:
    """A result store on one SQLite file.

    Use :meth:`open` for a campaign directory. Every method may raise
    :class:`~asyncflow.errors.CacheError` when the file turns out to be damaged.

    Args:
        path: the database file (created when missing).
        create: make the file when it does not exist (False: CacheError).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self._warned: set[str] = set()
        # Engines (threads or processes) opening one store at the same moment
        # take turns: the one that creates it finishes before the others read
        # its header and schema, half made until it has.
        if not create and not self.path.exists():
            raise CacheError(f"no result cache at {self.path}")
        self._key = os.path.realpath(self.path)
        with _opening(self.path):
            with _CONNECTED_LOCK:
                checked = _CONNECTED.get(self._key, 0) > 0  # by the open connection
            if not checked:
                _check_header(self.path)
            try:
                self._conn = sqlite3.connect(
                    self.path,
                    timeout=BUSY_TIMEOUT_S,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise CacheError(f"result cache {self.path} cannot be opened: {exc}") from None
            try:
                self._prepare()
            except BaseException:
                self._conn.close()
                raise
            _connected(self._key, 1)
        self._closed = False

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, create: bool = True) -> ResultCache:
        """The store of a campaign directory (``<dir>/asyncflow-cache.sqlite``).

        Raises:
            CacheError: the file is damaged, foreign, or missing with ``create=False``.
        """
        if create:
            os.makedirs(directory, exist_ok=True)
        return cls(store_path(directory), create=create)

    def _prepare(self) -> None:
        conn = self._conn
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            raise CacheError(
                f"{self.path} is not a usable asyncflow result cache ({exc}); "
                "move it away to start a new one"
            ) from None
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise CacheError(
                f"{self.path} is an SQLite database of another program, not an asyncflow "
                "result cache; move it away or choose another campaign directory"
            )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if app_id != APPLICATION_ID:
                # One transaction: another engine creating the same store at
                # the same moment waits, then finds it made.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"result cache {self.path} cannot be prepared: {exc}") from None
        if version != SCHEMA_VERSION:
            raise CacheError(
                f"result cache {self.path} has layout version {version}; this asyncflow "
                f"reads version {SCHEMA_VERSION}"
            )

    def _fail(self, exc: sqlite3.Error) -> CacheError:
        return CacheError(f"result cache {self.path} failed: {exc}")

    # ------------------------------------------------------------------ the engine's side
    def get(self, key: str) -> Hit | None:
        """The stored result under ``key``, or None (also when it cannot be unpickled)."""
        try:
            row = self._conn.execute(
                "SELECT value, session, task, name FROM results WHERE key=?", (key,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        if row is None:
            return None
        try:
            value = pickle.loads(row[0])  # cloudpickle's output loads with pickle
        except Exception as exc:  # noqa: BLE001 - a stale value: the task runs again
            self._warn_once(row[3], f"a stored result of {row[3]!r} cannot be loaded ({exc})")
            return None
        return Hit(value, row[1], row[2])

    def put_many(self, rows: Iterable[tuple[str, str, Any, str, str]]) -> int:
        """Store results in one transaction; returns how many were stored.

        Args:
            rows: ``(key, task name, value, session id, task uid)``. A value
                cloudpickle cannot serialise is skipped with one warning per
                task name.
        """
        now = time.time()
        records = []
        for key, name, value, session, task in rows:
            try:
                blob = _dumps(value)
            except Exception as exc:  # noqa: BLE001 - that result is simply not cached
                self._warn_once(name, f"the result of {name!r} cannot be pickled ({exc})")
                continue
            records.append((key, name, blob, session, task, now, len(blob)))
        if not records:
            return 0
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)", records
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return len(records)

    def _warn_once(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("%s: not cached (later ones of this task not reported)", message)

    # ------------------------------------------------------------------ management
    def entries(self, name: str | None = None, limit: int | None = None) -> list[CacheEntry]:
        """Stored results, newest first (``name``: of that task only)."""
        sql = "SELECT key, name, session, task, created, size FROM results"
        params: tuple[Any, ...] = ()
        if name is not None:
            sql += " WHERE name=?"
            params = (name,)
        sql += " ORDER BY created DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            return [CacheEntry(*row) for row in self._conn.execute(sql, params)]
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def stats(self) -> dict[str, Any]:
        """Entries and bytes, in total and per task name."""
        try:
            per_task = self._conn.execute(
                "SELECT name, COUNT(*), SUM(size), COUNT(DISTINCT session) FROM results "
                "GROUP BY name ORDER BY name"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return {
            "path": str(self.path),
            "entries": sum(r[1] for r in per_task),
            "bytes": sum(r[2] or 0 for r in per_task),
            "tasks": [
                {"name": r[0], "entries": r[1], "bytes": r[2] or 0, "sessions": r[3]}
                for r in per_task
            ],
        }

    def clear(self, name: str | None = None) -> int:
        """Delete stored results (``name``: of that task only); returns how many."""
        try:
            if name is None:
                cur = self._conn.execute("DELETE FROM results")
            else:
                cur = self._conn.execute("DELETE FROM results WHERE name=?", (name,))
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return int(cur.rowcount)

    def __len__(self) -> int:
        try:
            return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        """Close the connection (the WAL is folded back into the file). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.close()
        except sqlite3.Error:
            logger.warning("result cache %s did not close cleanly", self.path, exc_info=True)
        finally:
            _connected(self._key, -1)  # after the close: its locks are gone now
