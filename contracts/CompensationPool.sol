// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";

/**
 * @title CompensationPool
 * @notice Pays image data holders for each training round of a generative model.
 *
 * Sponsors fund the pool with an ERC-20 token. After every training round an off-chain oracle
 * computes each holder's payment, commits to the list as an OpenZeppelin `StandardMerkleTree`
 * over `(uint256 index, address account, uint256 amount)` and signs the round's
 * `(roundId, merkleRoot, total)` as EIP-712 typed data. Anyone may relay the signed round with
 * {postRound}, and anyone may submit a holder's {claim}; the tokens always go to the holder's
 * `account` from the leaf. When the claim period ends (`claimDeadline`), claims stop and each
 * sponsor may {reclaim} its pro-rata share of what was never claimed.
 *
 * Accounting invariants (all amounts in the token's smallest unit):
 * - `totalAllocated <= totalFunded` (a round may only allocate unallocated funds);
 * - `rounds[r].claimed <= rounds[r].total`, hence `totalClaimed <= totalAllocated`;
 * - the pool's token balance is at least `totalFunded - totalClaimed - totalReclaimed`, because
 *   {fund} credits the balance delta actually received (fee-on-transfer tokens are credited what
 *   arrived).
 *
 * Hazards, stated plainly:
 * - The oracle key is trusted: a round signed by it can allocate any unallocated funds to any
 *   accounts. Rounds are bound to this contract and chain by the EIP-712 domain and cannot be
 *   replayed, because round ids are strictly sequential.
 * - Tokens that charge a fee on transfer also charge it on payouts: a holder then receives less
 *   than the leaf's `amount`. Rebasing tokens are not supported.
 * - After `claimDeadline` unclaimed allocations are returned to sponsors, not to holders.
 */
contract CompensationPool is EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using BitMaps for BitMaps.BitMap;

    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice A posted payout round.
    /// @param merkleRoot Root of the round's StandardMerkleTree of `(index, account, amount)`.
    /// @param total Sum of the round's leaf amounts (token units), reserved from the pool.
    /// @param claimed Amount already paid out of this round (token units).
    struct Round {
        bytes32 merkleRoot;
        uint256 total;
        uint256 claimed;
    }

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev A constructor address argument (`what` names it) is the zero address.
    error ZeroAddress(string what);
    /// @dev The claim deadline given to the constructor is not in the future.
    error DeadlineNotInFuture(uint256 deadline, uint256 nowTimestamp);
    /// @dev A zero amount was funded, or nothing arrived from the transfer.
    error ZeroAmount();
    /// @dev The round's EIP-712 signature recovers to `recovered`, not the oracle `expected`.
    error InvalidSigner(address recovered, address expected);
    /// @dev Rounds must be posted in order: `got` is not the next round id `expected`.
    error UnexpectedRoundId(uint256 got, uint256 expected);
    /// @dev A round's total must be positive.
    error ZeroRoundTotal();
    /// @dev A round's Merkle root must not be zero.
    error ZeroMerkleRoot();
    /// @dev A round's `total` exceeds the funds not yet allocated (`available`).
    error InsufficientUnallocated(uint256 total, uint256 available);
    /// @dev No round `roundId` has been posted.
    error UnknownRound(uint256 roundId);
    /// @dev Leaf `index` of round `roundId` has already been claimed.
    error AlreadyClaimed(uint256 roundId, uint256 index);
    /// @dev The Merkle proof does not prove leaf `(index, account, amount)` in round `roundId`.
    error InvalidProof(uint256 roundId, uint256 index, address account, uint256 amount);
    /// @dev Paying `amount` would take round `roundId` past its `total` (`claimed` so far).
    error RoundOverClaimed(uint256 roundId, uint256 claimed, uint256 amount, uint256 total);
    /// @dev The claim period is over (`nowTimestamp >= deadline`): no more funding, rounds or claims.
    error ClaimPeriodEnded(uint256 nowTimestamp, uint256 deadline);
    /// @dev Reclaiming is only possible once the claim period is over (`nowTimestamp < deadline`).
    error ClaimPeriodNotEnded(uint256 nowTimestamp, uint256 deadline);
    /// @dev `sponsor` never funded the pool, so it has no share to reclaim.
    error NotASponsor(address sponsor);
    /// @dev `sponsor` has already reclaimed its share.
    error AlreadyReclaimed(address sponsor);

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice `sponsor` funded the pool; `amount` is what actually arrived (token units).
    event Funded(address indexed sponsor, uint256 amount);
    /// @notice Round `roundId` was posted, reserving `total` token units under `merkleRoot`.
    event RoundPosted(uint256 indexed roundId, bytes32 merkleRoot, uint256 total);
    /// @notice Leaf `index` of round `roundId` paid `amount` token units to `account`.
    event Claimed(uint256 indexed roundId, uint256 indexed index, address indexed account, uint256 amount);
    /// @notice `sponsor` reclaimed `amount` token units of the unclaimed remainder.
    event Reclaimed(address indexed sponsor, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice EIP-712 type hash of `RoundAllocation(uint256 roundId,bytes32 merkleRoot,uint256 total)`.
    bytes32 public constant ROUND_ALLOCATION_TYPEHASH =
        keccak256("RoundAllocation(uint256 roundId,bytes32 merkleRoot,uint256 total)");

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    IERC20 private immutable _token;
    address private immutable _oracle;
    address private immutable _sponsor;
    uint256 private immutable _claimDeadline;

    uint256 private _nextRoundId = 1;
    uint256 private _totalFunded;
    uint256 private _totalAllocated;
    uint256 private _totalClaimed;
    uint256 private _totalReclaimed;

    mapping(uint256 roundId => Round) private _rounds;
    mapping(uint256 roundId => BitMaps.BitMap) private _claimedLeaves;
    mapping(address sponsor => uint256) private _fundedBy;
    mapping(address sponsor => bool) private _reclaimed;

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /**
     * @param token_ The ERC-20 token the pool holds and pays out.
     * @param oracle_ The address whose EIP-712 signature authorises a round.
     * @param sponsor_ The campaign's lead sponsor, recorded for off-chain bookkeeping; anyone may
     *        co-fund with {fund} and every funder is a sponsor for {reclaim}.
     * @param claimDeadline_ Unix time (seconds) at which the claim period ends; must be in the future.
     */
    constructor(IERC20 token_, address oracle_, address sponsor_, uint256 claimDeadline_)
        EIP712("CompensationPool", "1")
    {
        if (address(token_) == address(0)) revert ZeroAddress("token");
        if (oracle_ == address(0)) revert ZeroAddress("oracle");
        if (sponsor_ == address(0)) revert ZeroAddress("sponsor");
        if (claimDeadline_ <= block.timestamp) revert DeadlineNotInFuture(claimDeadline_, block.timestamp);
        _token = token_;
        _oracle = oracle_;
        _sponsor = sponsor_;
        _claimDeadline = claimDeadline_;
    }

    /*//////////////////////////////////////////////////////////////
                            EXTERNAL: WRITE
    //////////////////////////////////////////////////////////////*/

    /**
     * @notice Transfers `amount` tokens from the caller into the pool and credits the caller as a
     * sponsor with what actually arrived (the balance delta).
     * @dev The caller must have approved the pool for `amount`. Only during the claim period.
     * @param amount Token units to transfer in.
     */
    function fund(uint256 amount) external nonReentrant {
        _requireClaimPeriod();
        if (amount == 0) revert ZeroAmount();
        uint256 balanceBefore = _token.balanceOf(address(this));
        _token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = _token.balanceOf(address(this)) - balanceBefore;
        if (received == 0) revert ZeroAmount();
        _fundedBy[msg.sender] += received;
        _totalFunded += received;
        emit Funded(msg.sender, received);
    }

    /**
     * @notice Posts round `roundId` with the oracle's EIP-712 signature over
     * `RoundAllocation(roundId, merkleRoot, total)`; anyone may relay it.
     * @dev Reverts unless `roundId == nextRoundId()`, `total > 0`, `merkleRoot != 0`,
     * `total <= unallocated()` and the signature recovers to the oracle. ECDSA rejects
     * malleable (high-s) signatures.
     * @param roundId The round's id (1, 2, 3, ...).
     * @param merkleRoot Root of the round's StandardMerkleTree.
     * @param total Sum of the round's leaf amounts (token units).
     * @param signature The oracle's 65-byte signature `r ‖ s ‖ v` of {roundDigest}.
     */
    function postRound(uint256 roundId, bytes32 merkleRoot, uint256 total, bytes calldata signature) external {
        _requireClaimPeriod();
        if (roundId != _nextRoundId) revert UnexpectedRoundId(roundId, _nextRoundId);
        if (total == 0) revert ZeroRoundTotal();
        if (merkleRoot == bytes32(0)) revert ZeroMerkleRoot();
        uint256 available = unallocated();
        if (total > available) revert InsufficientUnallocated(total, available);
        address recovered = ECDSA.recover(roundDigest(roundId, merkleRoot, total), signature);
        if (recovered != _oracle) revert InvalidSigner(recovered, _oracle);

        _rounds[roundId] = Round({merkleRoot: merkleRoot, total: total, claimed: 0});
        _totalAllocated += total;
        _nextRoundId = roundId + 1;
        emit RoundPosted(roundId, merkleRoot, total);
    }

    /**
     * @notice Pays leaf `(index, account, amount)` of round `roundId` to `account`; anyone may submit.
     * @dev Leaf = `keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))))`
     * (OpenZeppelin StandardMerkleTree). Only during the claim period.
     * @param roundId The round the leaf belongs to.
     * @param index The leaf's index in the round (unique per round).
     * @param account The holder who receives the tokens.
     * @param amount Token units owed to `account`.
     * @param proof Sibling hashes from the leaf to the root.
     */
    function claim(uint256 roundId, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        external
        nonReentrant
    {
        _requireClaimPeriod();
        Round storage round = _rounds[roundId];
        if (round.merkleRoot == bytes32(0)) revert UnknownRound(roundId);
        if (_claimedLeaves[roundId].get(index)) revert AlreadyClaimed(roundId, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, round.merkleRoot, leaf)) {
            revert InvalidProof(roundId, index, account, amount);
        }
        if (round.claimed + amount > round.total) {
            revert RoundOverClaimed(roundId, round.claimed, amount, round.total);
        }

        _claimedLeaves[roundId].set(index);
        round.claimed += amount;
        _totalClaimed += amount;
        emit Claimed(roundId, index, account, amount);
        _token.safeTransfer(account, amount);
    }

    /**
     * @notice After the claim period, pays the caller its pro-rata share of the unclaimed remainder,
     * once: `fundedBy(caller) * (totalFunded - totalClaimed) / totalFunded`, rounded down.
     * @dev Claims, funding and rounds stop at the deadline, so the remainder is fixed and every
     * sponsor's share is computed from the same numbers whatever the order of reclaims. Rounding
     * down leaves at most one token unit per sponsor in the pool (dust, not recoverable).
     * @return amount Token units paid to the caller.
     */
    function reclaim() external nonReentrant returns (uint256 amount) {
        if (block.timestamp < _claimDeadline) revert ClaimPeriodNotEnded(block.timestamp, _claimDeadline);
        uint256 funded = _fundedBy[msg.sender];
        if (funded == 0) revert NotASponsor(msg.sender);
        if (_reclaimed[msg.sender]) revert AlreadyReclaimed(msg.sender);

        amount = Math.mulDiv(funded, _totalFunded - _totalClaimed, _totalFunded);
        _reclaimed[msg.sender] = true;
        _totalReclaimed += amount;
        emit Reclaimed(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////
                             EXTERNAL: VIEW
    //////////////////////////////////////////////////////////////*/

    /// @notice The EIP-712 digest the oracle signs for a round (compare with the off-chain digest).
    function roundDigest(uint256 roundId, bytes32 merkleRoot, uint256 total) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ROUND_ALLOCATION_TYPEHASH, roundId, merkleRoot, total)));
    }

    /// @notice Round `roundId` (all zero if it was never posted).
    function getRound(uint256 roundId) external view returns (Round memory) {
        return _rounds[roundId];
    }

    /// @notice Whether leaf `index` of round `roundId` has been claimed.
    function isClaimed(uint256 roundId, uint256 index) external view returns (bool) {
        return _claimedLeaves[roundId].get(index);
    }

    /// @notice The id the next posted round must carry (starts at 1).
    function nextRoundId() external view returns (uint256) {
        return _nextRoundId;
    }

    /// @notice Funds not yet reserved by a round: `totalFunded - totalAllocated` (token units).
    function unallocated() public view returns (uint256) {
        return _totalFunded - _totalAllocated;
    }

    /// @notice The ERC-20 token the pool holds and pays out.
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @notice The address whose signature authorises rounds.
    function oracle() external view returns (address) {
        return _oracle;
    }

    /// @notice The campaign's lead sponsor named at deployment.
    function sponsor() external view returns (address) {
        return _sponsor;
    }

    /// @notice Unix time (seconds) at which the claim period ends and reclaiming begins.
    function claimDeadline() external view returns (uint256) {
        return _claimDeadline;
    }

    /// @notice Sum of all funding credited (token units).
    function totalFunded() external view returns (uint256) {
        return _totalFunded;
    }

    /// @notice Sum of all posted rounds' totals (token units).
    function totalAllocated() external view returns (uint256) {
        return _totalAllocated;
    }

    /// @notice Sum of all claims paid (token units).
    function totalClaimed() external view returns (uint256) {
        return _totalClaimed;
    }

    /// @notice Sum of all reclaims paid to sponsors (token units).
    function totalReclaimed() external view returns (uint256) {
        return _totalReclaimed;
    }

    /// @notice Funding credited to `account` (token units).
    function fundedBy(address account) external view returns (uint256) {
        return _fundedBy[account];
    }

    /// @notice Whether `account` has reclaimed its share.
    function hasReclaimed(address account) external view returns (bool) {
        return _reclaimed[account];
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    /// @dev Reverts with {ClaimPeriodEnded} once `block.timestamp >= claimDeadline`.
    function _requireClaimPeriod() internal view {
        if (block.timestamp >= _claimDeadline) revert ClaimPeriodEnded(block.timestamp, _claimDeadline);
    }
}
