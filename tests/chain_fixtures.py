"""Shared fixtures for tests that run against a real anvil node.

Load them explicitly in a test module with ``pytest_plugins = ["tests.chain_fixtures"]`` (this
is not a conftest); helpers such as :data:`WEI` are imported normally.

One anvil node serves the whole session; every test deploys fresh contracts with
:func:`deploy_pool`, so tests do not share state except the chain clock (tests that call
``increase_time`` move it forward for everyone; deadlines are always computed from the latest
block's timestamp).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from offchain.allocation.merkle import PayoutTree
from offchain.chain import (
    AnvilNode,
    ChainClient,
    CompiledContract,
    PoolClient,
    TokenClient,
    address_of,
    compile_contracts,
)
from offchain.oracle.signing import sign_round

WEI = 10**18
"""One token (18 decimals) in wei."""


@dataclass(frozen=True)
class Roles:
    """Private keys (anvil dev accounts) by role; addresses via :func:`address_of`."""

    deployer: str
    oracle: str
    sponsor_a: str
    sponsor_b: str
    relayer: str
    stranger: str
    holders: tuple[str, ...]

    @property
    def holder_addresses(self) -> list[str]:
        return [address_of(k) for k in self.holders]


@dataclass
class Deployment:
    """A freshly deployed token and pool."""

    chain: ChainClient
    token: TokenClient
    pool: PoolClient
    claim_deadline: int
    roles: Roles

    def fund(self, sponsor_key: str, amount_wei: int) -> None:
        """Mint ``amount_wei`` to the sponsor and fund the pool with it."""
        self.token.mint(sponsor_key, address_of(sponsor_key), amount_wei)
        self.pool.fund(sponsor_key, amount_wei)

    def sign(self, round_id: int, root: str, total_wei: int, key: str | None = None) -> str:
        """Sign a round for this pool (with the oracle's key unless ``key`` is given)."""
        return sign_round(
            key or self.roles.oracle,
            self.chain.chain_id,
            self.pool.address,
            round_id,
            root,
            total_wei,
        )

    def post(self, round_id: int, tree: PayoutTree) -> str:
        """Sign ``tree`` as round ``round_id`` with the oracle key and relay it."""
        signature = self.sign(round_id, tree.root, tree.total_wei)
        return self.pool.post_round(
            self.roles.relayer, round_id, tree.root, tree.total_wei, signature
        )


@pytest.fixture(scope="session")
def compiled() -> dict[str, CompiledContract]:
    """All project contracts, compiled once (cached in build/contracts)."""
    return compile_contracts()


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    """One anvil node for the session, with 11 funded dev accounts."""
    with AnvilNode(accounts=11) as node:
        yield node


@pytest.fixture(scope="session")
def chain(anvil: AnvilNode) -> ChainClient:
    """A client connected to the session's anvil node."""
    return ChainClient(anvil.rpc_url)


@pytest.fixture(scope="session")
def roles(anvil: AnvilNode) -> Roles:
    """Dev-account keys by role (five holders)."""
    k = anvil.private_keys
    return Roles(
        deployer=k[0],
        oracle=k[1],
        sponsor_a=k[2],
        sponsor_b=k[3],
        relayer=k[4],
        stranger=k[5],
        holders=tuple(k[6:11]),
    )


@pytest.fixture()
def deploy_pool(
    chain: ChainClient, compiled: dict[str, CompiledContract], roles: Roles
) -> Callable[..., Deployment]:
    """Factory: ``deploy_pool(token="TestToken", claim_period_s=3600)`` → :class:`Deployment`."""

    def _deploy(token: str = "TestToken", claim_period_s: int = 3600) -> Deployment:
        token_client = TokenClient.deploy(chain, compiled[token], roles.deployer)
        deadline = chain.block_timestamp() + claim_period_s
        pool = PoolClient.deploy(
            chain,
            compiled["CompensationPool"],
            roles.deployer,
            token=token_client.address,
            oracle=address_of(roles.oracle),
            sponsor=address_of(roles.sponsor_a),
            claim_deadline=deadline,
            token_abi=compiled[token].abi,
        )
        return Deployment(chain, token_client, pool, deadline, roles)

    return _deploy
