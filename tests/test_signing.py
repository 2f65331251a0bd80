"""EIP-712 round signatures: pinned digest, independent encoding, equality with the contract."""

from __future__ import annotations

import doctest

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.oracle import signing
from offchain.oracle.signing import (
    ROUND_ALLOCATION_TYPE,
    SigningError,
    recover_round_signer,
    round_digest,
    round_typed_data,
    sign_round,
)

# Fixtures (anvil, chain, compiled, roles, deploy_pool) come from the shared module, loaded
# explicitly as a plugin so one anvil node serves every chain test in the session.
pytest_plugins = ["tests.chain_fixtures"]

POOL = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ROOT = "0x" + "11" * 32
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil #0, public


def _manual_digest(chain_id: int, contract: str, round_id: int, root: bytes, total: int) -> bytes:
    """EIP-712 written out by hand with eth_abi, independent of eth-account's encoder."""
    domain_type = keccak(
        text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    domain_separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_type, keccak(text="CompensationPool"), keccak(text="1"), chain_id, contract],
        )
    )
    struct_hash = keccak(
        encode(
            ["bytes32", "uint256", "bytes32", "uint256"],
            [keccak(text=ROUND_ALLOCATION_TYPE), round_id, root, total],
        )
    )
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


def test_module_doctests_pin_known_digest_and_signature():
    result = doctest.testmod(signing, verbose=False)
    assert result.attempted >= 5 and result.failed == 0


def test_round_typed_data_contains_domain_and_types():
    typed = round_typed_data(31337, POOL.lower(), 3, ROOT, 10)
    assert typed["primaryType"] == "RoundAllocation"
    assert [f["name"] for f in typed["types"]["EIP712Domain"]] == [
        "name", "version", "chainId", "verifyingContract",
    ]  # fmt: skip
    assert typed["domain"] == {
        "name": "CompensationPool",
        "version": "1",
        "chainId": 31337,
        "verifyingContract": POOL,
    }
    assert typed["message"] == {"roundId": 3, "merkleRoot": bytes.fromhex("11" * 32), "total": 10}


@settings(max_examples=40, deadline=None)
@given(
    chain_id=st.integers(1, 2**64),
    contract=st.binary(min_size=20, max_size=20),
    round_id=st.integers(0, 2**256 - 1),
    root=st.binary(min_size=32, max_size=32),
    total=st.integers(0, 2**256 - 1),
)
def test_round_digest_equals_hand_written_eip712_encoding(
    chain_id, contract, round_id, root, total
):
    address = to_checksum_address("0x" + contract.hex())
    assert round_digest(chain_id, address, round_id, root, total) == _manual_digest(
        chain_id, address, round_id, root, total
    )


def test_sign_round_recovers_to_signer_and_is_65_bytes_low_s():
    signature = sign_round(DEV_KEY, 31337, POOL, 1, ROOT, 10**18)
    raw = bytes.fromhex(signature[2:])
    assert len(raw) == 65 and raw[64] in (27, 28)
    assert (
        int.from_bytes(raw[32:64], "big")
        <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
    )
    assert (
        recover_round_signer(signature, 31337, POOL, 1, ROOT, 10**18)
        == Account.from_key(DEV_KEY).address
    )


def test_recover_round_signer_differs_when_any_field_changes():
    signer = Account.from_key(DEV_KEY).address
    signature = sign_round(DEV_KEY, 31337, POOL, 1, ROOT, 10**18)
    variants = [
        (1, POOL, 1, ROOT, 10**18),
        (31337, "0x" + "22" * 20, 1, ROOT, 10**18),
        (31337, POOL, 2, ROOT, 10**18),
        (31337, POOL, 1, "0x" + "12" * 32, 10**18),
        (31337, POOL, 1, ROOT, 10**18 + 1),
    ]
    for variant in variants:
        assert recover_round_signer(signature, *variant) != signer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"merkle_root": "0x1234"}, "32 bytes"),
        ({"merkle_root": "0xzz"}, "not hex"),
        ({"total_wei": -1}, "total_wei"),
        ({"round_id": 2**256}, "round_id"),
        ({"verifying_contract": "0x1234"}, "verifying_contract"),
    ],
)
def test_round_typed_data_rejects_malformed_inputs(kwargs, message):
    args = {
        "chain_id": 1,
        "verifying_contract": POOL,
        "round_id": 1,
        "merkle_root": ROOT,
        "total_wei": 1,
    }
    with pytest.raises(SigningError, match=message):
        round_typed_data(**{**args, **kwargs})


def test_recover_round_signer_rejects_wrong_length_signature():
    with pytest.raises(SigningError, match="65 bytes"):
        recover_round_signer("0x" + "00" * 64, 1, POOL, 1, ROOT, 1)


def test_python_digest_equals_contract_round_digest_on_anvil(deploy_pool, chain):
    pool = deploy_pool().pool
    for round_id, root, total in [
        (1, ROOT, 1),
        (2, "0x" + "ee" * 32, 10**24),
        (2**200, ROOT, 2**255),
    ]:
        assert pool.round_digest(round_id, root, total) == round_digest(
            chain.chain_id, pool.address, round_id, root, total
        )
