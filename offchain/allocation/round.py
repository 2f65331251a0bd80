"""The signed content of one payout round: the EIP-712 ``RoundAllocation`` struct.

A mirror of the contract's struct (field order of the type string)::

    RoundAllocation(uint256 campaignId,uint256 roundId,bytes32 merkleRoot,uint256 total,
                    bytes32 checkpointHash,bytes32 datasetRoot,bytes32 attributionHash,
                    uint256 signerSetVersion,uint256 deadline)

It lives with the allocation because both the oracle (which signs it,
:mod:`offchain.oracle.signing`) and the chain client (which posts it,
:mod:`offchain.chain.pool`) use it, and neither may import the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from offchain.allocation import hexbytes
from offchain.allocation.wei import UINT256_MAX, WeiFormatError, parse_wei, wei_str
from offchain.errors import OffchainError

__all__ = [
    "ROUND_ALLOCATION_FIELDS",
    "ROUND_ALLOCATION_TYPE",
    "RoundAllocation",
    "SigningError",
    "check_uint256",
    "to_bytes",
    "to_bytes32",
]

ROUND_ALLOCATION_FIELDS: tuple[tuple[str, str, str], ...] = (
    # (solidity name, type, python attribute)
    ("campaignId", "uint256", "campaign_id"),
    ("roundId", "uint256", "round_id"),
    ("merkleRoot", "bytes32", "merkle_root"),
    ("total", "uint256", "total_wei"),
    ("checkpointHash", "bytes32", "checkpoint_hash"),
    ("datasetRoot", "bytes32", "dataset_root"),
    ("attributionHash", "bytes32", "attribution_hash"),
    ("signerSetVersion", "uint256", "signer_set_version"),
    ("deadline", "uint256", "deadline"),
)
"""(Solidity name, ABI type, Python attribute) of each field, in the struct's order."""
ROUND_ALLOCATION_TYPE = (
    "RoundAllocation(" + ",".join(f"{t} {n}" for n, t, _ in ROUND_ALLOCATION_FIELDS) + ")"
)
"""The EIP-712 type string; ``keccak256`` of it is the contract's ``ROUND_ALLOCATION_TYPEHASH``."""


class SigningError(OffchainError):
    """A round cannot be signed or verified: malformed inputs, key or signature."""


@dataclass(frozen=True)
class RoundAllocation:
    """The signed content of one round (mirror of the contract's ``RoundAllocation`` struct).

    Attributes:
        campaign_id: Campaign id on the pool.
        round_id: Round id, strictly sequential from 1 within the campaign.
        merkle_root: Payout tree root (``0x``-hex, 32 bytes).
        total_wei: Sum of the round's leaf amounts (token units, wei for 18 decimals).
        checkpoint_hash: SHA-256 of the round's model checkpoint (``0x``-hex, 32 bytes).
        dataset_root: Merkle root of the dataset manifest, holder → image hashes (32 bytes).
        attribution_hash: SHA-256 of the round's TRAK score file (32 bytes).
        signer_set_version: Version of the campaign's signer set that signs.
        deadline: Unix time (seconds) after which the signatures are refused.

    Raises:
        SigningError: a field is out of range or malformed (checked at construction).
    """

    campaign_id: int
    round_id: int
    merkle_root: str
    total_wei: int
    checkpoint_hash: str
    dataset_root: str
    attribution_hash: str
    signer_set_version: int
    deadline: int

    def __post_init__(self) -> None:
        for _, abi_type, attr in ROUND_ALLOCATION_FIELDS:
            value = getattr(self, attr)
            if abi_type == "bytes32":
                object.__setattr__(self, attr, "0x" + to_bytes32(value, attr).hex())
            else:
                check_uint256(attr, value)

    def message(self) -> dict[str, Any]:
        """The EIP-712 ``message`` (Solidity field names, bytes32 as bytes)."""
        return {
            name: (to_bytes32(getattr(self, attr), attr) if t == "bytes32"
                   else getattr(self, attr))
            for name, t, attr in ROUND_ALLOCATION_FIELDS
        }

    def as_tuple(self) -> tuple[Any, ...]:
        """The struct as the ABI tuple ``postRound`` takes (field order of the type string)."""
        return tuple(self.message()[name] for name, _, _ in ROUND_ALLOCATION_FIELDS)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields (Python names); every uint256 is a decimal string (JavaScript's
        ``JSON.parse`` rounds numbers above 2**53, see :mod:`offchain.allocation.wei`)."""
        fields = asdict(self)
        return {
            attr: (fields[attr] if abi_type == "bytes32" else wei_str(fields[attr], attr))
            for _, abi_type, attr in ROUND_ALLOCATION_FIELDS
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundAllocation:
        """Inverse of :meth:`to_json`: uint256 fields parsed strictly from decimal strings (JSON
        integers of signing requests written before are accepted too).

        Raises:
            SigningError: a field is missing or malformed (the message names it).
        """
        values: dict[str, Any] = {}
        for _, abi_type, attr in ROUND_ALLOCATION_FIELDS:
            if attr not in data:
                raise SigningError(f"the allocation has no {attr!r}")
            try:
                values[attr] = data[attr] if abi_type == "bytes32" else parse_wei(data[attr], attr)
            except WeiFormatError as exc:
                raise SigningError(str(exc)) from None
        return cls(**values)


def check_uint256(label: str, value: Any) -> None:
    """Raise :class:`SigningError` unless ``value`` is an int (not a bool) in 0 … 2²⁵⁶ − 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise SigningError(f"{label} must be a uint256 int, got {value!r}")


def to_bytes(value: str | bytes, label: str) -> bytes:
    """``value`` as bytes (:func:`offchain.allocation.hexbytes.to_bytes`).

    Raises:
        SigningError: not hex, or neither bytes nor a string (the message names ``label``).
    """
    return hexbytes.to_bytes(value, label, SigningError)


def to_bytes32(value: str | bytes, label: str) -> bytes:
    """``value`` as exactly 32 bytes (see :func:`to_bytes`).

    Raises:
        SigningError: not hex, or not 32 bytes long.
    """
    return hexbytes.to_bytes32(value, label, SigningError)
