"""Read-only view of the run's round-state database (and the store the co-signing route writes).

sqlalchemy and the state package are imported on first use, so the API starts without them until
a route reads the database.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offchain.api.rounds_view import FileKey, file_key, read_deployment
from offchain.rounds.pipeline import STAGE_KEYS

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from offchain.state import RoundStore

__all__ = ["RoundState", "StateView"]


@dataclass(frozen=True)
class RoundState:
    """A round's rows in the state database."""

    status: str
    stages: dict[str, str | None]
    tx_hash: str | None


class StateView:
    """Read-only access to the run's state database, and the store the co-signing route writes.

    Reads never create nor migrate the database: a SQLite file that does not exist, or a
    database not at the newest revision, reads as "no database" (None).
    """

    def __init__(self, run_dir: Path, state_url: str | None) -> None:
        from offchain.state import default_url

        self.url = state_url or default_url(run_dir)
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._at_head = False
        self._store: RoundStore | None = None
        self._file: tuple[Path | None] | None = None  # _sqlite_file(), once
        self._deployment: tuple[Path, FileKey, dict[str, Any] | None] | None = None

    def _sqlite_file(self) -> Path | None:
        from sqlalchemy.engine import make_url

        parsed = make_url(self.url)
        if parsed.get_backend_name() != "sqlite":
            return None
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database)

    def version(self) -> object:
        """A value equal to the previous call's while the database cannot have changed: for a
        SQLite file, the :data:`~offchain.api.rounds_view.FileKey` of the file and of its
        write-ahead log (every commit changes one of them; the engine is opened first, as its
        first connection creates the log); for another database a new object each call (never
        equal: what is built from it is built again)."""
        if self._file is None:
            self._file = (self._sqlite_file(),)
        file = self._file[0]
        if file is None:
            return object()
        if self._engine is None and file.is_file():
            self.engine()  # the first connection creates the write-ahead log: open it first
        return (file_key(file), file_key(Path(f"{file}-wal")))

    def deployment(self, path: Path) -> tuple[FileKey, dict[str, Any] | None]:
        """The deployment file's :data:`~offchain.api.rounds_view.FileKey` and parsed content,
        read again only when the file changed; the content is None when there is no file (or it
        is not a JSON object), as :func:`offchain.api.deps.load_deployment_file` reads it. The
        dict is shared: do not modify it."""
        key = file_key(path)
        cached = self._deployment
        if cached is not None and cached[0] == path and cached[1] == key:
            return key, cached[2]
        data = read_deployment(path) if key is not None else None
        self._deployment = (path, key, data)
        return key, data

    def engine(self) -> Engine | None:
        """An engine on the database if it exists at the newest revision, else None."""
        from offchain.state import current_revision, head_revision, make_engine

        file = self._sqlite_file()
        if file is not None and not file.is_file():
            return None
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.url)
            if not self._at_head:
                try:
                    self._at_head = current_revision(self._engine) == head_revision()
                except Exception:  # unreachable server, not a database: no state to show
                    return None
            return self._engine if self._at_head else None

    def rounds(self, chain_id: int, pool: str, campaign_id: int) -> dict[int, RoundState] | None:
        """Round id → its state for the campaign; None without a database."""
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from offchain.state.models import Campaign, Round, StageRun, Submission, SubmissionStatus

        engine = self.engine()
        if engine is None:
            return None
        with Session(engine) as session:
            campaign = session.scalar(
                select(Campaign).where(
                    Campaign.chain_id == chain_id,
                    Campaign.pool_address == pool.lower(),
                    Campaign.onchain_campaign_id == str(campaign_id),
                )
            )
            if campaign is None:
                return {}
            found: dict[int, RoundState] = {}
            for row in session.scalars(select(Round).where(Round.campaign_id == campaign.id)):
                stages: dict[str, str | None] = dict.fromkeys(STAGE_KEYS)
                for run in session.scalars(select(StageRun).where(StageRun.round_pk == row.id)):
                    stages[run.stage] = run.status.value
                tx = session.scalar(
                    select(Submission.tx_hash).where(
                        Submission.round_pk == row.id,
                        Submission.status != SubmissionStatus.FAILED,
                    )
                )
                found[row.round_id] = RoundState(row.status.value, stages, tx)
            return found

    def campaign_ids(self, chain_id: int, pool: str) -> list[int]:
        """On-chain ids of the campaigns of this pool in the database."""
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from offchain.state.models import Campaign

        engine = self.engine()
        if engine is None:
            return []
        with Session(engine) as session:
            return sorted(
                int(c)
                for c in session.scalars(
                    select(Campaign.onchain_campaign_id).where(
                        Campaign.chain_id == chain_id, Campaign.pool_address == pool.lower()
                    )
                )
            )

    def store(self) -> RoundStore:
        """The round store, the database created or migrated on first use (POST only)."""
        from offchain.state import RoundStore, make_engine, upgrade

        with self._lock:
            if self._store is None:
                upgrade(self.url)
                self._store = RoundStore(make_engine(self.url))
                self._at_head = False  # re-check on the next read
            return self._store

    def deployed_round(self, deployment: dict[str, Any] | None, round_id: int) -> RoundState | None:
        """The state of round ``round_id`` of the deployment file's campaign (``deployment``:
        its parsed content); None without a campaign there, a database, or that round."""
        if deployment is None or deployment.get("campaign_id") is None:
            return None
        db = self.rounds(
            int(deployment["chain_id"]), deployment["pool"], int(deployment["campaign_id"])
        )
        return (db or {}).get(round_id)
