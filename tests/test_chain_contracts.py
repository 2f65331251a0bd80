"""CompensationPool (multi-campaign escrow) against a real anvil node: functional behaviour.

Campaign creation, funding (ERC-20, fee-on-transfer, native ETH), k-of-n EIP-712 rounds, the
challenge window (revoke / finalize), Merkle claims (single, batched, delegated to a recipient by
EOA or EIP-1271 signature), expiry with pro-rata reclaims, pause and delayed signer rotation
(the review items of issue 13 are in ``test_pool_review.py``).

Every test deploys a fresh pool on the session's anvil node (``tests.chain_fixtures``) and
asserts exact values: balances, decoded events and decoded custom errors (name and arguments).
Arguments that carry the block timestamp of a reverted call are matched to a short interval
starting at the latest block's timestamp (:func:`now_arg`), since the node picks the timestamp of
the block it simulates the call in.

The security routes (signature replay, malleability, re-entrancy) live in ``test_security.py``.
"""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from web3.logs import DISCARD

from offchain.allocation import RoundAllocation
from offchain.chain import address_of
from offchain.chain.pool import (
    ZERO_ADDRESS,
    CampaignParams,
    PoolEvent,
    RoundStatus,
    TxResult,
)
from offchain.oracle.signing import recipient_digest, round_digest, sign_recipient

pytest.register_assert_rewrite("tests.chain_fixtures")  # imported here before pytest_plugins
from tests.chain_fixtures import (  # noqa: E402
    DAY,
    HOUR,
    PROVENANCE,
    WEI,
    Campaign,
    leaf,
    now_arg,
    payout_tree,
    reverts,
)

pytest_plugins = ["tests.chain_fixtures"]

UINT40_MAX = 2**40 - 1
UINT120_MAX = 2**120 - 1
PAUSER_ROLE = keccak(text="PAUSER_ROLE")


# -- helpers -------------------------------------------------------------------------------------





def ev(event: PoolEvent) -> tuple:
    """An event as (name, *fields) without its log position."""
    skip = {"block_number", "tx_hash", "log_index"}
    return (event.EVENT,) + tuple(
        getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in skip
    )


def evs(tx: TxResult) -> list[tuple]:
    return [ev(e) for e in tx.events]



def rotate(pool, chain, admin_key: str, campaign_id: int, signers, threshold: int) -> TxResult:
    """Propose a signer set, wait out the rotation delay and install it (the execute tx)."""
    pool.propose_signer_rotation(admin_key, campaign_id, signers, threshold)
    chain.increase_time(pool.rotation_delay(campaign_id))
    return pool.execute_signer_rotation(admin_key, campaign_id)


def claim(c: Campaign, tree, round_id: int, index: int, sender: str | None = None) -> TxResult:
    """Claim leaf ``index`` of ``tree`` (round ``round_id``), submitted by the relayer."""
    _, account, amount = tree.entry(index)
    return c.pool.claim(sender or c.deployment.roles.relayer, c.campaign_id, round_id, index,
                        account, amount, tree.proof(index))


def block_ts(chain, block_number: int) -> int:
    return int(chain.w3.eth.get_block(block_number)["timestamp"])


def pool_holdings(c: Campaign) -> int:
    """The pool's balance in the campaign's asset."""
    return c.balance_of(c.pool.address)


def base_params(chain, roles, **overrides) -> CampaignParams:
    params = CampaignParams(
        token=ZERO_ADDRESS,
        guardian=address_of(roles.guardian),
        signers=tuple(address_of(k) for k in roles.signers),
        threshold=2,
        num_rounds=3,
        round_cap_wei=1_000 * WEI,
        holder_cap_wei=500 * WEI,
        challenge_window_s=HOUR,
        claim_window_s=DAY,
        posting_deadline=chain.block_timestamp() + 7 * DAY,
    )
    return dataclasses.replace(params, **overrides)


# -- EIP-712 digests -----------------------------------------------------------------------------

_U256 = st.integers(min_value=0, max_value=2**256 - 1)
_B32 = st.binary(min_size=32, max_size=32)
_ADDR = st.binary(min_size=20, max_size=20).map(to_checksum_address)


def test_round_digest_equals_contract(deploy_pool, chain):
    pool = deploy_pool().pool

    @settings(max_examples=8, deadline=None, database=None)
    @given(campaign_id=_U256, round_id=_U256, root=_B32, total=_U256, checkpoint=_B32,
           dataset=_B32, attribution=_B32, version=_U256, deadline=_U256)
    def check(campaign_id, round_id, root, total, checkpoint, dataset, attribution, version,
              deadline):
        allocation = RoundAllocation(
            campaign_id=campaign_id, round_id=round_id, merkle_root=root, total_wei=total,
            checkpoint_hash=checkpoint, dataset_root=dataset, attribution_hash=attribution,
            signer_set_version=version, deadline=deadline,
        )
        assert pool.round_digest(allocation) == round_digest(chain.chain_id, pool.address,
                                                             allocation)

    check()


def test_recipient_digest_equals_contract(deploy_pool, chain):
    pool = deploy_pool().pool

    @settings(max_examples=8, deadline=None, database=None)
    @given(campaign_id=_U256, account=_ADDR, recipient=_ADDR, nonce=_U256, deadline=_U256)
    def check(campaign_id, account, recipient, nonce, deadline):
        assert pool.recipient_digest(campaign_id, account, recipient, nonce, deadline) == (
            recipient_digest(chain.chain_id, pool.address, campaign_id, account, recipient,
                             nonce, deadline))

    check()


# -- createCampaign ------------------------------------------------------------------------------

_MANY_SIGNERS = tuple(to_checksum_address(i.to_bytes(20, "big")) for i in range(1, 66))

BAD_PARAMS = [
    # (case id, overrides(now), expected `what`, expected value(now))
    ("guardian-zero", lambda now: {"guardian": ZERO_ADDRESS}, "guardian", lambda now: 0),
    ("numRounds-zero", lambda now: {"num_rounds": 0}, "numRounds", lambda now: 0),
    ("numRounds-over-max", lambda now: {"num_rounds": 1001}, "numRounds", lambda now: 1001),
    ("roundCap-zero", lambda now: {"round_cap_wei": 0}, "roundCap", lambda now: 0),
    ("roundCap-over-uint120", lambda now: {"round_cap_wei": UINT120_MAX + 1, "holder_cap_wei": 1},
     "roundCap", lambda now: UINT120_MAX + 1),
    ("holderCap-zero", lambda now: {"holder_cap_wei": 0}, "holderCap", lambda now: 0),
    ("holderCap-over-roundCap", lambda now: {"holder_cap_wei": 1_000 * WEI + 1}, "holderCap",
     lambda now: 1_000 * WEI + 1),
    ("claimWindow-zero", lambda now: {"claim_window_s": 0}, "claimWindow", lambda now: 0),
    ("claimWindow-over-uint40", lambda now: {"claim_window_s": UINT40_MAX + 1}, "claimWindow",
     lambda now: UINT40_MAX + 1),
    ("challengeWindow-over-uint40", lambda now: {"challenge_window_s": UINT40_MAX + 1},
     "challengeWindow", lambda now: UINT40_MAX + 1),
    ("postingDeadline-past", lambda now: {"posting_deadline": now - 1}, "postingDeadline",
     lambda now: now - 1),
    ("postingDeadline-now", lambda now: {"posting_deadline": now}, "postingDeadline",
     lambda now: now),
    ("claimDeadline-over-uint40", lambda now: {"posting_deadline": UINT40_MAX - HOUR},
     "postingDeadline", lambda now: UINT40_MAX - HOUR),
    ("signers-empty", lambda now: {"signers": (), "threshold": 1}, "signers", lambda now: 0),
    ("signers-over-max", lambda now: {"signers": _MANY_SIGNERS, "threshold": 1}, "signers",
     lambda now: 65),
    ("threshold-zero", lambda now: {"threshold": 0}, "threshold", lambda now: 0),
    ("threshold-over-n", lambda now: {"threshold": 4}, "threshold", lambda now: 4),
]


@pytest.mark.parametrize("overrides,what,value", [c[1:] for c in BAD_PARAMS],
                         ids=[c[0] for c in BAD_PARAMS])
def test_create_campaign_rejects_bad_parameter(deploy_pool, chain, roles, overrides, what, value):
    pool = deploy_pool().pool
    now = chain.block_timestamp()
    params = base_params(chain, roles, **overrides(now))
    with reverts("InvalidCampaignParam", what, value(now)):
        pool.create_campaign(roles.deployer, params)
    assert pool.campaign_count() == 0


@pytest.mark.parametrize("position,signers", [
    (1, lambda s: (s[0], ZERO_ADDRESS, s[1])),
    (0, lambda s: (ZERO_ADDRESS,)),
    (2, lambda s: (s[0], s[1], s[0])),
    (1, lambda s: (s[2], s[2])),
], ids=["zero-middle", "zero-only", "duplicate", "duplicate-adjacent"])
def test_create_campaign_rejects_zero_or_duplicate_signer(deploy_pool, chain, roles, position,
                                                          signers):
    pool = deploy_pool().pool
    addresses = [address_of(k) for k in roles.signers]
    chosen = signers(addresses)
    params = base_params(chain, roles, signers=chosen, threshold=1)
    with reverts("InvalidSignerSet", position, chosen[position]):
        pool.create_campaign(roles.deployer, params)
    assert pool.campaign_count() == 0


def test_pool_constructor_rejects_zero_admin(chain, compiled, roles):
    from offchain.chain.pool import PoolClient

    # OpenZeppelin AccessControlDefaultAdminRules refuses a zero default admin.
    with reverts("AccessControlInvalidDefaultAdmin", ZERO_ADDRESS):
        PoolClient.deploy(chain, compiled["CompensationPool"], roles.deployer, admin=ZERO_ADDRESS)


def test_create_campaign_ids_events_and_view(deploy_pool, chain, roles):
    d = deploy_pool()
    pool = d.pool
    signers = tuple(address_of(k) for k in roles.signers)
    expected = []
    for n in range(1, 4):
        params = base_params(chain, roles, token=ZERO_ADDRESS if n == 2 else address_of(
            roles.stranger), num_rounds=n, threshold=n, challenge_window_s=n * 60,
            claim_window_s=n * 600, round_cap_wei=n * WEI, holder_cap_wei=n * WEI // 2)
        creator = roles.sponsor_a if n == 3 else roles.deployer
        campaign_id, tx = pool.create_campaign(creator, params)
        assert campaign_id == n
        claim_deadline = params.posting_deadline + n * 60 + n * 600
        assert evs(tx) == [
            ("CampaignCreated", n, params.token, address_of(creator), params.guardian, n,
             n * WEI, n * WEI // 2, n * 60, n * 600, params.posting_deadline, claim_deadline),
            ("SignerSetRotated", n, 1, signers, n),
        ]
        info = pool.get_campaign(n)
        assert (info.token, info.admin, info.guardian, info.threshold, info.signer_set_version,
                info.num_rounds, info.next_round_id, info.round_cap_wei, info.holder_cap_wei,
                info.challenge_window_s, info.claim_window_s, info.posting_deadline,
                info.claim_deadline, info.total_funded_wei, info.total_allocated_wei,
                info.settled, info.unclaimed_at_expiry_wei) == (
            params.token, address_of(creator), params.guardian, n, 1, n, 1, n * WEI,
            n * WEI // 2, n * 60, n * 600, params.posting_deadline, claim_deadline, 0, 0, False, 0)
        assert pool.get_signers(n) == list(signers)
        assert all(pool.is_signer(n, 1, s) for s in signers)
        assert not pool.is_signer(n, 2, signers[0])
        expected.append(n)
    assert pool.campaign_count() == 3
    assert [e.campaign_id for e in pool.events("CampaignCreated")] == expected


# -- funding -------------------------------------------------------------------------------------


def test_fund_several_sponsors_and_top_ups(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign()
    a, b = address_of(roles.sponsor_a), address_of(roles.sponsor_b)
    cid = c.campaign_id
    assert evs(c.fund(roles.sponsor_a, 100 * WEI)) == [("Funded", cid, a, 100 * WEI)]
    assert evs(c.fund(roles.sponsor_b, 50 * WEI)) == [("Funded", cid, b, 50 * WEI)]
    assert evs(c.fund(roles.sponsor_a, 25 * WEI + 1)) == [("Funded", cid, a, 25 * WEI + 1)]
    assert d.pool.funded_by(cid, a) == 125 * WEI + 1
    assert d.pool.funded_by(cid, b) == 50 * WEI
    assert d.pool.funded_by(cid, address_of(roles.stranger)) == 0
    info = d.pool.get_campaign(cid)
    assert (info.total_funded_wei, info.total_allocated_wei) == (175 * WEI + 1, 0)
    assert d.pool.unallocated(cid) == 175 * WEI + 1
    assert c.token.balance_of(d.pool.address) == 175 * WEI + 1
    assert c.token.balance_of(a) == 0 and c.token.balance_of(b) == 0
    assert [ev(e) for e in d.pool.events("Funded", campaignId=cid)] == [
        ("Funded", cid, a, 100 * WEI), ("Funded", cid, b, 50 * WEI),
        ("Funded", cid, a, 25 * WEI + 1)]


def test_fund_fee_on_transfer_token_credits_balance_delta(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign("FeeOnTransferToken", round_cap_wei=2_000 * WEI)
    a, b = address_of(roles.sponsor_a), address_of(roles.sponsor_b)
    cid = c.campaign_id
    assert evs(c.fund(roles.sponsor_a, 1_000 * WEI)) == [("Funded", cid, a, 990 * WEI)]
    assert evs(c.fund(roles.sponsor_b, 200 * WEI)) == [("Funded", cid, b, 198 * WEI)]
    assert evs(c.fund(roles.sponsor_a, 100)) == [("Funded", cid, a, 99)]
    assert d.pool.funded_by(cid, a) == 990 * WEI + 99
    assert d.pool.funded_by(cid, b) == 198 * WEI
    assert d.pool.get_campaign(cid).total_funded_wei == 1_188 * WEI + 99
    assert c.token.balance_of(d.pool.address) == 1_188 * WEI + 99
    # A round may reserve only what arrived.
    holders = roles.holder_addresses
    too_big = payout_tree(holders[:1], [1_188 * WEI + 100])
    with reverts("InsufficientUnallocated", 1_188 * WEI + 100, 1_188 * WEI + 99):
        c.post(1, too_big)
    # Payouts are charged the fee again (documented): the holder receives 99% of its leaf.
    tree = payout_tree(holders[:2], [100 * WEI, 50 * WEI])
    c.post(1, tree)
    c.wait_challenge_window()
    tx = claim(c, tree, 1, 0)
    assert [e for e in evs(tx) if e[0] == "Claimed"] == [
        ("Claimed", cid, 1, holders[0], 0, holders[0], 100 * WEI)]
    assert c.token.balance_of(holders[0]) == 99 * WEI
    assert c.token.balance_of(d.pool.address) == 1_088 * WEI + 99


def test_fund_native_eth_requires_exact_value(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(None)
    cid, pool = c.campaign_id, d.pool
    a = address_of(roles.sponsor_a)
    before = chain.eth_balance(pool.address)
    assert evs(c.fund(roles.sponsor_a, 3 * WEI)) == [("Funded", cid, a, 3 * WEI)]
    assert evs(c.fund(roles.sponsor_b, 7)) == [("Funded", cid, address_of(roles.sponsor_b), 7)]
    assert chain.eth_balance(pool.address) == before + 3 * WEI + 7
    assert pool.funded_by(cid, a) == 3 * WEI
    assert pool.get_campaign(cid).total_funded_wei == 3 * WEI + 7
    for sent in (2 * WEI, 3 * WEI + 1, 0):
        with reverts("WrongNativeValue", sent, 3 * WEI):
            chain.send(pool.contract.functions.fund(cid, 3 * WEI), roles.sponsor_a,
                       value_wei=sent)
    with reverts("ZeroAmount"):
        chain.send(pool.contract.functions.fund(cid, 0), roles.sponsor_a, value_wei=0)
    assert chain.eth_balance(pool.address) == before + 3 * WEI + 7
    assert pool.get_campaign(cid).total_funded_wei == 3 * WEI + 7


def test_fund_erc20_campaign_rejects_eth(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    c.token.mint(roles.sponsor_a, address_of(roles.sponsor_a), 10 * WEI)
    c.token.approve(roles.sponsor_a, d.pool.address, 10 * WEI)
    with reverts("WrongNativeValue", 1, 0):
        chain.send(d.pool.contract.functions.fund(c.campaign_id, 10 * WEI), roles.sponsor_a,
                   value_wei=1)
    assert d.pool.get_campaign(c.campaign_id).total_funded_wei == 0
    assert chain.eth_balance(d.pool.address) == 0
    assert c.token.balance_of(address_of(roles.sponsor_a)) == 10 * WEI


def test_fund_zero_amount_and_unknown_campaign(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    with reverts("ZeroAmount"):
        d.pool.fund(roles.sponsor_a, c.campaign_id, 0)
    with reverts("UnknownCampaign", 2):
        chain.send(d.pool.contract.functions.fund(2, 1), roles.sponsor_a)
    with reverts("UnknownCampaign", 0):
        chain.send(d.pool.contract.functions.fund(0, 1), roles.sponsor_a)


def test_unknown_campaign_everywhere(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    pool, f = d.pool, d.pool.contract.functions
    holder = roles.holder_addresses[0]
    tree = payout_tree([holder], [WEI])
    allocation = c.allocation(1, tree, campaign_id=9)
    with reverts("UnknownCampaign", 9):
        pool.get_campaign(9)
    with reverts("UnknownCampaign", 9):
        pool.unallocated(9)
    with reverts("UnknownCampaign", 9):
        pool.post_round(roles.relayer, allocation, c.sign(allocation))
    with reverts("UnknownCampaign", 9):
        pool.claim(roles.relayer, 9, 1, 0, holder, WEI, tree.proof(0))
    with reverts("UnknownCampaign", 9):
        pool.claim_rounds(roles.relayer, 9, holder, [leaf(tree, 1, 0)])
    for fn, key in ((f.reclaim(9), roles.sponsor_a), (f.revokeRound(9, 1), roles.guardian),
                    (f.finalizeRound(9, 1), roles.relayer),
                    (f.proposeSignerRotation(9, [holder], 1), roles.deployer),
                    (f.executeSignerRotation(9), roles.relayer),
                    (f.cancelSignerRotation(9), roles.guardian),
                    (f.transferCampaignAdmin(9, holder), roles.deployer),
                    (f.acceptCampaignAdmin(9), roles.deployer),
                    (f.transferGuardian(9, holder), roles.guardian),
                    (f.acceptGuardian(9), roles.guardian),
                    (f.reclaimTo(9, holder), roles.sponsor_a)):
        with reverts("UnknownCampaign", 9):
            chain.send(fn, key)


def test_fund_and_post_close_at_posting_deadline(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(posting_window_s=600)
    c.fund(roles.sponsor_a, 100 * WEI)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    info = d.pool.get_campaign(c.campaign_id)
    chain.increase_time(info.posting_deadline - chain.block_timestamp())
    allocation = c.allocation(1, tree)
    c.token.mint(roles.sponsor_b, address_of(roles.sponsor_b), WEI)
    with reverts("PostingClosed", c.campaign_id, now_arg(chain), info.posting_deadline):
        d.pool.fund(roles.sponsor_b, c.campaign_id, WEI)
    with reverts("PostingClosed", c.campaign_id, now_arg(chain), info.posting_deadline):
        d.pool.post_round(roles.relayer, allocation, c.sign(allocation))
    assert d.pool.get_campaign(c.campaign_id).total_funded_wei == 100 * WEI


# -- rounds --------------------------------------------------------------------------------------


def test_post_round_event_and_state(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(challenge_window_s=2 * HOUR)
    c.fund(roles.sponsor_a, 300 * WEI)
    holders = roles.holder_addresses
    tree = payout_tree(holders[:3], [100 * WEI, 20 * WEI, 5])
    tx = c.post(1, tree)
    ts = block_ts(chain, tx.block_number)
    cid = c.campaign_id
    assert evs(tx) == [("RoundPosted", cid, 1, tree.root, 120 * WEI + 5,
                        PROVENANCE["checkpoint_hash"], PROVENANCE["dataset_root"],
                        PROVENANCE["attribution_hash"], 1, ts + 2 * HOUR)]
    r = d.pool.get_round(cid, 1)
    assert (r.merkle_root, r.total_wei, r.remaining_wei, r.holder_cap_wei, r.posted_at,
            r.finalizes_at, r.status) == (tree.root, 120 * WEI + 5, 120 * WEI + 5, 500 * WEI,
                                          ts, ts + 2 * HOUR, RoundStatus.PENDING)
    info = d.pool.get_campaign(cid)
    assert (info.next_round_id, info.total_allocated_wei) == (2, 120 * WEI + 5)
    assert d.pool.unallocated(cid) == 180 * WEI - 5
    never = d.pool.get_round(cid, 2)
    assert (never.merkle_root, never.total_wei, never.status) == ("0x" + "00" * 32, 0,
                                                                  RoundStatus.NONE)


def test_rounds_are_strictly_sequential(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 100 * WEI)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    for bad in (0, 2):
        with reverts("UnexpectedRoundId", bad, 1):
            c.post(bad, tree)
    c.post(1, tree)
    for bad in (1, 3):
        with reverts("UnexpectedRoundId", bad, 2):
            c.post(bad, tree)
    c.post(2, tree)
    assert d.pool.next_round_id(c.campaign_id) == 3


def test_too_many_rounds(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign(num_rounds=2)
    c.fund(roles.sponsor_a, 100 * WEI)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    c.post(1, tree)
    c.post(2, tree)
    with reverts("TooManyRounds", 3, 2):
        c.post(3, tree)
    assert d.pool.get_campaign(c.campaign_id).total_allocated_wei == 2 * WEI


def test_round_cap_and_unallocated_limits(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign(round_cap_wei=100 * WEI, holder_cap_wei=100 * WEI)
    c.fund(roles.sponsor_a, 150 * WEI)
    h = roles.holder_addresses
    with reverts("RoundCapExceeded", 100 * WEI + 1, 100 * WEI):
        c.post(1, payout_tree(h[:2], [60 * WEI, 40 * WEI + 1]))
    c.post(1, payout_tree(h[:2], [60 * WEI, 40 * WEI]))  # exactly the cap
    with reverts("InsufficientUnallocated", 50 * WEI + 1, 50 * WEI):
        c.post(2, payout_tree(h[:1], [50 * WEI + 1]))
    c.post(2, payout_tree(h[:1], [50 * WEI]))  # exactly what is left
    assert d.pool.unallocated(c.campaign_id) == 0
    with reverts("InsufficientUnallocated", 1, 0):
        c.post(3, payout_tree(h[:1], [1]))


def test_zero_root_zero_total_and_expired_signatures(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 100 * WEI)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    zero_root = dataclasses.replace(c.allocation(1, tree), merkle_root="0x" + "00" * 32)
    with reverts("ZeroMerkleRoot"):
        d.pool.post_round(roles.relayer, zero_root, c.sign(zero_root))
    zero_total = c.allocation(1, tree, total_wei=0)
    with reverts("ZeroRoundTotal"):
        d.pool.post_round(roles.relayer, zero_total, c.sign(zero_total))
    deadline = chain.block_timestamp() - 1
    expired = c.allocation(1, tree, deadline=deadline)
    with reverts("SignatureExpired", deadline, now_arg(chain)):
        d.pool.post_round(roles.relayer, expired, c.sign(expired))
    assert d.pool.next_round_id(c.campaign_id) == 1


def test_k_of_n_threshold(deploy_pool, roles):
    d = deploy_pool()
    s = roles.signers
    c = d.campaign(signers=s, threshold=2)
    c.fund(roles.sponsor_a, 100 * WEI)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    tx = c.post(1, tree, keys=[s[0], s[1]])  # exactly k
    assert [e[0] for e in evs(tx)] == ["RoundPosted"]
    c.post(2, tree, keys=[s[1], s[2]])  # exactly k, another pair
    c.post(3, tree, keys=list(s))  # more than k
    allocation = c.allocation(4, tree)
    with reverts("TooFewSignatures", 1, 2):
        d.pool.post_round(roles.relayer, allocation, c.sign(allocation, [s[2]]))
    assert d.pool.next_round_id(c.campaign_id) == 4
    for r in (1, 2, 3):
        assert d.pool.get_round(c.campaign_id, r).status == RoundStatus.PENDING


# -- challenge window ----------------------------------------------------------------------------


def _one_round(d, roles, amounts=(100 * WEI, 50 * WEI), **campaign_kwargs):
    c = d.campaign(**campaign_kwargs)
    c.fund(roles.sponsor_a, 1_000 * WEI)
    tree = payout_tree(roles.holder_addresses[: len(amounts)], list(amounts))
    tx = c.post(1, tree)
    return c, tree, tx


def test_claim_before_finality_reverts(deploy_pool, chain, roles):
    d = deploy_pool()
    c, tree, _ = _one_round(d, roles)
    finalizes_at = d.pool.get_round(c.campaign_id, 1).finalizes_at
    with reverts("ChallengeWindowOpen", 1, finalizes_at, now_arg(chain)):
        claim(c, tree, 1, 0)
    with reverts("ChallengeWindowOpen", 1, finalizes_at, now_arg(chain)):
        d.pool.claim_rounds(roles.relayer, c.campaign_id, tree.entry(0)[1], [leaf(tree, 1, 0)])
    chain.increase_time(finalizes_at - chain.block_timestamp())  # exactly at finalizesAt
    claim(c, tree, 1, 0)
    assert c.token.balance_of(tree.entry(0)[1]) == 100 * WEI


def test_guardian_revoke_restores_unallocated_and_allows_repost(deploy_pool, roles):
    d = deploy_pool()
    c, tree, _ = _one_round(d, roles)
    cid, pool = c.campaign_id, d.pool
    assert pool.unallocated(cid) == 850 * WEI
    tx = pool.revoke_round(roles.guardian, cid, 1)
    assert evs(tx) == [("RoundRevoked", cid, 1, address_of(roles.guardian))]
    r = pool.get_round(cid, 1)
    assert (r.status, r.remaining_wei, r.total_wei) == (RoundStatus.REVOKED, 0, 150 * WEI)
    info = pool.get_campaign(cid)
    assert (info.next_round_id, info.total_allocated_wei) == (1, 0)
    assert pool.unallocated(cid) == 1_000 * WEI
    c.wait_challenge_window()
    with reverts("WrongRoundStatus", cid, 1, RoundStatus.REVOKED):
        claim(c, tree, 1, 0)
    # Same id again, new root.
    h = roles.holder_addresses
    tree2 = payout_tree(h[:2], [10 * WEI, 20 * WEI])
    tx2 = c.post(1, tree2)
    assert ev(tx2.events[0])[:5] == ("RoundPosted", cid, 1, tree2.root, 30 * WEI)
    assert pool.unallocated(cid) == 970 * WEI
    assert pool.get_round(cid, 1).status == RoundStatus.PENDING
    c.wait_challenge_window()
    with reverts("InvalidProof", cid, 1, 0, h[0], 100 * WEI):
        claim(c, tree, 1, 0)  # the revoked tree's proof
    claim(c, tree2, 1, 1)
    assert c.token.balance_of(h[1]) == 20 * WEI
    assert c.token.balance_of(h[0]) == 0


def test_revoke_guards(deploy_pool, chain, roles):
    d = deploy_pool()
    c, tree, _ = _one_round(d, roles)
    cid, pool = c.campaign_id, d.pool
    with reverts("NotGuardian", address_of(roles.stranger), address_of(roles.guardian)):
        pool.revoke_round(roles.stranger, cid, 1)
    with reverts("NotGuardian", address_of(roles.deployer), address_of(roles.guardian)):
        pool.revoke_round(roles.deployer, cid, 1)  # the campaign admin is not the guardian
    c.post(2, tree)
    with reverts("WrongRoundStatus", cid, 3, RoundStatus.NONE):
        pool.revoke_round(roles.guardian, cid, 3)
    pool.revoke_round(roles.guardian, cid, 2)
    with reverts("WrongRoundStatus", cid, 2, RoundStatus.REVOKED):
        pool.revoke_round(roles.guardian, cid, 2)
    finalizes_at = pool.get_round(cid, 1).finalizes_at
    chain.increase_time(finalizes_at - chain.block_timestamp())
    with reverts("ChallengeWindowOver", 1, finalizes_at, now_arg(chain)):
        pool.revoke_round(roles.guardian, cid, 1)
    pool.finalize_round(roles.relayer, cid, 1)
    with reverts("WrongRoundStatus", cid, 1, RoundStatus.FINALIZED):
        pool.revoke_round(roles.guardian, cid, 1)
    assert pool.unallocated(cid) == 850 * WEI


def test_revoke_with_no_round_posted(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign()
    with reverts("WrongRoundStatus", c.campaign_id, 0, RoundStatus.NONE):
        d.pool.revoke_round(roles.guardian, c.campaign_id, 0)


def test_finalize_round(deploy_pool, chain, roles):
    d = deploy_pool()
    c, tree, _ = _one_round(d, roles)
    cid, pool = c.campaign_id, d.pool
    finalizes_at = pool.get_round(cid, 1).finalizes_at
    with reverts("ChallengeWindowOpen", 1, finalizes_at, now_arg(chain)):
        pool.finalize_round(roles.stranger, cid, 1)
    assert pool.get_round(cid, 1).status == RoundStatus.PENDING
    c.wait_challenge_window()
    assert pool.get_round(cid, 1).status == RoundStatus.FINALIZED  # the view anticipates
    tx = pool.finalize_round(roles.stranger, cid, 1)
    assert evs(tx) == [("RoundFinalized", cid, 1)]
    with reverts("WrongRoundStatus", cid, 1, RoundStatus.FINALIZED):
        pool.finalize_round(roles.stranger, cid, 1)
    with reverts("WrongRoundStatus", cid, 2, RoundStatus.NONE):
        pool.finalize_round(roles.stranger, cid, 2)
    # A claim of an explicitly finalized round emits no second RoundFinalized.
    assert [e[0] for e in evs(claim(c, tree, 1, 0))] == ["Claimed"]
    assert len(pool.events("RoundFinalized", campaignId=cid)) == 1


def test_claim_on_never_posted_or_revoked_round(deploy_pool, roles):
    d = deploy_pool()
    c, tree, _ = _one_round(d, roles)
    cid, pool = c.campaign_id, d.pool
    c.post(2, tree)
    pool.revoke_round(roles.guardian, cid, 2)
    c.wait_challenge_window()
    with reverts("WrongRoundStatus", cid, 2, RoundStatus.REVOKED):
        claim(c, tree, 2, 0)
    with reverts("WrongRoundStatus", cid, 3, RoundStatus.NONE):
        claim(c, tree, 3, 0)
    with reverts("WrongRoundStatus", cid, 2, RoundStatus.REVOKED):
        pool.claim_rounds(roles.relayer, cid, tree.entry(0)[1],
                          [leaf(tree, 1, 0), leaf(tree, 2, 0)])
    assert not pool.is_claimed(cid, 1, 0)  # the batch reverted as a whole
    claim(c, tree, 1, 0)
    assert c.token.balance_of(tree.entry(0)[1]) == 100 * WEI


# -- claims --------------------------------------------------------------------------------------


def test_claim_by_anyone_pays_the_account(deploy_pool, roles):
    d = deploy_pool()
    c, tree, _ = _one_round(d, roles, amounts=(100 * WEI, 50 * WEI, 7))
    cid, pool = c.campaign_id, d.pool
    h = roles.holder_addresses
    c.wait_challenge_window()
    tx = claim(c, tree, 1, 1, sender=roles.stranger)
    assert evs(tx) == [("RoundFinalized", cid, 1),  # implicit finality on the first claim
                       ("Claimed", cid, 1, h[1], 1, h[1], 50 * WEI)]
    assert c.token.balance_of(h[1]) == 50 * WEI
    assert c.token.balance_of(address_of(roles.stranger)) == 0
    assert pool.is_claimed(cid, 1, 1) and not pool.is_claimed(cid, 1, 0)
    assert pool.get_round(cid, 1).remaining_wei == 100 * WEI + 7
    assert evs(claim(c, tree, 1, 2, sender=roles.holders[2])) == [
        ("Claimed", cid, 1, h[2], 2, h[2], 7)]
    assert c.token.balance_of(h[2]) == 7
    assert c.token.balance_of(pool.address) == 1_000 * WEI - 50 * WEI - 7
    assert pool.unallocated(cid) == 850 * WEI - 7  # claims do not change the allocation
    with reverts("AlreadyClaimed", cid, 1, 1):
        claim(c, tree, 1, 1)
    with reverts("AlreadyClaimed", cid, 1, 1):
        pool.claim_rounds(roles.relayer, cid, h[1], [leaf(tree, 1, 1)])
    assert c.token.balance_of(h[1]) == 50 * WEI


@pytest.mark.parametrize("field", ["amount", "account", "index"])
def test_claim_invalid_proof(deploy_pool, roles, field):
    d = deploy_pool()
    c, tree, _ = _one_round(d, roles, amounts=(100 * WEI, 50 * WEI))
    c.wait_challenge_window()
    index, account, amount = tree.entry(0)
    if field == "amount":
        amount += 1
    elif field == "account":
        account = address_of(roles.stranger)
    else:
        index = 1
    with reverts("InvalidProof", c.campaign_id, 1, index, account, amount):
        d.pool.claim(roles.relayer, c.campaign_id, 1, index, account, amount, tree.proof(0))
    assert not d.pool.is_claimed(c.campaign_id, 1, index)
    assert c.token.balance_of(d.pool.address) == 1_000 * WEI


def test_holder_cap_exceeded(deploy_pool, roles):
    d = deploy_pool()
    c, tree, _ = _one_round(d, roles, amounts=(30 * WEI + 1, 30 * WEI), holder_cap_wei=30 * WEI)
    c.wait_challenge_window()
    with reverts("HolderCapExceeded", c.campaign_id, 1, tree.entry(0)[1], 0, 30 * WEI + 1,
                 30 * WEI):
        claim(c, tree, 1, 0)
    claim(c, tree, 1, 1)  # exactly the cap
    assert c.token.balance_of(tree.entry(1)[1]) == 30 * WEI
    assert not d.pool.is_claimed(c.campaign_id, 1, 0)


def test_round_over_claimed_when_signed_total_below_tree_sum(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 1_000 * WEI)
    h = roles.holder_addresses
    tree = payout_tree(h[:2], [300 * WEI, 200 * WEI])  # sums to 500
    allocation = c.allocation(1, tree, total_wei=400 * WEI)  # signed total below the sum
    d.pool.post_round(roles.relayer, allocation, c.sign(allocation))
    assert d.pool.unallocated(c.campaign_id) == 600 * WEI
    c.wait_challenge_window()
    claim(c, tree, 1, 0)
    with reverts("RoundOverClaimed", c.campaign_id, 1, 200 * WEI, 100 * WEI):
        claim(c, tree, 1, 1)
    r = d.pool.get_round(c.campaign_id, 1)
    assert (r.remaining_wei, r.claimed_wei) == (100 * WEI, 300 * WEI)
    assert c.token.balance_of(d.pool.address) == 700 * WEI
    assert c.token.balance_of(h[1]) == 0


def test_claim_rounds_pays_three_rounds_in_one_transfer(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 1_000 * WEI)
    h = roles.holder_addresses
    cid, pool = c.campaign_id, d.pool
    trees = [payout_tree(h[:2], [10 * WEI, 1 * WEI]),
             payout_tree([h[1], h[0]], [2 * WEI, 20 * WEI + 3]),
             payout_tree([h[2], h[3], h[0]], [3 * WEI, 4 * WEI, 30 * WEI])]
    for r, tree in enumerate(trees, start=1):
        c.post(r, tree)
    c.wait_challenge_window()
    leaves = [leaf(trees[0], 1, 0), leaf(trees[1], 2, 1), leaf(trees[2], 3, 2)]
    total = 60 * WEI + 3
    tx = pool.claim_rounds(roles.relayer, cid, h[0], leaves)
    assert [e for e in evs(tx) if e[0] == "Claimed"] == [
        ("Claimed", cid, 1, h[0], 0, h[0], 10 * WEI),
        ("Claimed", cid, 2, h[0], 1, h[0], 20 * WEI + 3),
        ("Claimed", cid, 3, h[0], 2, h[0], 30 * WEI)]
    assert [e for e in evs(tx) if e[0] == "RoundFinalized"] == [
        ("RoundFinalized", cid, r) for r in (1, 2, 3)]
    receipt = chain.w3.eth.get_transaction_receipt(tx.tx_hash)
    transfers = c.token.contract.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert [(t["args"]["from"], t["args"]["to"], t["args"]["value"]) for t in transfers] == [
        (pool.address, h[0], total)]
    assert c.token.balance_of(h[0]) == total
    assert c.token.balance_of(pool.address) == 1_000 * WEI - total
    assert [pool.get_round(cid, r).remaining_wei for r in (1, 2, 3)] == [
        1 * WEI, 2 * WEI, 7 * WEI]
    with reverts("AlreadyClaimed", cid, 2, 1):
        pool.claim_rounds(roles.relayer, cid, h[0], [leaf(trees[1], 2, 1)])
    with reverts("EmptyClaim"):
        pool.claim_rounds(roles.relayer, cid, h[1], [])
    with reverts("EmptyClaim"):
        pool.claim_rounds_to(roles.holders[1], cid, h[1], [], h[2], 0)
    # A leaf of someone else in the batch breaks the proof for `account`.
    with reverts("InvalidProof", cid, 1, 1, h[0], 1 * WEI):
        pool.claim_rounds(roles.relayer, cid, h[0], [leaf(trees[0], 1, 1)])


def _three_leaves_for(c, roles, account):
    """Post two rounds with a leaf for ``account`` each; return the leaves and their sum."""
    h = roles.holder_addresses
    t1 = payout_tree([account, h[1]], [11 * WEI, 5 * WEI])
    t2 = payout_tree([h[2], account], [6 * WEI, 22 * WEI])
    c.post(1, t1)
    c.post(2, t2)
    c.wait_challenge_window()
    return [leaf(t1, 1, 0), leaf(t2, 2, 1)], 33 * WEI


def test_claim_rounds_to_with_eoa_signature(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 1_000 * WEI)
    holder_key, holder = roles.holders[0], roles.holder_addresses[0]
    leaves, total = _three_leaves_for(c, roles, holder)
    recipient = Account.create().address
    deadline = chain.block_timestamp() + HOUR
    sig = sign_recipient(holder_key, chain.chain_id, d.pool.address, c.campaign_id, recipient,
                         0, deadline)
    tx = d.pool.claim_rounds_to(roles.relayer, c.campaign_id, holder, leaves, recipient,
                                deadline, sig)
    assert d.pool.recipient_nonce(holder) == 1  # used
    assert [e for e in evs(tx) if e[0] == "Claimed"] == [
        ("Claimed", c.campaign_id, 1, holder, 0, recipient, 11 * WEI),
        ("Claimed", c.campaign_id, 2, holder, 1, recipient, 22 * WEI)]
    assert c.token.balance_of(recipient) == total
    assert c.token.balance_of(holder) == 0
    assert c.token.balance_of(d.pool.address) == 1_000 * WEI - total


def test_claim_rounds_to_by_the_holder_itself_needs_no_signature(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 1_000 * WEI)
    holder_key, holder = roles.holders[0], roles.holder_addresses[0]
    leaves, total = _three_leaves_for(c, roles, holder)
    recipient = Account.create().address
    tx = d.pool.claim_rounds_to(holder_key, c.campaign_id, holder, leaves, recipient, 0, b"")
    assert [e[5] for e in evs(tx) if e[0] == "Claimed"] == [recipient, recipient]
    assert c.token.balance_of(recipient) == total
    assert c.token.balance_of(holder) == 0
    assert d.pool.recipient_nonce(holder) == 0  # no authorisation used
    with reverts("InvalidRecipientAuthorization", holder, ZERO_ADDRESS, 0):
        d.pool.claim_rounds_to(holder_key, c.campaign_id, holder, leaves, ZERO_ADDRESS, 0, b"")


def test_claim_rounds_to_erc1271_wallet(deploy_pool, chain, compiled, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 1_000 * WEI)
    owner_key = roles.holders[4]
    wallet = chain.deploy(compiled["MockERC1271Wallet"], address_of(owner_key),
                          sender_key=roles.deployer)
    leaves, total = _three_leaves_for(c, roles, wallet)
    recipient = Account.create().address
    deadline = chain.block_timestamp() + HOUR
    digest = recipient_digest(chain.chain_id, d.pool.address, c.campaign_id, wallet, recipient,
                              0, deadline)
    forged = Account.unsafe_sign_hash(digest, roles.stranger).signature
    with reverts("InvalidRecipientAuthorization", wallet, recipient, 0):
        d.pool.claim_rounds_to(roles.relayer, c.campaign_id, wallet, leaves, recipient, deadline,
                               forged)
    sig = Account.unsafe_sign_hash(digest, owner_key).signature
    tx = d.pool.claim_rounds_to(roles.relayer, c.campaign_id, wallet, leaves, recipient,
                                deadline, sig)
    assert [(e[3], e[5], e[6]) for e in evs(tx) if e[0] == "Claimed"] == [
        (wallet, recipient, 11 * WEI), (wallet, recipient, 22 * WEI)]
    assert c.token.balance_of(recipient) == total
    assert c.token.balance_of(wallet) == 0
    assert c.token.balance_of(address_of(owner_key)) == 0


def test_claim_rounds_to_rejects_bad_or_expired_authorisation(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 1_000 * WEI)
    cid, pool = c.campaign_id, d.pool
    holder_key, holder = roles.holders[0], roles.holder_addresses[0]
    leaves, _ = _three_leaves_for(c, roles, holder)
    recipient, other = Account.create().address, Account.create().address
    deadline = chain.block_timestamp() + HOUR
    good = sign_recipient(holder_key, chain.chain_id, pool.address, cid, recipient, 0, deadline)
    by_stranger = sign_recipient(roles.stranger, chain.chain_id, pool.address, cid, recipient,
                                 0, deadline)
    next_nonce = sign_recipient(holder_key, chain.chain_id, pool.address, cid, recipient, 1,
                                deadline)
    cases = [
        (recipient, deadline, next_nonce),  # signed for a nonce not yet reached
        (recipient, deadline, by_stranger),  # signed by someone else
        (other, deadline, good),  # signed for another recipient
        (recipient, deadline + 1, good),  # signed for another deadline
        (recipient, deadline, b""),  # no signature from a third party
        (recipient, deadline, bytes.fromhex(good[2:])[:64]),  # truncated
    ]
    for to, dl, sig in cases:
        with reverts("InvalidRecipientAuthorization", holder, to, 0):
            pool.claim_rounds_to(roles.relayer, cid, holder, leaves, to, dl, sig)
    with reverts("InvalidRecipientAuthorization", holder, ZERO_ADDRESS, 0):
        pool.claim_rounds_to(roles.relayer, cid, holder, leaves, ZERO_ADDRESS, deadline, good)
    past = chain.block_timestamp() - 1
    expired = sign_recipient(holder_key, chain.chain_id, pool.address, cid, recipient, 0, past)
    with reverts("SignatureExpired", past, now_arg(chain)):
        pool.claim_rounds_to(roles.relayer, cid, holder, leaves, recipient, past, expired)
    assert c.token.balance_of(recipient) == 0
    assert not pool.is_claimed(cid, 1, 0)
    pool.claim_rounds_to(roles.relayer, cid, holder, leaves, recipient, deadline, good)
    assert c.token.balance_of(recipient) == 33 * WEI


def test_native_eth_campaign_claims(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(None)
    c.fund(roles.sponsor_a, 10 * WEI)
    cid, pool = c.campaign_id, d.pool
    h = roles.holder_addresses
    tree = payout_tree(h[:3], [3 * WEI, 2 * WEI + 1, WEI])
    c.post(1, tree)
    c.wait_challenge_window()
    before = [chain.eth_balance(a) for a in h[:3]]
    pool_before = chain.eth_balance(pool.address)
    tx = claim(c, tree, 1, 0)
    assert ev(tx.events[-1]) == ("Claimed", cid, 1, h[0], 0, h[0], 3 * WEI)
    pool.claim_rounds(roles.relayer, cid, h[1], [leaf(tree, 1, 1)])
    recipient = Account.create().address
    deadline = chain.block_timestamp() + HOUR
    sig = sign_recipient(roles.holders[2], chain.chain_id, pool.address, cid, recipient, 0,
                         deadline)
    pool.claim_rounds_to(roles.relayer, cid, h[2], [leaf(tree, 1, 2)], recipient, deadline, sig)
    assert [chain.eth_balance(a) - b for a, b in zip(h[:3], before, strict=True)] == [
        3 * WEI, 2 * WEI + 1, 0]
    assert chain.eth_balance(recipient) == WEI
    assert chain.eth_balance(pool.address) == pool_before - 6 * WEI - 1
    assert pool.get_round(cid, 1).remaining_wei == 0


# -- expiry --------------------------------------------------------------------------------------

_SHORT = {"posting_window_s": 600, "challenge_window_s": 60, "claim_window_s": 600}


def test_reclaim_before_claim_deadline(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(**_SHORT)
    c.fund(roles.sponsor_a, 10 * WEI)
    deadline = d.pool.get_campaign(c.campaign_id).claim_deadline
    with reverts("ClaimWindowOpen", c.campaign_id, now_arg(chain), deadline):
        d.pool.reclaim(roles.sponsor_a, c.campaign_id)
    chain.increase_time(deadline - chain.block_timestamp() - 5)  # just before
    with reverts("ClaimWindowOpen", c.campaign_id, now_arg(chain, 4), deadline):
        d.pool.reclaim(roles.sponsor_a, c.campaign_id)


def test_claims_close_at_claim_deadline(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(**_SHORT)
    c.fund(roles.sponsor_a, 100 * WEI)
    cid, pool = c.campaign_id, d.pool
    h = roles.holder_addresses
    tree = payout_tree(h[:2], [10 * WEI, 20 * WEI])
    c.post(1, tree)
    c.wait_challenge_window()
    claim(c, tree, 1, 0)
    c.wait_expiry()
    deadline = pool.get_campaign(cid).claim_deadline
    with reverts("ClaimWindowClosed", cid, now_arg(chain), deadline):
        claim(c, tree, 1, 1)
    with reverts("ClaimWindowClosed", cid, now_arg(chain), deadline):
        pool.claim_rounds(roles.relayer, cid, h[1], [leaf(tree, 1, 1)])
    with reverts("ClaimWindowClosed", cid, now_arg(chain), deadline):
        pool.claim_rounds_to(roles.holders[1], cid, h[1], [leaf(tree, 1, 1)], h[2], 0)
    assert c.token.balance_of(h[1]) == 0


@pytest.mark.parametrize("token", ["TestToken", None], ids=["erc20", "eth"])
def test_pro_rata_reclaim_and_conservation(deploy_pool, chain, roles, token):
    d = deploy_pool()
    c = d.campaign(token, **_SHORT)
    cid, pool = c.campaign_id, d.pool
    a, b = address_of(roles.sponsor_a), address_of(roles.sponsor_b)
    funded = {a: 700 * WEI + 3, b: 300 * WEI + 8}
    c.fund(roles.sponsor_a, 500 * WEI)
    c.fund(roles.sponsor_b, funded[b])
    c.fund(roles.sponsor_a, 200 * WEI + 3)  # top-up
    h = roles.holder_addresses
    t1 = payout_tree(h[:3], [100 * WEI + 1, 50 * WEI + 7, 30 * WEI])
    t2 = payout_tree(h[:2], [200 * WEI, 13])
    c.post(1, t1)
    c.post(2, t2)
    c.post(3, payout_tree(h[:1], [99 * WEI]))
    pool.revoke_round(roles.guardian, cid, 3)  # revoked: counts as never allocated
    c.wait_challenge_window()
    claim(c, t1, 1, 0)
    claim(c, t1, 1, 1)
    pool.claim_rounds(roles.relayer, cid, h[1], [leaf(t2, 2, 1)])
    claimed = 100 * WEI + 1 + 50 * WEI + 7 + 13
    c.wait_expiry()
    total_funded = sum(funded.values())
    unclaimed = total_funded - claimed
    share = {s: f * unclaimed // total_funded for s, f in funded.items()}
    assert share[a] + share[b] < unclaimed  # the numbers leave dust
    pool_before = pool_holdings(c)
    assert pool_before == total_funded - claimed
    before_a = c.balance_of(a) if token else None
    tx_a = pool.reclaim(roles.sponsor_a, cid)
    assert evs(tx_a) == [("CampaignSettled", cid, unclaimed),
                         ("Reclaimed", cid, a, a, share[a])]
    assert pool_holdings(c) == pool_before - share[a]
    if token:
        assert c.balance_of(a) - before_a == share[a]
    with reverts("AlreadyReclaimed", cid, a):
        pool.reclaim(roles.sponsor_a, cid)
    with reverts("NotASponsor", cid, address_of(roles.stranger)):
        pool.reclaim(roles.stranger, cid)
    tx_b = pool.reclaim(roles.sponsor_b, cid)
    assert evs(tx_b) == [("Reclaimed", cid, b, b, share[b])]
    assert len(pool.events("CampaignSettled", campaignId=cid)) == 1
    info = pool.get_campaign(cid)
    assert (info.settled, info.unclaimed_at_expiry_wei) == (True, unclaimed)
    assert pool.has_reclaimed(cid, a) and pool.has_reclaimed(cid, b)
    reclaimed = sum(e.amount_wei for e in pool.events("Reclaimed", campaignId=cid))
    claimed_events = sum(e.amount_wei for e in pool.events("Claimed", campaignId=cid))
    assert claimed_events == claimed
    dust = pool_holdings(c)
    assert claimed + reclaimed + dust == total_funded
    assert 0 < dust <= len(funded)


# -- pause ---------------------------------------------------------------------------------------


def test_pause_stops_create_fund_and_post(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    c.fund(roles.sponsor_a, 100 * WEI)
    pool = d.pool
    assert pool.has_role("PAUSER_ROLE", address_of(roles.deployer))
    assert [e[0] for e in evs(pool.pause(roles.deployer))] == []  # Paused is not a pool event
    assert pool.paused()
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    allocation = c.allocation(1, tree)
    with reverts("EnforcedPause"):
        pool.create_campaign(roles.deployer, base_params(chain, roles))
    c.token.mint(roles.sponsor_a, address_of(roles.sponsor_a), WEI)
    with reverts("EnforcedPause"):
        pool.fund(roles.sponsor_a, c.campaign_id, WEI)
    with reverts("EnforcedPause"):
        pool.post_round(roles.relayer, allocation, c.sign(allocation))
    with reverts("EnforcedPause"):
        pool.pause(roles.deployer)
    pool.unpause(roles.deployer)
    assert not pool.paused()
    with reverts("ExpectedPause"):
        pool.unpause(roles.deployer)
    pool.post_round(roles.relayer, allocation, c.sign(allocation))
    pool.fund(roles.sponsor_a, c.campaign_id, WEI)
    assert pool.create_campaign(roles.deployer, base_params(chain, roles))[0] == 2


def test_pause_keeps_claims_finality_revocation_reclaim_and_rotation_open(deploy_pool, chain,
                                                                          roles):
    d = deploy_pool()
    c = d.campaign(**_SHORT)
    c.fund(roles.sponsor_a, 100 * WEI)
    cid, pool = c.campaign_id, d.pool
    h = roles.holder_addresses
    t1 = payout_tree(h[:2], [10 * WEI, 20 * WEI])
    c.post(1, t1)
    c.wait_challenge_window()
    c.post(2, payout_tree(h[:1], [5 * WEI]))
    pool.pause(roles.deployer)
    assert evs(pool.finalize_round(roles.relayer, cid, 1)) == [("RoundFinalized", cid, 1)]
    claim(c, t1, 1, 0)
    pool.claim_rounds(roles.relayer, cid, h[1], [leaf(t1, 1, 1)])
    assert [c.token.balance_of(x) for x in h[:2]] == [10 * WEI, 20 * WEI]
    assert evs(pool.revoke_round(roles.guardian, cid, 2)) == [
        ("RoundRevoked", cid, 2, address_of(roles.guardian))]
    new_signers = [address_of(k) for k in roles.signers[1:]]
    assert evs(rotate(pool, chain, roles.deployer, cid, new_signers, 2)) == [
        ("SignerSetRotated", cid, 2, tuple(new_signers), 2)]
    c.wait_expiry()
    assert pool.paused()
    tx = pool.reclaim(roles.sponsor_a, cid)
    sponsor = address_of(roles.sponsor_a)
    assert evs(tx) == [("CampaignSettled", cid, 70 * WEI),
                       ("Reclaimed", cid, sponsor, sponsor, 70 * WEI)]
    assert c.token.balance_of(address_of(roles.sponsor_a)) == 70 * WEI
    assert c.token.balance_of(pool.address) == 0


def test_pause_requires_pauser_role(deploy_pool, roles):
    pool = deploy_pool().pool
    stranger = address_of(roles.stranger)
    assert not pool.has_role("PAUSER_ROLE", stranger)
    with reverts("AccessControlUnauthorizedAccount", stranger, PAUSER_ROLE):
        pool.pause(roles.stranger)
    pool.pause(roles.deployer)
    with reverts("AccessControlUnauthorizedAccount", stranger, PAUSER_ROLE):
        pool.unpause(roles.stranger)
    assert pool.paused()


# -- signer rotation -----------------------------------------------------------------------------


def test_rotate_signers_only_by_campaign_admin(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(creator_key=roles.sponsor_b)
    new = [address_of(roles.signers[2])]
    for key in (roles.stranger, roles.deployer, roles.guardian):  # pool admin is not enough
        with reverts("NotCampaignAdmin", address_of(key), address_of(roles.sponsor_b)):
            d.pool.propose_signer_rotation(key, c.campaign_id, new, 1)
    rotate(d.pool, chain, roles.sponsor_b, c.campaign_id, new, 1)
    assert d.pool.get_campaign(c.campaign_id).signer_set_version == 2


def test_rotation_bumps_version_and_kills_old_signatures(deploy_pool, chain, roles):
    d = deploy_pool()
    s = roles.signers
    c = d.campaign(signers=s[:2], threshold=2)
    c.fund(roles.sponsor_a, 100 * WEI)
    cid, pool = c.campaign_id, d.pool
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    # Signatures valid for a day: they outlive the rotation delay (an hour), so the refusal
    # below is the stale signer set, not an expired deadline.
    old_allocation = c.allocation(1, tree, deadline=chain.block_timestamp() + 86400)
    old_sigs = c.sign(old_allocation)
    new = [address_of(s[1]), address_of(s[2])]
    tx = rotate(pool, chain, roles.deployer, cid, new, 1)
    assert evs(tx) == [("SignerSetRotated", cid, 2, tuple(new), 1)]
    info = pool.get_campaign(cid)
    assert (info.signer_set_version, info.threshold) == (2, 1)
    assert pool.get_signers(cid) == new
    assert pool.is_signer(cid, 1, address_of(s[0])) and not pool.is_signer(cid, 2, address_of(s[0]))
    assert pool.is_signer(cid, 2, address_of(s[2])) and not pool.is_signer(cid, 1, address_of(s[2]))
    with reverts("StaleSignerSet", 1, 2):
        pool.post_round(roles.relayer, old_allocation, old_sigs)
    c.signer_set_version = 2
    allocation = c.allocation(1, tree)
    with reverts("UnknownSigner", 0, address_of(s[0]), 2):  # removed signer, new version
        pool.post_round(roles.relayer, allocation, c.sign(allocation, [s[0]]))
    tx = pool.post_round(roles.relayer, allocation, c.sign(allocation, [s[2]]))
    assert ev(tx.events[0])[:3] == ("RoundPosted", cid, 1)
    assert tx.events[0].signer_set_version == 2
    # Invalid rotations are refused when proposed.
    with reverts("InvalidSignerSet", 1, new[0]):
        pool.propose_signer_rotation(roles.deployer, cid, [new[0], new[0]], 1)
    with reverts("InvalidCampaignParam", "threshold", 3):
        pool.propose_signer_rotation(roles.deployer, cid, new, 3)
    with reverts("InvalidCampaignParam", "signers", 0):
        pool.propose_signer_rotation(roles.deployer, cid, [], 1)
    with reverts("InvalidSignerSet", 0, ZERO_ADDRESS):
        pool.propose_signer_rotation(roles.deployer, cid, [ZERO_ADDRESS], 1)
    assert pool.get_campaign(cid).signer_set_version == 2


# -- isolation between campaigns -----------------------------------------------------------------


def test_two_campaigns_sharing_a_token_are_isolated(deploy_pool, roles):
    d = deploy_pool()
    ca = d.campaign()
    cb = d.campaign(ca.token.address, signers=roles.signers[1:2])
    assert d.pool.get_campaign(cb.campaign_id).token == ca.token.address
    ca.fund(roles.sponsor_a, 100 * WEI)
    cb.fund(roles.sponsor_b, 200 * WEI)
    pool, token = d.pool, ca.token
    h = roles.holder_addresses
    ta = payout_tree(h[:2], [60 * WEI, 40 * WEI])
    ca.post(1, ta)
    # Campaign A cannot reserve B's money even though the pool holds it.
    with reverts("InsufficientUnallocated", WEI, 0):
        ca.post(2, payout_tree(h[:1], [WEI]))
    tb = payout_tree(h[:2], [70 * WEI, 30 * WEI])
    cb.post(1, tb)
    ca.wait_challenge_window()
    claim(ca, ta, 1, 0)
    pool.claim_rounds(d.roles.relayer, ca.campaign_id, h[1], [leaf(ta, 1, 1)])
    # A's proofs do not open B's round with the same id.
    with reverts("InvalidProof", cb.campaign_id, 1, 0, h[0], 60 * WEI):
        claim(cb, ta, 1, 0)
    assert pool.unallocated(cb.campaign_id) == 100 * WEI
    rb = pool.get_round(cb.campaign_id, 1)
    assert (rb.remaining_wei, rb.total_wei) == (100 * WEI, 100 * WEI)
    assert pool.get_round(ca.campaign_id, 1).remaining_wei == 0
    assert token.balance_of(pool.address) == 200 * WEI
    assert [token.balance_of(x) for x in h[:2]] == [60 * WEI, 40 * WEI]
    claim(cb, tb, 1, 1)
    assert token.balance_of(h[1]) == 70 * WEI
    assert token.balance_of(pool.address) == 170 * WEI
    assert pool.get_campaign(ca.campaign_id).total_funded_wei == 100 * WEI
    assert pool.get_campaign(cb.campaign_id).total_funded_wei == 200 * WEI
