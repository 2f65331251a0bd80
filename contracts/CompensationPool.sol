// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";

/**
 * @title CompensationPool
 * @notice Escrow and Merkle payouts for the holders of images that train a generative model, one
 * deployment serving many campaigns (Shi et al., arXiv 2410.20180, the payment side).
 *
 * A campaign fixes its token (native ETH when `token == address(0)`, otherwise an ERC-20), its
 * oracle signer set and threshold k, its number of rounds, a cap per round and per holder payment,
 * a challenge window, a claim window and a guardian. Any sponsor funds it, any number of times.
 * After each training round the oracle signers sign an EIP-712 {RoundAllocation} that binds the
 * chain id and this contract (EIP-712 domain), the campaign, the round id, the Merkle root of the
 * payouts, the round total and provenance commitments (model checkpoint hash, dataset manifest
 * root, attribution artifact hash), the signer-set version and a signature deadline. Anyone may
 * relay it with {postRound} once k distinct current signers have signed.
 *
 * Lifecycle of a round: `Pending` when posted; the campaign's guardian may {revokeRound} it (any
 * pending round, not only the latest) until `finalizesAt = postedAt + challengeWindow`; then it is
 * final ({finalizeRound}, or implicitly on its first claim). Holders {claim} from final rounds with
 * OpenZeppelin StandardMerkleTree proofs of `(uint256 index, address account, uint256 amount)`;
 * anyone may submit a claim, the funds go to `account`, or to a recipient `account` names by a
 * single-use EIP-712 signature (EIP-1271 for contract wallets). After
 * `claimDeadline = postingDeadline + challengeWindow + claimWindow` claims stop and every sponsor
 * may {reclaim} (or {reclaimTo}) its pro-rata share of what was never claimed (unallocated included).
 *
 * Decisions and hazards, stated plainly:
 * - Tokens that charge the RECIPIENT a fee (the pool is debited exactly the amount it sends) are
 *   accounted by balance delta: a sponsor is credited what arrived, holders receive less than their
 *   leaf amount. Tokens that debit the SENDER more than the amount sent are refused at payout
 *   ({PayoutDebitMismatch}): paying their fee would spend other campaigns' escrow. HAZARD: a
 *   campaign funded with such a token can never pay out; its funds stay locked (other campaigns
 *   are unaffected). Rebasing tokens are not supported.
 * - {pause} (PAUSER_ROLE) stops creating campaigns, funding and posting rounds. Claims, finality,
 *   revocation, signer rotation and reclaims stay open while paused: a pause must never hold
 *   holders' or sponsors' money hostage.
 * - `holderCap` bounds what one account is paid from one round, summed over all its leaves.
 * - Each round's claims are bounded by its signed `total` (a `remaining` counter), so a faulty or
 *   malicious signer set can never pay out more than its own campaign's allocated funds.
 * - The signer set is trusted for allocations inside its campaign, checked by the guardian during
 *   the challenge window. The campaign admin changes the signer set only after a delay of at least
 *   the challenge window ({proposeSignerRotation}, {executeSignerRotation}); the guardian or the
 *   admin may cancel it meanwhile. Rotation bumps the version and every older signature dies.
 * - HAZARD: `challengeWindow = 0` is accepted (local development, chains whose clock cannot be
 *   advanced): every round is final when posted, the guardian can revoke nothing, and the
 *   campaign trusts its signer set fully. Rotation still waits {MIN_ROTATION_DELAY}.
 * - The campaign admin and guardian hand over their roles in two steps (the new account accepts);
 *   only the guardian can hand over the guardian role. The pool's DEFAULT_ADMIN_ROLE uses
 *   OpenZeppelin's AccessControlDefaultAdminRules (two steps, {POOL_ADMIN_DELAY}).
 * - Amounts are limited to `type(uint120).max` token units per round (about 1.3e36).
 */
contract CompensationPool is EIP712, AccessControlDefaultAdminRules, Pausable, ReentrancyGuardTransient, Nonces {
    using SafeERC20 for IERC20;
    using BitMaps for BitMaps.BitMap;

    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice Status of a round. `None`: never posted; `Revoked`: revoked by the guardian, its id
    /// may be posted again with another Merkle root (also when later rounds exist: a gap).
    enum RoundStatus {
        None,
        Pending,
        Finalized,
        Revoked
    }

    /// @notice Parameters fixed when a campaign is created.
    /// @param token Payout token; `address(0)` for native ETH.
    /// @param guardian May revoke pending rounds during their challenge window.
    /// @param signers Initial oracle signer set (distinct, non-zero, at most {MAX_SIGNERS}).
    /// @param threshold Signatures needed to post a round (1 ≤ threshold ≤ signers.length).
    /// @param numRounds Number of rounds (1 ≤ numRounds ≤ {MAX_ROUNDS}).
    /// @param roundCap Largest round total (token units, ≤ type(uint120).max).
    /// @param holderCap Most one account is paid from one round, over all its leaves (token units,
    /// 1 ≤ holderCap ≤ roundCap).
    /// @param challengeWindow Seconds a posted round stays revocable before it is final. Zero is
    /// accepted and disables revocation (see the contract's hazards).
    /// @param claimWindow Seconds claims stay open after the last possible round is final (> 0).
    /// @param postingDeadline Unix time (seconds) after which no funding and no round is accepted.
    struct CampaignParams {
        address token;
        address guardian;
        address[] signers;
        uint256 threshold;
        uint256 numRounds;
        uint256 roundCap;
        uint256 holderCap;
        uint256 challengeWindow;
        uint256 claimWindow;
        uint256 postingDeadline;
    }

    /// @notice The oracle's signed allocation of one round (EIP-712 struct, all fields static).
    /// @param campaignId Campaign the round belongs to.
    /// @param roundId Round number: the campaign's next round id, or a revoked id below it.
    /// @param merkleRoot Root of the StandardMerkleTree of `(uint256 index, address account, uint256 amount)`.
    /// @param total Sum of the leaf amounts (token units).
    /// @param checkpointHash Hash of the model checkpoint trained this round (SHA-256).
    /// @param datasetRoot Merkle root of the dataset manifest (holder → image hashes).
    /// @param attributionHash Hash of the round's attribution artifact (TRAK scores, SHA-256).
    /// @param signerSetVersion The signer-set version the signatures belong to.
    /// @param deadline Unix time (seconds) after which the signatures may not be used.
    struct RoundAllocation {
        uint256 campaignId;
        uint256 roundId;
        bytes32 merkleRoot;
        uint256 total;
        bytes32 checkpointHash;
        bytes32 datasetRoot;
        bytes32 attributionHash;
        uint256 signerSetVersion;
        uint256 deadline;
    }

    /// @notice One leaf claimed in a batch ({claimRounds}).
    struct LeafClaim {
        uint256 roundId;
        uint256 index;
        uint256 amount;
        bytes32[] proof;
    }

    /// @notice A campaign's configuration and running totals (token units, seconds).
    struct CampaignView {
        address token;
        address admin;
        address guardian;
        uint256 threshold;
        uint256 signerSetVersion;
        uint256 numRounds;
        uint256 nextRoundId;
        uint256 roundCap;
        uint256 holderCap;
        uint256 challengeWindow;
        uint256 claimWindow;
        uint256 postingDeadline;
        uint256 claimDeadline;
        uint256 totalFunded;
        uint256 totalAllocated;
        bool settled;
        uint256 unclaimedAtExpiry;
    }

    /// @notice A round as stored (token units, Unix seconds).
    struct RoundView {
        bytes32 merkleRoot;
        uint256 total;
        uint256 remaining;
        uint256 holderCap;
        uint256 postedAt;
        uint256 finalizesAt;
        RoundStatus status;
    }

    struct Campaign {
        // slot 0: everything a claim needs from the campaign
        address token;
        uint40 claimDeadline; // 0 ⇔ the campaign does not exist
        // slot 1
        address admin;
        uint40 postingDeadline;
        uint40 challengeWindow;
        // slot 2
        address guardian;
        uint32 signerSetVersion;
        uint16 numRounds;
        uint16 nextRoundId;
        uint8 threshold;
        bool settled;
        uint256 roundCap;
        uint256 holderCap;
        uint256 claimWindow;
        uint256 totalFunded;
        uint256 totalAllocated;
        uint256 unclaimedAtExpiry;
    }

    /// @dev A signer set proposed by the campaign admin, installable from `executableAt`.
    struct PendingRotation {
        address[] signers;
        uint64 threshold;
        uint64 executableAt; // 0 ⇔ nothing pending
    }

    struct Round {
        // slot 0
        bytes32 merkleRoot;
        // slot 1: everything a claim reads and writes
        uint120 remaining;
        uint120 holderCap;
        RoundStatus status;
        // slot 2
        uint120 total;
        uint40 postedAt;
        uint40 finalizesAt;
    }

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev No campaign `campaignId` exists.
    error UnknownCampaign(uint256 campaignId);
    /// @dev A campaign parameter (`what`) is invalid: `value` is outside its allowed range.
    error InvalidCampaignParam(string what, uint256 value);
    /// @dev Signer `signer` (position `position`) is zero or appears twice in a signer set.
    error InvalidSignerSet(uint256 position, address signer);
    /// @dev `caller` is not the campaign's admin `admin`.
    error NotCampaignAdmin(address caller, address admin);
    /// @dev `caller` is not the campaign's guardian `guardian`.
    error NotGuardian(address caller, address guardian);
    /// @dev `caller` is neither the admin nor the guardian of campaign `campaignId`.
    error NotAdminOrGuardian(uint256 campaignId, address caller);
    /// @dev `caller` is not `pendingAdmin`, the account campaign `campaignId`'s admin role was offered to.
    error NotPendingAdmin(uint256 campaignId, address caller, address pendingAdmin);
    /// @dev `caller` is not `pendingGuardian`, the account the guardian role was offered to.
    error NotPendingGuardian(uint256 campaignId, address caller, address pendingGuardian);
    /// @dev Campaign `campaignId` has no proposed signer set to execute or cancel.
    error NoPendingRotation(uint256 campaignId);
    /// @dev The proposed signer set of campaign `campaignId` may be installed from `executableAt` only.
    error RotationNotReady(uint256 campaignId, uint256 executableAt, uint256 nowTimestamp);
    /// @dev A zero amount was funded, or nothing arrived from the transfer.
    error ZeroAmount();
    /// @dev `msg.value` is `sent`, but the call requires exactly `expected` wei.
    error WrongNativeValue(uint256 sent, uint256 expected);
    /// @dev Funding and posting end at `postingDeadline` (now is `nowTimestamp`).
    error PostingClosed(uint256 campaignId, uint256 nowTimestamp, uint256 postingDeadline);
    /// @dev The round's signatures expired at `deadline` (now is `nowTimestamp`).
    error SignatureExpired(uint256 deadline, uint256 nowTimestamp);
    /// @dev Rounds are posted in order: `got` is neither the next round id `expected` nor a revoked
    /// round id below it.
    error UnexpectedRoundId(uint256 got, uint256 expected);
    /// @dev Round `roundId` is beyond the campaign's `numRounds`.
    error TooManyRounds(uint256 roundId, uint256 numRounds);
    /// @dev A round's total must be positive.
    error ZeroRoundTotal();
    /// @dev A round's Merkle root must not be zero.
    error ZeroMerkleRoot();
    /// @dev A round's `total` exceeds the campaign's per-round cap `roundCap`.
    error RoundCapExceeded(uint256 total, uint256 roundCap);
    /// @dev A round's `total` exceeds the campaign's funds not yet allocated (`available`).
    error InsufficientUnallocated(uint256 total, uint256 available);
    /// @dev The signatures are for signer-set version `got`; the campaign's current one is `current`.
    error StaleSignerSet(uint256 got, uint256 current);
    /// @dev `got` signatures were given; the campaign's threshold is `threshold`.
    error TooFewSignatures(uint256 got, uint256 threshold);
    /// @dev Signature `position` is malformed or malleable (`reason` is ECDSA.RecoverError).
    error InvalidSignature(uint256 position, uint8 reason);
    /// @dev Signature `position` recovers to `signer`, who is not in signer set `version`.
    error UnknownSigner(uint256 position, address signer, uint256 version);
    /// @dev Signature `position` repeats signer `signer`.
    error DuplicateSigner(uint256 position, address signer);
    /// @dev Signatures must be ordered by signer address; `signer` at `position` follows `previous`.
    error SignersNotAscending(uint256 position, address signer, address previous);
    /// @dev Merkle root `merkleRoot` was revoked for round `roundId`; it can never be posted again there.
    error RevokedAllocation(uint256 campaignId, uint256 roundId, bytes32 merkleRoot);
    /// @dev Round `roundId` of campaign `campaignId` is `status`; the call needs another status.
    error WrongRoundStatus(uint256 campaignId, uint256 roundId, RoundStatus status);
    /// @dev Round `roundId` is still in its challenge window until `finalizesAt`.
    error ChallengeWindowOpen(uint256 roundId, uint256 finalizesAt, uint256 nowTimestamp);
    /// @dev Round `roundId` left its challenge window at `finalizesAt`; it can no longer be revoked.
    error ChallengeWindowOver(uint256 roundId, uint256 finalizesAt, uint256 nowTimestamp);
    /// @dev Leaf `index` of round `roundId` has already been claimed.
    error AlreadyClaimed(uint256 campaignId, uint256 roundId, uint256 index);
    /// @dev The Merkle proof does not prove leaf `(index, account, amount)` in round `roundId`.
    error InvalidProof(uint256 campaignId, uint256 roundId, uint256 index, address account, uint256 amount);
    /// @dev Paying `amount` to `account`, already paid `paidInRound` from round `roundId`, would
    /// exceed the per-holder cap `holderCap` of that round.
    error HolderCapExceeded(
        uint256 campaignId, uint256 roundId, address account, uint256 paidInRound, uint256 amount, uint256 holderCap
    );
    /// @dev Paying `amount` would exceed what is left of round `roundId` (`remaining`).
    error RoundOverClaimed(uint256 campaignId, uint256 roundId, uint256 amount, uint256 remaining);
    /// @dev Claims ended at `claimDeadline` (now is `nowTimestamp`).
    error ClaimWindowClosed(uint256 campaignId, uint256 nowTimestamp, uint256 claimDeadline);
    /// @dev Reclaiming opens only at `claimDeadline` (now is `nowTimestamp`).
    error ClaimWindowOpen(uint256 campaignId, uint256 nowTimestamp, uint256 claimDeadline);
    /// @dev The recipient authorisation of `account` for `recipient` is invalid: zero recipient, bad
    /// signature, or not signed for `nonce`, the account's current nonce (an authorisation is used
    /// once, and {cancelRecipientAuthorizations} voids every unused one).
    error InvalidRecipientAuthorization(address account, address recipient, uint256 nonce);
    /// @dev A batch claim was empty.
    error EmptyClaim();
    /// @dev `sponsor` never funded campaign `campaignId`.
    error NotASponsor(uint256 campaignId, address sponsor);
    /// @dev `sponsor` already reclaimed its share of campaign `campaignId`.
    error AlreadyReclaimed(uint256 campaignId, address sponsor);
    /// @dev `sponsor` named the zero address as recipient of its reclaim from campaign `campaignId`.
    error ZeroReclaimRecipient(uint256 campaignId, address sponsor);
    /// @dev Sending `amount` wei to `to` failed.
    error NativeTransferFailed(address to, uint256 amount);
    /// @dev Paying `amount` of `token` to `to` took `debited` from the pool's balance: the token
    /// charges the sender (or otherwise moves a different amount), which would spend other
    /// campaigns' escrow. Such tokens are refused.
    error PayoutDebitMismatch(address token, address to, uint256 amount, uint256 debited);


    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Campaign `campaignId` was created by `admin` (all amounts token units, times Unix seconds).
    event CampaignCreated(
        uint256 indexed campaignId,
        address indexed token,
        address indexed admin,
        address guardian,
        uint256 numRounds,
        uint256 roundCap,
        uint256 holderCap,
        uint256 challengeWindow,
        uint256 claimWindow,
        uint256 postingDeadline,
        uint256 claimDeadline
    );
    /// @notice Campaign `campaignId` now accepts signer set `version` with `threshold` signatures.
    event SignerSetRotated(uint256 indexed campaignId, uint256 indexed version, address[] signers, uint256 threshold);
    /// @notice The admin proposed signer set `signers` with `threshold`, installable from `executableAt`.
    event SignerRotationProposed(
        uint256 indexed campaignId, address[] signers, uint256 threshold, uint256 executableAt
    );
    /// @notice `by` (admin or guardian) cancelled the proposed signer set of campaign `campaignId`.
    event SignerRotationCancelled(uint256 indexed campaignId, address indexed by);
    /// @notice The admin of campaign `campaignId` offered the role to `pendingAdmin` (zero: offer withdrawn).
    event CampaignAdminTransferStarted(uint256 indexed campaignId, address indexed admin, address indexed pendingAdmin);
    /// @notice `newAdmin` accepted the admin role of campaign `campaignId`.
    event CampaignAdminTransferred(
        uint256 indexed campaignId, address indexed previousAdmin, address indexed newAdmin
    );
    /// @notice The guardian of campaign `campaignId` offered the role to `pendingGuardian` (zero: withdrawn).
    event GuardianTransferStarted(
        uint256 indexed campaignId, address indexed guardian, address indexed pendingGuardian
    );
    /// @notice `newGuardian` accepted the guardian role of campaign `campaignId`.
    event GuardianTransferred(
        uint256 indexed campaignId, address indexed previousGuardian, address indexed newGuardian
    );
    /// @notice `account` voided its unused recipient authorisations; `nonce` is its new nonce.
    event RecipientAuthorizationsCancelled(address indexed account, uint256 nonce);
    /// @notice `sponsor` funded campaign `campaignId`; `amount` is what actually arrived (token units).
    event Funded(uint256 indexed campaignId, address indexed sponsor, uint256 amount);
    /// @notice Round `roundId` was posted and reserves `total`; it is final from `finalizesAt`.
    event RoundPosted(
        uint256 indexed campaignId,
        uint256 indexed roundId,
        bytes32 merkleRoot,
        uint256 total,
        bytes32 checkpointHash,
        bytes32 datasetRoot,
        bytes32 attributionHash,
        uint256 signerSetVersion,
        uint256 finalizesAt
    );
    /// @notice The guardian revoked pending round `roundId`; its total is unallocated again.
    event RoundRevoked(uint256 indexed campaignId, uint256 indexed roundId, address indexed guardian);
    /// @notice Round `roundId` left its challenge window and is claimable.
    event RoundFinalized(uint256 indexed campaignId, uint256 indexed roundId);
    /// @notice Leaf `index` of round `roundId` paid `amount` (token units) owed to `account` to `recipient`.
    event Claimed(
        uint256 indexed campaignId,
        uint256 indexed roundId,
        address indexed account,
        uint256 index,
        address recipient,
        uint256 amount
    );
    /// @notice After expiry, `unclaimed` token units of campaign `campaignId` were left to sponsors.
    event CampaignSettled(uint256 indexed campaignId, uint256 unclaimed);
    /// @notice `sponsor` reclaimed `amount` token units from campaign `campaignId`, paid to `recipient`.
    event Reclaimed(uint256 indexed campaignId, address indexed sponsor, address recipient, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Role that may pause and unpause funding and posting.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice Most signers in a signer set.
    uint256 public constant MAX_SIGNERS = 64;
    /// @notice Most rounds in a campaign (bounds the one-off settlement loop of {reclaim}).
    uint256 public constant MAX_ROUNDS = 1000;
    /// @notice Largest round total or leaf amount (token units).
    uint256 public constant MAX_AMOUNT = type(uint120).max;
    /// @notice Shortest wait between proposing and installing a signer set (the wait is the
    /// campaign's challenge window when that is longer).
    uint256 public constant MIN_ROTATION_DELAY = 1 hours;
    /// @notice Initial delay of a DEFAULT_ADMIN_ROLE handover (AccessControlDefaultAdminRules).
    uint48 public constant POOL_ADMIN_DELAY = 1 days;

    /// @notice EIP-712 type hash of {RoundAllocation}.
    bytes32 public constant ROUND_ALLOCATION_TYPEHASH = keccak256(
        "RoundAllocation(uint256 campaignId,uint256 roundId,bytes32 merkleRoot,uint256 total,"
        "bytes32 checkpointHash,bytes32 datasetRoot,bytes32 attributionHash,uint256 signerSetVersion,"
        "uint256 deadline)"
    );
    /// @notice EIP-712 type hash of
    /// `ClaimRecipient(uint256 campaignId,address account,address recipient,uint256 nonce,uint256 deadline)`.
    bytes32 public constant CLAIM_RECIPIENT_TYPEHASH = keccak256(
        "ClaimRecipient(uint256 campaignId,address account,address recipient,uint256 nonce,uint256 deadline)"
    );

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    uint256 private _campaignCount;
    // Written through storage pointers (`Campaign storage c = _campaigns[id]`), which slither's
    // uninitialized-state detector does not follow.
    // slither-disable-next-line uninitialized-state
    mapping(uint256 campaignId => Campaign) private _campaigns;
    mapping(uint256 campaignId => mapping(uint256 roundId => Round)) private _rounds;
    mapping(uint256 campaignId => mapping(uint256 roundId => BitMaps.BitMap)) private _claimedLeaves;
    // slither-disable-next-line uninitialized-state
    mapping(uint256 campaignId => mapping(uint256 version => mapping(address => bool))) private _isSigner;
    mapping(uint256 campaignId => address[]) private _signers;
    mapping(uint256 campaignId => mapping(uint256 roundId => mapping(bytes32 root => bool))) private _revokedRoots;
    mapping(uint256 campaignId => mapping(address sponsor => uint256)) private _fundedBy;
    mapping(uint256 campaignId => mapping(address sponsor => bool)) private _reclaimed;
    // Written through a storage pointer in {_addHolderPayment} (same slither blind spot as above).
    // slither-disable-next-line uninitialized-state
    mapping(uint256 campaignId => mapping(uint256 roundId => mapping(address account => uint256))) private
        _paidInRound;
    mapping(uint256 campaignId => PendingRotation) private _pendingRotation;
    mapping(uint256 campaignId => address) private _pendingAdmin;
    mapping(uint256 campaignId => address) private _pendingGuardian;

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param admin Receives DEFAULT_ADMIN_ROLE (handed over in two steps after {POOL_ADMIN_DELAY},
    /// AccessControlDefaultAdminRules; reverts `AccessControlInvalidDefaultAdmin` for zero) and PAUSER_ROLE.
    constructor(address admin) EIP712("CompensationPool", "2") AccessControlDefaultAdminRules(POOL_ADMIN_DELAY, admin) {
        _grantRole(PAUSER_ROLE, admin);
    }

    /*//////////////////////////////////////////////////////////////
                         CAMPAIGNS AND SIGNERS
    //////////////////////////////////////////////////////////////*/

    /**
     * @notice Creates a campaign; the caller becomes its admin (who may propose a new signer set).
     * @dev Reverts {InvalidCampaignParam} naming the offending parameter, {InvalidSignerSet} for a
     * zero or repeated signer. `claimDeadline = postingDeadline + challengeWindow + claimWindow`.
     * @return campaignId The new campaign's id (1, 2, ...).
     */
    function createCampaign(CampaignParams calldata p) external whenNotPaused returns (uint256 campaignId) {
        if (p.guardian == address(0)) revert InvalidCampaignParam("guardian", 0);
        if (p.numRounds == 0 || p.numRounds > MAX_ROUNDS) revert InvalidCampaignParam("numRounds", p.numRounds);
        if (p.roundCap == 0 || p.roundCap > MAX_AMOUNT) revert InvalidCampaignParam("roundCap", p.roundCap);
        if (p.holderCap == 0 || p.holderCap > p.roundCap) revert InvalidCampaignParam("holderCap", p.holderCap);
        if (p.claimWindow == 0) revert InvalidCampaignParam("claimWindow", 0);
        if (p.postingDeadline <= block.timestamp) revert InvalidCampaignParam("postingDeadline", p.postingDeadline);
        if (p.challengeWindow > type(uint40).max) revert InvalidCampaignParam("challengeWindow", p.challengeWindow);
        if (p.claimWindow > type(uint40).max) revert InvalidCampaignParam("claimWindow", p.claimWindow);
        uint256 claimDeadline = p.postingDeadline + p.challengeWindow + p.claimWindow;
        if (claimDeadline > type(uint40).max) revert InvalidCampaignParam("postingDeadline", p.postingDeadline);

        campaignId = ++_campaignCount;
        Campaign storage c = _campaigns[campaignId];
        c.token = p.token;
        c.claimDeadline = uint40(claimDeadline);
        c.admin = msg.sender;
        c.postingDeadline = uint40(p.postingDeadline);
        c.challengeWindow = uint40(p.challengeWindow);
        c.guardian = p.guardian;
        c.numRounds = uint16(p.numRounds);
        c.nextRoundId = 1;
        c.roundCap = p.roundCap;
        c.holderCap = p.holderCap;
        c.claimWindow = p.claimWindow;
        emit CampaignCreated(
            campaignId,
            p.token,
            msg.sender,
            p.guardian,
            p.numRounds,
            p.roundCap,
            p.holderCap,
            p.challengeWindow,
            p.claimWindow,
            p.postingDeadline,
            claimDeadline
        );
        _checkSignerSet(p.signers, p.threshold);
        _setSigners(campaignId, c, p.signers, p.threshold);
    }

    /**
     * @notice Proposes a new signer set for campaign `campaignId`; it can be installed with
     * {executeSignerRotation} after {rotationDelay} (the challenge window, at least
     * {MIN_ROTATION_DELAY}), and the guardian or the admin may {cancelSignerRotation} it meanwhile.
     * A new proposal replaces a pending one and restarts the delay. Campaign admin only; allowed
     * while paused.
     * @dev The delay is what keeps k-of-n meaningful: without it the admin alone could install a
     * 1-of-1 set it controls and post rounds paying itself. HAZARD: a guardian that does not watch
     * {SignerRotationProposed} lets such a set in after the delay; the guardian can still revoke
     * each round the new set posts during its challenge window.
     * @param signers New signers (distinct, non-zero, 1 ≤ length ≤ {MAX_SIGNERS}).
     * @param threshold Signatures needed once installed (1 ≤ threshold ≤ signers.length).
     * @return executableAt Unix time from which the set may be installed.
     */
    function proposeSignerRotation(uint256 campaignId, address[] calldata signers, uint256 threshold)
        external
        returns (uint256 executableAt)
    {
        Campaign storage c = _existing(campaignId);
        if (msg.sender != c.admin) revert NotCampaignAdmin(msg.sender, c.admin);
        _checkSignerSet(signers, threshold);
        executableAt = block.timestamp + _rotationDelay(c);
        PendingRotation storage pending = _pendingRotation[campaignId];
        pending.signers = signers;
        pending.threshold = uint64(threshold);
        pending.executableAt = uint64(executableAt);
        emit SignerRotationProposed(campaignId, signers, threshold, executableAt);
    }

    /**
     * @notice Installs the proposed signer set of campaign `campaignId` once its delay has passed
     * and bumps the signer-set version, so every signature for an earlier version stops being
     * accepted. Anyone may call (the admin decided, the guardian had the delay to cancel).
     */
    function executeSignerRotation(uint256 campaignId) external {
        Campaign storage c = _existing(campaignId);
        PendingRotation storage pending = _pendingRotation[campaignId];
        uint256 executableAt = pending.executableAt;
        if (executableAt == 0) revert NoPendingRotation(campaignId);
        if (block.timestamp < executableAt) revert RotationNotReady(campaignId, executableAt, block.timestamp);
        address[] memory signers = pending.signers;
        uint256 threshold = pending.threshold;
        delete _pendingRotation[campaignId];
        _setSigners(campaignId, c, signers, threshold);
    }

    /// @notice The guardian or the admin of campaign `campaignId` drops its proposed signer set.
    function cancelSignerRotation(uint256 campaignId) external {
        Campaign storage c = _existing(campaignId);
        if (msg.sender != c.guardian && msg.sender != c.admin) revert NotAdminOrGuardian(campaignId, msg.sender);
        if (_pendingRotation[campaignId].executableAt == 0) revert NoPendingRotation(campaignId);
        delete _pendingRotation[campaignId];
        emit SignerRotationCancelled(campaignId, msg.sender);
    }

    /**
     * @notice First step of handing over the admin role of campaign `campaignId`: offers it to
     * `newAdmin`, who must {acceptCampaignAdmin}. `address(0)` withdraws the offer. Admin only.
     */
    function transferCampaignAdmin(uint256 campaignId, address newAdmin) external {
        Campaign storage c = _existing(campaignId);
        if (msg.sender != c.admin) revert NotCampaignAdmin(msg.sender, c.admin);
        _pendingAdmin[campaignId] = newAdmin;
        emit CampaignAdminTransferStarted(campaignId, msg.sender, newAdmin);
    }

    /// @notice Second step: the offered account takes the admin role of campaign `campaignId`.
    function acceptCampaignAdmin(uint256 campaignId) external {
        Campaign storage c = _existing(campaignId);
        address pending = _pendingAdmin[campaignId];
        if (msg.sender != pending || pending == address(0)) revert NotPendingAdmin(campaignId, msg.sender, pending);
        address previous = c.admin;
        c.admin = pending;
        delete _pendingAdmin[campaignId];
        emit CampaignAdminTransferred(campaignId, previous, pending);
    }

    /**
     * @notice First step of handing over the guardian role of campaign `campaignId`: offers it to
     * `newGuardian`, who must {acceptGuardian}. `address(0)` withdraws the offer. Guardian only:
     * the admin cannot replace the guardian, which checks the admin's signer rotations.
     */
    function transferGuardian(uint256 campaignId, address newGuardian) external {
        Campaign storage c = _existing(campaignId);
        if (msg.sender != c.guardian) revert NotGuardian(msg.sender, c.guardian);
        _pendingGuardian[campaignId] = newGuardian;
        emit GuardianTransferStarted(campaignId, msg.sender, newGuardian);
    }

    /// @notice Second step: the offered account becomes the guardian of campaign `campaignId`.
    function acceptGuardian(uint256 campaignId) external {
        Campaign storage c = _existing(campaignId);
        address pending = _pendingGuardian[campaignId];
        if (msg.sender != pending || pending == address(0)) {
            revert NotPendingGuardian(campaignId, msg.sender, pending);
        }
        address previous = c.guardian;
        c.guardian = pending;
        delete _pendingGuardian[campaignId];
        emit GuardianTransferred(campaignId, previous, pending);
    }

    /// @notice Stops creating campaigns, funding and posting rounds (claims, finality, revocation and reclaims continue).
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resumes creating campaigns, funding and posting rounds.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    /*//////////////////////////////////////////////////////////////
                                FUNDING
    //////////////////////////////////////////////////////////////*/

    /**
     * @notice Adds `amount` to campaign `campaignId` and credits the caller as a sponsor with what
     * actually arrived (balance delta for ERC-20s; `msg.value` must equal `amount` for native ETH).
     * @dev ERC-20: the caller must have approved this contract for `amount`. Reverts {PostingClosed}
     * from `postingDeadline` on, {WrongNativeValue}, {ZeroAmount}, and while paused.
     * @param amount Token units (wei for ETH).
     * @return received Token units credited.
     */
    function fund(uint256 campaignId, uint256 amount)
        external
        payable
        whenNotPaused
        nonReentrant
        returns (uint256 received)
    {
        Campaign storage c = _existing(campaignId);
        if (block.timestamp >= c.postingDeadline) {
            revert PostingClosed(campaignId, block.timestamp, c.postingDeadline);
        }
        if (amount == 0) revert ZeroAmount();
        address token = c.token;
        if (token == address(0)) {
            if (msg.value != amount) revert WrongNativeValue(msg.value, amount);
            received = amount;
        } else {
            if (msg.value != 0) revert WrongNativeValue(msg.value, 0);
            uint256 balanceBefore = IERC20(token).balanceOf(address(this));
            IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
            received = IERC20(token).balanceOf(address(this)) - balanceBefore;
            if (received == 0) revert ZeroAmount();
        }
        _fundedBy[campaignId][msg.sender] += received;
        c.totalFunded += received;
        emit Funded(campaignId, msg.sender, received);
    }

    /*//////////////////////////////////////////////////////////////
                                 ROUNDS
    //////////////////////////////////////////////////////////////*/

    /**
     * @notice Posts a round signed by at least `threshold` distinct signers of the campaign's
     * current signer set; anyone may relay it. The round is pending for `challengeWindow` seconds.
     * @dev Signatures are 65-byte `r ‖ s ‖ v` over {roundDigest}, ordered by strictly ascending
     * signer address; ECDSA rejects high-s (malleable) signatures. Gas does not depend on the
     * number of leaves. The round id is the campaign's next one, or a revoked id below it (a gap
     * left when the guardian revoked a round that later rounds follow); posting into a gap leaves
     * the next round id unchanged. Reverts while paused.
     */
    function postRound(RoundAllocation calldata a, bytes[] calldata signatures) external whenNotPaused nonReentrant {
        Campaign storage c = _existing(a.campaignId);
        if (block.timestamp >= c.postingDeadline) {
            revert PostingClosed(a.campaignId, block.timestamp, c.postingDeadline);
        }
        if (block.timestamp > a.deadline) revert SignatureExpired(a.deadline, block.timestamp);
        uint256 next = c.nextRoundId;
        bool intoGap = a.roundId < next && _rounds[a.campaignId][a.roundId].status == RoundStatus.Revoked;
        if (a.roundId != next && !intoGap) revert UnexpectedRoundId(a.roundId, next);
        if (a.roundId > c.numRounds) revert TooManyRounds(a.roundId, c.numRounds);
        if (a.merkleRoot == bytes32(0)) revert ZeroMerkleRoot();
        if (a.total == 0) revert ZeroRoundTotal();
        if (a.total > c.roundCap) revert RoundCapExceeded(a.total, c.roundCap);
        uint256 available = c.totalFunded - c.totalAllocated;
        if (a.total > available) revert InsufficientUnallocated(a.total, available);
        if (a.signerSetVersion != c.signerSetVersion) revert StaleSignerSet(a.signerSetVersion, c.signerSetVersion);
        if (_revokedRoots[a.campaignId][a.roundId][a.merkleRoot]) {
            revert RevokedAllocation(a.campaignId, a.roundId, a.merkleRoot);
        }
        _checkSignatures(a.campaignId, c, roundDigest(a), signatures);

        uint256 finalizesAt = block.timestamp + c.challengeWindow;
        _rounds[a.campaignId][a.roundId] = Round({
            merkleRoot: a.merkleRoot,
            remaining: uint120(a.total),
            holderCap: uint120(c.holderCap),
            status: RoundStatus.Pending,
            total: uint120(a.total),
            postedAt: uint40(block.timestamp),
            finalizesAt: uint40(finalizesAt)
        });
        c.totalAllocated += a.total;
        if (!intoGap) c.nextRoundId = uint16(a.roundId + 1);
        emit RoundPosted(
            a.campaignId,
            a.roundId,
            a.merkleRoot,
            a.total,
            a.checkpointHash,
            a.datasetRoot,
            a.attributionHash,
            a.signerSetVersion,
            finalizesAt
        );
    }

    /**
     * @notice The guardian revokes any round that is still in its challenge window: its total
     * returns to the unallocated balance and its id may be posted again with another Merkle root;
     * the revoked root is refused for that round forever ({RevokedAllocation}), so nobody can
     * re-relay the revoked allocation's signatures.
     * @dev Any pending round, not only the latest: whoever holds the signing keys could otherwise
     * post round N+1 in front of each `revokeRound(N)` and let round N become final. Later rounds
     * are untouched (revoke them separately if they are bad too); a revoked round below the latest
     * leaves a gap that {postRound} may fill. When the latest round is revoked, the next round id
     * moves back over it and over every revoked round directly below it (at most {MAX_ROUNDS}
     * reads), so ids in use stay below `nextRoundId` and none above it is live. Allowed while paused.
     */
    function revokeRound(uint256 campaignId, uint256 roundId) external nonReentrant {
        Campaign storage c = _existing(campaignId);
        if (msg.sender != c.guardian) revert NotGuardian(msg.sender, c.guardian);
        mapping(uint256 => Round) storage rounds = _rounds[campaignId];
        Round storage round = rounds[roundId];
        if (round.status != RoundStatus.Pending) revert WrongRoundStatus(campaignId, roundId, round.status);
        if (block.timestamp >= round.finalizesAt) {
            revert ChallengeWindowOver(roundId, round.finalizesAt, block.timestamp);
        }
        round.status = RoundStatus.Revoked;
        round.remaining = 0;
        _revokedRoots[campaignId][roundId][round.merkleRoot] = true;
        c.totalAllocated -= round.total;
        if (roundId + 1 == c.nextRoundId) {
            uint256 next = roundId;
            while (next > 1 && rounds[next - 1].status == RoundStatus.Revoked) --next;
            c.nextRoundId = uint16(next);
        }
        emit RoundRevoked(campaignId, roundId, msg.sender);
    }

    /**
     * @notice Marks a pending round whose challenge window has passed as final. Anyone may call;
     * the first claim of a round does the same implicitly.
     */
    function finalizeRound(uint256 campaignId, uint256 roundId) external {
        _existing(campaignId);
        Round storage round = _rounds[campaignId][roundId];
        if (round.status != RoundStatus.Pending) revert WrongRoundStatus(campaignId, roundId, round.status);
        if (block.timestamp < round.finalizesAt) {
            revert ChallengeWindowOpen(roundId, round.finalizesAt, block.timestamp);
        }
        round.status = RoundStatus.Finalized;
        emit RoundFinalized(campaignId, roundId);
    }

    /*//////////////////////////////////////////////////////////////
                                 CLAIMS
    //////////////////////////////////////////////////////////////*/

    /**
     * @notice Pays leaf `(index, account, amount)` of a final round to `account`; anyone may submit.
     * @dev Leaf = `keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))))`
     * (OpenZeppelin StandardMerkleTree). Reverts {ClaimWindowClosed} from `claimDeadline` on,
     * {WrongRoundStatus}/{ChallengeWindowOpen} before finality, {AlreadyClaimed}, {InvalidProof},
     * {HolderCapExceeded} (the account's payments from the round, all leaves together, above the
     * cap), {RoundOverClaimed}, {PayoutDebitMismatch}.
     * @param amount Token units owed to `account`.
     * @param proof Sibling hashes from the leaf to the root.
     */
    function claim(
        uint256 campaignId,
        uint256 roundId,
        uint256 index,
        address account,
        uint256 amount,
        bytes32[] calldata proof
    ) external nonReentrant {
        address token = _openCampaignToken(campaignId);
        _useLeaf(campaignId, roundId, index, account, amount, proof);
        emit Claimed(campaignId, roundId, account, index, account, amount);
        _pay(token, account, amount);
    }

    /**
     * @notice Claims several leaves of `account` (typically one per round) in one transaction and
     * pays their sum to `account` in one transfer; anyone may submit.
     */
    function claimRounds(uint256 campaignId, address account, LeafClaim[] calldata leaves) external nonReentrant {
        address token = _openCampaignToken(campaignId);
        uint256 paid = _useLeaves(campaignId, account, account, leaves);
        _pay(token, account, paid);
    }

    /**
     * @notice Like {claimRounds}, but pays `recipient`, which `account` named by signing the EIP-712
     * `ClaimRecipient(campaignId, account, recipient, nonce, deadline)` (ECDSA for EOAs, EIP-1271
     * for contract wallets) with its current {nonces} value. An authorisation is used once: this
     * call consumes the nonce, so a relayer needs a fresh signature for each batch, and
     * {cancelRecipientAuthorizations} voids every unused one. No signature is needed (and no nonce
     * is used) when `account` itself calls.
     * @dev HAZARD: nonces are per account across all campaigns and used in order, so of two
     * authorisations signed for the same nonce only the first one relayed works.
     * @param deadline Unix time (seconds) until which the authorisation is valid.
     * @param signature The authorisation; ignored when `msg.sender == account`.
     */
    function claimRoundsTo(
        uint256 campaignId,
        address account,
        LeafClaim[] calldata leaves,
        address recipient,
        uint256 deadline,
        bytes calldata signature
    ) external nonReentrant {
        address token = _openCampaignToken(campaignId);
        if (recipient == address(0)) revert InvalidRecipientAuthorization(account, recipient, nonces(account));
        if (msg.sender != account) {
            if (block.timestamp > deadline) revert SignatureExpired(deadline, block.timestamp);
            uint256 nonce = _useNonce(account);
            bytes32 digest = recipientDigest(campaignId, account, recipient, nonce, deadline);
            if (!SignatureChecker.isValidSignatureNow(account, digest, signature)) {
                revert InvalidRecipientAuthorization(account, recipient, nonce);
            }
        }
        uint256 paid = _useLeaves(campaignId, account, recipient, leaves);
        _pay(token, recipient, paid);
    }

    /// @notice Voids every unused recipient authorisation the caller signed (bumps its nonce).
    function cancelRecipientAuthorizations() external {
        uint256 used = _useNonce(msg.sender);
        emit RecipientAuthorizationsCancelled(msg.sender, used + 1);
    }

    /*//////////////////////////////////////////////////////////////
                                 EXPIRY
    //////////////////////////////////////////////////////////////*/

    /**
     * @notice From `claimDeadline` on, pays the caller its pro-rata share of campaign `campaignId`'s
     * unclaimed funds, once: `fundedBy · unclaimedAtExpiry / totalFunded`, rounded down.
     * @dev The first reclaim settles the campaign: it sums what each round paid, one loop over the
     * posted rounds (at most {MAX_ROUNDS}; measured 4.8 M gas for 1,000 rounds, see docs/gas.md),
     * paid once per campaign instead of a running total written by every claim. Claims, funding
     * and rounds have stopped by then, so every sponsor's share comes from the same numbers
     * whatever the order. Rounding leaves at most one unit per sponsor (dust).
     * @return amount Token units paid to the caller.
     */
    function reclaim(uint256 campaignId) external nonReentrant returns (uint256 amount) {
        return _reclaim(campaignId, msg.sender);
    }

    /// @notice Like {reclaim}, but pays the caller's share to `recipient` (not zero).
    function reclaimTo(uint256 campaignId, address recipient) external nonReentrant returns (uint256 amount) {
        if (recipient == address(0)) revert ZeroReclaimRecipient(campaignId, msg.sender);
        return _reclaim(campaignId, recipient);
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice EIP-712 digest the oracle signers sign for a round (compare with the off-chain digest).
    function roundDigest(RoundAllocation calldata a) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ROUND_ALLOCATION_TYPEHASH, a)));
    }

    /// @notice EIP-712 digest a holder signs to have one batch of its claims paid to `recipient`
    /// (`nonce`: the holder's current {nonces} value).
    function recipientDigest(uint256 campaignId, address account, address recipient, uint256 nonce, uint256 deadline)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(CLAIM_RECIPIENT_TYPEHASH, campaignId, account, recipient, nonce, deadline))
        );
    }

    /// @notice Number of campaigns created (ids run from 1 to this).
    function campaignCount() external view returns (uint256) {
        return _campaignCount;
    }

    /// @notice Campaign `campaignId`'s configuration and totals (reverts {UnknownCampaign}).
    function getCampaign(uint256 campaignId) external view returns (CampaignView memory v) {
        Campaign storage c = _existing(campaignId);
        v.token = c.token;
        v.admin = c.admin;
        v.guardian = c.guardian;
        v.threshold = c.threshold;
        v.signerSetVersion = c.signerSetVersion;
        v.numRounds = c.numRounds;
        v.nextRoundId = c.nextRoundId;
        v.roundCap = c.roundCap;
        v.holderCap = c.holderCap;
        v.challengeWindow = c.challengeWindow;
        v.claimWindow = c.claimWindow;
        v.postingDeadline = c.postingDeadline;
        v.claimDeadline = c.claimDeadline;
        v.totalFunded = c.totalFunded;
        v.totalAllocated = c.totalAllocated;
        v.settled = c.settled;
        v.unclaimedAtExpiry = c.unclaimedAtExpiry;
    }

    /// @notice Round `roundId` of campaign `campaignId` (all zero if never posted). A round whose
    /// challenge window has passed reports `Finalized` even before {finalizeRound} is called.
    function getRound(uint256 campaignId, uint256 roundId) external view returns (RoundView memory v) {
        Round storage r = _rounds[campaignId][roundId];
        v.merkleRoot = r.merkleRoot;
        v.total = r.total;
        v.remaining = r.remaining;
        v.holderCap = r.holderCap;
        v.postedAt = r.postedAt;
        v.finalizesAt = r.finalizesAt;
        v.status = r.status;
        if (v.status == RoundStatus.Pending && block.timestamp >= r.finalizesAt) v.status = RoundStatus.Finalized;
    }

    /// @notice Current signers of campaign `campaignId`.
    function getSigners(uint256 campaignId) external view returns (address[] memory) {
        return _signers[campaignId];
    }

    /// @notice Whether `signer` belongs to signer-set `version` of campaign `campaignId`.
    function isSigner(uint256 campaignId, uint256 version, address signer) external view returns (bool) {
        return _isSigner[campaignId][version][signer];
    }

    /// @notice Whether leaf `index` of round `roundId` of campaign `campaignId` has been claimed.
    function isClaimed(uint256 campaignId, uint256 roundId, uint256 index) external view returns (bool) {
        return _claimedLeaves[campaignId][roundId].get(index);
    }

    /// @notice Funds of campaign `campaignId` not reserved by a pending or final round (token units).
    function unallocated(uint256 campaignId) external view returns (uint256) {
        Campaign storage c = _existing(campaignId);
        return c.totalFunded - c.totalAllocated;
    }

    /// @notice Funding `sponsor` has put into campaign `campaignId` (token units, as credited).
    function fundedBy(uint256 campaignId, address sponsor) external view returns (uint256) {
        return _fundedBy[campaignId][sponsor];
    }

    /// @notice Whether `sponsor` has reclaimed its share of campaign `campaignId`.
    function hasReclaimed(uint256 campaignId, address sponsor) external view returns (bool) {
        return _reclaimed[campaignId][sponsor];
    }

    /// @notice What `account` has been paid from round `roundId` (token units; bounded by `holderCap`).
    function paidInRound(uint256 campaignId, uint256 roundId, address account) external view returns (uint256) {
        return _paidInRound[campaignId][roundId][account];
    }

    /// @notice Seconds between proposing and installing a signer set for campaign `campaignId`.
    function rotationDelay(uint256 campaignId) external view returns (uint256) {
        return _rotationDelay(_existing(campaignId));
    }

    /// @notice The proposed signer set of campaign `campaignId` (`executableAt == 0`: none).
    function pendingSignerRotation(uint256 campaignId)
        external
        view
        returns (address[] memory signers, uint256 threshold, uint256 executableAt)
    {
        PendingRotation storage pending = _pendingRotation[campaignId];
        return (pending.signers, pending.threshold, pending.executableAt);
    }

    /// @notice The account offered the admin role of campaign `campaignId` (zero: none).
    function pendingCampaignAdmin(uint256 campaignId) external view returns (address) {
        return _pendingAdmin[campaignId];
    }

    /// @notice The account offered the guardian role of campaign `campaignId` (zero: none).
    function pendingGuardian(uint256 campaignId) external view returns (address) {
        return _pendingGuardian[campaignId];
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    function _existing(uint256 campaignId) private view returns (Campaign storage c) {
        c = _campaigns[campaignId];
        if (c.claimDeadline == 0) revert UnknownCampaign(campaignId);
    }

    /// @dev The campaign's token, reverting unless claims are open (one storage read).
    function _openCampaignToken(uint256 campaignId) private view returns (address token) {
        Campaign storage c = _campaigns[campaignId];
        uint256 deadline = c.claimDeadline;
        if (deadline == 0) revert UnknownCampaign(campaignId);
        if (block.timestamp >= deadline) revert ClaimWindowClosed(campaignId, block.timestamp, deadline);
        token = c.token;
    }

    function _rotationDelay(Campaign storage c) private view returns (uint256) {
        return Math.max(c.challengeWindow, MIN_ROTATION_DELAY);
    }

    /// @dev Size, threshold, non-zero and distinct members (n ≤ {MAX_SIGNERS}, so O(n²) is bounded).
    function _checkSignerSet(address[] calldata signers, uint256 threshold) private pure {
        uint256 n = signers.length;
        if (n == 0 || n > MAX_SIGNERS) revert InvalidCampaignParam("signers", n);
        if (threshold == 0 || threshold > n) revert InvalidCampaignParam("threshold", threshold);
        for (uint256 i; i < n; ++i) {
            address s = signers[i];
            if (s == address(0)) revert InvalidSignerSet(i, s);
            for (uint256 j; j < i; ++j) {
                if (signers[j] == s) revert InvalidSignerSet(i, s);
            }
        }
    }

    /// @dev Installs a set checked by {_checkSignerSet} as the next version.
    function _setSigners(uint256 campaignId, Campaign storage c, address[] memory signers, uint256 threshold)
        private
    {
        uint256 n = signers.length;
        uint256 version = uint256(c.signerSetVersion) + 1;
        mapping(address => bool) storage members = _isSigner[campaignId][version];
        for (uint256 i; i < n; ++i) {
            members[signers[i]] = true;
        }
        c.signerSetVersion = uint32(version);
        c.threshold = uint8(threshold);
        _signers[campaignId] = signers;
        emit SignerSetRotated(campaignId, version, signers, threshold);
    }

    function _checkSignatures(uint256 campaignId, Campaign storage c, bytes32 digest, bytes[] calldata signatures)
        private
        view
    {
        uint256 threshold = c.threshold;
        uint256 n = signatures.length;
        if (n < threshold) revert TooFewSignatures(n, threshold);
        uint256 version = c.signerSetVersion;
        mapping(address => bool) storage members = _isSigner[campaignId][version];
        address previous = address(0); // recovered signers are never zero, so the first one passes
        for (uint256 i; i < n; ++i) {
            // The third value (error argument) only details `err`, which is checked.
            // slither-disable-next-line unused-return
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signatures[i]);
            if (err != ECDSA.RecoverError.NoError) revert InvalidSignature(i, uint8(err));
            if (!members[signer]) revert UnknownSigner(i, signer, version);
            if (signer == previous) revert DuplicateSigner(i, signer);
            if (signer < previous) revert SignersNotAscending(i, signer, previous);
            previous = signer;
        }
    }

    /// @dev Checks finality, the claimed bit, the proof and the caps; marks the leaf claimed.
    function _useLeaf(
        uint256 campaignId,
        uint256 roundId,
        uint256 index,
        address account,
        uint256 amount,
        bytes32[] calldata proof
    ) private {
        Round storage round = _rounds[campaignId][roundId];
        RoundStatus status = round.status;
        if (status != RoundStatus.Finalized) {
            if (status != RoundStatus.Pending) revert WrongRoundStatus(campaignId, roundId, status);
            uint256 finalizesAt = round.finalizesAt;
            if (block.timestamp < finalizesAt) revert ChallengeWindowOpen(roundId, finalizesAt, block.timestamp);
            round.status = RoundStatus.Finalized;
            emit RoundFinalized(campaignId, roundId);
        }
        BitMaps.BitMap storage claimed = _claimedLeaves[campaignId][roundId];
        if (claimed.get(index)) revert AlreadyClaimed(campaignId, roundId, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, round.merkleRoot, leaf)) {
            revert InvalidProof(campaignId, roundId, index, account, amount);
        }
        _addHolderPayment(campaignId, roundId, account, amount, round.holderCap);
        uint256 remaining = round.remaining;
        if (amount > remaining) revert RoundOverClaimed(campaignId, roundId, amount, remaining);
        round.remaining = uint120(remaining - amount);
        claimed.set(index);
    }

    /// @dev Adds `amount` to what `account` was paid from the round; reverts above `holderCap`.
    function _addHolderPayment(uint256 campaignId, uint256 roundId, address account, uint256 amount, uint256 cap)
        private
    {
        mapping(address => uint256) storage paid = _paidInRound[campaignId][roundId];
        uint256 already = paid[account];
        uint256 total = already + amount;
        if (total > cap) revert HolderCapExceeded(campaignId, roundId, account, already, amount, cap);
        paid[account] = total;
    }

    function _useLeaves(uint256 campaignId, address account, address recipient, LeafClaim[] calldata leaves)
        private
        returns (uint256 paid)
    {
        uint256 n = leaves.length;
        if (n == 0) revert EmptyClaim();
        for (uint256 i; i < n; ++i) {
            LeafClaim calldata l = leaves[i];
            _useLeaf(campaignId, l.roundId, l.index, account, l.amount, l.proof);
            paid += l.amount;
            emit Claimed(campaignId, l.roundId, account, l.index, recipient, l.amount);
        }
    }

    /// @dev Sums what every posted round paid out; fixes the unclaimed remainder for reclaims.
    function _settle(uint256 campaignId, Campaign storage c) private {
        uint256 paid = 0;
        uint256 last = c.nextRoundId;
        mapping(uint256 => Round) storage rounds = _rounds[campaignId];
        for (uint256 r = 1; r < last; ++r) {
            Round storage round = rounds[r];
            if (round.status == RoundStatus.Revoked) continue; // a gap: nothing reserved, nothing paid
            paid += uint256(round.total) - uint256(round.remaining);
        }
        uint256 unclaimed = c.totalFunded - paid;
        c.unclaimedAtExpiry = unclaimed;
        c.settled = true;
        emit CampaignSettled(campaignId, unclaimed);
    }

    function _reclaim(uint256 campaignId, address recipient) private returns (uint256 amount) {
        Campaign storage c = _existing(campaignId);
        if (block.timestamp < c.claimDeadline) revert ClaimWindowOpen(campaignId, block.timestamp, c.claimDeadline);
        uint256 funded = _fundedBy[campaignId][msg.sender];
        if (funded == 0) revert NotASponsor(campaignId, msg.sender);
        if (_reclaimed[campaignId][msg.sender]) revert AlreadyReclaimed(campaignId, msg.sender);
        if (!c.settled) _settle(campaignId, c);

        amount = Math.mulDiv(funded, c.unclaimedAtExpiry, c.totalFunded);
        _reclaimed[campaignId][msg.sender] = true;
        emit Reclaimed(campaignId, msg.sender, recipient, amount);
        _pay(c.token, recipient, amount);
    }

    /// @dev Pays `amount`; for an ERC-20, checks the pool's balance fell by exactly `amount`
    /// ({PayoutDebitMismatch}), so a token charging the sender cannot spend other campaigns' escrow.
    function _pay(address token, address to, uint256 amount) private {
        if (amount == 0) return;
        if (token == address(0)) {
            (bool ok,) = payable(to).call{value: amount}("");
            if (!ok) revert NativeTransferFailed(to, amount);
        } else {
            uint256 before = IERC20(token).balanceOf(address(this));
            IERC20(token).safeTransfer(to, amount);
            uint256 afterwards = IERC20(token).balanceOf(address(this));
            uint256 debited = before > afterwards ? before - afterwards : 0;
            if (debited != amount) revert PayoutDebitMismatch(token, to, amount, debited);
        }
    }
}
