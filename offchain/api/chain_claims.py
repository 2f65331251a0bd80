"""The claims the chain knows of, for the campaign the deployment file names (the source of the
API's ``claimed`` flags when it has an RPC)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from offchain.api.rounds_view import FileKey, file_key, read_deployment
from offchain.chain.claims_watch import ClaimedView, ClaimsWatch

__all__ = ["ChainClaims"]


class ChainClaims:
    """The claims the chain knows of, for the deployment file's campaign.

    A :class:`~offchain.chain.claims_watch.ClaimsWatch` of the deployment file's pool and
    campaign, made on first use and again when the file names another pool or campaign.
    Requests read its cached set (no chain call per request); it refreshes in the background
    at most every ``refresh_s`` seconds.
    """

    def __init__(self, rpc_url: str, *, refresh_s: float = 2.0, max_age_s: float = 30.0,
                 pool_abi: Sequence[dict] | None = None) -> None:
        self.rpc_url = rpc_url
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self.pool_abi = pool_abi
        self._lock = threading.Lock()
        self._file: FileKey = None
        self._target: tuple[str, int, int | None] | None = None
        self._watch: ClaimsWatch | None = None

    def watch(self, deployment_file: Path) -> ClaimsWatch | None:
        """The watch of the campaign ``deployment_file`` names (None: no campaign there)."""
        key = file_key(deployment_file)
        if key == self._file:
            return self._watch
        with self._lock:
            if key != self._file:
                target = _campaign_target(deployment_file) if key is not None else None
                if target != self._target:
                    self._watch = None if target is None else ClaimsWatch(
                        self.rpc_url, target[0], target[1], pool_abi=self.pool_abi,
                        refresh_s=self.refresh_s, max_age_s=self.max_age_s, chain_id=target[2],
                    )
                    self._target = target
                self._file = key
        return self._watch

    def view(self, deployment_file: Path) -> ClaimedView | None:
        """The claimed leaves of the deployment file's campaign, at most ``max_age_s`` old;
        None without a campaign, or while the chain does not answer."""
        watch = self.watch(deployment_file)
        return None if watch is None else watch.snapshot()


def _campaign_target(deployment_file: Path) -> tuple[str, int, int | None] | None:
    """``(pool, campaign id, chain id or None)`` the deployment file names; None for a file
    without a pool and campaign, or one that cannot be read."""
    data = read_deployment(deployment_file)
    if data is None:
        return None
    try:
        if data.get("pool") and data.get("campaign_id") is not None:
            chain_id = data.get("chain_id")
            return (str(data["pool"]), int(data["campaign_id"]),
                    None if chain_id is None else int(chain_id))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return None
