"""CompensationPool under brownie (anvil): campaign, funding, k-of-n signed rounds, challenge
window (any pending round revocable), Merkle claims, pro-rata reclaim after expiry (also to
another address). Run with `brownie test` (repository root).
"""

import brownie
import pytest
from conftest import (
    CHALLENGE_WINDOW,
    UNIT,
    Allocation,
    MerkleTree,
    eip712_domain,
    leaf_hash,
    round_typed_data,
    sign_round,
)
from eth_account.messages import encode_typed_data
from eth_utils import keccak

PENDING, FINALIZED, REVOKED = 1, 2, 3


def reverts_with(error_name):
    """brownie.reverts matching a custom error by name (brownie decodes it as "Name: args")."""
    return brownie.reverts(revert_pattern=rf"{error_name}(:.*)?")


@pytest.fixture
def round_one(pool, holders, signers, funded_campaign, allocation, relayer):
    """Round 1 of the funded campaign (30 + 20 + 10 to three holders), posted with 2 of 3 signatures."""
    amounts = (30 * UNIT, 20 * UNIT, 10 * UNIT)
    tree = MerkleTree(
        [(i, h.address, amount) for i, (h, amount) in enumerate(zip(holders, amounts, strict=True))]
    )
    alloc = allocation(funded_campaign, 1, tree)
    sigs = sign_round(pool, alloc, signers.keys[:2])
    tx = pool.postRound(alloc.as_tuple(), sigs, {"from": relayer})
    return funded_campaign, tree, alloc, tx


def test_create_campaign(pool, admin, guardian, signers, token, create_campaign, campaign_params):
    cid = create_campaign()
    assert cid == 1 and pool.campaignCount() == 1
    c = pool.getCampaign(cid)
    params = campaign_params()
    assert c["token"] == token and c["admin"] == admin and c["guardian"] == guardian
    assert c["threshold"] == 2 and c["signerSetVersion"] == 1 and c["nextRoundId"] == 1
    assert c["claimDeadline"] == c["postingDeadline"] + CHALLENGE_WINDOW + params["claimWindow"]
    assert list(pool.getSigners(cid)) == signers.addresses
    assert all(pool.isSigner(cid, 1, s) for s in signers.addresses)
    assert create_campaign(threshold=1) == 2


def test_create_campaign_rejects_bad_params(create_campaign, chain):
    with reverts_with("InvalidCampaignParam"):
        create_campaign(threshold=4)
    with reverts_with("InvalidCampaignParam"):
        create_campaign(postingDeadline=chain.time() - 1)
    with reverts_with("InvalidCampaignParam"):
        create_campaign(holderCap=101 * UNIT)


def test_fund_credits_sponsors(pool, token, sponsors, funded_campaign):
    c = pool.getCampaign(funded_campaign)
    assert c["totalFunded"] == 200 * UNIT and pool.unallocated(funded_campaign) == 200 * UNIT
    assert pool.fundedBy(funded_campaign, sponsors[0]) == 120 * UNIT
    assert pool.fundedBy(funded_campaign, sponsors[1]) == 80 * UNIT
    assert token.balanceOf(pool) == 200 * UNIT
    with reverts_with("ZeroAmount"):
        pool.fund(funded_campaign, 0, {"from": sponsors[0]})


def test_round_digest_matches_eth_account(pool, funded_campaign, allocation):
    tree = MerkleTree([(0, "0x" + "ab" * 20, 5 * UNIT)])
    alloc = allocation(funded_campaign, 1, tree)
    signable = encode_typed_data(full_message=round_typed_data(pool, alloc))
    expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert bytes(pool.roundDigest(alloc.as_tuple())) == expected
    domain = eip712_domain(pool)
    assert (domain["name"], domain["version"]) == ("CompensationPool", "2")
    assert domain["chainId"] == brownie.chain.id and domain["verifyingContract"] == pool.address


def test_round_digest_matches_offchain_pinned_value(CompensationPool, admin):
    """offchain/oracle/signing.py pins the digest of a fixed allocation for the pool that anvil's
    key #0 deploys first (nonce 0) on chain 31337; the contract must compute the same."""
    if admin.nonce != 0 or brownie.chain.id != 31337:
        pytest.skip("needs a fresh anvil (deployer nonce 0, chain id 31337)")
    pool = CompensationPool.deploy(admin, {"from": admin})
    assert pool.address == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    alloc = Allocation(1, 1, b"\x11" * 32, UNIT, b"\x22" * 32, b"\x33" * 32, b"\x44" * 32, 1, 2**32)
    digest = bytes(pool.roundDigest(alloc.as_tuple())).hex()
    assert digest == "fede70d497fe3d8aed5aef62f92d354b8f62caf819df16615d81024b786a30c1"


def test_two_leaf_root_is_hash_of_sorted_leaves(holders):
    leaves = [(0, holders[0].address, 3 * UNIT), (1, holders[1].address, 4 * UNIT)]
    a, b = leaf_hash(*leaves[0]), leaf_hash(*leaves[1])
    tree = MerkleTree(leaves)
    assert tree.root == keccak(min(a, b) + max(a, b))
    assert tree.proof(0) == [b] and tree.proof(1) == [a]


def test_post_round_challenge_claim(pool, token, holders, relayer, chain, round_one):
    cid, tree, alloc, tx = round_one
    assert tx.events["RoundPosted"]["total"] == 60 * UNIT
    r = pool.getRound(cid, 1)
    assert r["status"] == PENDING and r["remaining"] == 60 * UNIT
    assert pool.unallocated(cid) == 140 * UNIT

    # Not claimable during the challenge window.
    with reverts_with("ChallengeWindowOpen"):
        pool.claim(cid, 1, 0, holders[0], 30 * UNIT, tree.proof(0), {"from": relayer})
    with reverts_with("ChallengeWindowOpen"):
        pool.finalizeRound(cid, 1, {"from": relayer})

    chain.sleep(CHALLENGE_WINDOW + 1)
    chain.mine()
    assert pool.getRound(cid, 1)["status"] == FINALIZED  # the view reports it final already
    fin = pool.finalizeRound(cid, 1, {"from": relayer})
    assert "RoundFinalized" in fin.events

    # Anyone relays; the tokens go to the leaf's account.
    for i, (index, account, amount) in enumerate(tree.leaves):
        claim = pool.claim(cid, 1, index, account, amount, tree.proof(i), {"from": relayer})
        assert claim.events["Claimed"]["recipient"] == account
        assert token.balanceOf(account) == amount
        assert pool.isClaimed(cid, 1, index)
    assert pool.getRound(cid, 1)["remaining"] == 0
    assert token.balanceOf(relayer) == 0

    with reverts_with("AlreadyClaimed"):
        pool.claim(cid, 1, 0, holders[0], 30 * UNIT, tree.proof(0), {"from": relayer})


def test_claim_rejects_wrong_leaf(pool, holders, relayer, chain, round_one):
    cid, tree, _alloc, _tx = round_one
    chain.sleep(CHALLENGE_WINDOW + 1)
    with reverts_with("InvalidProof"):  # inflated amount
        pool.claim(cid, 1, 0, holders[0], 31 * UNIT, tree.proof(0), {"from": relayer})
    with reverts_with("InvalidProof"):  # someone else's proof
        pool.claim(cid, 1, 0, holders[0], 30 * UNIT, tree.proof(1), {"from": relayer})
    with reverts_with("InvalidProof"):  # another account
        pool.claim(cid, 1, 0, relayer, 30 * UNIT, tree.proof(0), {"from": relayer})


def test_post_round_needs_k_distinct_ordered_signers(
    pool, signers, relayer, funded_campaign, allocation
):
    tree = MerkleTree([(0, relayer.address, 5 * UNIT)])
    alloc = allocation(funded_campaign, 1, tree)
    two = sign_round(pool, alloc, signers.keys[:2])
    with reverts_with("TooFewSignatures"):
        pool.postRound(alloc.as_tuple(), two[:1], {"from": relayer})
    with reverts_with("SignersNotAscending"):
        pool.postRound(alloc.as_tuple(), two[::-1], {"from": relayer})
    with reverts_with("DuplicateSigner"):
        pool.postRound(alloc.as_tuple(), [two[0], two[0]], {"from": relayer})
    outsider = "0x" + keccak(text="not an oracle").hex().removeprefix("0x")
    with reverts_with("UnknownSigner"):
        pool.postRound(
            alloc.as_tuple(),
            sign_round(pool, alloc, [signers.keys[0], outsider]),
            {"from": relayer},
        )
    # Signatures over other values do not verify for this allocation.
    tampered = alloc.replace(total=alloc.total + 1)
    with reverts_with("UnknownSigner"):
        pool.postRound(tampered.as_tuple(), two, {"from": relayer})
    with reverts_with("UnexpectedRoundId"):
        later = alloc.replace(roundId=2)
        pool.postRound(
            later.as_tuple(), sign_round(pool, later, signers.keys[:2]), {"from": relayer}
        )
    with reverts_with("RoundCapExceeded"):
        big = allocation(funded_campaign, 1, MerkleTree([(0, relayer.address, 101 * UNIT)]))
        pool.postRound(big.as_tuple(), sign_round(pool, big, signers.keys[:2]), {"from": relayer})
    # Any two of the three signers suffice, here the last two.
    tx = pool.postRound(
        alloc.as_tuple(), sign_round(pool, alloc, signers.keys[1:]), {"from": relayer}
    )
    assert tx.events["RoundPosted"]["roundId"] == 1


def test_guardian_revokes_pending_round(
    pool, guardian, relayer, signers, chain, round_one, allocation
):
    cid, tree, revoked, _tx = round_one
    with reverts_with("NotGuardian"):
        pool.revokeRound(cid, 1, {"from": relayer})
    pool.revokeRound(cid, 1, {"from": guardian})
    assert pool.getRound(cid, 1)["status"] == REVOKED
    assert pool.unallocated(cid) == 200 * UNIT
    chain.sleep(CHALLENGE_WINDOW + 1)
    with reverts_with("WrongRoundStatus"):
        pool.claim(
            cid, 1, 0, tree.leaves[0][1], tree.leaves[0][2], tree.proof(0), {"from": relayer}
        )
    # The revoked allocation's signatures cannot be relayed again, not even re-signed ...
    with reverts_with("RevokedAllocation"):
        pool.postRound(
            revoked.as_tuple(), sign_round(pool, revoked, signers.keys[:2]), {"from": relayer}
        )
    # ... but the round id may be posted again with another Merkle root.
    fixed = MerkleTree([(0, tree.leaves[0][1], tree.leaves[0][2])])
    again = allocation(cid, 1, fixed)
    pool.postRound(again.as_tuple(), sign_round(pool, again, signers.keys[:2]), {"from": relayer})
    assert pool.getRound(cid, 1)["status"] == PENDING
    assert bytes(pool.getRound(cid, 1)["merkleRoot"]) == fixed.root


def test_guardian_revokes_a_round_below_the_latest(
    pool, guardian, relayer, signers, round_one, allocation
):
    """A later round posted in front of the revoke does not save round 1; its id becomes a gap
    that may be posted again (issue 13, item 17)."""
    cid, tree, _alloc, _tx = round_one
    front = allocation(cid, 2, MerkleTree([(0, relayer.address, 1)]))
    pool.postRound(front.as_tuple(), sign_round(pool, front, signers.keys[:2]), {"from": relayer})
    pool.revokeRound(cid, 1, {"from": guardian})
    assert pool.getRound(cid, 1)["status"] == REVOKED
    assert pool.getRound(cid, 2)["status"] == PENDING
    assert pool.getCampaign(cid)["nextRoundId"] == 3
    assert pool.unallocated(cid) == 200 * UNIT - 1
    fixed = MerkleTree([(0, tree.leaves[0][1], tree.leaves[0][2])])
    again = allocation(cid, 1, fixed)
    pool.postRound(again.as_tuple(), sign_round(pool, again, signers.keys[:2]), {"from": relayer})
    assert pool.getRound(cid, 1)["status"] == PENDING
    assert pool.getCampaign(cid)["nextRoundId"] == 3


def test_reclaim_after_expiry_is_pro_rata(
    pool, token, sponsors, holders, relayer, chain, round_one
):
    cid, tree, _alloc, _tx = round_one
    with reverts_with("ClaimWindowOpen"):
        pool.reclaim(cid, {"from": sponsors[0]})
    chain.sleep(CHALLENGE_WINDOW + 1)
    # Only holder 0 (30) claims; holders 1 and 2 (20 + 10) let the window pass.
    pool.claim(cid, 1, 0, holders[0], 30 * UNIT, tree.proof(0), {"from": relayer})

    claim_deadline = pool.getCampaign(cid)["claimDeadline"]
    chain.sleep(claim_deadline - chain.time() + 1)
    chain.mine()
    with reverts_with("ClaimWindowClosed"):
        pool.claim(cid, 1, 1, holders[1], 20 * UNIT, tree.proof(1), {"from": relayer})
    with reverts_with("NotASponsor"):
        pool.reclaim(cid, {"from": relayer})

    before = [token.balanceOf(s) for s in sponsors]
    tx = pool.reclaim(cid, {"from": sponsors[0]})
    assert tx.events["CampaignSettled"]["unclaimed"] == 170 * UNIT
    pool.reclaim(cid, {"from": sponsors[1]})
    got = [token.balanceOf(s) - b for s, b in zip(sponsors, before, strict=True)]
    assert got == [170 * UNIT * 120 // 200, 170 * UNIT * 80 // 200]  # 102 and 68
    assert token.balanceOf(pool) == 0
    with reverts_with("AlreadyReclaimed"):
        pool.reclaim(cid, {"from": sponsors[0]})


def test_reclaim_to_pays_the_named_recipient(pool, token, sponsors, relayer, chain, round_one):
    """`reclaimTo` pays the sponsor's share to another address (issue 13, item 21)."""
    cid, _tree, _alloc, _tx = round_one
    chain.sleep(pool.getCampaign(cid)["claimDeadline"] - chain.time() + 1)
    chain.mine()
    before, sponsor_before = token.balanceOf(relayer), token.balanceOf(sponsors[1])
    tx = pool.reclaimTo(cid, relayer, {"from": sponsors[1]})
    assert tx.events["Reclaimed"]["recipient"] == relayer
    assert token.balanceOf(relayer) - before == 200 * UNIT * 80 // 200  # nothing was claimed
    assert token.balanceOf(sponsors[1]) == sponsor_before
    with reverts_with("AlreadyReclaimed"):
        pool.reclaim(cid, {"from": sponsors[1]})


def test_native_eth_campaign(
    pool, sponsors, holders, relayer, signers, chain, create_campaign, allocation
):
    cid = create_campaign(token="0x" + "00" * 20)
    with reverts_with("WrongNativeValue"):
        pool.fund(cid, UNIT, {"from": sponsors[0], "value": UNIT - 1})
    pool.fund(cid, 2 * UNIT, {"from": sponsors[0], "value": 2 * UNIT})
    tree = MerkleTree([(0, holders[2].address, UNIT), (1, holders[1].address, UNIT // 2)])
    alloc = allocation(cid, 1, tree)
    pool.postRound(alloc.as_tuple(), sign_round(pool, alloc, signers.keys[:2]), {"from": relayer})
    chain.sleep(CHALLENGE_WINDOW + 1)
    before = holders[2].balance()
    pool.claim(cid, 1, 0, holders[2], UNIT, tree.proof(0), {"from": relayer})
    assert holders[2].balance() - before == UNIT
    assert pool.balance() == 2 * UNIT - UNIT


def test_pause_stops_funding_not_claims(
    pool, admin, token, sponsors, holders, relayer, chain, round_one
):
    cid, tree, _alloc, _tx = round_one
    pool.pause({"from": admin})
    token.approve(pool, UNIT, {"from": sponsors[0]})
    with reverts_with("EnforcedPause"):
        pool.fund(cid, UNIT, {"from": sponsors[0]})
    chain.sleep(CHALLENGE_WINDOW + 1)
    pool.claim(cid, 1, 0, holders[0], 30 * UNIT, tree.proof(0), {"from": relayer})
    assert token.balanceOf(holders[0]) == 30 * UNIT


def test_round_cannot_allocate_more_than_funded(
    pool, token, sponsors, relayer, signers, create_campaign, allocation
):
    cid = create_campaign()
    token.approve(pool, 10 * UNIT, {"from": sponsors[0]})
    pool.fund(cid, 10 * UNIT, {"from": sponsors[0]})
    alloc = allocation(cid, 1, MerkleTree([(0, relayer.address, 11 * UNIT)]))
    with reverts_with("InsufficientUnallocated"):
        pool.postRound(
            alloc.as_tuple(), sign_round(pool, alloc, signers.keys[:2]), {"from": relayer}
        )
