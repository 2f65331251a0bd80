"""EIP-712 signatures of payout rounds (k-of-n) and of claim recipients for ``CompensationPool``.

The oracle signers sign the typed struct (EIP-712, https://eips.ethereum.org/EIPS/eip-712)::

    RoundAllocation(uint256 campaignId,uint256 roundId,bytes32 merkleRoot,uint256 total,
                    bytes32 checkpointHash,bytes32 datasetRoot,bytes32 attributionHash,
                    uint256 signerSetVersion,uint256 deadline)

in the domain ``{name: "CompensationPool", version: "2", chainId, verifyingContract}`` — the
domain OpenZeppelin's ``EIP712("CompensationPool", "2")`` builds. A signature is therefore valid
for one contract on one chain, one campaign, one round id, one signer-set version and until its
deadline. The digest is ``keccak256("\\x19\\x01" ‖ domainSeparator ‖ hashStruct(message))`` and
equals the contract's ``roundDigest(allocation)``. ``postRound`` takes the signatures ordered by
ascending signer address (:func:`order_signatures`), which lets the contract reject duplicates.

Holders may name another recipient for their claims by signing
``ClaimRecipient(uint256 campaignId,address account,address recipient,uint256 nonce,uint256 deadline)``
with the account's current pool nonce (``nonces(account)``): each authorisation pays one batch,
and ``cancelRecipientAuthorizations`` voids the unused ones.

Signatures are 65 bytes ``r ‖ s ‖ v`` with ``v ∈ {27, 28}`` and low ``s`` (EIP-2), which
OpenZeppelin's ``ECDSA`` requires. Uses eth-account only (no web3).

Pinned digest for fixed inputs (kept equal to the contract's by ``tests/test_signing.py``):

>>> allocation = RoundAllocation(
...     campaign_id=1, round_id=1, merkle_root="0x" + "11" * 32, total_wei=10**18,
...     checkpoint_hash="0x" + "22" * 32, dataset_root="0x" + "33" * 32,
...     attribution_hash="0x" + "44" * 32, signer_set_version=1, deadline=2**32)
>>> pool = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
>>> "0x" + round_digest(31337, pool, allocation).hex()
'0xfede70d497fe3d8aed5aef62f92d354b8f62caf819df16615d81024b786a30c1'

Signatures are deterministic (RFC 6979); anvil's public dev key #0 gives:

>>> dev_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
>>> signature = sign_round(dev_key, 31337, pool, allocation)
>>> len(bytes.fromhex(signature[2:]))
65
>>> recover_round_signer(signature, 31337, pool, allocation)
'0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_address, keccak, to_checksum_address

from offchain.allocation.round import (
    ROUND_ALLOCATION_FIELDS,
    RoundAllocation,
    SigningError,
    check_uint256,
    to_bytes,
)

__all__ = [
    "CLAIM_RECIPIENT_TYPE",
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "SigningError",
    "order_signatures",
    "recipient_digest",
    "recover_round_signer",
    "round_digest",
    "round_typed_data",
    "sign_recipient",
    "sign_round",
    "sign_round_k_of_n",
]

DOMAIN_NAME = "CompensationPool"
"""EIP-712 domain ``name`` (must match the contract's ``EIP712`` constructor)."""
DOMAIN_VERSION = "2"
"""EIP-712 domain ``version``."""

CLAIM_RECIPIENT_TYPE = (
    "ClaimRecipient(uint256 campaignId,address account,address recipient,uint256 nonce,"
    "uint256 deadline)"
)
"""EIP-712 type string of a holder's recipient authorisation."""

_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def _domain(chain_id: int, verifying_contract: str) -> dict[str, Any]:
    check_uint256("chain_id", chain_id)
    if not isinstance(verifying_contract, str) or not is_address(verifying_contract):
        raise SigningError(f"verifying_contract {verifying_contract!r} is not a valid address")
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(verifying_contract),
    }


def round_typed_data(
    chain_id: int, verifying_contract: str, allocation: RoundAllocation
) -> dict[str, Any]:
    """The full EIP-712 message (``types`` incl. ``EIP712Domain``, ``primaryType``, ``domain``,
    ``message``) of a round, as ``eth_signTypedData_v4`` and wallets expect it.

    Raises:
        SigningError: ``chain_id`` or ``verifying_contract`` is malformed.
    """
    return {
        "types": {
            "EIP712Domain": _DOMAIN_FIELDS,
            "RoundAllocation": [{"name": n, "type": t} for n, t, _ in ROUND_ALLOCATION_FIELDS],
        },
        "primaryType": "RoundAllocation",
        "domain": _domain(chain_id, verifying_contract),
        "message": allocation.message(),
    }


def _digest(message: SignableMessage) -> bytes:
    return keccak(b"\x19" + message.version + message.header + message.body)


def round_digest(chain_id: int, verifying_contract: str, allocation: RoundAllocation) -> bytes:
    """The 32-byte EIP-712 digest of a round; equals the contract's ``roundDigest(allocation)``."""
    return _digest(encode_typed_data(full_message=round_typed_data(
        chain_id, verifying_contract, allocation)))


def _sign(private_key: str | bytes, message: SignableMessage) -> str:
    try:
        signed = Account.sign_message(message, private_key)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"cannot sign with the given key: {type(exc).__name__}") from None
    return "0x" + bytes(signed.signature).hex()


def sign_round(
    private_key: str | bytes, chain_id: int, verifying_contract: str, allocation: RoundAllocation
) -> str:
    """Sign a round with one signer key; returns the 65-byte ``r ‖ s ‖ v`` as ``0x``-hex.

    Raises:
        SigningError: malformed inputs or key.
    """
    typed = round_typed_data(chain_id, verifying_contract, allocation)
    return _sign(private_key, encode_typed_data(full_message=typed))


def recover_round_signer(
    signature: str | bytes, chain_id: int, verifying_contract: str, allocation: RoundAllocation
) -> str:
    """The checksummed address that produced ``signature`` over the round.

    Raises:
        SigningError: the signature is not 65 bytes or is not a valid ECDSA signature.
    """
    raw = to_bytes(signature, "signature")
    if len(raw) != 65:
        raise SigningError(f"signature must be 65 bytes (r ‖ s ‖ v), got {len(raw)}")
    typed = round_typed_data(chain_id, verifying_contract, allocation)
    try:
        return to_checksum_address(
            Account.recover_message(encode_typed_data(full_message=typed), signature=raw)
        )
    except Exception as exc:  # eth-keys raises BadSignature / ValidationError variants
        raise SigningError(f"invalid signature: {exc}") from exc


def order_signatures(
    signatures: Iterable[str | bytes], chain_id: int, verifying_contract: str,
    allocation: RoundAllocation,
) -> list[str]:
    """Signatures sorted by ascending signer address, as ``postRound`` requires.

    Raises:
        SigningError: a signature is invalid, or two signatures come from the same signer.
    """
    by_signer: dict[int, str] = {}
    for sig in signatures:
        signer = recover_round_signer(sig, chain_id, verifying_contract, allocation)
        key = int(signer, 16)
        if key in by_signer:
            raise SigningError(f"two signatures from the same signer {signer}")
        by_signer[key] = sig if isinstance(sig, str) else "0x" + bytes(sig).hex()
    return [by_signer[k] for k in sorted(by_signer)]


def sign_round_k_of_n(
    private_keys: Sequence[str | bytes], chain_id: int, verifying_contract: str,
    allocation: RoundAllocation,
) -> list[str]:
    """Sign with every key in ``private_keys``; the signatures ordered for ``postRound``.

    Raises:
        SigningError: malformed inputs, or the same key given twice.
    """
    sigs = [sign_round(k, chain_id, verifying_contract, allocation) for k in private_keys]
    return order_signatures(sigs, chain_id, verifying_contract, allocation)


def _recipient_typed(
    chain_id: int, verifying_contract: str, campaign_id: int, account: str, recipient: str,
    nonce: int, deadline: int,
) -> dict[str, Any]:
    check_uint256("campaign_id", campaign_id)
    check_uint256("nonce", nonce)
    check_uint256("deadline", deadline)
    for label, addr in (("account", account), ("recipient", recipient)):
        if not isinstance(addr, str) or not is_address(addr):
            raise SigningError(f"{label} {addr!r} is not a valid address")
    return {
        "types": {
            "EIP712Domain": _DOMAIN_FIELDS,
            "ClaimRecipient": [
                {"name": "campaignId", "type": "uint256"},
                {"name": "account", "type": "address"},
                {"name": "recipient", "type": "address"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "ClaimRecipient",
        "domain": _domain(chain_id, verifying_contract),
        "message": {
            "campaignId": campaign_id,
            "account": to_checksum_address(account),
            "recipient": to_checksum_address(recipient),
            "nonce": nonce,
            "deadline": deadline,
        },
    }


def recipient_digest(
    chain_id: int, verifying_contract: str, campaign_id: int, account: str, recipient: str,
    nonce: int, deadline: int,
) -> bytes:
    """EIP-712 digest of ``ClaimRecipient``; equals the contract's ``recipientDigest``
    (``nonce``: the account's current ``nonces(account)`` on the pool)."""
    typed = _recipient_typed(chain_id, verifying_contract, campaign_id, account, recipient,
                             nonce, deadline)
    return _digest(encode_typed_data(full_message=typed))


def sign_recipient(
    private_key: str | bytes, chain_id: int, verifying_contract: str, campaign_id: int,
    recipient: str, nonce: int, deadline: int,
) -> str:
    """The holder (owner of ``private_key``) names ``recipient`` for one ``claimRoundsTo`` batch
    in a campaign, with its current pool nonce ``nonce``, until ``deadline`` (Unix seconds);
    returns the 65-byte signature as ``0x``-hex."""
    account = Account.from_key(private_key).address
    typed = _recipient_typed(chain_id, verifying_contract, campaign_id, account, recipient,
                             nonce, deadline)
    return _sign(private_key, encode_typed_data(full_message=typed))
