// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/**
 * @title MerkleDistributorReference
 * @notice GAS-COMPARISON BASELINE ONLY — never deploy it where value matters. A re-implementation,
 * written for this project, of the claim path of Uniswap's `MerkleDistributor`
 * (github.com/Uniswap/merkle-distributor, the single-token airdrop contract), used by
 * `bench/gas.py` to price `CompensationPool.claim` against the well-known single-root design.
 *
 * It is compiled by the project's own pipeline (`offchain.chain.compiler.compile_contracts`: the
 * same solc/solcjs, EVM `cancun`, optimizer on with 200 runs) as `CompensationPool`, so the
 * comparison measures the two designs, not two compilers. Behaviour kept from the original:
 * - the token and the Merkle root are `immutable` (no storage read for either);
 * - claimed leaves live in a packed bitmap, 256 indices per storage word (`isClaimed`/`_setClaimed`);
 * - leaf = `keccak256(abi.encodePacked(index, account, amount))` (hashed once, not double-hashed);
 * - the proof is checked the way OpenZeppelin Contracts 3.x `MerkleProof.verify` did: the proof is
 *   a `bytes32[] memory` (so the calldata proof is copied to memory) and each step hashes the
 *   sorted pair with `keccak256(abi.encodePacked(a, b))`;
 * - the payout is `require(IERC20(token).transfer(account, amount))` and the event is
 *   `Claimed(index, account, amount)` with no indexed field.
 * Differences from the original, none on the hot path's storage or hashing: Solidity 0.8
 * (checked arithmetic) instead of 0.6.11, no `IMerkleDistributor` interface, reworded revert
 * strings.
 */
contract MerkleDistributorReference {
    /// @notice The token paid out.
    address public immutable token;
    /// @notice Root of the tree of `keccak256(abi.encodePacked(index, account, amount))` leaves.
    bytes32 public immutable merkleRoot;

    /// @dev Word `index / 256` holds the claimed flags of indices `[256·w, 256·w + 255]`.
    mapping(uint256 wordIndex => uint256 bits) private claimedBitMap;

    /// @notice Leaf `index` paid `amount` to `account`.
    event Claimed(uint256 index, address account, uint256 amount);

    constructor(address token_, bytes32 merkleRoot_) {
        token = token_;
        merkleRoot = merkleRoot_;
    }

    /// @notice Whether leaf `index` has been claimed.
    function isClaimed(uint256 index) public view returns (bool) {
        uint256 word = claimedBitMap[index / 256];
        uint256 flag = uint256(1) << (index % 256);
        return word & flag == flag;
    }

    function _setClaimed(uint256 index) private {
        uint256 wordIndex = index / 256;
        claimedBitMap[wordIndex] = claimedBitMap[wordIndex] | (uint256(1) << (index % 256));
    }

    /// @notice Pays leaf `(index, account, amount)` to `account`; anyone may submit it.
    function claim(uint256 index, address account, uint256 amount, bytes32[] calldata merkleProof) external {
        require(!isClaimed(index), "MerkleDistributor: already claimed");
        bytes32 leaf = keccak256(abi.encodePacked(index, account, amount));
        require(_verify(merkleProof, merkleRoot, leaf), "MerkleDistributor: invalid proof");
        _setClaimed(index);
        require(IERC20(token).transfer(account, amount), "MerkleDistributor: transfer failed");
        emit Claimed(index, account, amount);
    }

    /// @dev Sorted-pair Merkle verification over a memory proof (OpenZeppelin 3.x semantics).
    function _verify(bytes32[] memory proof, bytes32 root, bytes32 leaf) private pure returns (bool) {
        bytes32 node = leaf;
        for (uint256 i = 0; i < proof.length; i++) {
            bytes32 sibling = proof[i];
            if (node <= sibling) {
                node = keccak256(abi.encodePacked(node, sibling));
            } else {
                node = keccak256(abi.encodePacked(sibling, node));
            }
        }
        return node == root;
    }
}
