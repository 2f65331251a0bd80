"""CompensationPool against a real anvil node: Merkle claims, EIP-712 rounds, budgets, reclaims.

Every test deploys its own token and pool; reverts are asserted by the decoded custom error
name and arguments (ContractRevert), as the contract's off-chain callers see them.
"""

from __future__ import annotations

import os
import time

import pytest
from eth_account import Account

from offchain.allocation.merkle import PayoutTree
from offchain.chain import AnvilNode, ChainError, ContractRevert, address_of, compile_contracts
from offchain.oracle.signing import round_digest

# Fixtures (anvil, chain, compiled, roles, deploy_pool) come from the shared module, loaded
# explicitly as a plugin so one anvil node serves every chain test in the session.
pytest_plugins = ["tests.chain_fixtures"]

WEI = 10**18  # one 18-decimal token, in wei
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _tree(roles, amounts=(5 * WEI, 3 * WEI, 2 * WEI, WEI, WEI // 2)) -> PayoutTree:
    return PayoutTree.build(
        [
            (i, address, amount)
            for i, (address, amount) in enumerate(
                zip(roles.holder_addresses, amounts, strict=False)
            )
        ]
    )


# -- EIP-712 -------------------------------------------------------------------------------------


def test_python_round_digest_equals_contract_round_digest(deploy_pool, chain):
    d = deploy_pool()
    root, total = "0x" + "ab" * 32, 123 * WEI
    expected = round_digest(chain.chain_id, d.pool.address, 7, root, total)
    assert d.pool.round_digest(7, root, total) == expected


def test_post_round_reverts_when_signer_is_not_oracle(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    forged = d.sign(1, tree.root, tree.total_wei, key=roles.stranger)
    with pytest.raises(ContractRevert) as info:
        d.pool.post_round(roles.relayer, 1, tree.root, tree.total_wei, forged)
    assert info.value.name == "InvalidSigner"
    assert info.value.args == (address_of(roles.stranger), address_of(roles.oracle))
    assert str(info.value).startswith(
        f"CompensationPool reverted InvalidSigner(recovered={address_of(roles.stranger)}, "
    )
    assert d.pool.next_round_id() == 1


def test_post_round_reverts_when_signed_fields_differ(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    signature = d.sign(1, tree.root, tree.total_wei)
    with pytest.raises(ContractRevert) as info:  # relayer inflates the total
        d.pool.post_round(roles.relayer, 1, tree.root, tree.total_wei + 1, signature)
    assert info.value.name == "InvalidSigner"
    assert info.value.args[1] == address_of(roles.oracle)
    assert info.value.args[0] != address_of(roles.oracle)


def test_post_round_reverts_when_signature_is_for_another_pool(deploy_pool, roles, chain):
    d, other = deploy_pool(), deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    signature = other.sign(1, tree.root, tree.total_wei)  # domain binds verifyingContract
    with pytest.raises(ContractRevert) as info:
        d.pool.post_round(roles.relayer, 1, tree.root, tree.total_wei, signature)
    assert info.value.name == "InvalidSigner"


def test_post_round_reverts_when_signature_is_malleable_high_s(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    sig = bytes.fromhex(d.sign(1, tree.root, tree.total_wei)[2:])
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    high_s = (SECP256K1_N - s).to_bytes(32, "big")
    malleable = r + high_s + bytes([55 - v])  # 27 <-> 28: same signer, high s
    with pytest.raises(ContractRevert) as info:
        d.pool.post_round(roles.relayer, 1, tree.root, tree.total_wei, malleable)
    assert info.value.name == "ECDSAInvalidSignatureS"
    assert info.value.args == (high_s,)


# -- round bookkeeping ---------------------------------------------------------------------------


def test_post_round_reverts_when_round_id_is_not_sequential(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    with pytest.raises(ContractRevert) as info:
        d.pool.post_round(
            roles.relayer, 2, tree.root, tree.total_wei, d.sign(2, tree.root, tree.total_wei)
        )
    assert (info.value.name, info.value.args) == ("UnexpectedRoundId", (2, 1))

    d.post(1, tree)
    with pytest.raises(ContractRevert) as info:  # replaying round 1
        d.post(1, tree)
    assert (info.value.name, info.value.args) == ("UnexpectedRoundId", (1, 2))
    assert d.pool.next_round_id() == 2


def test_post_round_reverts_when_total_exceeds_unallocated(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 10 * WEI)
    first = PayoutTree.build([(0, roles.holder_addresses[0], 6 * WEI)])
    d.post(1, first)
    assert d.pool.unallocated() == 4 * WEI
    second = PayoutTree.build([(0, roles.holder_addresses[1], 4 * WEI + 1)])
    with pytest.raises(ContractRevert) as info:
        d.post(2, second)
    assert (info.value.name, info.value.args) == ("InsufficientUnallocated", (4 * WEI + 1, 4 * WEI))


def test_post_round_reverts_when_total_is_zero_or_root_is_zero(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 10 * WEI)
    root = "0x" + "11" * 32
    with pytest.raises(ContractRevert) as info:
        d.pool.post_round(roles.relayer, 1, root, 0, d.sign(1, root, 0))
    assert info.value.name == "ZeroRoundTotal"
    zero = "0x" + "00" * 32
    with pytest.raises(ContractRevert) as info:
        d.pool.post_round(roles.relayer, 1, zero, WEI, d.sign(1, zero, WEI))
    assert info.value.name == "ZeroMerkleRoot"


def test_get_round_returns_posted_round(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    d.post(1, tree)
    stored = d.pool.get_round(1)
    assert (stored.merkle_root, stored.total_wei, stored.claimed_wei) == (
        tree.root,
        tree.total_wei,
        0,
    )
    assert stored.exists and not d.pool.get_round(2).exists
    assert d.pool.unallocated() == 100 * WEI - tree.total_wei


# -- claims --------------------------------------------------------------------------------------


def test_claim_pays_every_leaf_of_python_merkle_tree(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    d.post(1, tree)
    for index, account, amount in tree.entries:
        # The relayer submits; the tokens go to the leaf's account.
        d.pool.claim(roles.relayer, 1, index, account, amount, tree.proof(index))
        assert d.pool.is_claimed(1, index)
    for _, account, amount in tree.entries:
        assert d.token.balance_of(account) == amount
    assert d.token.balance_of(address_of(roles.relayer)) == 0
    assert d.pool.get_round(1).claimed_wei == tree.total_wei
    assert d.pool.total_claimed() == tree.total_wei


def test_claim_reverts_when_already_claimed(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    d.post(1, tree)
    index, account, amount = tree.entry(2)
    d.pool.claim(roles.relayer, 1, index, account, amount, tree.proof(index))
    with pytest.raises(ContractRevert) as info:
        d.pool.claim(roles.relayer, 1, index, account, amount, tree.proof(index))
    assert (info.value.name, info.value.args) == ("AlreadyClaimed", (1, 2))
    assert d.token.balance_of(account) == amount


def test_claim_reverts_when_proof_is_invalid(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    d.post(1, tree)
    index, account, amount = tree.entry(0)
    with pytest.raises(ContractRevert) as info:  # tampered amount
        d.pool.claim(roles.relayer, 1, index, account, amount + 1, tree.proof(index))
    assert (info.value.name, info.value.args) == ("InvalidProof", (1, index, account, amount + 1))
    with pytest.raises(ContractRevert) as info:  # someone else's proof
        d.pool.claim(roles.relayer, 1, index, account, amount, tree.proof(1))
    assert info.value.name == "InvalidProof"
    stranger = address_of(roles.stranger)
    with pytest.raises(ContractRevert) as info:  # redirected payout
        d.pool.claim(roles.relayer, 1, index, stranger, amount, tree.proof(index))
    assert info.value.name == "InvalidProof"
    assert not d.pool.is_claimed(1, index)


def test_claim_reverts_when_round_is_unknown(deploy_pool, roles):
    d = deploy_pool()
    tree = _tree(roles)
    index, account, amount = tree.entry(0)
    with pytest.raises(ContractRevert) as info:
        d.pool.claim(roles.relayer, 9, index, account, amount, tree.proof(index))
    assert (info.value.name, info.value.args) == ("UnknownRound", (9,))


def test_claims_in_two_rounds_are_independent(deploy_pool, roles):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 100 * WEI)
    tree1, tree2 = _tree(roles), _tree(roles, amounts=(WEI, WEI, WEI, WEI, WEI))
    d.post(1, tree1)
    d.post(2, tree2)
    holder = roles.holder_addresses[0]
    d.pool.claim(roles.relayer, 1, 0, holder, tree1.entry(0)[2], tree1.proof(0))
    d.pool.claim(roles.relayer, 2, 0, holder, tree2.entry(0)[2], tree2.proof(0))
    assert d.token.balance_of(holder) == tree1.entry(0)[2] + tree2.entry(0)[2]
    assert d.pool.unallocated() == 100 * WEI - tree1.total_wei - tree2.total_wei


# -- funding and reclaim -------------------------------------------------------------------------


def test_fund_credits_balance_delta_for_fee_on_transfer_token(deploy_pool, roles):
    d = deploy_pool(token="FeeOnTransferToken")
    d.fund(roles.sponsor_a, 1000 * WEI)  # 1% burned on the way in
    assert d.pool.total_funded() == 990 * WEI
    assert d.pool.funded_by(address_of(roles.sponsor_a)) == 990 * WEI
    assert d.pool.unallocated() == 990 * WEI
    assert d.token.balance_of(d.pool.address) == 990 * WEI
    too_much = PayoutTree.build([(0, roles.holder_addresses[0], 1000 * WEI)])
    with pytest.raises(ContractRevert) as info:
        d.post(1, too_much)
    assert (info.value.name, info.value.args) == (
        "InsufficientUnallocated",
        (1000 * WEI, 990 * WEI),
    )


def test_fund_reverts_without_allowance_with_token_error(deploy_pool, roles):
    d = deploy_pool()
    d.token.mint(roles.sponsor_b, address_of(roles.sponsor_b), WEI)
    with pytest.raises(ContractRevert) as info:
        d.chain.send(d.pool.contract.functions.fund(WEI), roles.sponsor_b)
    assert info.value.name == "ERC20InsufficientAllowance"
    assert info.value.args == (d.pool.address, 0, WEI)


def test_reclaim_reverts_before_deadline(deploy_pool, roles, chain):
    d = deploy_pool()
    d.fund(roles.sponsor_a, 10 * WEI)
    with pytest.raises(ContractRevert) as info:
        d.pool.reclaim(roles.sponsor_a)
    assert info.value.name == "ClaimPeriodNotEnded"
    now, deadline = info.value.args
    assert deadline == d.claim_deadline and now < deadline
    assert abs(now - chain.block_timestamp()) <= 2


def test_reclaim_after_deadline_pays_sponsors_pro_rata(deploy_pool, roles, chain):
    d = deploy_pool(claim_period_s=600)
    a, b = address_of(roles.sponsor_a), address_of(roles.sponsor_b)
    d.fund(roles.sponsor_a, 30 * WEI)
    d.fund(roles.sponsor_b, 10 * WEI + 1)  # odd total exercises floor rounding
    tree = _tree(roles)  # 11.5 tokens allocated
    d.post(1, tree)
    for index in (0, 3):  # 5 + 1 tokens claimed; the rest of the round is never claimed
        i, account, amount = tree.entry(index)
        d.pool.claim(roles.relayer, 1, i, account, amount, tree.proof(i))
    claimed = tree.entry(0)[2] + tree.entry(3)[2]

    chain.increase_time(601)
    total = 40 * WEI + 1
    remainder = total - claimed
    expected_a = 30 * WEI * remainder // total
    expected_b = (10 * WEI + 1) * remainder // total
    d.pool.reclaim(roles.sponsor_b)  # order does not matter
    d.pool.reclaim(roles.sponsor_a)
    assert d.token.balance_of(a) == expected_a
    assert d.token.balance_of(b) == expected_b
    assert d.pool.has_reclaimed(a) and d.pool.has_reclaimed(b)
    dust = d.token.balance_of(d.pool.address)
    assert dust == remainder - expected_a - expected_b and 0 <= dust < 2

    with pytest.raises(ContractRevert) as info:
        d.pool.reclaim(roles.sponsor_a)
    assert (info.value.name, info.value.args) == ("AlreadyReclaimed", (a,))
    with pytest.raises(ContractRevert) as info:
        d.pool.reclaim(roles.stranger)
    assert info.value.name == "NotASponsor"


def test_claim_reverts_after_deadline(deploy_pool, roles, chain):
    d = deploy_pool(claim_period_s=300)
    d.fund(roles.sponsor_a, 100 * WEI)
    tree = _tree(roles)
    d.post(1, tree)
    chain.increase_time(301)
    index, account, amount = tree.entry(0)
    with pytest.raises(ContractRevert) as info:
        d.pool.claim(roles.relayer, 1, index, account, amount, tree.proof(index))
    assert info.value.name == "ClaimPeriodEnded"
    assert info.value.args[1] == d.claim_deadline


def test_constructor_reverts_when_deadline_is_not_in_future(chain, compiled, roles):
    from offchain.chain import PoolClient

    with pytest.raises(ContractRevert) as info:
        PoolClient.deploy(
            chain,
            compiled["CompensationPool"],
            roles.deployer,
            token=address_of(roles.deployer),
            oracle=address_of(roles.oracle),
            sponsor=address_of(roles.sponsor_a),
            claim_deadline=chain.block_timestamp() - 1,
        )
    assert info.value.name == "DeadlineNotInFuture"


# -- dev-chain helpers and tooling ---------------------------------------------------------------


def test_set_eth_balance_and_increase_time_change_dev_chain(chain):
    fresh = Account.create().address
    chain.set_eth_balance(fresh, 12345)
    assert chain.eth_balance(fresh) == 12345
    before = chain.block_timestamp()
    assert chain.increase_time(1000) >= before + 1000


def test_compile_contracts_second_call_hits_cache(compiled):
    start = time.perf_counter()
    again = compile_contracts()
    assert time.perf_counter() - start < 2.0
    assert again["CompensationPool"].bytecode == compiled["CompensationPool"].bytecode
    assert {"CompensationPool", "TestToken", "FeeOnTransferToken"} <= set(again)


def test_compile_contracts_raises_chain_error_with_compiler_message(tmp_path):
    (tmp_path / "Broken.sol").write_text("pragma solidity ^0.8.24; contract Broken { uint x = ; }")
    with pytest.raises(ChainError, match="ParserError"):
        compile_contracts(tmp_path, cache_dir=tmp_path / "cache")


def test_anvil_node_stop_terminates_its_process():
    node = AnvilNode(chain_id=4242, accounts=1).start()
    pid = node.pid
    assert node.running and pid is not None
    node.stop()
    assert not node.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_chain_client_raises_chain_error_when_node_unreachable():
    from offchain.chain import ChainClient

    with pytest.raises(ChainError, match="not reachable"):
        ChainClient("http://127.0.0.1:9", timeout=2)
