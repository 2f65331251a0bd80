"""Alembic environment, run programmatically by :func:`offchain.state.db.upgrade`.

``upgrade`` passes an open connection in ``config.attributes["connection"]``; without one (the
``alembic`` command line), an engine is built from ``sqlalchemy.url`` with
:func:`offchain.state.db.make_engine`. Offline mode (``--sql``) renders the SQL instead.
"""

from __future__ import annotations

from alembic import context

from offchain.state.db import make_engine
from offchain.state.models import Base

config = context.config
target_metadata = Base.metadata


def _run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
elif (connection := config.attributes.get("connection")) is not None:
    _run_online(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _run_online(conn)
    finally:
        engine.dispose()
