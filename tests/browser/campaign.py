"""A tiny real campaign for the browser tests: a real anvil, the pool and a campaign deployed
and funded by the operator's own functions, two rounds of the ``tiny`` profile (real training,
attribution, copyright, policy, Merkle tree, k-of-n signatures) run up to ``finalize`` (posted
and past the challenge window) but NOT claimed, so the pages can claim; and the real API over
that run folder with claim flags read from the chain.

``start_campaign`` takes about a minute on 2 cores (most of it the two rounds' ML). Tests that
change the chain (claims, funding, anvil's clock) should restore it with :func:`chain_snapshot`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from offchain.chain.anvil import AnvilNode
from offchain.config import Settings
from offchain.oracle import operations
from offchain.oracle.keys import DEV_SPONSOR, dev_keys, holder_private_key
from offchain.utils import read_json

__all__ = ["TinyCampaign", "anvil_rpc", "chain_snapshot", "start_campaign"]

ROUNDS = 2
FUNDED_WEI = 1_000 * 10**18
"""What the sponsor (anvil dev account 2) funds the campaign with: 1,000 test tokens."""


@dataclass
class TinyCampaign:
    """A deployed, funded campaign whose rounds are posted and final but unclaimed.

    Attributes:
        node: the anvil node (``rpc_url``, ``chain_id``, its dev ``private_keys``).
        run_dir: the run folder (``round_001/``…, ``deployment.json``, ``state.db``).
        deployment: ``deployment.json`` as a dict (``pool``, ``token``, ``campaign_id``…).
        sponsor_key: the sponsor's private key (anvil dev account 2, who funded it).
        holder_keys: holder address (checksummed) → private key (the demo holders' keys).
        holders_dir: an empty folder the API stores registrations in.
    """

    node: AnvilNode
    run_dir: Path
    deployment: dict[str, Any]
    sponsor_key: str
    holder_keys: dict[str, str] = field(default_factory=dict)
    holders_dir: Path | None = None

    @property
    def campaign_id(self) -> int:
        return int(self.deployment["campaign_id"])

    @property
    def sponsor(self) -> str:
        from eth_account import Account

        return Account.from_key(self.sponsor_key).address

    def allocations(self) -> list[dict[str, Any]]:
        """Each round's ``allocation.json`` (round 1 first)."""
        return [read_json(self.run_dir / f"round_{r:03d}" / "allocation.json")
                for r in range(1, ROUNDS + 1)]


def anvil_rpc(rpc_url: str, method: str, params: list | None = None) -> Any:
    """One JSON-RPC call to anvil; its result (raises RuntimeError with anvil's error)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    answer = httpx.post(rpc_url, json=body, timeout=30.0).json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


@contextlib.contextmanager
def chain_snapshot(rpc_url: str) -> Iterator[None]:
    """Undo every chain change made inside the block (``evm_snapshot`` / ``evm_revert``: state,
    blocks and anvil's clock offset)."""
    snapshot = anvil_rpc(rpc_url, "evm_snapshot")
    try:
        yield
    finally:
        anvil_rpc(rpc_url, "evm_revert", [snapshot])


def start_campaign(node: AnvilNode, run_dir: Path) -> TinyCampaign:
    """Deploy, create, fund and run :data:`ROUNDS` tiny rounds up to ``finalize`` on ``node``."""
    settings = Settings.for_profile("tiny", run_dir=run_dir, rpc_url=node.rpc_url,
                                    n_rounds=ROUNDS, total_budget_wei=FUNDED_WEI)
    console = Console(file=io.StringIO(), width=160)
    deployment = operations.deploy(settings, dev=True)
    campaign_id = operations.create_campaign(settings, deployment, dev=True)
    operations.fund(settings, deployment, campaign_id, FUNDED_WEI, dev=True)
    for round_id in range(1, ROUNDS + 1):
        operations.run_round(settings, deployment, campaign_id, round_id=round_id,
                             until="finalize", dev=True, console=console)
    holder_keys = {}
    for holder in read_json(run_dir / "round_001" / "allocation.json")["holders"]:
        holder_keys[holder["address"]] = holder_private_key(holder["name"])
    holders_dir = run_dir.parent / f"{run_dir.name}-holders"
    holders_dir.mkdir(exist_ok=True)
    return TinyCampaign(
        node=node,
        run_dir=run_dir,
        deployment=read_json(run_dir / "deployment.json"),
        sponsor_key=dev_keys(True)[DEV_SPONSOR],
        holder_keys=holder_keys,
        holders_dir=holders_dir,
    )
