"""The on-chain half: compile the contracts, run a dev chain, and talk to the pool.

This subpackage is the only place that imports web3 (in :mod:`offchain.chain.client` and
:mod:`offchain.chain.errors`); the compiler and anvil helpers need only py-solc-x and the
standard library. Import the web3-backed names lazily so ``import offchain.chain`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from offchain.chain.anvil import DEFAULT_MNEMONIC, AnvilNode, derive_private_keys, find_anvil
from offchain.chain.compiler import CompiledContract, compile_contracts, resolve_solc
from offchain.chain.errors import ChainError, ContractRevert, TransactionFailed

if TYPE_CHECKING:
    from offchain.chain.client import ChainClient, TokenClient, address_of
    from offchain.chain.pool import (
        CampaignInfo,
        CampaignParams,
        LeafClaim,
        PoolClient,
        RoundInfo,
        RoundStatus,
        TxResult,
    )

__all__ = [
    "DEFAULT_MNEMONIC",
    "AnvilNode",
    "CampaignInfo",
    "CampaignParams",
    "LeafClaim",
    "RoundStatus",
    "TxResult",
    "ChainClient",
    "ChainError",
    "CompiledContract",
    "ContractRevert",
    "PoolClient",
    "RoundInfo",
    "TokenClient",
    "TransactionFailed",
    "address_of",
    "compile_contracts",
    "derive_private_keys",
    "find_anvil",
    "resolve_solc",
]

_CLIENT_NAMES = {"ChainClient", "TokenClient", "address_of"}
_POOL_NAMES = {"CampaignInfo", "CampaignParams", "LeafClaim", "PoolClient", "RoundInfo",
               "RoundStatus", "TxResult"}


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from offchain.chain import client

        return getattr(client, name)
    if name in _POOL_NAMES:
        from offchain.chain import pool

        return getattr(pool, name)
    raise AttributeError(f"module 'offchain.chain' has no attribute {name!r}")
