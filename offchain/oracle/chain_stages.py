"""The chain stages of a round: sign, submit, finalize, claim.

After the off-chain stages (:mod:`offchain.rounds.stages`, order in
:data:`offchain.rounds.pipeline.PIPELINE`) come :func:`sign` (EIP-712, k-of-n,
:mod:`offchain.oracle.signing`), :func:`submit` (``postRound`` on chain, never twice),
:func:`await_finality` (the challenge window) and :func:`claim_all` (each holder's Merkle claim).
Like the off-chain stages, each chain stage writes one artifact atomically and is skipped when
that artifact exists; :func:`submit` also asks the chain before sending, so a lost
``submission.json`` cannot cause a second post. :class:`ChainStages` binds them to one deployed
campaign and records them in the round-state database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from offchain.allocation import PayoutCaps, PayoutTree, RoundAllocation, parse_wei, wei_str
from offchain.chain import ChainClient, ContractRevert
from offchain.chain.pool import PoolClient, RoundPosted, RoundStatus
from offchain.errors import StageError
from offchain.faults import fault_point
from offchain.layout import RoundPaths
from offchain.oracle.signing import SigningError, recover_round_signer, round_digest, sign_round
from offchain.utils import read_json, write_json

if TYPE_CHECKING:  # the state database (sqlalchemy) is imported when a run opens it
    from offchain.state import RoundStore

__all__ = [
    "AwaitingSignatures",
    "ChainStages",
    "await_finality",
    "claim_all",
    "request_signatures",
    "sign",
    "submit",
    "verified_signer",
]

logger = logging.getLogger(__name__)


class AwaitingSignatures(StageError):
    """Fewer than k valid signatures of the round's digest are collected so far."""

    def __init__(self, round_id: int, have: int, need: int, digest: str) -> None:
        super().__init__(
            f"round {round_id}: {have} of {need} oracle signatures of {digest}; co-signers "
            f"sign the round's signing request (GET /rounds/{round_id}/signing-request) and "
            f"POST /rounds/{round_id}/signatures, then run the round again"
        )
        self.round_id, self.have, self.need, self.digest = round_id, have, need, digest


def request_signatures(
    paths: RoundPaths,
    chain_id: int,
    pool_address: str,
    campaign_id: int,
    signer_set_version: int,
    deadline: int,
) -> RoundPaths:
    """Fix what the oracle signers sign: the round's EIP-712 ``RoundAllocation`` (EIP-712).

    The struct binds the campaign, the round, the Merkle root and total (wei), the provenance
    commitments of ``allocation.json`` and the signer-set version, valid until ``deadline``
    (Unix seconds). Written once, so every signer, local or co-signing over the API, signs the
    same digest.

    Output: ``signing_request.json`` (chain id, verifying contract, allocation, digest).
    Skipped when the round pays nothing (no Merkle root).
    """
    if paths.signing_request.exists():
        return paths
    allocation = read_json(paths.allocation)
    if allocation["merkle_root"] is None:
        return paths
    signed = RoundAllocation(
        campaign_id=campaign_id,
        round_id=paths.round_id,
        merkle_root=allocation["merkle_root"],
        total_wei=parse_wei(allocation["total_wei"], "total_wei"),
        signer_set_version=signer_set_version,
        deadline=deadline,
        **allocation["provenance"],
    )
    write_json(paths.signing_request, {
        "chain_id": chain_id,
        "verifying_contract": pool_address,
        "allocation": signed.to_json(),
        "digest": "0x" + round_digest(chain_id, pool_address, signed).hex(),
    })
    return paths


def verified_signer(paths: RoundPaths, signature: str, signers: Sequence[str]) -> str:
    """The signer of ``signature`` over the round's signing request, if it is one of ``signers``.

    Raises:
        StageError: the round has no signing request.
        SigningError: the signature is malformed or from an address outside ``signers``.
    """
    if not paths.signing_request.exists():
        raise StageError(f"round {paths.round_id} has nothing to sign (no signing request)")
    request = read_json(paths.signing_request)
    allocation = RoundAllocation.from_json(request["allocation"])
    signer = recover_round_signer(signature, request["chain_id"],
                                  request["verifying_contract"], allocation)
    if signer.lower() not in {a.lower() for a in signers}:
        raise SigningError(f"{signer} is not an oracle signer of this campaign")
    return signer


def sign(
    paths: RoundPaths,
    signer_keys: Sequence[str],
    signers: Sequence[str],
    threshold: int,
    cosignatures: Mapping[str, str] | None = None,
    on_signature: Callable[[str, str], None] | None = None,
) -> RoundPaths:
    """Collect k-of-n signatures of the signing request; write them once k are valid.

    Each local key in ``signer_keys`` signs (RFC 6979: the same signature every time) and is
    reported through ``on_signature(signer, signature)`` (the node stores it); ``cosignatures``
    (signer → signature, e.g. posted over the API) are checked again here. Only signatures that
    recover to one of ``signers`` count.

    Output: ``signature.json`` with the allocation, its digest, the signers and their
    signatures in ascending signer order (as ``postRound`` requires). Skipped when the round
    pays nothing.

    Raises:
        AwaitingSignatures: fewer than ``threshold`` valid signatures (nothing is written).
    """
    if paths.signature.exists() or not paths.signing_request.exists():
        return paths
    request = read_json(paths.signing_request)
    chain_id, pool_address = request["chain_id"], request["verifying_contract"]
    allocation = RoundAllocation.from_json(request["allocation"])
    by_signer: dict[str, str] = {}
    for key in signer_keys:
        signature = sign_round(key, chain_id, pool_address, allocation)
        signer = verified_signer(paths, signature, signers)
        by_signer[signer] = signature
        if on_signature is not None:
            on_signature(signer, signature)
    for claimed, signature in (cosignatures or {}).items():
        try:
            signer = verified_signer(paths, signature, signers)
        except SigningError as exc:
            logger.warning("round %d: ignoring the signature of %s: %s", paths.round_id,
                           claimed, exc)
            continue
        by_signer.setdefault(signer, signature)
    if len(by_signer) < threshold:
        raise AwaitingSignatures(paths.round_id, len(by_signer), threshold, request["digest"])
    ordered = sorted(by_signer, key=lambda address: int(address, 16))
    write_json(paths.signature, {
        **request,
        "signers": ordered,
        "signatures": [by_signer[a] for a in ordered],
    })
    return paths


def submit(
    paths: RoundPaths,
    pool: PoolClient,
    sender_key: str,
    on_signed: Callable[[str, int], None] | None = None,
) -> RoundPaths:
    """Post the signed round on chain once.

    Before sending, the chain is asked for the campaign's next round id: if this round is
    already there (a crash after sending), its root is checked against ours and recorded
    instead of sending. ``on_signed(tx_hash, nonce)`` runs after the transaction is signed and
    before it is broadcast (the node records it in the round-state database, which refuses a
    second live transaction for the round). The contract itself accepts each round id once.

    Output: ``submission.json`` (transaction hash, gas and ``finalizes_at``, or
    ``already_posted``).

    Raises:
        StageError: an earlier round is not on chain yet, or the chain holds a different root
            for this round.
    """
    if paths.submission.exists() or not paths.signature.exists():
        return paths
    signed = read_json(paths.signature)
    allocation = RoundAllocation.from_json(signed["allocation"])
    campaign_id = allocation.campaign_id
    next_round = pool.next_round_id(campaign_id)
    on_chain = (pool.get_round(campaign_id, paths.round_id)
                if next_round > paths.round_id else None)
    if on_chain is not None and on_chain.status is RoundStatus.REVOKED:
        # The guardian revoked this round while later rounds stand: a gap the pool lets us fill.
        on_chain = None
    if on_chain is not None:
        if on_chain.merkle_root.lower() != allocation.merkle_root.lower():
            raise StageError(
                f"round {paths.round_id} of campaign {campaign_id} is on chain with root "
                f"{on_chain.merkle_root}, ours is {allocation.merkle_root}"
            )
        write_json(paths.submission, {"campaign_id": campaign_id, "round_id": paths.round_id,
                                      "already_posted": True,
                                      "finalizes_at": on_chain.finalizes_at})
        return paths
    if next_round < paths.round_id:
        raise StageError(f"campaign {campaign_id} expects round {next_round} before round "
                         f"{paths.round_id}")

    def before_broadcast(tx_hash: str, nonce: int) -> None:
        if on_signed is not None:
            on_signed(tx_hash, nonce)
        fault_point("submit:recorded", paths.round_id)

    result = pool.post_round(
        sender_key, allocation, signed["signatures"], before_broadcast=before_broadcast,
        after_broadcast=lambda _tx, _nonce: fault_point("submit:broadcast", paths.round_id),
    )
    posted = result.only(RoundPosted)
    write_json(paths.submission, {
        "campaign_id": campaign_id, "round_id": paths.round_id, "tx_hash": result.tx_hash,
        "gas_used": result.gas_used,
        "finalizes_at": posted[0].finalizes_at if posted else None,
    })
    return paths


def await_finality(
    paths: RoundPaths, pool: PoolClient, sender_key: str, *, dev_chain: bool,
    poll_s: float = 5.0,
) -> RoundPaths:
    """Wait until the round leaves its challenge window, then finalize it on chain.

    On a dev chain (anvil) the chain clock is advanced past the window; elsewhere this polls
    the chain's block time. A round the guardian revoked meanwhile raises.

    Output: ``finality.json`` (status and the finalize transaction, if one was needed).

    Raises:
        StageError: the round was revoked by the guardian.
    """
    if paths.finality.exists() or not paths.submission.exists():
        return paths
    campaign_id = read_json(paths.submission)["campaign_id"]
    info = pool.get_round(campaign_id, paths.round_id)
    if info.status is RoundStatus.REVOKED or not info.exists:
        raise StageError(f"round {paths.round_id} of campaign {campaign_id} is "
                         f"{info.status.name.lower()} on chain; sign and submit it again")
    now = pool.client.block_timestamp()
    if now < info.finalizes_at:
        if dev_chain:
            pool.client.increase_time(info.finalizes_at - now)
        else:
            while pool.client.block_timestamp() < info.finalizes_at:
                time.sleep(poll_s)
    record: dict[str, object] = {"campaign_id": campaign_id, "round_id": paths.round_id,
                                 "status": "finalized"}
    try:
        record["tx_hash"] = pool.finalize_round(sender_key, campaign_id, paths.round_id).tx_hash
    except ContractRevert as exc:  # finalized already (a claim, or our crash after sending)
        if exc.name != "WrongRoundStatus":
            raise
    write_json(paths.finality, record)
    return paths


def claim_all(
    paths: RoundPaths,
    pool: PoolClient,
    claim_keys: Mapping[str, str],
    relayer_key: str,
) -> RoundPaths:
    """Every paid holder claims its payment of the round with its Merkle proof.

    A holder whose key is in ``claim_keys`` (address → key) sends its own claim; others are
    claimed for by ``relayer_key`` (the contract pays the holder either way). Claims already on
    chain are recorded, not resent.

    Output: ``claims.json``: per paid holder, the transaction and the balance change (wei).
    """
    if paths.claims.exists() or not paths.finality.exists():
        return paths
    campaign_id = read_json(paths.finality)["campaign_id"]
    tree = PayoutTree.from_json(read_json(paths.tree))
    allocation = read_json(paths.allocation)
    asset = pool.asset(campaign_id)  # fixed per campaign: one lookup for every balance below
    records = []
    for holder in allocation["holders"]:
        amount = parse_wei(holder["amount_wei"], "amount_wei")
        if amount == 0:
            continue
        index, address = holder["index"], holder["address"]
        if pool.is_claimed(campaign_id, paths.round_id, index):
            records.append({"index": index, "address": address, "amount_wei": wei_str(amount),
                            "ok": True, "already_claimed": True})
            continue
        before = pool.asset_balance(asset, address)
        result = pool.claim(
            claim_keys.get(address, relayer_key), campaign_id, paths.round_id, index, address,
            amount, tree.proof(index),
        )
        received = pool.asset_balance(asset, address) - before
        records.append({"index": index, "address": address, "amount_wei": wei_str(amount),
                        "tx_hash": result.tx_hash, "gas_used": result.gas_used,
                        # a signed string: a fee-on-transfer token could leave less (or more)
                        "received_wei": str(received), "ok": received == amount})
    write_json(paths.claims, {"campaign_id": campaign_id, "round_id": paths.round_id,
                              "claims": records})
    return paths




@dataclass(frozen=True)
class ChainStages:
    """What the chain stages of a round need, and those stages with their database records."""

    client: ChainClient
    pool: PoolClient
    campaign_id: int
    signer_keys: Sequence[str]
    relayer_key: str
    claim_keys: Mapping[str, str]
    dev_chain: bool
    signature_ttl_s: int
    signers: tuple[str, ...] = ()
    threshold: int = 1
    cosign_wait_s: float = 0.0
    poll_s: float = 1.0

    def sign(self, paths: RoundPaths, store: RoundStore, round_pk: int) -> RoundPaths:
        """Fix the signing request, sign with the local keys, wait up to ``cosign_wait_s`` for
        co-signatures (stored by the API) until k are valid."""
        version = self.pool.get_campaign(self.campaign_id).signer_set_version
        deadline = self.client.block_timestamp() + self.signature_ttl_s
        request_signatures(paths, self.client.chain_id, self.pool.address, self.campaign_id,
                           version, deadline)
        if not paths.signing_request.exists():
            return paths  # nothing to pay
        digest = read_json(paths.signing_request)["digest"]
        waited_until = time.monotonic() + self.cosign_wait_s
        while True:
            try:
                return sign(
                    paths, self.signer_keys, self.signers, self.threshold,
                    cosignatures=store.signatures(round_pk, digest),
                    on_signature=lambda signer, sig: store.add_signature(
                        round_pk, signer, digest, sig),
                )
            except AwaitingSignatures:
                if time.monotonic() >= waited_until:
                    raise
                time.sleep(self.poll_s)

    def submit(self, paths: RoundPaths, store: RoundStore, round_pk: int) -> RoundPaths:
        """:func:`submit` with the transaction recorded before it is sent; a transaction of an
        earlier, killed attempt is looked up first (on chain: kept; unknown: marked failed)."""
        from offchain.state import SubmissionStatus  # sqlalchemy: loaded only by a run

        live = store.live_submission(round_pk)
        if (live is not None and live.status is SubmissionStatus.SENT
                and not paths.submission.exists()):
            state = self.client.transaction_state(live.tx_hash)
            if state == "pending":
                self.client.wait_confirmed(live.tx_hash)
                state = self.client.transaction_state(live.tx_hash)
            if state != "succeeded":
                store.fail_submission(live.tx_hash, f"found {state} after a restart")
        submit(paths, self.pool, self.relayer_key,
               on_signed=lambda tx_hash, nonce: store.record_submission(round_pk, tx_hash,
                                                                        nonce))
        live = store.live_submission(round_pk)
        if live is not None and live.status is SubmissionStatus.SENT:
            store.confirm_submission(live.tx_hash, self.client.confirmations)
        if paths.submission.exists():
            store.set_round_status(round_pk, "challengeable")
        return paths

    def finalize(self, paths: RoundPaths, store: RoundStore, round_pk: int) -> RoundPaths:
        """:func:`await_finality`, recording the round ``finalized`` (or ``revoked``)."""
        try:
            await_finality(paths, self.pool, self.relayer_key, dev_chain=self.dev_chain)
        except StageError:
            info = self.pool.get_round(self.campaign_id, paths.round_id)
            if info.status is RoundStatus.REVOKED:
                store.set_round_status(round_pk, "revoked")
            raise
        if paths.finality.exists():
            store.set_round_status(round_pk, "finalized")
        return paths

    def payout_caps(self) -> PayoutCaps:
        """The campaign's round and holder caps and its unallocated escrow, read now (wei)."""
        info = self.pool.get_campaign(self.campaign_id)
        return PayoutCaps(info.round_cap_wei, info.holder_cap_wei, info.unallocated_wei)
