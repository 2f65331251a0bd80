"""Engines and migrations of the state database.

``make_engine(url)`` builds the engine (SQLite tuned for several processes: foreign keys on, WAL,
a busy timeout, every transaction ``BEGIN IMMEDIATE``); ``upgrade(url)`` brings the schema to the
newest Alembic revision; ``current_revision(url)`` says where a database stands. Alembic runs
programmatically from ``offchain/state/migrations``: no ``alembic.ini`` is needed.

>>> default_url("/tmp/run").startswith("sqlite:///")
True
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "default_url",
    "head_revision",
    "make_engine",
    "upgrade",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""The Alembic script location (``env.py``, ``versions/``)."""

SQLITE_TIMEOUT_S = 30.0
"""How long a SQLite connection waits for another process's write lock before failing."""


def default_url(run_dir: str | Path) -> str:
    """The default database of a run: ``sqlite:///<run_dir>/state.db`` (absolute path)."""
    return f"sqlite:///{(Path(run_dir).resolve() / 'state.db').as_posix()}"


def make_engine(url: str | sa.URL, *, timeout: float = SQLITE_TIMEOUT_S, **kwargs: Any) -> Engine:
    """An engine for ``url``; nothing connects until the engine is used.

    SQLite (file or memory): the parent folder of a file database is created; each connection
    turns foreign keys on and the journal to WAL (readers do not block the writer), waits up to
    ``timeout`` seconds for a lock, and opens every transaction with ``BEGIN IMMEDIATE``, so a
    read-then-write transaction holds the write lock from its first statement and two processes
    cannot interleave (see :meth:`RoundStore.begin_stage`). Other backends (``postgresql://...``,
    which needs a driver such as psycopg) get the URL as is, with ``pool_pre_ping``.

    Args:
        url: SQLAlchemy database URL.
        timeout: SQLite busy timeout in seconds.
        kwargs: passed to :func:`sqlalchemy.create_engine`.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(parsed, **kwargs)

    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", timeout)
    engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Driver-level autocommit: pysqlite would otherwise issue its own deferred BEGIN; the
        # "begin" listener below issues BEGIN IMMEDIATE instead (SQLAlchemy's documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config(url: str | sa.URL) -> Config:
    """An Alembic configuration built in code (no ``alembic.ini``)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    # ConfigParser interpolation: a literal % in a URL (an escaped password) must be doubled.
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision of the migrations shipped with this package."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None  # the package ships at least one revision
    return head


def upgrade(url: str | sa.URL | Engine, revision: str = "head") -> str | None:
    """Migrate the database at ``url`` to ``revision`` (default: newest); a no-op when already there.

    Runs on an engine from :func:`make_engine` (so SQLite gets the same connection settings as
    the store), in one transaction. Returns the revision the database is at afterwards.
    """
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        config = alembic_config(engine.url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return current_revision(engine)
    finally:
        if engine is not url:
            engine.dispose()


def current_revision(url: str | sa.URL | Engine) -> str | None:
    """The Alembic revision of the database at ``url``; ``None`` before the first upgrade."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if engine is not url:
            engine.dispose()
