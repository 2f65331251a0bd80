"""CompensationPool against a real anvil node: the contract items of the independent review
(issue 13, items 17–23).

17. the guardian revokes any round still in its challenge window, so posting round N+1 in front
    of ``revokeRound(N)`` no longer lets round N become final; revoked ids below the latest are
    gaps that may be posted again;
18. a new signer set waits ``max(challengeWindow, MIN_ROTATION_DELAY)`` and the guardian or the
    admin may cancel it; admin and guardian roles (and the pool's DEFAULT_ADMIN_ROLE) change
    hands in two steps;
19. recipient authorisations carry the holder's nonce: used once, cancellable;
20. ``holderCap`` bounds what one account is paid from one round over all its leaves;
21. ``reclaimTo`` pays a sponsor's share to a named recipient;
22. a token that charges the sender on transfer is refused at payout, so it cannot spend
    another campaign's escrow;
23. a zero challenge window is accepted (revocation disabled) and rotation still waits.

Exact values throughout: balances, decoded events, custom errors with their arguments.
"""

from __future__ import annotations

import pytest

from offchain.chain import ContractRevert, address_of
from offchain.chain.pool import (
    ZERO_ADDRESS,
    CampaignAdminTransferred,
    GuardianTransferred,
    RecipientAuthorizationsCancelled,
    Reclaimed,
    RoundStatus,
    SignerRotationCancelled,
    SignerRotationProposed,
    SignerSetRotated,
)
from offchain.oracle.signing import sign_recipient

pytest.register_assert_rewrite("tests.chain_fixtures")
from tests.chain_fixtures import (  # noqa: E402
    DAY,
    HOUR,
    WEI,
    leaf,
    now_arg,
    payout_tree,
    reverts,
)

pytest_plugins = ["tests.chain_fixtures"]


def _claim(c, tree, round_id: int, index: int):
    _, account, amount = tree.entry(index)
    return c.pool.claim(c.deployment.roles.relayer, c.campaign_id, round_id, index, account,
                        amount, tree.proof(index))


# -- 17: revoking any pending round ---------------------------------------------------------------


def test_guardian_revokes_a_round_that_a_later_post_tried_to_outrun(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    cid, pool, h = c.campaign_id, d.pool, roles.holder_addresses
    c.fund(roles.sponsor_a, 1_000 * WEI)
    bad = payout_tree(h[:2], [300 * WEI, 200 * WEI])
    c.post(1, bad)
    # Whoever holds the signing key posts round 2 (1 wei) in front of the guardian's revoke.
    dust = payout_tree(h[4:5], [1])
    c.post(2, dust)
    tx = pool.revoke_round(roles.guardian, cid, 1)
    assert [(e.EVENT, e.round_id) for e in tx.events] == [("RoundRevoked", 1)]
    assert pool.get_round(cid, 1).status == RoundStatus.REVOKED
    info = pool.get_campaign(cid)
    # Round 2 stays; round 1 is a gap below it.
    assert (info.next_round_id, info.total_allocated_wei) == (3, 1)
    assert pool.unallocated(cid) == 1_000 * WEI - 1
    c.wait_challenge_window()
    with reverts("WrongRoundStatus", cid, 1, RoundStatus.REVOKED):
        _claim(c, bad, 1, 0)
    assert c.token.balance_of(h[0]) == 0
    # The revoked root can never come back into round 1; a new root can fill the gap.
    with reverts("RevokedAllocation", cid, 1, bytes.fromhex(bad.root[2:])):
        c.post(1, bad)
    good = payout_tree(h[:2], [30 * WEI, 20 * WEI])
    c.post(1, good)
    info = pool.get_campaign(cid)
    assert (info.next_round_id, info.total_allocated_wei) == (3, 50 * WEI + 1)
    assert pool.get_round(cid, 1).status == RoundStatus.PENDING
    c.wait_challenge_window()
    _claim(c, good, 1, 0)
    _claim(c, dust, 2, 0)
    assert (c.token.balance_of(h[0]), c.token.balance_of(h[4])) == (30 * WEI, 1)


def test_revoking_the_latest_round_moves_back_over_gaps(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    cid, pool, h = c.campaign_id, d.pool, roles.holder_addresses
    c.fund(roles.sponsor_a, 1_000 * WEI)
    trees = [payout_tree(h[:1], [(r + 1) * 10 * WEI]) for r in range(3)]
    for r, tree in enumerate(trees, start=1):
        c.post(r, tree)
    pool.revoke_round(roles.guardian, cid, 2)
    assert pool.next_round_id(cid) == 4
    with reverts("UnexpectedRoundId", 1, 4):  # round 1 is live, not a gap
        c.post(1, payout_tree(h[1:2], [WEI]))
    pool.revoke_round(roles.guardian, cid, 3)
    info = pool.get_campaign(cid)
    assert (info.next_round_id, info.total_allocated_wei) == (2, 10 * WEI)
    with reverts("WrongRoundStatus", cid, 3, RoundStatus.REVOKED):
        pool.revoke_round(roles.guardian, cid, 3)
    with reverts("UnexpectedRoundId", 3, 2):
        c.post(3, payout_tree(h[1:2], [WEI]))
    c.post(2, payout_tree(h[1:2], [5 * WEI]))
    assert pool.next_round_id(cid) == 3
    assert pool.unallocated(cid) == 985 * WEI


def test_settlement_skips_gaps_and_reclaims_exactly_what_was_not_paid(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(num_rounds=3)
    cid, pool, h = c.campaign_id, d.pool, roles.holder_addresses
    c.fund(roles.sponsor_a, 600 * WEI)
    c.fund(roles.sponsor_b, 400 * WEI)
    t1 = payout_tree(h[:2], [100 * WEI, 50 * WEI])
    t2 = payout_tree(h[:1], [200 * WEI])
    t3 = payout_tree(h[2:3], [70 * WEI])
    c.post(1, t1)
    c.post(2, t2)
    c.post(3, t3)
    pool.revoke_round(roles.guardian, cid, 2)  # a gap nobody fills
    c.wait_challenge_window()
    _claim(c, t1, 1, 0)
    _claim(c, t3, 3, 0)
    c.wait_expiry()
    pool.reclaim(roles.sponsor_a, cid)
    pool.reclaim(roles.sponsor_b, cid)
    unclaimed = 1_000 * WEI - 170 * WEI
    assert pool.get_campaign(cid).unclaimed_at_expiry_wei == unclaimed
    assert c.token.balance_of(address_of(roles.sponsor_a)) == unclaimed * 6 // 10
    assert c.token.balance_of(address_of(roles.sponsor_b)) == unclaimed * 4 // 10
    assert c.token.balance_of(pool.address) == 0


# -- 18: delayed signer rotation, two-step role handovers ----------------------------------------


def test_admin_alone_cannot_install_a_signer_set_at_once(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(signers=roles.signers, threshold=2)
    cid, pool = c.campaign_id, d.pool
    c.fund(roles.sponsor_a, 1_000 * WEI)
    admin = address_of(roles.deployer)
    assert pool.rotation_delay(cid) == HOUR
    ts = chain.block_timestamp()
    tx = pool.propose_signer_rotation(roles.deployer, cid, [admin], 1)
    (proposed,) = tx.only(SignerRotationProposed)
    assert proposed.signers == (admin,) and proposed.threshold == 1
    assert ts + HOUR <= proposed.executable_at <= ts + HOUR + 30
    pending = pool.pending_signer_rotation(cid)
    assert (pending.signers, pending.threshold, pending.executable_at) == (
        (admin,), 1, proposed.executable_at)
    # Nothing changed yet: a round signed by the admin alone is refused.
    steal = payout_tree([admin], [500 * WEI])
    alloc = c.allocation(1, steal)
    with reverts("TooFewSignatures", 1, 2):
        pool.post_round(roles.relayer, alloc, c.sign(alloc, [roles.deployer]))
    with reverts("RotationNotReady", cid, proposed.executable_at, now_arg(chain)):
        pool.execute_signer_rotation(roles.stranger, cid)
    assert pool.get_campaign(cid).signer_set_version == 1
    # The guardian sees the proposal and cancels it.
    with reverts("NotAdminOrGuardian", cid, address_of(roles.stranger)):
        pool.cancel_signer_rotation(roles.stranger, cid)
    tx = pool.cancel_signer_rotation(roles.guardian, cid)
    assert tx.only(SignerRotationCancelled)[0].by == address_of(roles.guardian)
    assert not pool.pending_signer_rotation(cid).exists
    chain.increase_time(HOUR + 1)
    with reverts("NoPendingRotation", cid):
        pool.execute_signer_rotation(roles.stranger, cid)
    with reverts("NoPendingRotation", cid):
        pool.cancel_signer_rotation(roles.deployer, cid)
    assert pool.get_campaign(cid).signer_set_version == 1


def test_rotation_executes_after_the_delay(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign(challenge_window_s=2 * HOUR)
    cid, pool, h = c.campaign_id, d.pool, roles.holder_addresses
    c.fund(roles.sponsor_a, 1_000 * WEI)
    assert pool.rotation_delay(cid) == 2 * HOUR  # the challenge window when longer
    with reverts("NotCampaignAdmin", address_of(roles.stranger), address_of(roles.deployer)):
        pool.propose_signer_rotation(roles.stranger, cid, [address_of(roles.stranger)], 1)
    with reverts("InvalidSignerSet", 1, address_of(roles.signers[1])):
        pool.propose_signer_rotation(roles.deployer, cid,
                                     [address_of(roles.signers[1])] * 2, 1)
    with reverts("InvalidCampaignParam", "threshold", 3):
        pool.propose_signer_rotation(roles.deployer, cid, [address_of(roles.signers[1])], 3)
    new = [address_of(k) for k in roles.signers[1:3]]
    pool.propose_signer_rotation(roles.deployer, cid, new, 2)
    chain.increase_time(2 * HOUR)
    tx = pool.execute_signer_rotation(roles.stranger, cid)
    (rotated,) = tx.only(SignerSetRotated)
    assert (rotated.version, rotated.signers, rotated.threshold) == (2, tuple(new), 2)
    assert pool.get_signers(cid) == new
    assert not pool.pending_signer_rotation(cid).exists
    tree = payout_tree(h[:1], [10 * WEI])
    old = c.allocation(1, tree)
    with reverts("StaleSignerSet", 1, 2):
        pool.post_round(roles.relayer, old, c.sign(old))
    c.signer_keys, c.signer_set_version = roles.signers[1:3], 2
    c.post(1, tree)
    assert pool.next_round_id(cid) == 2


def test_campaign_admin_and_guardian_change_hands_in_two_steps(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    cid, pool = c.campaign_id, d.pool
    admin, guardian = address_of(roles.deployer), address_of(roles.guardian)
    new_admin, new_guardian = address_of(roles.sponsor_b), address_of(roles.stranger)
    pool.transfer_campaign_admin(roles.deployer, cid, new_admin)
    assert pool.pending_campaign_admin(cid) == new_admin
    assert pool.get_campaign(cid).admin == admin  # not yet
    with reverts("NotPendingAdmin", cid, address_of(roles.relayer), new_admin):
        pool.accept_campaign_admin(roles.relayer, cid)
    tx = pool.accept_campaign_admin(roles.sponsor_b, cid)
    (moved,) = tx.only(CampaignAdminTransferred)
    assert (moved.previous_admin, moved.new_admin) == (admin, new_admin)
    assert pool.get_campaign(cid).admin == new_admin
    assert pool.pending_campaign_admin(cid) == ZERO_ADDRESS
    with reverts("NotCampaignAdmin", admin, new_admin):
        pool.propose_signer_rotation(roles.deployer, cid, [admin], 1)
    # An offer to nobody (zero) cannot be accepted.
    pool.transfer_campaign_admin(roles.sponsor_b, cid, ZERO_ADDRESS)
    with reverts("NotPendingAdmin", cid, admin, ZERO_ADDRESS):
        pool.accept_campaign_admin(roles.deployer, cid)
    # Only the guardian hands over the guardian role; the admin cannot.
    with reverts("NotGuardian", new_admin, guardian):
        pool.transfer_guardian(roles.sponsor_b, cid, new_admin)
    pool.transfer_guardian(roles.guardian, cid, new_guardian)
    assert pool.pending_guardian(cid) == new_guardian
    with reverts("NotPendingGuardian", cid, new_admin, new_guardian):
        pool.accept_guardian(roles.sponsor_b, cid)
    tx = pool.accept_guardian(roles.stranger, cid)
    (moved_g,) = tx.only(GuardianTransferred)
    assert (moved_g.previous_guardian, moved_g.new_guardian) == (guardian, new_guardian)
    c.fund(roles.sponsor_a, 100 * WEI)
    c.post(1, payout_tree(roles.holder_addresses[:1], [WEI]))
    with reverts("NotGuardian", guardian, new_guardian):
        pool.revoke_round(roles.guardian, cid, 1)
    pool.revoke_round(roles.stranger, cid, 1)
    assert pool.get_round(cid, 1).status == RoundStatus.REVOKED


def test_pool_default_admin_changes_hands_after_a_delay(deploy_pool, chain, roles):
    d = deploy_pool()
    pool, new_admin = d.pool, address_of(roles.stranger)
    assert int(pool._call(pool.contract.functions.defaultAdminDelay())) == DAY
    pool.begin_default_admin_transfer(roles.deployer, new_admin)
    with pytest.raises(ContractRevert) as refused:
        pool.accept_default_admin_transfer(roles.stranger)
    assert refused.value.name == "AccessControlEnforcedDefaultAdminDelay"
    chain.increase_time(DAY + 1)
    pool.accept_default_admin_transfer(roles.stranger)
    assert pool.has_role("DEFAULT_ADMIN_ROLE", new_admin)
    assert not pool.has_role("DEFAULT_ADMIN_ROLE", address_of(roles.deployer))


# -- 19: recipient authorisations: nonce, single use, cancel --------------------------------------


def test_recipient_authorisation_is_used_once_and_can_be_cancelled(deploy_pool, chain, roles):
    d = deploy_pool()
    c = d.campaign()
    cid, pool = c.campaign_id, d.pool
    holder_key = roles.holders[0]
    holder, recipient = address_of(holder_key), address_of(roles.stranger)
    c.fund(roles.sponsor_a, 1_000 * WEI)
    tree = payout_tree([holder], [10 * WEI])
    c.post(1, tree)
    c.post(2, tree)
    c.post(3, tree)
    c.wait_challenge_window()
    deadline = chain.block_timestamp() + DAY
    assert pool.recipient_nonce(holder) == 0
    sig0 = sign_recipient(holder_key, chain.chain_id, pool.address, cid, recipient, 0, deadline)
    pool.claim_rounds_to(roles.relayer, cid, holder, [leaf(tree, 1, 0)], recipient, deadline,
                         sig0)
    assert pool.recipient_nonce(holder) == 1
    assert c.token.balance_of(recipient) == 10 * WEI
    # The same signature does not cover the next round.
    with reverts("InvalidRecipientAuthorization", holder, recipient, 1):
        pool.claim_rounds_to(roles.relayer, cid, holder, [leaf(tree, 2, 0)], recipient,
                             deadline, sig0)
    sig1 = sign_recipient(holder_key, chain.chain_id, pool.address, cid, recipient, 1, deadline)
    tx = pool.cancel_recipient_authorizations(holder_key)
    assert [(e.account, e.nonce) for e in tx.only(RecipientAuthorizationsCancelled)] == [
        (holder, 2)]
    with reverts("InvalidRecipientAuthorization", holder, recipient, 2):
        pool.claim_rounds_to(roles.relayer, cid, holder, [leaf(tree, 2, 0)], recipient,
                             deadline, sig1)
    sig2 = sign_recipient(holder_key, chain.chain_id, pool.address, cid, recipient, 2, deadline)
    pool.claim_rounds_to(roles.relayer, cid, holder, [leaf(tree, 2, 0), leaf(tree, 3, 0)],
                         recipient, deadline, sig2)
    assert c.token.balance_of(recipient) == 30 * WEI
    assert pool.recipient_nonce(holder) == 3


# -- 20: holderCap per account per round ----------------------------------------------------------


def test_holder_cap_bounds_each_account_per_round_over_all_its_leaves(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign(holder_cap_wei=100 * WEI)
    cid, pool, h = c.campaign_id, d.pool, roles.holder_addresses
    c.fund(roles.sponsor_a, 1_000 * WEI)
    # Four leaves of 100 for h[0] (4x the cap) and one for h[1].
    tree = payout_tree([h[0]] * 4 + [h[1]], [100 * WEI] * 5)
    c.post(1, tree)
    c.wait_challenge_window()
    _claim(c, tree, 1, 0)
    with reverts("HolderCapExceeded", cid, 1, h[0], 100 * WEI, 100 * WEI, 100 * WEI):
        _claim(c, tree, 1, 1)
    assert pool.paid_in_round(cid, 1, h[0]) == 100 * WEI
    with reverts("HolderCapExceeded", cid, 1, h[0], 100 * WEI, 100 * WEI, 100 * WEI):
        pool.claim_rounds(roles.relayer, cid, h[0], [leaf(tree, 1, 2), leaf(tree, 1, 3)])
    _claim(c, tree, 1, 4)
    assert (c.token.balance_of(h[0]), c.token.balance_of(h[1])) == (100 * WEI, 100 * WEI)
    assert pool.get_round(cid, 1).remaining_wei == 300 * WEI


def test_holder_cap_is_per_round_not_per_campaign(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign(holder_cap_wei=100 * WEI)
    cid, pool, h = c.campaign_id, d.pool, roles.holder_addresses
    c.fund(roles.sponsor_a, 1_000 * WEI)
    tree = payout_tree([h[0], h[0]], [60 * WEI, 40 * WEI])
    c.post(1, tree)
    c.post(2, tree)
    c.wait_challenge_window()
    pool.claim_rounds(roles.relayer, cid, h[0], [leaf(tree, 1, 0), leaf(tree, 1, 1),
                                                 leaf(tree, 2, 0), leaf(tree, 2, 1)])
    assert c.token.balance_of(h[0]) == 200 * WEI
    assert pool.paid_in_round(cid, 1, h[0]) == pool.paid_in_round(cid, 2, h[0]) == 100 * WEI


# -- 21: reclaimTo -------------------------------------------------------------------------------


def test_reclaim_to_pays_the_named_recipient(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign()
    cid, pool = c.campaign_id, d.pool
    c.fund(roles.sponsor_a, 300 * WEI)
    c.fund(roles.sponsor_b, 100 * WEI)
    c.wait_expiry()
    sponsor, cold = address_of(roles.sponsor_a), address_of(roles.stranger)
    with reverts("ZeroReclaimRecipient", cid, sponsor):
        pool.reclaim_to(roles.sponsor_a, cid, ZERO_ADDRESS)
    tx = pool.reclaim_to(roles.sponsor_a, cid, cold)
    (r,) = tx.only(Reclaimed)
    assert (r.sponsor, r.recipient, r.amount_wei) == (sponsor, cold, 300 * WEI)
    assert (c.token.balance_of(cold), c.token.balance_of(sponsor)) == (300 * WEI, 0)
    with reverts("AlreadyReclaimed", cid, sponsor):
        pool.reclaim(roles.sponsor_a, cid)
    with reverts("NotASponsor", cid, cold):
        pool.reclaim_to(roles.stranger, cid, cold)
    (r2,) = pool.reclaim(roles.sponsor_b, cid).only(Reclaimed)
    assert (r2.sponsor, r2.recipient, r2.amount_wei) == (address_of(roles.sponsor_b),
                                                         address_of(roles.sponsor_b), 100 * WEI)


# -- 22: tokens that charge the sender -----------------------------------------------------------


def test_sender_fee_token_cannot_spend_another_campaigns_escrow(deploy_pool, roles):
    d = deploy_pool()
    a = d.campaign("SenderFeeToken")
    token = a.token.address
    b = d.campaign(token)
    pool, h = d.pool, roles.holder_addresses
    for sponsor in (roles.sponsor_a, roles.sponsor_b):  # funding costs the sponsor the 1 % fee
        a.token.mint(sponsor, address_of(sponsor), 10 * WEI)
    a.fund(roles.sponsor_a, 100 * WEI)
    b.fund(roles.sponsor_b, 1_000 * WEI)
    assert a.token.balance_of(pool.address) == 1_100 * WEI  # the pool received what was sent
    tree = payout_tree(h[:1], [100 * WEI])
    a.post(1, tree)
    a.wait_challenge_window()
    # Paying 100 would cost the pool 101: one wei-unit per cent taken from campaign b.
    with reverts("PayoutDebitMismatch", token, h[0], 100 * WEI, 101 * WEI):
        _claim(a, tree, 1, 0)
    assert a.token.balance_of(pool.address) == 1_100 * WEI
    assert a.token.balance_of(h[0]) == 0


def test_recipient_fee_token_still_pays_with_exact_pool_debit(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign("FeeOnTransferToken")
    h = roles.holder_addresses
    c.fund(roles.sponsor_a, 1_000 * WEI)  # 990 arrive
    tree = payout_tree(h[:1], [100 * WEI])
    c.post(1, tree)
    c.wait_challenge_window()
    _claim(c, tree, 1, 0)
    assert c.token.balance_of(h[0]) == 99 * WEI  # the holder bears the token's fee
    assert c.token.balance_of(d.pool.address) == 890 * WEI  # the pool paid exactly 100


# -- 23: zero challenge window -------------------------------------------------------------------


def test_zero_challenge_window_makes_rounds_final_at_once_and_rotation_still_waits(
    deploy_pool, chain, roles
):
    d = deploy_pool()
    c = d.campaign(challenge_window_s=0)
    cid, pool, h = c.campaign_id, d.pool, roles.holder_addresses
    c.fund(roles.sponsor_a, 100 * WEI)
    tree = payout_tree(h[:1], [10 * WEI])
    c.post(1, tree)
    finalizes_at = pool.get_round(cid, 1).finalizes_at
    with reverts("ChallengeWindowOver", 1, finalizes_at, now_arg(chain)):
        pool.revoke_round(roles.guardian, cid, 1)
    _claim(c, tree, 1, 0)
    assert c.token.balance_of(h[0]) == 10 * WEI
    assert pool.rotation_delay(cid) == HOUR  # MIN_ROTATION_DELAY
