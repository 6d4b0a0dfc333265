"""Engine and sessions: SQLite (WAL, foreign keys, busy timeout) by default, any SQLAlchemy URL by setting.

PostgreSQL (`postgresql+psycopg://user@host/db`, for many annotators) runs at READ COMMITTED: the queue never relies
on a whole-database write lock there; its claims lock rows (`FOR UPDATE SKIP LOCKED` plus a conditional UPDATE) and
an answer locks its queue entry and then its round (storage.queue), so concurrent transactions see each other's
committed rows and never hand one item to two annotators. SQLite keeps one writer at a time (BEGIN IMMEDIATE).
"""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000  # WORKBENCH_BUSY_TIMEOUT_MS overrides it (busy_timeout_ms)
POSTGRES_LOCK_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS  # the longest a statement waits for a row lock, as on SQLite
POSTGRES_CONNECT_TIMEOUT_S = 10
POSTGRES_ISOLATION = "READ COMMITTED"
MIGRATION_LOCK_KEY = 0x776F726B62656E63  # pg_advisory_xact_lock key: one process migrates at a time ("workbenc")
_WRITE: ContextVar[bool] = ContextVar("write_transaction", default=False)
IN_CHUNK = 10_000  # ids per IN (...) list: SQLite refuses more than 32766 bound parameters in one statement


class DatabaseReadOnly(StorageError):
    """The database file (or its folder) cannot be written: nothing was saved."""


class DatabaseReplaced(StorageError):
    """The database file was deleted or replaced after this process opened it: nothing was saved."""


def busy_timeout_ms() -> int:
    """How long a statement waits for another process's write lock (SQLite) or a row lock (PostgreSQL)."""
    raw = (os.environ.get("WORKBENCH_BUSY_TIMEOUT_MS") or "").strip()
    try:
        return max(0, int(raw)) if raw else SQLITE_BUSY_TIMEOUT_MS
    except ValueError:
        return SQLITE_BUSY_TIMEOUT_MS


def is_busy(error: BaseException) -> bool:
    """A transient refusal: another writer holds the lock (SQLite "database is locked" / "busy", PostgreSQL's
    lock_timeout). Worth retrying after a pause; anything else is not."""
    if not isinstance(error, OperationalError):
        return False
    text = str(getattr(error, "orig", error)).lower()
    return any(word in text for word in ("locked", "busy", "lock timeout"))


def engine_url(url: str | URL) -> URL:
    """The SQLAlchemy URL to connect with: a bare `postgresql://` or `postgres://` URL uses psycopg 3 (the driver
    the requirements install), not SQLAlchemy's default psycopg2."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://"):]
    parsed = make_url(text)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL) -> Engine:
    parsed = engine_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"timeout": busy_timeout_ms() / 1000, "check_same_thread": False},
            pool_pre_ping=True,
        )
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        connect_args = {}
        if parsed.get_driver_name() in ("psycopg", "psycopg2", "psycopg2cffi"):  # libpq drivers
            # Defaults only: what the URL's query sets (?connect_timeout=..., ?options=-c lock_timeout=...) wins.
            connect_args = {
                "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
                "application_name": "workbench",
                "options": f"-c lock_timeout={busy_timeout_ms()} {parsed.query.get('options', '')}".strip(),
            }
            connect_args = {k: v for k, v in connect_args.items() if k == "options" or k not in parsed.query}
        return create_engine(
            parsed,
            isolation_level=POSTGRES_ISOLATION,
            pool_pre_ping=True,  # a server restart or a dropped idle connection is noticed before use
            connect_args=connect_args,
        )
    return create_engine(parsed, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Let SQLAlchemy issue BEGIN itself (BEGIN IMMEDIATE for writes is done in `write_session`).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms()}")
        _use_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if _WRITE.get() else "BEGIN")


def _use_wal(cur) -> None:  # noqa: ANN001
    """Put the file in WAL mode unless it already is. Switching needs the file to itself, and SQLite answers
    "database is locked" at once (no busy wait) while another process migrates it: reading the mode takes no lock,
    so a file already in WAL is left alone, and a switch that meets a lock is tried again within the busy timeout."""
    deadline = time.monotonic() + busy_timeout_ms() / 1000
    while cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cur.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest migration's revision: the schema version every database is upgraded to."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def upgrade(engine: Engine) -> None:
    """Apply Alembic migrations up to head (creates every table on an empty database).

    Several processes may start at once (the web UI, workers, annotators' servers): the migration runs under the
    database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so one
    process migrates and the others then find the schema at head and do nothing.
    """
    cfg = _alembic_config()
    token = _WRITE.set(True)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        _WRITE.reset(token)


class Database:
    """One engine plus a session factory; `read()` and `write()` give transactional sessions.

    On a SQLite file it records the file's identity (device, inode) when it opens it and checks it at the start of
    every write transaction and again right before it commits: a file deleted or replaced under a running process
    (`rm`, `git clean -dX` of the home) would otherwise take writes into the unlinked inode and acknowledge them,
    and they would be gone after a restart. A read-only file or folder is said as such (DatabaseReadOnly).
    """

    def __init__(self, url: str, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.path = sqlite_file(self.engine.url)
        self._identity: tuple[int, int] | None = None
        if migrate:
            try:
                upgrade(self.engine)
            except OperationalError as error:
                self._raise_worded(error)
                raise
        self._remember_identity()
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """'sqlite', 'postgresql', ..."""
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with self._factory() as session:
                yield session
        except OperationalError as error:
            self._raise_worded(error)
            raise

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on error.

        On SQLite it takes the write lock at BEGIN (BEGIN IMMEDIATE), so read-then-write never deadlocks. On
        PostgreSQL it is a READ COMMITTED transaction; the queue's row locks keep concurrent writers apart. A SQLite
        file that was deleted or replaced since it was opened refuses the transaction (DatabaseReplaced) before
        anything is committed.
        """
        token = _WRITE.set(True)
        try:
            with self._factory() as session:
                try:
                    session.connection()  # BEGIN (IMMEDIATE on SQLite) happens here
                    _WRITE.reset(token)
                    token = None
                    self.check_file()
                    yield session
                    self.check_file()  # after every statement, before the commit acknowledges anything
                    session.commit()
                except BaseException as error:
                    session.rollback()
                    if isinstance(error, OperationalError):
                        self._raise_worded(error)
                    raise
        finally:
            if token is not None:
                _WRITE.reset(token)

    def check_file(self) -> None:
        """Raise DatabaseReplaced when the SQLite file at `self.path` is not the file this process opened."""
        if self.path is None:
            return
        if self._identity is None:
            self._remember_identity()
            return
        try:
            st = os.stat(self.path)
            now = (st.st_dev, st.st_ino)
        except OSError:
            now = None
        if now != self._identity:
            raise DatabaseReplaced(
                f"the database file {self.path} was deleted or replaced while the workbench was running; nothing was "
                "saved; restart the workbench (its data lives in WORKBENCH_HOME; see the README)")

    def _remember_identity(self) -> None:
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            return
        self._identity = (st.st_dev, st.st_ino)

    def _raise_worded(self, error: OperationalError) -> None:
        """Raise the worded StorageError for a database error that has one (read-only); return for the others."""
        if self.path is None:
            return
        self.check_file()  # a file deleted under us is said as such, not as "unable to open"
        if is_busy(error):
            return
        text = str(getattr(error, "orig", error)).lower()
        if self.engine.url.query.get("mode") == "ro" or "readonly" in text or "read-only" in text or (
                any(w in text for w in ("disk i/o error", "unable to open")) and not _writable(self.path)):
            raise DatabaseReadOnly(
                f"the database file {self.path} is read-only (its permissions, its folder's, or a read-only mount): "
                "nothing was saved; make the file and its folder writable by this user, or set WORKBENCH_HOME to a "
                "writable folder") from error

    def dispose(self) -> None:
        self.engine.dispose()


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (`sqlite:///path`, `sqlite:///file:path?uri=true`); None for memory or other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    name = url.database or ""
    if name.startswith("file:"):
        name = name[len("file:"):].split("?", 1)[0]
    if not name or name == ":memory:" or url.query.get("mode") == "memory":
        return None
    return Path(name).resolve()


def _writable(path: Path) -> bool:
    """The file (when it exists) and its folder can be written by this process (SQLite needs both in WAL mode)."""
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(path.parent, os.W_OK | os.X_OK)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"
