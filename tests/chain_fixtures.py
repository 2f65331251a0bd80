"""Shared fixtures for tests that run against a real anvil node.

Load them explicitly in a test module with ``pytest_plugins = ["tests.chain_fixtures"]`` (this
is not a conftest); helpers such as :data:`WEI` are imported normally.

One anvil node serves the whole session; every test deploys a fresh pool with
:func:`deploy_pool` and creates campaigns on it with :meth:`Deployment.campaign`, so tests do
not share state except the chain clock (tests that call ``increase_time`` move it forward for
everyone; deadlines are always computed from the latest block's timestamp).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from offchain.allocation import RoundAllocation
from offchain.allocation.merkle import PayoutTree
from offchain.chain import (
    AnvilNode,
    ChainClient,
    CompiledContract,
    ContractRevert,
    TokenClient,
    address_of,
    compile_contracts,
)
from offchain.chain.pool import ZERO_ADDRESS, CampaignParams, LeafClaim, PoolClient, TxResult
from offchain.oracle.signing import sign_round, sign_round_k_of_n

WEI = 10**18
"""One token (18 decimals) in wei."""
HOUR = 3600
DAY = 86400
PROVENANCE = {
    "checkpoint_hash": "0x" + "c1" * 32,
    "dataset_root": "0x" + "d5" * 32,
    "attribution_hash": "0x" + "a7" * 32,
}
"""Fixed provenance commitments for test rounds."""


@dataclass(frozen=True)
class Roles:
    """Private keys (anvil dev accounts) by role; addresses via :func:`address_of`.

    ``signers`` are the oracle signer keys (three), ``holders`` five holder keys.
    """

    deployer: str
    guardian: str
    sponsor_a: str
    sponsor_b: str
    relayer: str
    stranger: str
    signers: tuple[str, ...]
    holders: tuple[str, ...]

    @property
    def holder_addresses(self) -> list[str]:
        return [address_of(k) for k in self.holders]

    @property
    def oracle(self) -> str:
        """The first signer (single-signer campaigns)."""
        return self.signers[0]


@dataclass
class Campaign:
    """A campaign on a deployed pool, with helpers to fund, sign, post and wait."""

    deployment: Deployment
    campaign_id: int
    token: TokenClient | None  # None for native ETH
    signer_keys: tuple[str, ...]
    signer_set_version: int = 1
    created: TxResult | None = field(default=None, repr=False)

    @property
    def pool(self) -> PoolClient:
        return self.deployment.pool

    @property
    def chain(self) -> ChainClient:
        return self.deployment.chain

    def fund(self, sponsor_key: str, amount_wei: int) -> TxResult:
        """Mint (ERC-20) or just send (ETH) ``amount_wei`` and fund the campaign with it."""
        if self.token is not None:
            self.token.mint(sponsor_key, address_of(sponsor_key), amount_wei)
        return self.pool.fund(sponsor_key, self.campaign_id, amount_wei)

    def allocation(self, round_id: int, tree: PayoutTree, *, total_wei: int | None = None,
                   deadline: int | None = None, version: int | None = None,
                   campaign_id: int | None = None) -> RoundAllocation:
        """The round's allocation with fixed provenance (fields overridable for attacks)."""
        return RoundAllocation(
            campaign_id=self.campaign_id if campaign_id is None else campaign_id,
            round_id=round_id,
            merkle_root=tree.root,
            total_wei=tree.total_wei if total_wei is None else total_wei,
            signer_set_version=self.signer_set_version if version is None else version,
            deadline=self.chain.block_timestamp() + HOUR if deadline is None else deadline,
            **PROVENANCE,
        )

    def sign(self, allocation: RoundAllocation, keys: Sequence[str] | None = None,
             *, chain_id: int | None = None, contract: str | None = None) -> list[str]:
        """Signatures of ``keys`` (default: this campaign's signers), ordered for postRound."""
        keys = self.signer_keys if keys is None else keys
        return sign_round_k_of_n(
            keys, self.chain.chain_id if chain_id is None else chain_id,
            contract or self.pool.address, allocation,
        )

    def sign_unordered(self, allocation: RoundAllocation, keys: Sequence[str]) -> list[str]:
        """Signatures in the given key order (for ordering/duplicate attacks)."""
        return [sign_round(k, self.chain.chain_id, self.pool.address, allocation) for k in keys]

    def post(self, round_id: int, tree: PayoutTree, keys: Sequence[str] | None = None
             ) -> TxResult:
        """Sign ``tree`` as round ``round_id`` and relay it."""
        allocation = self.allocation(round_id, tree)
        return self.pool.post_round(self.deployment.roles.relayer, allocation,
                                    self.sign(allocation, keys))

    def wait_challenge_window(self) -> None:
        """Advance the chain clock past the challenge window."""
        info = self.pool.get_campaign(self.campaign_id)
        self.chain.increase_time(info.challenge_window_s + 1)

    def wait_expiry(self) -> None:
        """Advance the chain clock to the claim deadline."""
        info = self.pool.get_campaign(self.campaign_id)
        now = self.chain.block_timestamp()
        self.chain.increase_time(max(info.claim_deadline - now, 0))

    def balance_of(self, account: str) -> int:
        return self.pool.balance_of(self.campaign_id, account)


@dataclass
class Deployment:
    """A freshly deployed pool."""

    chain: ChainClient
    pool: PoolClient
    roles: Roles
    compiled: dict[str, CompiledContract]

    def campaign(
        self,
        token: str | None = "TestToken",
        *,
        signers: Sequence[str] | None = None,
        threshold: int = 1,
        num_rounds: int = 5,
        round_cap_wei: int = 1_000 * WEI,
        holder_cap_wei: int = 500 * WEI,
        challenge_window_s: int = HOUR,
        claim_window_s: int = DAY,
        posting_window_s: int = 7 * DAY,
        creator_key: str | None = None,
        guardian: str | None = None,
    ) -> Campaign:
        """Create a campaign. ``token``: a contract name to deploy (``"TestToken"``,
        ``"FeeOnTransferToken"``, ``"ReentrantToken"``), an address string starting with ``0x``,
        or ``None`` for native ETH. Signers default to the first of ``roles.signers``."""
        signer_keys = tuple(signers) if signers is not None else self.roles.signers[:1]
        token_client: TokenClient | None
        if token is None:
            token_client, token_address = None, ZERO_ADDRESS
        elif token.startswith("0x"):
            token_client = TokenClient(self.chain, token, self.compiled["TestToken"].abi)
            token_address = token
        else:
            token_client = TokenClient.deploy(self.chain, self.compiled[token], self.roles.deployer)
            token_address = token_client.address
        params = CampaignParams(
            token=token_address,
            guardian=guardian or address_of(self.roles.guardian),
            signers=tuple(address_of(k) for k in signer_keys),
            threshold=threshold,
            num_rounds=num_rounds,
            round_cap_wei=round_cap_wei,
            holder_cap_wei=holder_cap_wei,
            challenge_window_s=challenge_window_s,
            claim_window_s=claim_window_s,
            posting_deadline=self.chain.block_timestamp() + posting_window_s,
        )
        campaign_id, tx = self.pool.create_campaign(creator_key or self.roles.deployer, params)
        return Campaign(self, campaign_id, token_client, signer_keys, 1, tx)


@pytest.fixture(scope="session")
def compiled() -> dict[str, CompiledContract]:
    """All project contracts, compiled once (cached in build/contracts)."""
    return compile_contracts()


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    """One anvil node for the session, with 14 funded dev accounts."""
    with AnvilNode(accounts=14) as node:
        yield node


@pytest.fixture(scope="session")
def chain(anvil: AnvilNode) -> ChainClient:
    """A client connected to the session's anvil node."""
    return ChainClient(anvil.rpc_url)


@pytest.fixture(scope="session")
def roles(anvil: AnvilNode) -> Roles:
    """Dev-account keys by role (three signers, five holders)."""
    k = anvil.private_keys
    return Roles(
        deployer=k[0],
        guardian=k[1],
        sponsor_a=k[2],
        sponsor_b=k[3],
        relayer=k[4],
        stranger=k[5],
        signers=tuple(k[6:9]),
        holders=tuple(k[9:14]),
    )


@pytest.fixture()
def deploy_pool(
    chain: ChainClient, compiled: dict[str, CompiledContract], roles: Roles
) -> Callable[[], Deployment]:
    """Factory: ``deploy_pool()`` → :class:`Deployment` (a fresh pool; admin = deployer)."""

    def _deploy() -> Deployment:
        pool = PoolClient.deploy(chain, compiled["CompensationPool"], roles.deployer,
                                 token_abi=compiled["TestToken"].abi)
        return Deployment(chain, pool, roles, compiled)

    return _deploy


def payout_tree(addresses: Sequence[str], amounts: Sequence[int]) -> PayoutTree:
    """A StandardMerkleTree of ``(i, addresses[i], amounts[i])``."""
    return PayoutTree.build([(i, a, w) for i, (a, w) in enumerate(zip(addresses, amounts,
                                                                       strict=True))])


class Between:
    """Equal to any int in ``[lo, hi]`` (for block timestamps inside revert arguments)."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and self.lo <= other <= self.hi

    def __repr__(self) -> str:
        return f"Between({self.lo}, {self.hi})"


def now_arg(chain: ChainClient, slack: int = 30) -> Between:
    """The ``nowTimestamp`` a call sent right now will see."""
    ts = chain.block_timestamp()
    return Between(ts, ts + slack)


@contextmanager
def reverts(name: str, *args: object) -> Iterator[None]:
    """Expect a ContractRevert with exactly this error name and these decoded arguments."""
    with pytest.raises(ContractRevert) as info:
        yield
    assert info.value.name == name, str(info.value)
    assert info.value.args == tuple(args), str(info.value)


def leaf(tree: PayoutTree, round_id: int, index: int) -> LeafClaim:
    """The batch-claim entry of leaf ``index`` of ``tree`` posted as ``round_id``."""
    return LeafClaim(round_id, index, tree.entry(index)[2], tuple(tree.proof(index)))
