"""EIP-712 round and recipient signatures: pinned digest, independent encoding, k-of-n ordering,
equality with the contract."""

from __future__ import annotations

import dataclasses
import doctest

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.allocation import ROUND_ALLOCATION_TYPE, RoundAllocation
from offchain.oracle import signing
from offchain.oracle.signing import (
    CLAIM_RECIPIENT_TYPE,
    SigningError,
    order_signatures,
    recipient_digest,
    recover_round_signer,
    round_digest,
    round_typed_data,
    sign_recipient,
    sign_round,
    sign_round_k_of_n,
)

pytest_plugins = ["tests.chain_fixtures"]

POOL = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DEV_KEYS = [  # anvil's public dev keys #0..#2
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
]
SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


def _allocation(**overrides) -> RoundAllocation:
    fields = {
        "campaign_id": 1, "round_id": 1, "merkle_root": "0x" + "11" * 32, "total_wei": 10**18,
        "checkpoint_hash": "0x" + "22" * 32, "dataset_root": "0x" + "33" * 32,
        "attribution_hash": "0x" + "44" * 32, "signer_set_version": 1, "deadline": 2**32,
    }
    return RoundAllocation(**{**fields, **overrides})


def _domain_separator(chain_id: int, contract: str) -> bytes:
    domain_type = keccak(
        text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    return keccak(encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [domain_type, keccak(text="CompensationPool"), keccak(text="2"), chain_id, contract],
    ))


def _manual_digest(chain_id: int, contract: str, a: RoundAllocation) -> bytes:
    """EIP-712 written out by hand with eth_abi, independent of eth-account's encoder."""
    struct_hash = keccak(encode(
        ["bytes32", "uint256", "uint256", "bytes32", "uint256", "bytes32", "bytes32", "bytes32",
         "uint256", "uint256"],
        [keccak(text=ROUND_ALLOCATION_TYPE), *a.as_tuple()],
    ))
    return keccak(b"\x19\x01" + _domain_separator(chain_id, contract) + struct_hash)


def test_module_doctests_pin_known_digest_and_signature():
    result = doctest.testmod(signing, verbose=False)
    assert result.attempted >= 5 and result.failed == 0


def test_type_string_lists_every_bound_field_in_struct_order():
    assert ROUND_ALLOCATION_TYPE == (
        "RoundAllocation(uint256 campaignId,uint256 roundId,bytes32 merkleRoot,uint256 total,"
        "bytes32 checkpointHash,bytes32 datasetRoot,bytes32 attributionHash,"
        "uint256 signerSetVersion,uint256 deadline)"
    )


def test_round_typed_data_contains_domain_and_types():
    typed = round_typed_data(31337, POOL.lower(), _allocation(round_id=3))
    assert typed["primaryType"] == "RoundAllocation"
    assert typed["domain"] == {"name": "CompensationPool", "version": "2", "chainId": 31337,
                               "verifyingContract": POOL}
    assert typed["message"]["roundId"] == 3
    assert typed["message"]["merkleRoot"] == bytes.fromhex("11" * 32)


@settings(max_examples=30, deadline=None)
@given(
    chain_id=st.integers(1, 2**64),
    contract=st.binary(min_size=20, max_size=20),
    ids=st.tuples(st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1)),
    hashes=st.lists(st.binary(min_size=32, max_size=32), min_size=4, max_size=4),
    total=st.integers(0, 2**256 - 1),
    version=st.integers(0, 2**32),
    deadline=st.integers(0, 2**64),
)
def test_round_digest_equals_hand_written_eip712_encoding(
    chain_id, contract, ids, hashes, total, version, deadline
):
    address = to_checksum_address("0x" + contract.hex())
    a = RoundAllocation(
        campaign_id=ids[0], round_id=ids[1], merkle_root="0x" + hashes[0].hex(), total_wei=total,
        checkpoint_hash="0x" + hashes[1].hex(), dataset_root="0x" + hashes[2].hex(),
        attribution_hash="0x" + hashes[3].hex(), signer_set_version=version, deadline=deadline,
    )
    assert round_digest(chain_id, address, a) == _manual_digest(chain_id, address, a)


def test_sign_round_recovers_to_signer_and_is_65_bytes_low_s():
    signature = sign_round(DEV_KEYS[0], 31337, POOL, _allocation())
    raw = bytes.fromhex(signature[2:])
    assert len(raw) == 65 and raw[64] in (27, 28)
    assert int.from_bytes(raw[32:64], "big") <= SECP256K1_HALF_N
    assert (recover_round_signer(signature, 31337, POOL, _allocation())
            == Account.from_key(DEV_KEYS[0]).address)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(RoundAllocation)])
def test_recovered_signer_changes_when_any_bound_field_changes(field):
    signer = Account.from_key(DEV_KEYS[0]).address
    base = _allocation()
    signature = sign_round(DEV_KEYS[0], 31337, POOL, base)
    value = getattr(base, field)
    changed = "0x" + "99" * 32 if isinstance(value, str) else value + 1
    variant = dataclasses.replace(base, **{field: changed})
    assert recover_round_signer(signature, 31337, POOL, variant) != signer
    assert recover_round_signer(signature, 1, POOL, base) != signer  # other chain
    assert recover_round_signer(signature, 31337, "0x" + "22" * 20, base) != signer  # other pool


def test_k_of_n_signatures_are_ordered_by_signer_address_and_duplicates_refused():
    a = _allocation()
    signatures = sign_round_k_of_n(DEV_KEYS, 31337, POOL, a)
    signers = [int(recover_round_signer(s, 31337, POOL, a), 16) for s in signatures]
    assert signers == sorted(signers) and len(set(signers)) == 3
    assert order_signatures(reversed(signatures), 31337, POOL, a) == signatures
    with pytest.raises(SigningError, match="same signer"):
        sign_round_k_of_n([DEV_KEYS[0], DEV_KEYS[0]], 31337, POOL, a)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"merkle_root": "0x1234"}, "merkle_root must be 32 bytes"),
        ({"checkpoint_hash": "0xzz"}, "not hex"),
        ({"total_wei": -1}, "total_wei"),
        ({"round_id": 2**256}, "round_id"),
        ({"deadline": True}, "deadline"),
    ],
)
def test_round_allocation_rejects_malformed_fields(overrides, message):
    with pytest.raises(SigningError, match=message):
        _allocation(**overrides)


def test_typed_data_rejects_bad_contract_and_signature_length():
    with pytest.raises(SigningError, match="verifying_contract"):
        round_typed_data(1, "0x1234", _allocation())
    with pytest.raises(SigningError, match="65 bytes"):
        recover_round_signer("0x" + "00" * 64, 1, POOL, _allocation())


def test_allocation_json_round_trips():
    a = _allocation()
    assert RoundAllocation.from_json(a.to_json()) == a


def test_recipient_digest_matches_hand_encoding_and_signer():
    account = Account.from_key(DEV_KEYS[1]).address
    recipient = "0x" + "ab" * 20
    struct_hash = keccak(encode(
        ["bytes32", "uint256", "address", "address", "uint256", "uint256"],
        [keccak(text=CLAIM_RECIPIENT_TYPE), 7, account, recipient, 5, 99],
    ))
    expected = keccak(b"\x19\x01" + _domain_separator(31337, POOL) + struct_hash)
    assert recipient_digest(31337, POOL, 7, account, recipient, 5, 99) == expected
    signature = sign_recipient(DEV_KEYS[1], 31337, POOL, 7, recipient, 5, 99)
    assert len(bytes.fromhex(signature[2:])) == 65


def test_python_digests_equal_contract_digests_on_anvil(deploy_pool, chain):
    pool = deploy_pool().pool
    for a in (_allocation(), _allocation(campaign_id=2**200, total_wei=2**255, deadline=0)):
        assert pool.round_digest(a) == round_digest(chain.chain_id, pool.address, a)
    account, recipient = Account.from_key(DEV_KEYS[2]).address, "0x" + "cd" * 20
    assert pool.recipient_digest(3, account, recipient, 2, 12345) == recipient_digest(
        chain.chain_id, pool.address, 3, account, recipient, 2, 12345)
