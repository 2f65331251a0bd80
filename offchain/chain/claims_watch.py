"""Which leaves of a campaign are claimed on chain, from the pool's ``Claimed`` events.

The API's ``claimed`` flag must say what the chain says, whoever sent the claim (the node, the
holder's own wallet, another client). :class:`ClaimsWatch` keeps the set of claimed
``(round_id, index)`` leaves of one campaign, read from the pool's ``Claimed`` logs with a
block cursor: each refresh asks only for the blocks after the last one read (in chunks of
``chunk_blocks``, which public RPC providers require), so its cost does not grow with the
campaign's age. Requests never wait on the chain: :meth:`ClaimsWatch.snapshot` returns the
last view at once and, when it is older than ``refresh_s``, starts one refresh in a background
thread (never two at a time). A view older than ``max_age_s`` (the RPC is down) is not served:
the caller falls back to what it knows itself and says so.

``Claimed`` is emitted once per leaf (``isClaimed`` is a bitmap the contract never clears), so
the set only grows. Logs are read up to the RPC's latest block: a claim in a block that is then
reorganised away would read as claimed until the API restarts (a few seconds on the chains
this targets; noted in docs/api.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CLAIMED_EVENT_ABI", "ClaimedView", "ClaimsWatch"]

logger = logging.getLogger(__name__)

CLAIMED_EVENT_ABI: dict[str, Any] = {
    "type": "event",
    "name": "Claimed",
    "anonymous": False,
    "inputs": [
        {"name": "campaignId", "type": "uint256", "indexed": True, "internalType": "uint256"},
        {"name": "roundId", "type": "uint256", "indexed": True, "internalType": "uint256"},
        {"name": "account", "type": "address", "indexed": True, "internalType": "address"},
        {"name": "index", "type": "uint256", "indexed": False, "internalType": "uint256"},
        {"name": "recipient", "type": "address", "indexed": False, "internalType": "address"},
        {"name": "amount", "type": "uint256", "indexed": False, "internalType": "uint256"},
    ],
}
"""``CompensationPool``'s ``Claimed`` event, so the API reads claims without compiling the
contract (``tests/test_client_data.py`` keeps it equal to the compiled ABI's)."""


@dataclass(frozen=True)
class ClaimedView:
    """The claimed leaves of a campaign as of ``block`` (read at ``read_at``, monotonic s)."""

    leaves: frozenset[tuple[int, int]]
    block: int
    read_at: float

    def is_claimed(self, round_id: int, index: int) -> bool:
        return (round_id, index) in self.leaves


class ClaimsWatch:
    """The set of claimed leaves of campaign ``campaign_id`` on the pool at ``pool_address``.

    Args:
        rpc_url: The chain's JSON-RPC endpoint.
        pool_address: The ``CompensationPool``.
        campaign_id: The campaign whose leaves are watched.
        pool_abi: The pool's ABI (only its ``Claimed`` event is used); None:
            :data:`CLAIMED_EVENT_ABI`.
        refresh_s: A view older than this starts a refresh (in the background).
        max_age_s: A view older than this is not served (:meth:`snapshot` returns None).
        from_block: First block to read (the pool's deployment block, when known).
        chain_id: The chain the pool is on (the deployment file's); an RPC of another chain is
            an error (no view is served) rather than a view of an empty pool.
        chunk_blocks: Most blocks asked for in one ``eth_getLogs``.
        connect: Builds the pool client (tests inject faults); default: a
            :class:`~offchain.chain.client.ChainClient` with a short timeout.
    """

    def __init__(
        self,
        rpc_url: str,
        pool_address: str,
        campaign_id: int,
        *,
        pool_abi: Sequence[dict[str, Any]] | None = None,
        refresh_s: float = 2.0,
        max_age_s: float = 30.0,
        from_block: int = 0,
        chunk_blocks: int = 5_000,
        connect: Callable[[], Any] | None = None,
        chain_id: int | None = None,
    ) -> None:
        if refresh_s <= 0 or max_age_s < refresh_s:
            raise ValueError("need 0 < refresh_s <= max_age_s")
        self.rpc_url = rpc_url
        self.pool_address = pool_address
        self.campaign_id = int(campaign_id)
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self.chunk_blocks = max(1, int(chunk_blocks))
        self.chain_id = chain_id
        self._pool_abi = list(pool_abi) if pool_abi is not None else None
        self._connect = connect or self._default_connect
        self._pool: Any = None
        self._cursor = int(from_block)  # next block to read
        self._leaves: set[tuple[int, int]] = set()
        self._view: ClaimedView | None = None
        self._refreshing = threading.Lock()  # held by the one refresh in flight
        self._started_at = 0.0  # monotonic time of the last refresh started
        self.last_error: str | None = None

    # -- reading -------------------------------------------------------------------------------

    def snapshot(self) -> ClaimedView | None:
        """The latest view, or None when there is none fresher than ``max_age_s``.

        Never blocks on the chain: a stale view starts one background refresh.
        """
        view = self._view
        now = time.monotonic()
        if (view is None or now - view.read_at >= self.refresh_s) and (
            now - self._started_at >= self.refresh_s / 2
        ):
            self._start_refresh()
        if view is None or now - view.read_at > self.max_age_s:
            return None
        return view

    def wait_synced(self, timeout_s: float = 10.0) -> ClaimedView | None:
        """Refresh now and return the view (start-up and tests); None if the chain failed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._refreshing.acquire(timeout=max(deadline - time.monotonic(), 0)):
                try:
                    self._refresh_locked()
                finally:
                    self._refreshing.release()
                return self._view
        return None

    # -- refreshing ----------------------------------------------------------------------------

    def _start_refresh(self) -> None:
        if not self._refreshing.acquire(blocking=False):
            return  # one in flight already
        self._started_at = time.monotonic()

        def run() -> None:
            try:
                self._refresh_locked()
            finally:
                self._refreshing.release()

        threading.Thread(target=run, name="claims-watch", daemon=True).start()

    def _refresh_locked(self) -> None:
        self._started_at = time.monotonic()
        try:
            pool = self._pool or self._connect()
            if self.chain_id is not None and int(pool.client.chain_id) != self.chain_id:
                raise ValueError(f"the RPC is chain {pool.client.chain_id}, the pool is on "
                                 f"chain {self.chain_id}")
            self._pool = pool
            head = int(pool.client.w3.eth.block_number)
            cursor = self._cursor
            while cursor <= head:
                end = min(cursor + self.chunk_blocks - 1, head)
                for event in pool.events("Claimed", from_block=cursor, to_block=end,
                                         campaignId=self.campaign_id):
                    self._leaves.add((int(event.round_id), int(event.index)))
                cursor = end + 1
                self._cursor = cursor  # a failure later resumes after the chunks read
            self._view = ClaimedView(frozenset(self._leaves), head, time.monotonic())
            self.last_error = None
        except Exception as exc:  # RPC down, bad address …: keep the last view, retry later
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.warning("claims watch of campaign %d: %s", self.campaign_id, self.last_error)

    def _default_connect(self) -> Any:
        from offchain.chain.client import ChainClient
        from offchain.chain.pool import PoolClient

        abi = self._pool_abi if self._pool_abi is not None else [CLAIMED_EVENT_ABI]
        return PoolClient(ChainClient(self.rpc_url, timeout=5.0), self.pool_address, abi)
