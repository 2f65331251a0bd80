"""Payout Merkle trees compatible with OpenZeppelin's ``StandardMerkleTree``.

Reimplements ``StandardMerkleTree.of(values, ["uint256", "address", "uint256"])`` from the JS
library ``@openzeppelin/merkle-tree`` (v1, dump format ``"standard-v1"``) for payout leaves
``(index, account, amount_wei)``, so that ``CompensationPool.claim`` verifies its proofs with
OpenZeppelin's ``MerkleProof``:

- leaf hash: ``keccak256(keccak256(abi.encode(index, account, amount)))`` (double hashing makes
  a leaf's 64-byte preimage unusable as an inner node: no second-preimage attack);
- leaves sorted by hash (bytewise ascending); the tree is an array of length ``2n − 1`` with
  the leaves at the end in reverse order (``tree[len − 1 − i] = sorted_leaves[i]``) and each
  inner node ``tree[i] = keccak256(sort(tree[2i + 1], tree[2i + 2]))`` (commutative pair hash);
- the root is ``tree[0]`` (a single leaf is its own root); a proof is the siblings on the way
  from the leaf to the root.

References: https://github.com/OpenZeppelin/merkle-tree (``src/standard.ts``, ``src/core.ts``)
and ``MerkleProof.sol`` in OpenZeppelin Contracts 5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import encode as abi_encode
from eth_abi.exceptions import EncodingError
from eth_utils import is_address, is_checksum_address, keccak, to_checksum_address

from offchain.allocation.hexbytes import to_bytes32
from offchain.allocation.wei import UINT256_MAX, parse_wei
from offchain.errors import AllocationError

__all__ = ["LEAF_ENCODING", "PayoutTree", "leaf_hash", "verify_proof"]

LEAF_ENCODING: tuple[str, str, str] = ("uint256", "address", "uint256")
"""Solidity types of a payout leaf: ``(index, account, amount_wei)``."""


Entry = tuple[int, str, int]


def leaf_hash(index: int, account: str, amount_wei: int) -> bytes:
    """``keccak256(bytes.concat(keccak256(abi.encode(index, account, amount_wei))))`` (32 bytes)."""
    return keccak(keccak(abi_encode(list(LEAF_ENCODING), [index, account, amount_wei])))


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


def verify_proof(root: str | bytes, leaf: bytes, proof: Sequence[str | bytes]) -> bool:
    """OpenZeppelin ``MerkleProof.verify``: fold ``leaf`` with ``proof`` and compare with ``root``."""
    node = leaf
    for sibling in proof:
        node = _hash_pair(node, to_bytes32(sibling, "proof node"))
    return node == to_bytes32(root, "root")


@dataclass(frozen=True)
class PayoutTree:
    """A StandardMerkleTree of payout entries ``(index, account, amount_wei)``.

    Build with :meth:`build`; do not call the constructor directly.

    Attributes:
        entries: The entries in input order; accounts checksummed.
        tree: All nodes, ``tree[0]`` the root, leaves at the end (OZ array layout).
        tree_index: For each entry (input order), the position of its leaf in ``tree``.
    """

    entries: tuple[Entry, ...]
    tree: tuple[bytes, ...]
    tree_index: tuple[int, ...]
    _positions: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._positions.update({entry[0]: pos for pos, entry in enumerate(self.entries)})

    @classmethod
    def build(cls, entries: Sequence[tuple[int, str, int]]) -> PayoutTree:
        """Build the tree of ``entries`` ``(index, account, amount_wei)``.

        Args:
            entries: Non-empty; indices unique ints in ``[0, 2**256)``; accounts valid hex
                addresses (any case, a wrong EIP-55 checksum is refused); amounts ints in wei,
                ``0 ≤ amount < 2**256``.

        Raises:
            AllocationError: an entry breaks a rule above.
        """
        normalised = tuple(_validate(entries))
        hashes = [leaf_hash(*e) for e in normalised]
        order = sorted(range(len(hashes)), key=lambda i: hashes[i])
        n = len(hashes)
        tree: list[bytes] = [b""] * (2 * n - 1)
        tree_index = [0] * n
        for rank, entry_i in enumerate(order):
            position = len(tree) - 1 - rank
            tree[position] = hashes[entry_i]
            tree_index[entry_i] = position
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = _hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(entries=normalised, tree=tuple(tree), tree_index=tuple(tree_index))

    # -- queries -------------------------------------------------------------------------------

    @property
    def root(self) -> str:
        """The root, ``0x``-hex bytes32."""
        return "0x" + self.tree[0].hex()

    @property
    def root_bytes(self) -> bytes:
        """The root, 32 bytes."""
        return self.tree[0]

    @property
    def total_wei(self) -> int:
        """Sum of the entries' amounts (wei): the round ``total`` to post."""
        return sum(e[2] for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, index: int) -> Entry:
        """The entry with payout index ``index``.

        Raises:
            AllocationError: no such index.
        """
        return self.entries[self._position(index)]

    def proof(self, index: int) -> list[str]:
        """Proof (``0x``-hex sibling hashes, leaf to root) for the entry with payout ``index``.

        Raises:
            AllocationError: no such index.
        """
        node = self.tree_index[self._position(index)]
        proof: list[str] = []
        while node > 0:
            sibling = node - 1 if node % 2 == 0 else node + 1
            proof.append("0x" + self.tree[sibling].hex())
            node = (node - 1) // 2
        return proof

    def verify(self, entry: tuple[int, str, int], proof: Sequence[str | bytes]) -> bool:
        """Whether ``proof`` proves ``entry`` ``(index, account, amount_wei)`` under :attr:`root`.

        Malformed entries or proofs return ``False`` rather than raising.
        """
        try:
            index, account, amount = entry
            leaf = leaf_hash(int(index), to_checksum_address(account), int(amount))
            return verify_proof(self.tree[0], leaf, proof)
        except (ValueError, TypeError, OverflowError, EncodingError):
            return False

    def _position(self, index: int) -> int:
        try:
            return self._positions[index]
        except (KeyError, TypeError):
            raise AllocationError(f"no payout with index {index!r} in the tree") from None

    # -- (de)serialisation ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The tree in OpenZeppelin's ``StandardMerkleTree.dump()`` format (``"standard-v1"``).

        Integers are written as decimal strings, as the JS library does for uint256 values.
        """
        return {
            "format": "standard-v1",
            "leafEncoding": list(LEAF_ENCODING),
            "tree": ["0x" + node.hex() for node in self.tree],
            "values": [
                {"value": [str(index), account, str(amount)], "treeIndex": tree_index}
                for (index, account, amount), tree_index in zip(
                    self.entries, self.tree_index, strict=True
                )
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PayoutTree:
        """Load a ``"standard-v1"`` dump (ours or the JS library's) and check its integrity.

        The tree is rebuilt from the values and must equal the dumped nodes exactly.

        Raises:
            AllocationError: wrong format or encoding, or the nodes do not match the values.
        """
        if data.get("format") != "standard-v1":
            raise AllocationError(f"unknown Merkle tree format {data.get('format')!r}")
        if list(data.get("leafEncoding", [])) != list(LEAF_ENCODING):
            raise AllocationError(
                f"leaf encoding {data.get('leafEncoding')!r} is not {list(LEAF_ENCODING)}"
            )
        try:
            values = data["values"]
            entries = [
                (parse_wei(v["value"][0], "index"), str(v["value"][1]),
                 parse_wei(v["value"][2], "amount"))
                for v in values
            ]
            dumped_index = [int(v["treeIndex"]) for v in values]
            dumped_tree = [to_bytes32(node, "tree node") for node in data["tree"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise AllocationError(f"malformed Merkle tree dump: {exc}") from exc
        tree = cls.build(entries)
        if list(tree.tree) != dumped_tree:
            raise AllocationError("Merkle tree dump is inconsistent: nodes do not match its values")
        if list(tree.tree_index) != dumped_index:
            raise AllocationError("Merkle tree dump is inconsistent: treeIndex does not match")
        return tree


def _validate(entries: Sequence[tuple[int, str, int]]) -> list[Entry]:
    if len(entries) == 0:
        raise AllocationError("a payout tree needs at least one entry")
    seen: set[int] = set()
    out: list[Entry] = []
    for position, entry in enumerate(entries):
        try:
            index, account, amount = entry
        except (TypeError, ValueError) as exc:
            raise AllocationError(
                f"entry {position} is not (index, account, amount_wei): {entry!r}"
            ) from exc
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= UINT256_MAX:
            raise AllocationError(f"entry {position}: index must be a uint256 int, got {index!r}")
        if index in seen:
            raise AllocationError(f"entry {position}: duplicate index {index}")
        seen.add(index)
        if not _is_valid_address(account):
            raise AllocationError(
                f"entry {position}: {account!r} is not a valid address (or has a bad EIP-55 checksum)"
            )
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int)
            or not 0 <= amount <= UINT256_MAX
        ):
            raise AllocationError(
                f"entry {position}: amount must be an int in wei, 0 ≤ amount < 2**256, got {amount!r}"
            )
        out.append((index, to_checksum_address(account), amount))
    return out


def _is_valid_address(account: object) -> bool:
    """A 20-byte hex address; mixed case must be a correct EIP-55 checksum."""
    if not isinstance(account, str) or not is_address(account):
        return False
    digits = account.removeprefix("0x").removeprefix("0X")
    if digits.lower() == digits or digits.upper() == digits:
        return True
    return is_checksum_address(account)
