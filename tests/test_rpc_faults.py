"""The chain client under injected RPC faults: every intent lands exactly once.

A :class:`~tests.rpc_fault_proxy.FaultProxy` sits between :class:`ChainClient` and anvil and
drops requests, delays them, answers 502, or forwards a request but drops its response (for
``eth_sendRawTransaction``: the transaction is in the pool, the client never heard so).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
import requests

from offchain.chain import AnvilNode, ChainClient, ContractRevert, TokenClient, address_of
from offchain.chain.pool import LeafClaim, PoolClient
from offchain.chain.rpc import RetryPolicy, is_transient_error, is_transient_response
from tests.chain_fixtures import WEI, Deployment, Roles, payout_tree
from tests.rpc_fault_proxy import FaultPlan, FaultProxy

pytest_plugins = ["tests.chain_fixtures"]

N_TRANSFERS = 30

FAULTY = FaultPlan(
    seed=2024,
    drop_request=0.07,
    delay=0.07,
    http_502=0.07,
    drop_response=0.05,
    send_drop_response=0.3,
)
"""About 26 % of requests faulted, and a third of raw sends lose their answer."""


def _fast_policy(seed: int) -> RetryPolicy:
    return RetryPolicy(attempts=12, base_delay_s=0.005, max_delay_s=0.1, total_s=20.0,
                       rng=random.Random(seed))


@pytest.fixture()
def proxy(anvil: AnvilNode) -> Iterator[FaultProxy]:
    with FaultProxy(anvil.rpc_url, FAULTY) as p:
        yield p


@pytest.fixture()
def faulty_chain(proxy: FaultProxy) -> ChainClient:
    proxy.enabled = False  # connect cleanly, then fault everything
    client = ChainClient(proxy.url, timeout=5.0, retry=_fast_policy(7))
    proxy.enabled = True
    return client


def _nonce_of(chain: ChainClient, tx_hash: str) -> int:
    return int(chain.w3.eth.get_transaction(tx_hash)["nonce"])  # type: ignore[arg-type]


def test_transfers_through_faulty_rpc_land_once_with_consecutive_nonces(
    chain: ChainClient, faulty_chain: ChainClient, proxy: FaultProxy,
    compiled: dict, roles: Roles,
) -> None:
    sender_key = roles.stranger
    sender = address_of(sender_key)
    token = TokenClient.deploy(chain, compiled["TestToken"], roles.deployer)
    token.mint(roles.deployer, sender, 10**6)
    faulty_token = TokenClient(faulty_chain, token.address, compiled["TestToken"].abi)
    recipients = [address_of("0x" + f"{i + 1:064x}") for i in range(N_TRANSFERS)]
    start_nonce = chain.w3.eth.get_transaction_count(sender)  # type: ignore[arg-type]

    started = time.perf_counter()
    hashes = [faulty_token.transfer(sender_key, to, i + 1) for i, to in enumerate(recipients)]
    elapsed = time.perf_counter() - started

    assert [token.balance_of(to) for to in recipients] == list(range(1, N_TRANSFERS + 1))
    assert [_nonce_of(chain, h) for h in hashes] == list(
        range(start_nonce, start_nonce + N_TRANSFERS)
    )
    assert chain.w3.eth.get_transaction_count(sender) == start_nonce + N_TRANSFERS  # type: ignore[arg-type]
    # The schedule really hit the dangerous cases.
    assert proxy.faults("drop_response", "eth_sendRawTransaction") >= 3, proxy.counts
    for fault in ("drop_request", "delay", "http_502"):
        assert proxy.faults(fault) > 0, proxy.counts
    assert elapsed < 25


def test_revert_through_faulty_rpc_is_raised_at_once_not_retried(
    chain: ChainClient, faulty_chain: ChainClient, proxy: FaultProxy,
    compiled: dict, roles: Roles,
) -> None:
    token = TokenClient.deploy(chain, compiled["TestToken"], roles.deployer)
    faulty_token = TokenClient(faulty_chain, token.address, compiled["TestToken"].abi)
    proxy.enabled = False  # count exactly the requests one failing send makes
    before = proxy.counts.copy()
    with pytest.raises(ContractRevert) as info:
        faulty_token.transfer(roles.stranger, address_of(roles.guardian), 1)
    assert info.value.name == "ERC20InsufficientBalance"
    made = proxy.counts - before
    assert made[("forward", "eth_estimateGas")] == 1, made  # the revert was not retried
    assert made[("forward", "eth_sendRawTransaction")] == 0, made


def test_round_posted_and_claimed_through_faulty_rpc_exactly_once(
    deploy_pool, faulty_chain: ChainClient, proxy: FaultProxy, compiled: dict,
) -> None:
    deployment: Deployment = deploy_pool()
    campaign = deployment.campaign(round_cap_wei=100 * WEI, holder_cap_wei=50 * WEI)
    roles = deployment.roles
    campaign.fund(roles.sponsor_a, 100 * WEI)
    holders = roles.holder_addresses
    amounts = [10 * WEI, 20 * WEI, 5 * WEI, 1 * WEI, 7 * WEI]
    tree = payout_tree(holders, amounts)
    allocation = campaign.allocation(1, tree)
    signatures = campaign.sign(allocation)
    pool = PoolClient(faulty_chain, deployment.pool.address, compiled["CompensationPool"].abi,
                      compiled["TestToken"].abi)
    token = campaign.token
    assert token is not None
    before = [token.balance_of(h) for h in holders]

    pool.post_round(roles.relayer, allocation, signatures)
    info = deployment.pool.get_campaign(campaign.campaign_id)
    assert info.next_round_id == 2  # posted once, not twice
    assert deployment.pool.get_round(campaign.campaign_id, 1).total_wei == tree.total_wei

    campaign.wait_challenge_window()
    for index, (key, amount) in enumerate(zip(roles.holders, amounts, strict=True)):
        leaf = LeafClaim(1, index, amount, tuple(tree.proof(index)))
        pool.claim_rounds(key, campaign.campaign_id, address_of(key), [leaf])

    assert [token.balance_of(h) - b for h, b in zip(holders, before, strict=True)] == amounts
    assert proxy.faults("drop_response", "eth_sendRawTransaction") >= 1, proxy.counts


def test_retry_policy_backs_off_with_jitter_and_gives_up() -> None:
    policy = RetryPolicy(attempts=4, base_delay_s=0.001, max_delay_s=0.002, total_s=5.0,
                         rng=random.Random(0))
    calls: list[int] = []

    def always_down() -> None:
        calls.append(1)
        raise requests.ConnectionError("down")

    with pytest.raises(requests.ConnectionError):
        policy.run("test", always_down, is_transient_error)
    assert len(calls) == 4
    assert all(0 <= policy.delay(i) <= 0.002 for i in range(10))


def test_only_transport_faults_are_transient() -> None:
    def http_error(status: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(response=response)

    assert is_transient_error(requests.ConnectionError())
    assert is_transient_error(requests.Timeout())
    assert is_transient_error(http_error(502))
    assert is_transient_error(http_error(429))
    assert not is_transient_error(http_error(400))
    assert not is_transient_error(ValueError("execution reverted"))
    assert is_transient_response({"jsonrpc": "2.0", "id": 1,  # type: ignore[typeddict-item]
                                  "error": {"code": -32005, "message": "limit exceeded"}})
    assert not is_transient_response({"jsonrpc": "2.0", "id": 1,  # type: ignore[typeddict-item]
                                      "error": {"code": 3, "message": "execution reverted"}})
