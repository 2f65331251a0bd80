"""EIP-712 signatures of payout rounds for ``CompensationPool.postRound``.

The oracle signs the typed struct (EIP-712, https://eips.ethereum.org/EIPS/eip-712)::

    RoundAllocation(uint256 roundId,bytes32 merkleRoot,uint256 total)

in the domain ``{name: "CompensationPool", version: "1", chainId, verifyingContract}`` — the
domain OpenZeppelin's ``EIP712("CompensationPool", "1")`` builds — so a signature is valid for
one pool on one chain only. The digest is
``keccak256("\\x19\\x01" ‖ domainSeparator ‖ hashStruct(message))`` (EIP-191 version ``0x01``)
and equals the contract's ``roundDigest(roundId, merkleRoot, total)``.

Signatures are 65 bytes ``r ‖ s ‖ v`` with ``v ∈ {27, 28}`` and low ``s`` (EIP-2), which
OpenZeppelin's ``ECDSA.recover`` accepts. Uses eth-account only (no web3).

Pinned digest for fixed inputs (kept equal to the contract's by ``tests/test_signing.py``):

>>> digest = round_digest(
...     chain_id=31337,
...     verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3",
...     round_id=1,
...     merkle_root="0x" + "11" * 32,
...     total_wei=10**18,
... )
>>> "0x" + digest.hex()
'0xdb11e1abdfc32a807bb1580ff3f55691a815c39e051cce765a04cd978612e83f'

Signatures are deterministic (RFC 6979); anvil's public dev key #0 gives:

>>> dev_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
>>> args = (31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3", 1, "0x" + "11" * 32, 10**18)
>>> signature = sign_round(dev_key, *args)
>>> signature[:18], len(bytes.fromhex(signature[2:]))
('0x8db218e90643929a', 65)
>>> recover_round_signer(signature, *args)
'0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266'
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_address, keccak, to_checksum_address

from offchain.errors import OffchainError

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "ROUND_ALLOCATION_TYPE",
    "SigningError",
    "recover_round_signer",
    "round_digest",
    "round_typed_data",
    "sign_round",
]

DOMAIN_NAME = "CompensationPool"
"""EIP-712 domain ``name`` (must match the contract's ``EIP712`` constructor)."""
DOMAIN_VERSION = "1"
"""EIP-712 domain ``version``."""

ROUND_ALLOCATION_TYPE = "RoundAllocation(uint256 roundId,bytes32 merkleRoot,uint256 total)"
"""The EIP-712 type string; ``keccak256`` of it is the contract's ``ROUND_ALLOCATION_TYPEHASH``."""

_UINT256_MAX = 2**256 - 1


class SigningError(OffchainError):
    """A round cannot be signed or verified: malformed inputs, key or signature."""


def round_typed_data(
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    merkle_root: str | bytes,
    total_wei: int,
) -> dict[str, Any]:
    """The full EIP-712 message (``types`` incl. ``EIP712Domain``, ``primaryType``, ``domain``,
    ``message``) for a round, as ``eth_signTypedData_v4`` and wallets expect it.

    Args:
        chain_id: EIP-155 chain id of the pool's chain.
        verifying_contract: The pool's address.
        round_id: The round id (``uint256``, the pool's ``nextRoundId``).
        merkle_root: The payout tree's root, 32 bytes or ``0x``-hex.
        total_wei: Sum of the round's payouts, in wei.

    Raises:
        SigningError: an input is out of range or malformed.
    """
    root = _bytes32(merkle_root)
    for label, value in (("chain_id", chain_id), ("round_id", round_id), ("total_wei", total_wei)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT256_MAX:
            raise SigningError(f"{label} must be a uint256 int, got {value!r}")
    if not isinstance(verifying_contract, str) or not is_address(verifying_contract):
        raise SigningError(f"verifying_contract {verifying_contract!r} is not a valid address")
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "RoundAllocation": [
                {"name": "roundId", "type": "uint256"},
                {"name": "merkleRoot", "type": "bytes32"},
                {"name": "total", "type": "uint256"},
            ],
        },
        "primaryType": "RoundAllocation",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(verifying_contract),
        },
        "message": {"roundId": round_id, "merkleRoot": root, "total": total_wei},
    }


def _signable(
    chain_id: int, verifying_contract: str, round_id: int, merkle_root: str | bytes, total_wei: int
) -> SignableMessage:
    typed = round_typed_data(chain_id, verifying_contract, round_id, merkle_root, total_wei)
    return encode_typed_data(full_message=typed)


def round_digest(
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    merkle_root: str | bytes,
    total_wei: int,
) -> bytes:
    """The 32-byte EIP-712 digest of a round (what the oracle's key signs).

    Equals ``CompensationPool.roundDigest(round_id, merkle_root, total_wei)`` on the pool at
    ``verifying_contract`` on chain ``chain_id``. Arguments as in :func:`round_typed_data`.
    """
    message = _signable(chain_id, verifying_contract, round_id, merkle_root, total_wei)
    return keccak(b"\x19" + message.version + message.header + message.body)


def sign_round(
    private_key: str | bytes,
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    merkle_root: str | bytes,
    total_wei: int,
) -> str:
    """Sign a round with ``private_key``; returns the 65-byte signature ``r ‖ s ‖ v`` as ``0x``-hex.

    Raises:
        SigningError: malformed inputs or key.
    """
    message = _signable(chain_id, verifying_contract, round_id, merkle_root, total_wei)
    try:
        signed = Account.sign_message(message, private_key)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"cannot sign with the given key: {type(exc).__name__}") from None
    return "0x" + bytes(signed.signature).hex()


def recover_round_signer(
    signature: str | bytes,
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    merkle_root: str | bytes,
    total_wei: int,
) -> str:
    """The checksummed address that produced ``signature`` over the round.

    Raises:
        SigningError: the signature is not 65 bytes or is not a valid ECDSA signature.
    """
    raw = _to_bytes(signature, "signature")
    if len(raw) != 65:
        raise SigningError(f"signature must be 65 bytes (r ‖ s ‖ v), got {len(raw)}")
    message = _signable(chain_id, verifying_contract, round_id, merkle_root, total_wei)
    try:
        return to_checksum_address(Account.recover_message(message, signature=raw))
    except Exception as exc:  # eth-keys raises BadSignature / ValidationError variants
        raise SigningError(f"invalid signature: {exc}") from exc


def _to_bytes(value: str | bytes, label: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        try:
            return bytes.fromhex(value.removeprefix("0x"))
        except ValueError as exc:
            raise SigningError(f"{label} is not hex: {value!r}") from exc
    raise SigningError(f"{label} must be bytes or 0x-hex, got {type(value).__name__}")


def _bytes32(value: str | bytes) -> bytes:
    raw = _to_bytes(value, "merkle_root")
    if len(raw) != 32:
        raise SigningError(f"merkle_root must be 32 bytes, got {len(raw)}")
    return raw
