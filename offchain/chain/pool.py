"""Typed client of ``CompensationPool``: campaigns, k-of-n signed rounds, claims, expiry, events.

Every contract function has a method here; every event has a frozen dataclass, decoded from
receipts (:attr:`TxResult.events`) or from the chain's logs (:meth:`PoolClient.events`). Reverts
raise :class:`~offchain.chain.errors.ContractRevert` carrying the Solidity error's name and
arguments (``exc.name == "StaleSignerSet"``, ``exc.args == (1, 2)``).

Units: token amounts are integers in the token's smallest unit (wei for ETH and 18-decimal
tokens); times are Unix seconds; ``bytes32`` values are ``0x``-hex strings. Native-ETH campaigns
use ``token == ZERO_ADDRESS``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from eth_utils import to_checksum_address
from web3.logs import DISCARD
from web3.types import TxReceipt

from offchain.allocation import RoundAllocation
from offchain.allocation.hexbytes import to_bytes, to_bytes32
from offchain.chain.client import (
    _ERC20_ABI,
    BroadcastHook,
    ChainClient,
    TokenClient,
    address_of,
)
from offchain.chain.compiler import CompiledContract
from offchain.chain.errors import ChainError

__all__ = [
    "EVENT_TYPES",
    "ZERO_ADDRESS",
    "CampaignAdminTransferStarted",
    "CampaignAdminTransferred",
    "CampaignCreated",
    "CampaignInfo",
    "CampaignParams",
    "CampaignSettled",
    "Claimed",
    "Funded",
    "GuardianTransferStarted",
    "GuardianTransferred",
    "LeafClaim",
    "PendingRotation",
    "PoolClient",
    "PoolEvent",
    "Reclaimed",
    "RecipientAuthorizationsCancelled",
    "RoundFinalized",
    "RoundInfo",
    "RoundPosted",
    "RoundRevoked",
    "RoundStatus",
    "SignerRotationCancelled",
    "SignerRotationProposed",
    "SignerSetRotated",
    "TxResult",
]

ZERO_ADDRESS = "0x" + "00" * 20
"""The token address of native-ETH campaigns."""


class RoundStatus(enum.IntEnum):
    """``CompensationPool.RoundStatus``."""

    NONE = 0
    PENDING = 1
    FINALIZED = 2
    REVOKED = 3


@dataclass(frozen=True)
class CampaignParams:
    """Arguments of ``createCampaign`` (see the contract's NatSpec).

    Attributes:
        token: ERC-20 address, or :data:`ZERO_ADDRESS` for native ETH.
        guardian: May revoke pending rounds.
        signers: Oracle signer addresses (distinct).
        threshold: Signatures needed per round (k).
        num_rounds: Number of rounds (≤ 1000).
        round_cap_wei: Largest round total (token units).
        holder_cap_wei: Most one account is paid from one round, all its leaves together
            (token units).
        challenge_window_s: Seconds a round stays revocable.
        claim_window_s: Seconds claims stay open after the last possible round is final.
        posting_deadline: Unix time after which no funding or round is accepted.
    """

    token: str
    guardian: str
    signers: tuple[str, ...]
    threshold: int
    num_rounds: int
    round_cap_wei: int
    holder_cap_wei: int
    challenge_window_s: int
    claim_window_s: int
    posting_deadline: int

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple ``createCampaign`` takes."""
        return (
            to_checksum_address(self.token), to_checksum_address(self.guardian),
            [to_checksum_address(s) for s in self.signers], self.threshold, self.num_rounds,
            self.round_cap_wei, self.holder_cap_wei, self.challenge_window_s,
            self.claim_window_s, self.posting_deadline,
        )


@dataclass(frozen=True)
class CampaignInfo:
    """``getCampaign``: configuration and running totals (token units, Unix seconds)."""

    campaign_id: int
    token: str
    admin: str
    guardian: str
    threshold: int
    signer_set_version: int
    num_rounds: int
    next_round_id: int
    round_cap_wei: int
    holder_cap_wei: int
    challenge_window_s: int
    claim_window_s: int
    posting_deadline: int
    claim_deadline: int
    total_funded_wei: int
    total_allocated_wei: int
    settled: bool
    unclaimed_at_expiry_wei: int

    @property
    def unallocated_wei(self) -> int:
        """Funds not reserved by any pending or final round."""
        return self.total_funded_wei - self.total_allocated_wei

    @property
    def is_native(self) -> bool:
        """Whether the campaign pays native ETH."""
        return int(self.token, 16) == 0


@dataclass(frozen=True)
class RoundInfo:
    """``getRound`` (all zero when never posted); amounts in token units, times Unix seconds."""

    campaign_id: int
    round_id: int
    merkle_root: str
    total_wei: int
    remaining_wei: int
    holder_cap_wei: int
    posted_at: int
    finalizes_at: int
    status: RoundStatus

    @property
    def exists(self) -> bool:
        """Whether the round is on chain (pending or final)."""
        return self.status in (RoundStatus.PENDING, RoundStatus.FINALIZED)

    @property
    def claimed_wei(self) -> int:
        """Paid out of this round so far."""
        return self.total_wei - self.remaining_wei


@dataclass(frozen=True)
class PendingRotation:
    """``pendingSignerRotation``: a proposed signer set, installable from ``executable_at``
    (Unix seconds; 0 when nothing is pending)."""

    campaign_id: int
    signers: tuple[str, ...]
    threshold: int
    executable_at: int

    @property
    def exists(self) -> bool:
        """Whether a proposal is pending."""
        return self.executable_at != 0


@dataclass(frozen=True)
class LeafClaim:
    """One leaf of a batch claim (``claimRounds``): its round, index, amount and proof."""

    round_id: int
    index: int
    amount_wei: int
    proof: tuple[str, ...]

    def as_tuple(self) -> tuple[Any, ...]:
        proof = [to_bytes32(p, "proof node", ChainError) for p in self.proof]
        return (self.round_id, self.index, self.amount_wei, proof)


# -- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolEvent:
    """Base of the decoded pool events: where the log is."""

    EVENT: ClassVar[str] = ""
    block_number: int = field(kw_only=True)
    tx_hash: str = field(kw_only=True)
    log_index: int = field(kw_only=True)


@dataclass(frozen=True)
class CampaignCreated(PoolEvent):
    EVENT: ClassVar[str] = "CampaignCreated"
    campaign_id: int
    token: str
    admin: str
    guardian: str
    num_rounds: int
    round_cap_wei: int
    holder_cap_wei: int
    challenge_window_s: int
    claim_window_s: int
    posting_deadline: int
    claim_deadline: int


@dataclass(frozen=True)
class SignerSetRotated(PoolEvent):
    EVENT: ClassVar[str] = "SignerSetRotated"
    campaign_id: int
    version: int
    signers: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class SignerRotationProposed(PoolEvent):
    EVENT: ClassVar[str] = "SignerRotationProposed"
    campaign_id: int
    signers: tuple[str, ...]
    threshold: int
    executable_at: int


@dataclass(frozen=True)
class SignerRotationCancelled(PoolEvent):
    EVENT: ClassVar[str] = "SignerRotationCancelled"
    campaign_id: int
    by: str


@dataclass(frozen=True)
class CampaignAdminTransferStarted(PoolEvent):
    EVENT: ClassVar[str] = "CampaignAdminTransferStarted"
    campaign_id: int
    admin: str
    pending_admin: str


@dataclass(frozen=True)
class CampaignAdminTransferred(PoolEvent):
    EVENT: ClassVar[str] = "CampaignAdminTransferred"
    campaign_id: int
    previous_admin: str
    new_admin: str


@dataclass(frozen=True)
class GuardianTransferStarted(PoolEvent):
    EVENT: ClassVar[str] = "GuardianTransferStarted"
    campaign_id: int
    guardian: str
    pending_guardian: str


@dataclass(frozen=True)
class GuardianTransferred(PoolEvent):
    EVENT: ClassVar[str] = "GuardianTransferred"
    campaign_id: int
    previous_guardian: str
    new_guardian: str


@dataclass(frozen=True)
class RecipientAuthorizationsCancelled(PoolEvent):
    EVENT: ClassVar[str] = "RecipientAuthorizationsCancelled"
    account: str
    nonce: int


@dataclass(frozen=True)
class Funded(PoolEvent):
    EVENT: ClassVar[str] = "Funded"
    campaign_id: int
    sponsor: str
    amount_wei: int


@dataclass(frozen=True)
class RoundPosted(PoolEvent):
    EVENT: ClassVar[str] = "RoundPosted"
    campaign_id: int
    round_id: int
    merkle_root: str
    total_wei: int
    checkpoint_hash: str
    dataset_root: str
    attribution_hash: str
    signer_set_version: int
    finalizes_at: int


@dataclass(frozen=True)
class RoundRevoked(PoolEvent):
    EVENT: ClassVar[str] = "RoundRevoked"
    campaign_id: int
    round_id: int
    guardian: str


@dataclass(frozen=True)
class RoundFinalized(PoolEvent):
    EVENT: ClassVar[str] = "RoundFinalized"
    campaign_id: int
    round_id: int


@dataclass(frozen=True)
class Claimed(PoolEvent):
    EVENT: ClassVar[str] = "Claimed"
    campaign_id: int
    round_id: int
    account: str
    index: int
    recipient: str
    amount_wei: int


@dataclass(frozen=True)
class CampaignSettled(PoolEvent):
    EVENT: ClassVar[str] = "CampaignSettled"
    campaign_id: int
    unclaimed_wei: int


@dataclass(frozen=True)
class Reclaimed(PoolEvent):
    EVENT: ClassVar[str] = "Reclaimed"
    campaign_id: int
    sponsor: str
    recipient: str
    amount_wei: int


EVENT_TYPES: dict[str, type[PoolEvent]] = {
    cls.EVENT: cls
    for cls in (CampaignCreated, SignerSetRotated, SignerRotationProposed, SignerRotationCancelled,
                CampaignAdminTransferStarted, CampaignAdminTransferred, GuardianTransferStarted,
                GuardianTransferred, RecipientAuthorizationsCancelled, Funded, RoundPosted,
                RoundRevoked, RoundFinalized, Claimed, CampaignSettled, Reclaimed)
}
"""Solidity event name → dataclass, for every pool event."""


def _event_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return tuple(_event_value(v) for v in value)
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    return value


def _decode_log(log: Any) -> PoolEvent:
    cls = EVENT_TYPES[log["event"]]
    values = [_event_value(v) for v in log["args"].values()]
    own = [f for f in fields(cls) if f.name not in ("block_number", "tx_hash", "log_index")]
    if len(values) != len(own):
        raise ChainError(f"event {log['event']} has {len(values)} fields, expected {len(own)}")
    return cls(
        *values,
        block_number=int(log["blockNumber"]),
        tx_hash="0x" + bytes(log["transactionHash"]).hex(),
        log_index=int(log["logIndex"]),
    )


@dataclass(frozen=True)
class TxResult:
    """A mined pool transaction: its hash, gas used and the pool events it emitted."""

    tx_hash: str
    gas_used: int
    block_number: int
    events: tuple[PoolEvent, ...]

    def only(self, event_type: type[PoolEvent]) -> list[PoolEvent]:
        """The emitted events of one type."""
        return [e for e in self.events if isinstance(e, event_type)]


# -- client --------------------------------------------------------------------------------------


class PoolClient:
    """``CompensationPool``: campaigns, funding, k-of-n signed rounds, Merkle claims and reclaims.

    Write methods wait for the receipt and return a :class:`TxResult`; they raise
    :class:`~offchain.chain.errors.ContractRevert` with the pool's error name (``"UnknownSigner"``,
    ``"AlreadyClaimed"``, ...) when the contract rejects the call. ``sender_key`` is whoever
    sends (and pays gas for) the transaction.
    """

    def __init__(
        self,
        client: ChainClient,
        address: str,
        abi: Sequence[dict[str, Any]],
        token_abi: Sequence[dict[str, Any]] | None = None,
        name: str = "CompensationPool",
    ) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.contract = client.contract(self.address, abi, name)
        self._token_abi = list(token_abi) if token_abi else _ERC20_ABI

    @classmethod
    def deploy(
        cls,
        client: ChainClient,
        compiled: CompiledContract,
        sender_key: str,
        *,
        admin: str | None = None,
        token_abi: Sequence[dict[str, Any]] | None = None,
    ) -> PoolClient:
        """Deploy ``CompensationPool(admin)`` (default admin: the deployer) and wrap it."""
        address = client.deploy(
            compiled, to_checksum_address(admin or address_of(sender_key)), sender_key=sender_key
        )
        return cls(client, address, compiled.abi, token_abi, compiled.name)

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, fn: Any, sender_key: str, value_wei: int = 0, **hooks: Any) -> TxResult:
        receipt = self.client.send(fn, sender_key, value_wei=value_wei, **hooks)
        return self._result(receipt)

    def _result(self, receipt: TxReceipt) -> TxResult:
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            gas_used=int(receipt["gasUsed"]),
            block_number=int(receipt["blockNumber"]),
            events=tuple(self.decode_receipt(receipt)),
        )

    def decode_receipt(self, receipt: TxReceipt) -> list[PoolEvent]:
        """Every pool event in ``receipt``, in log order."""
        decoded = []
        for name in EVENT_TYPES:
            event = getattr(self.contract.events, name)()
            for log in event.process_receipt(receipt, errors=DISCARD):
                if to_checksum_address(log["address"]) == self.address:
                    decoded.append(_decode_log(log))
        return sorted(decoded, key=lambda e: e.log_index)

    def events(
        self,
        name: str,
        *,
        from_block: int = 0,
        to_block: int | str = "latest",
        **argument_filters: Any,
    ) -> list[PoolEvent]:
        """Logs of event ``name`` between two blocks, decoded; filter on indexed arguments with
        their Solidity names (``campaignId=1``).

        Raises:
            ChainError: unknown event name, or the node refuses the query.
        """
        if name not in EVENT_TYPES:
            raise ChainError(f"CompensationPool has no event {name!r}; known: {sorted(EVENT_TYPES)}")
        event = getattr(self.contract.events, name)()
        with self.client._translate():
            logs = event.get_logs(
                from_block=from_block, to_block=to_block,
                argument_filters=argument_filters or None,
            )
        return [_decode_log(log) for log in logs]

    def asset(self, campaign_id: int) -> TokenClient | None:
        """The campaign's payout ERC-20 as a :class:`TokenClient`, or ``None`` for native ETH
        (one ``getCampaign`` call; the token is fixed at creation, so callers may keep it)."""
        info = self.get_campaign(campaign_id)
        return None if info.is_native else TokenClient(self.client, info.token, self._token_abi)

    def token(self, campaign_id: int) -> TokenClient:
        """The campaign's ERC-20 as a :class:`TokenClient`.

        Raises:
            ChainError: the campaign pays native ETH.
        """
        asset = self.asset(campaign_id)
        if asset is None:
            raise ChainError(f"campaign {campaign_id} pays native ETH, not an ERC-20")
        return asset

    def asset_balance(self, asset: TokenClient | None, account: str) -> int:
        """``account``'s balance of ``asset`` (from :meth:`asset`; ``None``: ETH in wei)."""
        return self.client.eth_balance(account) if asset is None else asset.balance_of(account)

    def balance_of(self, campaign_id: int, account: str) -> int:
        """``account``'s balance in the campaign's payout asset (token units or wei)."""
        return self.asset_balance(self.asset(campaign_id), account)

    # -- campaigns and signers -----------------------------------------------------------------

    def create_campaign(self, sender_key: str, params: CampaignParams) -> tuple[int, TxResult]:
        """``createCampaign``; the sender becomes the campaign admin. Returns (campaign id, tx)."""
        result = self._send(self.contract.functions.createCampaign(params.as_tuple()), sender_key)
        created = result.only(CampaignCreated)
        if not created:
            raise ChainError(f"createCampaign {result.tx_hash} emitted no CampaignCreated")
        return created[0].campaign_id, result

    def propose_signer_rotation(
        self, admin_key: str, campaign_id: int, signers: Sequence[str], threshold: int
    ) -> TxResult:
        """``proposeSignerRotation`` (campaign admin): a new signer set and threshold, installable
        with :meth:`execute_signer_rotation` after :meth:`rotation_delay` seconds; the guardian
        or the admin may :meth:`cancel_signer_rotation` it meanwhile."""
        fn = self.contract.functions.proposeSignerRotation(
            campaign_id, [to_checksum_address(s) for s in signers], threshold
        )
        return self._send(fn, admin_key)

    def execute_signer_rotation(self, sender_key: str, campaign_id: int) -> TxResult:
        """``executeSignerRotation`` (anyone, once the delay has passed): installs the proposed
        set and bumps the signer-set version (emits ``SignerSetRotated``)."""
        return self._send(self.contract.functions.executeSignerRotation(campaign_id), sender_key)

    def cancel_signer_rotation(self, sender_key: str, campaign_id: int) -> TxResult:
        """``cancelSignerRotation`` (guardian or campaign admin)."""
        return self._send(self.contract.functions.cancelSignerRotation(campaign_id), sender_key)

    def transfer_campaign_admin(self, admin_key: str, campaign_id: int, new_admin: str
                                ) -> TxResult:
        """``transferCampaignAdmin``: offer the admin role (:data:`ZERO_ADDRESS` withdraws)."""
        fn = self.contract.functions.transferCampaignAdmin(campaign_id,
                                                           to_checksum_address(new_admin))
        return self._send(fn, admin_key)

    def accept_campaign_admin(self, new_admin_key: str, campaign_id: int) -> TxResult:
        """``acceptCampaignAdmin``: the offered account takes the admin role."""
        return self._send(self.contract.functions.acceptCampaignAdmin(campaign_id), new_admin_key)

    def transfer_guardian(self, guardian_key: str, campaign_id: int, new_guardian: str
                          ) -> TxResult:
        """``transferGuardian`` (guardian only): offer the role (:data:`ZERO_ADDRESS` withdraws)."""
        fn = self.contract.functions.transferGuardian(campaign_id,
                                                      to_checksum_address(new_guardian))
        return self._send(fn, guardian_key)

    def accept_guardian(self, new_guardian_key: str, campaign_id: int) -> TxResult:
        """``acceptGuardian``: the offered account becomes the guardian."""
        return self._send(self.contract.functions.acceptGuardian(campaign_id), new_guardian_key)

    def begin_default_admin_transfer(self, admin_key: str, new_admin: str) -> TxResult:
        """``beginDefaultAdminTransfer``: offer the pool's DEFAULT_ADMIN_ROLE (accept after
        ``defaultAdminDelay``)."""
        fn = self.contract.functions.beginDefaultAdminTransfer(to_checksum_address(new_admin))
        return self._send(fn, admin_key)

    def accept_default_admin_transfer(self, new_admin_key: str) -> TxResult:
        """``acceptDefaultAdminTransfer`` (the offered account, once the delay has passed)."""
        return self._send(self.contract.functions.acceptDefaultAdminTransfer(), new_admin_key)

    def pause(self, pauser_key: str) -> TxResult:
        """``pause``: stops campaign creation, funding and posting."""
        return self._send(self.contract.functions.pause(), pauser_key)

    def unpause(self, pauser_key: str) -> TxResult:
        """``unpause``."""
        return self._send(self.contract.functions.unpause(), pauser_key)

    # -- funding -------------------------------------------------------------------------------

    def fund(self, sponsor_key: str, campaign_id: int, amount_wei: int,
             *, approve: bool = True) -> TxResult:
        """``fund(campaignId, amount)``: for an ERC-20 campaign approves the pool first (unless
        ``approve=False``); for native ETH sends ``amount_wei`` as value. The sponsor is credited
        what arrived (less for fee-on-transfer tokens; see the ``Funded`` event)."""
        asset = self.asset(campaign_id)
        fn = self.contract.functions.fund(campaign_id, amount_wei)
        if asset is None:
            return self._send(fn, sponsor_key, value_wei=amount_wei)
        if approve:
            asset.approve(sponsor_key, self.address, amount_wei)
        return self._send(fn, sponsor_key)

    # -- rounds --------------------------------------------------------------------------------

    def post_round(
        self,
        sender_key: str,
        allocation: RoundAllocation,
        signatures: Sequence[str | bytes],
        *,
        before_broadcast: BroadcastHook | None = None,
        after_broadcast: BroadcastHook | None = None,
    ) -> TxResult:
        """``postRound``: relay a round with its signatures (ascending signer order, see
        :func:`offchain.oracle.signing.order_signatures`). Anyone may relay. The hooks are
        those of :meth:`ChainClient.send` (the node records the transaction before it is sent)."""
        fn = self.contract.functions.postRound(
            allocation.as_tuple(), [to_bytes(s, "signature", ChainError) for s in signatures]
        )
        return self._send(fn, sender_key, before_broadcast=before_broadcast,
                          after_broadcast=after_broadcast)

    def revoke_round(self, guardian_key: str, campaign_id: int, round_id: int) -> TxResult:
        """``revokeRound`` (guardian; any round still in its challenge window)."""
        return self._send(self.contract.functions.revokeRound(campaign_id, round_id),
                          guardian_key)

    def finalize_round(self, sender_key: str, campaign_id: int, round_id: int) -> TxResult:
        """``finalizeRound`` (anyone, after the challenge window)."""
        return self._send(self.contract.functions.finalizeRound(campaign_id, round_id),
                          sender_key)

    # -- claims --------------------------------------------------------------------------------

    def claim(
        self, sender_key: str, campaign_id: int, round_id: int, index: int, account: str,
        amount_wei: int, proof: Sequence[str | bytes],
    ) -> TxResult:
        """``claim``: pay leaf ``(index, account, amount_wei)`` of a final round to ``account``."""
        fn = self.contract.functions.claim(
            campaign_id, round_id, index, to_checksum_address(account), amount_wei,
            [to_bytes32(p, "proof node", ChainError) for p in proof],
        )
        return self._send(fn, sender_key)

    def claim_rounds(
        self, sender_key: str, campaign_id: int, account: str, leaves: Sequence[LeafClaim]
    ) -> TxResult:
        """``claimRounds``: several leaves of ``account`` in one transaction, one transfer."""
        fn = self.contract.functions.claimRounds(
            campaign_id, to_checksum_address(account), [leaf.as_tuple() for leaf in leaves]
        )
        return self._send(fn, sender_key)

    def claim_rounds_to(
        self, sender_key: str, campaign_id: int, account: str, leaves: Sequence[LeafClaim],
        recipient: str, deadline: int, signature: str | bytes = b"",
    ) -> TxResult:
        """``claimRoundsTo``: like :meth:`claim_rounds` but paid to ``recipient``, named by
        ``account``'s EIP-712 ``ClaimRecipient`` signature over its current nonce
        (:meth:`recipient_nonce`; used up by this call). Not needed when ``account`` sends."""
        fn = self.contract.functions.claimRoundsTo(
            campaign_id, to_checksum_address(account), [leaf.as_tuple() for leaf in leaves],
            to_checksum_address(recipient), deadline, to_bytes(signature, "signature", ChainError),
        )
        return self._send(fn, sender_key)

    def cancel_recipient_authorizations(self, holder_key: str) -> TxResult:
        """``cancelRecipientAuthorizations``: void every unused ``ClaimRecipient`` signature of
        the sender (bumps its nonce)."""
        return self._send(self.contract.functions.cancelRecipientAuthorizations(), holder_key)

    # -- expiry --------------------------------------------------------------------------------

    def reclaim(self, sponsor_key: str, campaign_id: int) -> TxResult:
        """``reclaim``: after the claim deadline, the sponsor's pro-rata share of what is unclaimed."""
        return self._send(self.contract.functions.reclaim(campaign_id), sponsor_key)

    def reclaim_to(self, sponsor_key: str, campaign_id: int, recipient: str) -> TxResult:
        """``reclaimTo``: like :meth:`reclaim`, paid to ``recipient``."""
        fn = self.contract.functions.reclaimTo(campaign_id, to_checksum_address(recipient))
        return self._send(fn, sponsor_key)

    # -- views ---------------------------------------------------------------------------------

    def _call(self, fn: Any) -> Any:
        return self.client.call(fn)

    def campaign_count(self) -> int:
        """Number of campaigns (ids 1..count)."""
        return int(self._call(self.contract.functions.campaignCount()))

    def get_campaign(self, campaign_id: int) -> CampaignInfo:
        """``getCampaign`` (raises ``ContractRevert("UnknownCampaign")``)."""
        v = self._call(self.contract.functions.getCampaign(campaign_id))
        return CampaignInfo(
            campaign_id, to_checksum_address(v[0]), to_checksum_address(v[1]),
            to_checksum_address(v[2]), *(int(x) for x in v[3:15]), bool(v[15]), int(v[16]),
        )

    def get_round(self, campaign_id: int, round_id: int) -> RoundInfo:
        """``getRound``; a pending round past its window reports ``FINALIZED``."""
        v = self._call(self.contract.functions.getRound(campaign_id, round_id))
        return RoundInfo(
            campaign_id, round_id, "0x" + bytes(v[0]).hex(), *(int(x) for x in v[1:6]),
            RoundStatus(int(v[6])),
        )

    def next_round_id(self, campaign_id: int) -> int:
        """The id the campaign's next posted round must carry."""
        return self.get_campaign(campaign_id).next_round_id

    def get_signers(self, campaign_id: int) -> list[str]:
        """Current signer set."""
        return [to_checksum_address(a)
                for a in self._call(self.contract.functions.getSigners(campaign_id))]

    def is_signer(self, campaign_id: int, version: int, signer: str) -> bool:
        """Whether ``signer`` is in signer-set ``version``."""
        fn = self.contract.functions.isSigner(campaign_id, version, to_checksum_address(signer))
        return bool(self._call(fn))

    def is_claimed(self, campaign_id: int, round_id: int, index: int) -> bool:
        """Whether leaf ``index`` of the round has been claimed."""
        return bool(self._call(self.contract.functions.isClaimed(campaign_id, round_id, index)))

    def unallocated(self, campaign_id: int) -> int:
        """Funds not reserved by a round (token units)."""
        return int(self._call(self.contract.functions.unallocated(campaign_id)))

    def funded_by(self, campaign_id: int, sponsor: str) -> int:
        """What ``sponsor`` is credited with (token units)."""
        fn = self.contract.functions.fundedBy(campaign_id, to_checksum_address(sponsor))
        return int(self._call(fn))

    def has_reclaimed(self, campaign_id: int, sponsor: str) -> bool:
        """Whether ``sponsor`` has reclaimed its share."""
        fn = self.contract.functions.hasReclaimed(campaign_id, to_checksum_address(sponsor))
        return bool(self._call(fn))

    def paid_in_round(self, campaign_id: int, round_id: int, account: str) -> int:
        """What ``account`` has been paid from the round (token units; at most ``holderCap``)."""
        fn = self.contract.functions.paidInRound(campaign_id, round_id,
                                                 to_checksum_address(account))
        return int(self._call(fn))

    def rotation_delay(self, campaign_id: int) -> int:
        """Seconds between proposing and installing a signer set."""
        return int(self._call(self.contract.functions.rotationDelay(campaign_id)))

    def pending_signer_rotation(self, campaign_id: int) -> PendingRotation:
        """The proposed signer set (``executable_at == 0``: none)."""
        signers, threshold, executable_at = self._call(
            self.contract.functions.pendingSignerRotation(campaign_id))
        return PendingRotation(campaign_id, tuple(to_checksum_address(a) for a in signers),
                               int(threshold), int(executable_at))

    def pending_campaign_admin(self, campaign_id: int) -> str:
        """The account offered the campaign's admin role (:data:`ZERO_ADDRESS`: none)."""
        return to_checksum_address(
            self._call(self.contract.functions.pendingCampaignAdmin(campaign_id)))

    def pending_guardian(self, campaign_id: int) -> str:
        """The account offered the campaign's guardian role (:data:`ZERO_ADDRESS`: none)."""
        return to_checksum_address(self._call(self.contract.functions.pendingGuardian(campaign_id)))

    def recipient_nonce(self, account: str) -> int:
        """``nonces(account)``: the nonce ``account``'s next ``ClaimRecipient`` must carry."""
        return int(self._call(self.contract.functions.nonces(to_checksum_address(account))))

    def paused(self) -> bool:
        """Whether funding and posting are paused."""
        return bool(self._call(self.contract.functions.paused()))

    def has_role(self, role: str, account: str) -> bool:
        """``hasRole`` for ``"PAUSER_ROLE"`` or ``"DEFAULT_ADMIN_ROLE"``."""
        role_id = self._call(getattr(self.contract.functions, role)())
        return bool(self._call(self.contract.functions.hasRole(role_id,
                                                               to_checksum_address(account))))

    def round_digest(self, allocation: RoundAllocation) -> bytes:
        """The contract's EIP-712 digest of ``allocation``."""
        return bytes(self._call(self.contract.functions.roundDigest(allocation.as_tuple())))

    def recipient_digest(self, campaign_id: int, account: str, recipient: str, nonce: int,
                         deadline: int) -> bytes:
        """The contract's EIP-712 digest of ``ClaimRecipient``."""
        fn = self.contract.functions.recipientDigest(
            campaign_id, to_checksum_address(account), to_checksum_address(recipient), nonce,
            deadline)
        return bytes(self._call(fn))
