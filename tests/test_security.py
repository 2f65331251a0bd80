"""CompensationPool security suite against a real anvil node: one test per attack route.

Signature replay (another chain, another contract, another campaign, an earlier round, an old
signer set, a revoked allocation), malleable and malformed signatures, duplicated / unsorted /
too few / foreign signers, replayed recipient authorisations, and re-entrancy through a malicious
ERC-20 (``ReentrantToken``) and a malicious ETH receiver (``ReentrantReceiver``). Each test asserts
the decoded custom error (name and arguments) and that no money moved that should not have.
"""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from offchain.chain import address_of
from offchain.oracle.signing import recover_round_signer, round_digest, sign_recipient

pytest.register_assert_rewrite("tests.chain_fixtures")  # imported here before pytest_plugins
from tests.chain_fixtures import (  # noqa: E402
    HOUR,
    WEI,
    leaf,
    payout_tree,
    reverts,
)

pytest_plugins = ["tests.chain_fixtures"]

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
REENTRANT_CALL = keccak(text="ReentrancyGuardReentrantCall()")[:4]
"""Selector of OpenZeppelin's ``ReentrancyGuardReentrantCall()`` error."""
ECRECOVER = "0x0000000000000000000000000000000000000001"
SHORT = {"posting_window_s": 600, "challenge_window_s": 60, "claim_window_s": 600}


# -- helpers -------------------------------------------------------------------------------------





def proof_bytes(tree, index: int) -> list[bytes]:
    return [bytes.fromhex(p[2:]) for p in tree.proof(index)]


def split(sig: str) -> tuple[bytes, int, int]:
    raw = bytes.fromhex(sig[2:])
    return raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]


def funded_campaign(d, roles, *, token="TestToken", amount=1_000 * WEI, **kwargs):
    c = d.campaign(token, **kwargs)
    c.fund(roles.sponsor_a, amount)
    return c


def unposted(pool, c) -> None:
    """Nothing was posted: the campaign still expects round 1 and reserves nothing."""
    info = pool.get_campaign(c.campaign_id)
    assert (info.next_round_id, info.total_allocated_wei) == (1, 0)


# -- signature replay ----------------------------------------------------------------------------


def test_replay_from_another_chain_id(deploy_pool, chain, roles):
    d = deploy_pool()
    c = funded_campaign(d, roles)
    tree = payout_tree(roles.holder_addresses[:2], [WEI, 2 * WEI])
    allocation = c.allocation(1, tree)
    foreign = c.sign(allocation, chain_id=chain.chain_id + 1)
    # On this chain the signature recovers to some unrelated address.
    recovered = recover_round_signer(foreign[0], chain.chain_id, d.pool.address, allocation)
    assert recovered != address_of(roles.signers[0])
    with reverts("UnknownSigner", 0, recovered, 1):
        d.pool.post_round(roles.relayer, allocation, foreign)
    unposted(d.pool, c)
    d.pool.post_round(roles.relayer, allocation, c.sign(allocation))  # the right chain works


def test_replay_from_another_contract(deploy_pool, chain, roles):
    d1, d2 = deploy_pool(), deploy_pool()
    c1, c2 = funded_campaign(d1, roles), funded_campaign(d2, roles)
    assert c1.campaign_id == c2.campaign_id == 1
    tree = payout_tree(roles.holder_addresses[:2], [WEI, 2 * WEI])
    allocation = c2.allocation(1, tree)
    for_pool2 = c2.sign(allocation)
    recovered = recover_round_signer(for_pool2[0], chain.chain_id, d1.pool.address, allocation)
    with reverts("UnknownSigner", 0, recovered, 1):
        d1.pool.post_round(roles.relayer, allocation, for_pool2)
    unposted(d1.pool, c1)
    d2.pool.post_round(roles.relayer, allocation, for_pool2)  # valid where it was meant for
    assert d2.pool.next_round_id(c2.campaign_id) == 2


def test_replay_on_another_campaign(deploy_pool, chain, roles):
    d = deploy_pool()
    ca = funded_campaign(d, roles)
    cb = funded_campaign(d, roles)  # same signer set, same funds, same round expected
    tree = payout_tree(roles.holder_addresses[:2], [WEI, 2 * WEI])
    allocation_a = ca.allocation(1, tree)
    sigs_a = ca.sign(allocation_a)
    replay = dataclasses.replace(allocation_a, campaign_id=cb.campaign_id)  # only the id differs
    recovered = recover_round_signer(sigs_a[0], chain.chain_id, d.pool.address, replay)
    assert recovered != address_of(roles.signers[0])
    with reverts("UnknownSigner", 0, recovered, 1):
        d.pool.post_round(roles.relayer, replay, sigs_a)
    d.pool.post_round(roles.relayer, allocation_a, sigs_a)
    with reverts("UnknownSigner", 0, recovered, 1):  # still refused after A used it
        d.pool.post_round(roles.relayer, replay, sigs_a)
    unposted(d.pool, cb)
    assert d.pool.unallocated(cb.campaign_id) == 1_000 * WEI


def test_replay_of_an_earlier_round(deploy_pool, roles):
    d = deploy_pool()
    c = funded_campaign(d, roles)
    tree = payout_tree(roles.holder_addresses[:2], [WEI, 2 * WEI])
    allocation1 = c.allocation(1, tree)
    sigs1 = c.sign(allocation1)
    d.pool.post_round(roles.relayer, allocation1, sigs1)
    with reverts("UnexpectedRoundId", 1, 2):
        d.pool.post_round(roles.relayer, allocation1, sigs1)
    c.post(2, tree)
    with reverts("UnexpectedRoundId", 1, 3):
        d.pool.post_round(roles.relayer, allocation1, sigs1)
    assert d.pool.get_campaign(c.campaign_id).total_allocated_wei == 6 * WEI


def test_replay_of_a_revoked_allocation(deploy_pool, roles):
    d = deploy_pool()
    c = funded_campaign(d, roles)
    tree = payout_tree(roles.holder_addresses[:2], [WEI, 2 * WEI])
    allocation = c.allocation(1, tree)
    sigs = c.sign(allocation)
    d.pool.post_round(roles.relayer, allocation, sigs)
    d.pool.revoke_round(roles.guardian, c.campaign_id, 1)
    with reverts("RevokedAllocation", c.campaign_id, 1, bytes.fromhex(tree.root[2:])):
        d.pool.post_round(roles.stranger, allocation, sigs)
    # Even freshly signed by the signers, the revoked root stays dead for this round.
    fresh = c.allocation(1, tree, deadline=allocation.deadline + 1)
    with reverts("RevokedAllocation", c.campaign_id, 1, bytes.fromhex(tree.root[2:])):
        d.pool.post_round(roles.relayer, fresh, c.sign(fresh))
    unposted(d.pool, c)
    other = payout_tree(roles.holder_addresses[:2], [WEI, WEI])
    d.pool.post_round(roles.relayer, c.allocation(1, other), c.sign(c.allocation(1, other)))


def test_replay_with_an_old_signer_set(deploy_pool, chain, roles):
    d = deploy_pool()
    c = funded_campaign(d, roles)
    tree = payout_tree(roles.holder_addresses[:2], [WEI, 2 * WEI])
    # Signatures valid for a day: they outlive the rotation delay.
    allocation = c.allocation(1, tree, deadline=chain.block_timestamp() + 86400)
    old = c.sign(allocation)
    # Rotate to the very same signer: only the version changes.
    d.pool.propose_signer_rotation(roles.deployer, c.campaign_id,
                                   [address_of(roles.signers[0])], 1)
    chain.increase_time(d.pool.rotation_delay(c.campaign_id))
    d.pool.execute_signer_rotation(roles.relayer, c.campaign_id)
    with reverts("StaleSignerSet", 1, 2):
        d.pool.post_round(roles.relayer, allocation, old)
    relabelled = dataclasses.replace(allocation, signer_set_version=2)
    recovered = recover_round_signer(old[0], chain.chain_id, d.pool.address, relabelled)
    with reverts("UnknownSigner", 0, recovered, 2):
        d.pool.post_round(roles.relayer, relabelled, old)
    unposted(d.pool, c)
    d.pool.post_round(roles.relayer, relabelled, c.sign(relabelled))


def test_malleable_high_s_signature(deploy_pool, chain, roles):
    d = deploy_pool()
    s = roles.signers
    c = funded_campaign(d, roles, signers=s, threshold=2)
    tree = payout_tree(roles.holder_addresses[:2], [WEI, 2 * WEI])
    allocation = c.allocation(1, tree)
    sigs = c.sign(allocation, [s[0], s[1]])
    digest = round_digest(chain.chain_id, d.pool.address, allocation)
    for position in (0, 1):
        r, s_value, v = split(sigs[position])
        assert s_value <= SECP256K1_N // 2 and v in (27, 28)
        high_s, flipped_v = SECP256K1_N - s_value, 55 - v  # the twin: s' = n − s, v 27 ↔ 28
        # The twin is a valid ECDSA signature of the same signer for the raw precompile...
        out = chain.w3.eth.call({"to": ECRECOVER, "data": "0x" + (
            digest + flipped_v.to_bytes(32, "big") + r + high_s.to_bytes(32, "big")).hex()})
        assert to_checksum_address(bytes(out)[12:]) == recover_round_signer(
            sigs[position], chain.chain_id, d.pool.address, allocation)
        # ...but the pool refuses it: InvalidSignature, reason 3 = RecoverError.InvalidSignatureS.
        twin = "0x" + (r + high_s.to_bytes(32, "big") + bytes([flipped_v])).hex()
        forged = list(sigs)
        forged[position] = twin
        with reverts("InvalidSignature", position, 3):
            d.pool.post_round(roles.relayer, allocation, forged)
    unposted(d.pool, c)


def test_malformed_signatures(deploy_pool, roles):
    d = deploy_pool()
    c = funded_campaign(d, roles)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    allocation = c.allocation(1, tree)
    sig = c.sign(allocation)[0]
    r, s_value, _ = split(sig)
    with reverts("InvalidSignature", 0, 2):  # InvalidSignatureLength
        d.pool.post_round(roles.relayer, allocation, [sig[:-2]])
    with reverts("InvalidSignature", 0, 1):  # v = 29: ecrecover yields address(0)
        d.pool.post_round(roles.relayer, allocation,
                          ["0x" + (r + s_value.to_bytes(32, "big") + bytes([29])).hex()])
    with reverts("InvalidSignature", 0, 1):  # all zero
        d.pool.post_round(roles.relayer, allocation, ["0x" + "00" * 65])
    unposted(d.pool, c)


def test_duplicated_signer(deploy_pool, roles):
    d = deploy_pool()
    s = roles.signers
    c = funded_campaign(d, roles, signers=s, threshold=2)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    allocation = c.allocation(1, tree)
    one = c.sign(allocation, [s[1]])[0]
    with reverts("DuplicateSigner", 1, address_of(s[1])):
        d.pool.post_round(roles.relayer, allocation, [one, one])
    a, b = c.sign(allocation, [s[0], s[2]])  # ascending
    signer_a, signer_b = sorted([address_of(s[0]), address_of(s[2])], key=lambda x: int(x, 16))
    with reverts("DuplicateSigner", 2, signer_b):
        d.pool.post_round(roles.relayer, allocation, [a, b, b])
    with reverts("SignersNotAscending", 2, signer_a, signer_b):  # non-adjacent repeat
        d.pool.post_round(roles.relayer, allocation, [a, b, a])
    unposted(d.pool, c)


def test_unsorted_signers(deploy_pool, roles):
    d = deploy_pool()
    s = roles.signers
    c = funded_campaign(d, roles, signers=s, threshold=2)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    allocation = c.allocation(1, tree)
    keys = sorted(s[:2], key=lambda k: int(address_of(k), 16), reverse=True)  # descending
    with reverts("SignersNotAscending", 1, address_of(keys[1]), address_of(keys[0])):
        d.pool.post_round(roles.relayer, allocation, c.sign_unordered(allocation, keys))
    unposted(d.pool, c)
    d.pool.post_round(roles.relayer, allocation, c.sign_unordered(allocation, keys[::-1]))


def test_too_few_signers(deploy_pool, roles):
    d = deploy_pool()
    s = roles.signers
    c = funded_campaign(d, roles, signers=s, threshold=2)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    allocation = c.allocation(1, tree)
    with reverts("TooFewSignatures", 1, 2):
        d.pool.post_round(roles.relayer, allocation, c.sign(allocation, [s[0]]))
    with reverts("TooFewSignatures", 0, 2):
        d.pool.post_round(roles.relayer, allocation, [])
    unposted(d.pool, c)


def test_signature_by_a_non_member(deploy_pool, roles):
    d = deploy_pool()
    s = roles.signers
    c = funded_campaign(d, roles, signers=s[:2], threshold=2)
    tree = payout_tree(roles.holder_addresses[:1], [WEI])
    allocation = c.allocation(1, tree)
    for intruder in (roles.stranger, s[2], roles.deployer):  # incl. a future signer, the admin
        sigs = c.sign(allocation, [s[0], intruder])
        order = sorted([address_of(s[0]), address_of(intruder)], key=lambda x: int(x, 16))
        position = order.index(address_of(intruder))
        with reverts("UnknownSigner", position, address_of(intruder), 1):
            d.pool.post_round(roles.relayer, allocation, sigs)
    unposted(d.pool, c)


def test_recipient_authorisation_replayed_on_another_campaign_or_pool(deploy_pool, chain, roles):
    d, d2 = deploy_pool(), deploy_pool()
    ca, cb = funded_campaign(d, roles), funded_campaign(d, roles)
    holder_key, holder = roles.holders[0], roles.holder_addresses[0]
    tree = payout_tree([holder, roles.holder_addresses[1]], [3 * WEI, WEI])
    ca.post(1, tree)
    cb.post(1, tree)
    ca.wait_challenge_window()
    recipient = Account.create().address
    deadline = chain.block_timestamp() + HOUR
    for_a = sign_recipient(holder_key, chain.chain_id, d.pool.address, ca.campaign_id, recipient,
                           0, deadline)
    for_other_pool = sign_recipient(holder_key, chain.chain_id, d2.pool.address, ca.campaign_id,
                                    recipient, 0, deadline)
    for_other_chain = sign_recipient(holder_key, chain.chain_id + 1, d.pool.address,
                                     cb.campaign_id, recipient, 0, deadline)
    for sig in (for_a, for_other_pool, for_other_chain):
        with reverts("InvalidRecipientAuthorization", holder, recipient, 0):
            d.pool.claim_rounds_to(roles.relayer, cb.campaign_id, holder, [leaf(tree, 1, 0)],
                                   recipient, deadline, sig)
    with reverts("InvalidRecipientAuthorization", holder, recipient, 0):
        d.pool.claim_rounds_to(roles.relayer, ca.campaign_id, holder, [leaf(tree, 1, 0)],
                               recipient, deadline, for_other_pool)
    assert not d.pool.is_claimed(cb.campaign_id, 1, 0)
    assert ca.token.balance_of(recipient) == 0
    d.pool.claim_rounds_to(roles.relayer, ca.campaign_id, holder, [leaf(tree, 1, 0)], recipient,
                           deadline, for_a)
    assert ca.token.balance_of(recipient) == 3 * WEI
    assert cb.token.balance_of(recipient) == 0


# -- re-entrancy: malicious ERC-20 ---------------------------------------------------------------


def _assert_reentry_refused(chain, mock) -> None:
    f = mock.functions
    assert chain.call(f.reentryAttempts()) == 1
    assert chain.call(f.lastReentrySucceeded()) is False
    assert bytes(chain.call(f.lastReentryData())) == REENTRANT_CALL
    assert chain.call(f.armed()) is False


def _payloads(pool, cid, tree, account_index_other):
    """ABI-encoded re-entrant calls: same leaf 0, another leaf, batch, reclaim."""
    i0, a0, w0 = tree.entry(0)
    i1, a1, w1 = tree.entry(account_index_other)
    encode = pool.contract.encode_abi
    return {
        "claim-same-leaf": encode("claim", args=[cid, 1, i0, a0, w0, proof_bytes(tree, 0)]),
        "claim-other-leaf": encode("claim", args=[cid, 1, i1, a1, w1,
                                                  proof_bytes(tree, account_index_other)]),
        "claimRounds-same-leaf": encode("claimRounds", args=[cid, a0, [
            (1, i0, w0, proof_bytes(tree, 0))]]),
        "reclaim": encode("reclaim", args=[cid]),
    }


@pytest.mark.parametrize("outer,payload_kind", [
    ("claim", "claim-same-leaf"), ("claim", "claim-other-leaf"),
    ("claim", "claimRounds-same-leaf"), ("claim", "reclaim"),
    ("claimRounds", "claim-other-leaf"),
])
def test_reentrant_token_cannot_reenter(deploy_pool, chain, roles, outer, payload_kind):
    d = deploy_pool()
    c = funded_campaign(d, roles, token="ReentrantToken")
    cid, pool, token = c.campaign_id, d.pool, c.token
    h = roles.holder_addresses
    tree = payout_tree(h[:2], [100 * WEI, 40 * WEI])
    c.post(1, tree)
    c.wait_challenge_window()
    payload = _payloads(pool, cid, tree, 1)[payload_kind]
    chain.send(token.contract.functions.arm(pool.address, bytes.fromhex(payload[2:])),
               roles.stranger)
    if outer == "claim":
        tx = pool.claim(roles.relayer, cid, 1, 0, h[0], 100 * WEI, tree.proof(0))
    else:
        tx = pool.claim_rounds(roles.relayer, cid, h[0], [leaf(tree, 1, 0)])
    assert [(e.account, e.index, e.amount_wei) for e in tx.events if e.EVENT == "Claimed"] == [
        (h[0], 0, 100 * WEI)]
    assert token.balance_of(h[0]) == 100 * WEI  # paid exactly once
    assert token.balance_of(h[1]) == 0
    assert token.balance_of(pool.address) == 900 * WEI
    assert pool.is_claimed(cid, 1, 0) and not pool.is_claimed(cid, 1, 1)
    assert pool.get_round(cid, 1).remaining_wei == 40 * WEI
    _assert_reentry_refused(chain, token.contract)


def test_reentrant_token_cannot_reenter_reclaim(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign("ReentrantToken", **SHORT)
    cid, pool, token = c.campaign_id, d.pool, c.token
    a, b = address_of(roles.sponsor_a), address_of(roles.sponsor_b)
    c.fund(roles.sponsor_a, 30 * WEI)
    c.fund(roles.sponsor_b, 10 * WEI)
    c.wait_expiry()
    payload = pool.contract.encode_abi("reclaim", args=[cid])
    chain.send(token.contract.functions.arm(pool.address, bytes.fromhex(payload[2:])),
               roles.stranger)
    pool.reclaim(roles.sponsor_a, cid)
    _assert_reentry_refused(chain, token.contract)
    assert token.balance_of(a) == 30 * WEI
    assert token.balance_of(pool.address) == 10 * WEI
    assert not pool.has_reclaimed(cid, b)
    pool.reclaim(roles.sponsor_b, cid)
    assert token.balance_of(b) == 10 * WEI and token.balance_of(pool.address) == 0


# -- re-entrancy: malicious ETH receiver ---------------------------------------------------------


def _receiver(d, chain):
    compiled = d.compiled["ReentrantReceiver"]
    address = chain.deploy(compiled, sender_key=d.roles.deployer)
    return chain.contract(address, compiled.abi, "ReentrantReceiver")


@pytest.mark.parametrize("payload_kind", ["claim-same-leaf", "claim-other-leaf",
                                          "claimRounds-same-leaf", "reclaim"])
def test_reentrant_eth_receiver_cannot_reenter(deploy_pool, chain, roles, payload_kind):
    d = deploy_pool()
    receiver = _receiver(d, chain)
    c = funded_campaign(d, roles, token=None, amount=10 * WEI)
    cid, pool = c.campaign_id, d.pool
    h = roles.holder_addresses
    tree = payout_tree([receiver.address, h[1]], [3 * WEI + 1, 2 * WEI])
    c.post(1, tree)
    c.wait_challenge_window()
    payload = _payloads(pool, cid, tree, 1)[payload_kind]
    chain.send(receiver.functions.arm(pool.address, bytes.fromhex(payload[2:])), roles.stranger)
    pool_before, h1_before = chain.eth_balance(pool.address), chain.eth_balance(h[1])
    tx = pool.claim(roles.relayer, cid, 1, 0, receiver.address, 3 * WEI + 1, tree.proof(0))
    assert [(e.account, e.amount_wei) for e in tx.events if e.EVENT == "Claimed"] == [
        (receiver.address, 3 * WEI + 1)]
    assert chain.eth_balance(receiver.address) == 3 * WEI + 1
    assert chain.eth_balance(pool.address) == pool_before - (3 * WEI + 1)
    assert chain.eth_balance(h[1]) == h1_before
    assert pool.is_claimed(cid, 1, 0) and not pool.is_claimed(cid, 1, 1)
    assert pool.get_round(cid, 1).remaining_wei == 2 * WEI
    _assert_reentry_refused(chain, receiver)


def test_reentrant_eth_receiver_cannot_reenter_reclaim(deploy_pool, chain, roles):
    d = deploy_pool()
    receiver = _receiver(d, chain)
    c = d.campaign(None, **SHORT)
    cid, pool, f = c.campaign_id, d.pool, receiver.functions
    encode = pool.contract.encode_abi
    # The receiver sponsors through `execute`; sponsor A funds directly.
    chain.send(f.execute(pool.address, 2 * WEI + 1,
                         bytes.fromhex(encode("fund", args=[cid, 2 * WEI + 1])[2:])),
               roles.stranger, value_wei=2 * WEI + 1)
    c.fund(roles.sponsor_a, 3 * WEI)
    assert pool.funded_by(cid, receiver.address) == 2 * WEI + 1
    tree = payout_tree(roles.holder_addresses[:1], [WEI + 7])
    c.post(1, tree)
    c.wait_challenge_window()
    pool.claim(roles.relayer, cid, 1, 0, tree.entry(0)[1], WEI + 7, tree.proof(0))
    c.wait_expiry()
    total, unclaimed = 5 * WEI + 1, 5 * WEI + 1 - (WEI + 7)
    share_r, share_a = (2 * WEI + 1) * unclaimed // total, 3 * WEI * unclaimed // total
    reclaim = bytes.fromhex(encode("reclaim", args=[cid])[2:])
    chain.send(f.arm(pool.address, reclaim), roles.stranger)
    pool_before = chain.eth_balance(pool.address)
    chain.send(f.execute(pool.address, 0, reclaim), roles.stranger)
    _assert_reentry_refused(chain, receiver)
    assert chain.eth_balance(receiver.address) == share_r  # paid once
    assert chain.eth_balance(pool.address) == pool_before - share_r
    assert pool.has_reclaimed(cid, receiver.address)
    with reverts("AlreadyReclaimed", cid, receiver.address):
        chain.send(f.execute(pool.address, 0, reclaim), roles.stranger)
    pool.reclaim(roles.sponsor_a, cid)
    assert chain.eth_balance(pool.address) == pool_before - share_r - share_a
    assert chain.eth_balance(pool.address) <= 2  # dust only


def test_eth_receiver_that_rejects_payment(deploy_pool, chain, roles):
    d = deploy_pool()
    receiver = _receiver(d, chain)
    c = funded_campaign(d, roles, token=None, amount=10 * WEI)
    cid, pool, f = c.campaign_id, d.pool, receiver.functions
    h = roles.holder_addresses
    tree = payout_tree([receiver.address, h[1]], [3 * WEI, 2 * WEI])
    c.post(1, tree)
    c.wait_challenge_window()
    chain.send(f.setRejectPayments(True), roles.stranger)
    pool_before = chain.eth_balance(pool.address)
    with reverts("NativeTransferFailed", receiver.address, 3 * WEI):
        pool.claim(roles.relayer, cid, 1, 0, receiver.address, 3 * WEI, tree.proof(0))
    with reverts("NativeTransferFailed", receiver.address, 3 * WEI):
        pool.claim_rounds(roles.relayer, cid, receiver.address, [leaf(tree, 1, 0)])
    # Nothing changed: the leaf is still unclaimed and the money still in the pool.
    assert not pool.is_claimed(cid, 1, 0)
    assert pool.get_round(cid, 1).remaining_wei == 5 * WEI
    assert chain.eth_balance(pool.address) == pool_before
    assert chain.eth_balance(receiver.address) == 0
    # The holder contract can still be paid elsewhere: it calls claimRoundsTo itself
    # (msg.sender == account, no signature needed) naming another recipient.
    recipient = Account.create().address
    call = pool.contract.encode_abi("claimRoundsTo", args=[
        cid, receiver.address, [(1, 0, 3 * WEI, proof_bytes(tree, 0))], recipient, 0, b""])
    chain.send(f.execute(pool.address, 0, bytes.fromhex(call[2:])), roles.stranger)
    assert chain.eth_balance(recipient) == 3 * WEI
    assert pool.is_claimed(cid, 1, 0)
    assert chain.eth_balance(pool.address) == pool_before - 3 * WEI
    claimed = pool.events("Claimed", campaignId=cid)
    assert [(e.account, e.recipient, e.amount_wei) for e in claimed] == [
        (receiver.address, recipient, 3 * WEI)]
