"""The SQLite file of the durable broker: its schema, loading it, and writing batches.

Everything here is blocking: opening and loading run on a thread, batches are written on
the event loop (``brokers/sqlite.py`` says why). The file is opened in WAL mode with an
exclusive lock held for the process's life, so a second server on the same file is refused
at start-up instead of corrupting both servers' offsets. Times in the file are Unix times
(a monotonic clock starts again with each process).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tidings.core.publication import ClientInfo, Publication
from tidings.exceptions import BrokerError, ConfigError

__all__ = [
    "CLEAR_HISTORY",
    "DELETE_STREAM",
    "INSERT_HISTORY",
    "INSERT_KEY",
    "SCHEMA_VERSION",
    "SYNC_MODES",
    "TRIM_HISTORY",
    "UPSERT_STREAM",
    "Loaded",
    "Statement",
    "StoreFile",
    "history_row",
    "publication_of",
    "store_path",
    "sweep_statements",
]

SCHEMA_VERSION = 1
# PRAGMA synchronous in WAL mode: "normal" writes every commit to the OS before it is
# acknowledged (a process crash loses nothing acknowledged) and syncs at checkpoints;
# "full" also syncs the WAL at every commit (power loss loses nothing acknowledged).
SYNC_MODES = ("normal", "full")

_TABLES = ("streams", "history", "idempotency")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    channel TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    top INTEGER NOT NULL,
    touched REAL NOT NULL,
    meta_ttl REAL NOT NULL,
    ttl REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    channel TEXT NOT NULL,
    offset INTEGER NOT NULL,
    stored REAL NOT NULL,
    time REAL NOT NULL,
    data BLOB NOT NULL,
    is_json INTEGER NOT NULL,
    event TEXT,
    user TEXT,
    client TEXT,
    conn_info BLOB,
    chan_info BLOB,
    tags TEXT,
    delta INTEGER NOT NULL,
    PRIMARY KEY (channel, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    expires REAL NOT NULL,
    offset INTEGER NOT NULL,
    epoch TEXT NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
"""

# The statements a batch is made of (brokers/sqlite.py builds them in order).
INSERT_HISTORY = "INSERT OR REPLACE INTO history VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
UPSERT_STREAM = (
    "INSERT INTO streams VALUES (?,?,?,?,?,?) ON CONFLICT (channel) DO UPDATE SET "
    "epoch = excluded.epoch, top = excluded.top, touched = excluded.touched, "
    "meta_ttl = excluded.meta_ttl, ttl = excluded.ttl"
)
TRIM_HISTORY = "DELETE FROM history WHERE channel = ? AND offset <= ?"
CLEAR_HISTORY = "DELETE FROM history WHERE channel = ?"
DELETE_STREAM = "DELETE FROM streams WHERE channel = ?"
INSERT_KEY = "INSERT OR REPLACE INTO idempotency VALUES (?,?,?,?,?)"
_SWEEP = (
    # Publications past their stream's TTL (and any left without a stream).
    "DELETE FROM history WHERE NOT EXISTS (SELECT 1 FROM streams s "
    "WHERE s.channel = history.channel AND history.stored + s.ttl >= :now)",
    # Streams whose meta expired with nothing held: they come back with a new epoch.
    "DELETE FROM streams WHERE touched + meta_ttl < :now "
    "AND NOT EXISTS (SELECT 1 FROM history h WHERE h.channel = streams.channel)",
    "DELETE FROM idempotency WHERE expires <= :now",
)

Statement = tuple[str, Sequence[Any] | dict[str, Any]]


def store_path(broker: str, history_path: str, sync: str) -> str:
    """The store file that ``broker`` (``sqlite:///file.db``, SQLAlchemy's spelling:
    ``sqlite:////abs/file.db`` for an absolute path) or ``history_path`` names; "" for
    none. ``ConfigError`` when they disagree or name nothing."""
    if sync not in SYNC_MODES:
        raise ConfigError(f"history_sync: {sync!r} is not one of {', '.join(SYNC_MODES)}")
    broker = broker.strip()
    if not broker.startswith("sqlite:"):
        if history_path and broker != "memory":
            raise ConfigError(
                "history_path keeps a single node's history in SQLite; it can't be used "
                f"with broker = {broker!r}, which keeps history itself"
            )
        return history_path
    if not broker.startswith("sqlite:///") or broker == "sqlite:///":
        raise ConfigError(f"broker {broker!r}: write sqlite:///path/to/file.db")
    path = broker[len("sqlite:///") :]
    if history_path and history_path != path:
        raise ConfigError(
            f"broker {broker!r} and history_path {history_path!r} name different files: "
            "set one of them"
        )
    return path


def sweep_statements(now: float) -> list[Statement]:
    """What forgets expired publications, streams and idempotency keys as of ``now``."""
    return [(sql, {"now": now}) for sql in _SWEEP]


def history_row(pub: Publication, stored: float) -> tuple[Any, ...]:
    info = pub.info
    return (
        pub.channel,
        pub.offset,
        stored,
        pub.time,
        pub.data,
        int(pub.is_json),
        pub.event,
        info.user if info else None,
        info.client if info else None,
        info.conn_info if info else None,
        info.chan_info if info else None,
        json.dumps(pub.tags) if pub.tags is not None else None,
        int(pub.delta),
    )


def publication_of(row: Sequence[Any], epoch: str) -> Publication:
    """The publication a ``history`` row (less its ``stored`` column) holds."""
    channel, offset, _, time, data, is_json, event, user, client, conn, chan, tags, delta = row
    info = None if user is None else ClientInfo(user, client, conn, chan)
    pub = Publication(
        channel,
        offset,
        epoch,
        bytes(data),
        bool(is_json),
        event,
        time,
        info=info,
        tags=json.loads(tags) if tags is not None else None,
    )
    pub.delta = bool(delta)
    return pub


@dataclass(slots=True)
class Loaded:
    """What a store file holds after its expired parts were swept."""

    streams: list[tuple[str, str, int, float, float, float]] = field(default_factory=list)
    history: list[tuple[Any, ...]] = field(default_factory=list)  # by channel, then offset
    idempotency: list[tuple[str, str, float, int, str]] = field(default_factory=list)


class StoreFile:
    """One SQLite database file; used from one thread at a time (opened on a thread,
    written on the loop)."""

    def __init__(self, path: str, sync: str = "normal") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}")
        self.path = path
        self.sync = sync
        self._conn: sqlite3.Connection | None = None

    def open(self, now: float) -> Loaded:
        """Open (or create) the file, lock it, sweep what expired by ``now`` and load the
        rest. Raises ``BrokerError`` with one line saying what is wrong with the file."""
        try:
            return self._open(now)
        except sqlite3.Error as exc:
            self.close()
            hint = ""
            if "locked" in str(exc):
                hint = " (another tidings serve uses this file?)"
            raise BrokerError(f"history store {self.path}: {exc}{hint}") from None

    def _open(self, now: float) -> Loaded:
        # Autocommit mode: transactions are begun and committed explicitly. timeout=0: a
        # file locked by another process is refused at once.
        conn = self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=0
        )
        # Before the first access: the lock is then kept, and WAL needs no shared memory.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"can't use WAL mode (journal mode {mode})")
        conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
        conn.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer tidings (schema {version})")
        if version == 0:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if names - set(_TABLES) - {f"sqlite_autoindex_{t}_1" for t in _TABLES}:
                raise sqlite3.DatabaseError("not a tidings history store (it has other tables)")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for sql, params in sweep_statements(now):
            conn.execute(sql, params)
        conn.execute("COMMIT")
        loaded = Loaded()
        loaded.streams = conn.execute("SELECT * FROM streams").fetchall()
        loaded.history = conn.execute("SELECT * FROM history ORDER BY channel, offset").fetchall()
        loaded.idempotency = conn.execute("SELECT * FROM idempotency ORDER BY expires").fetchall()
        return loaded

    def write(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction: all of them are committed, or none
        (the ``sqlite3.Error`` is raised after the rollback)."""
        conn = self._conn
        if conn is None:
            raise sqlite3.OperationalError("the store is closed")
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
