"""Round state in a relational database (SQLite by default, PostgreSQL by URL).

:mod:`~offchain.state.models` declares the tables, :mod:`~offchain.state.db` builds engines and
runs the Alembic migrations, :class:`~offchain.state.store.RoundStore` is the transactional API
the oracle uses to record stages, signatures and submissions. See ``docs/state.md``.
"""

from offchain.state.db import current_revision, default_url, head_revision, make_engine, upgrade
from offchain.state.models import RoundStatus, StageStatus, SubmissionStatus
from offchain.state.store import RoundStore

__all__ = [
    "RoundStatus",
    "RoundStore",
    "StageStatus",
    "SubmissionStatus",
    "current_revision",
    "default_url",
    "head_revision",
    "make_engine",
    "upgrade",
]
