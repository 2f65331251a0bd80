"""The oracle node: runs a campaign round after round, from training to holders' claims.

Per round: :mod:`offchain.rounds.stages` (prepare → train → generate → attribute → copyright →
decide → allocate), then here: :func:`sign` (EIP-712, k-of-n, :mod:`offchain.oracle.signing`),
:func:`submit` (``postRound`` on chain, never twice), :func:`await_finality` (the challenge
window) and :func:`claim_all` (each holder's Merkle claim). Like the off-chain stages, each chain stage writes one artifact atomically and is skipped
when that artifact exists; :func:`submit` also asks the chain before sending, so a lost
``submission.json`` cannot cause a second post.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from eth_account import Account
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from offchain.allocation import PayoutCaps, PayoutTree, RoundAllocation, parse_wei, wei_str
from offchain.chain import AnvilNode, ChainClient, ContractRevert, TokenClient, compile_contracts
from offchain.chain.pool import CampaignParams, PoolClient, RoundPosted, RoundStatus
from offchain.config import Settings
from offchain.data.holders import (
    Holder,
    holder_private_key,
    load_holder_folders,
    manifest_hashes,
    mnist_holders,
    write_dataset_manifest,
)
from offchain.errors import ConfigError, StageError
from offchain.faults import fault_point
from offchain.layout import RoundPaths
from offchain.oracle.keystore import load_keystores, read_password
from offchain.oracle.report import payments_plot, print_round, summary_table
from offchain.oracle.signing import (
    SigningError,
    recover_round_signer,
    round_digest,
    sign_round,
)
from offchain.policy import BudgetPolicy, make_policy
from offchain.rounds import stages
from offchain.rounds.participation import stays_next_round
from offchain.utils import read_json, seed_everything, sha256_file, write_json

if TYPE_CHECKING:  # the state database (sqlalchemy) is imported when a run opens it
    from offchain.state import RoundStore

__all__ = [
    "STAGES",
    "AwaitingSignatures",
    "CampaignResult",
    "RoundLedger",
    "RoundRunner",
    "RoundStep",
    "RUN_MARKER",
    "await_finality",
    "claim_all",
    "is_run_folder",
    "open_store",
    "prepare_run_dir",
    "request_signatures",
    "run_campaign",
    "sign",
    "submit",
    "verified_signer",
]

logger = logging.getLogger(__name__)

STAGES: tuple[str, ...] = (
    "prepare", "train", "generate", "attribute", "copyright", "quality", "policy", "allocate",
    "sign", "submit", "finalize", "claim",
)
"""Stable keys of a round's stages in pipeline order, as the state database records them
(``quality`` only runs with an FID reference)."""


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


@dataclass
class CampaignResult:
    """What a finished campaign run reports (all money in wei)."""

    run_dir: Path
    rounds: int
    names: list[str]
    allocated_wei: list[int]
    balances_wei: list[int]
    participating: list[bool]
    plot: Path
    pool_address: str
    seconds: float
    extras: dict[str, object] = field(default_factory=dict)


def quality_reference_dataset(settings: Settings) -> str | None:
    """The shipped dataset the FID reference classifier learns from, or None (no quality stage).

    ``settings.quality_reference``, except ``none``; with own images (``holders_dir``) only
    when set explicitly, since they are unlike the shipped datasets.
    """
    if settings.quality_reference == "none":
        return None
    own_images = settings.holders_dir is not None
    if own_images and "quality_reference" not in settings.model_fields_set:
        return None
    return settings.quality_reference


def load_holders(settings: Settings) -> list[Holder]:
    """The campaign's holders: the user's folders, or the shipped MNIST split."""
    if settings.holders_dir is not None:
        return load_holder_folders(settings.holders_dir)
    return mnist_holders(n_holders=settings.n_holders, sizes=settings.holder_sizes,
                         seed=settings.seed)


@contextmanager
def _chain(settings: Settings) -> Iterator[tuple[str, list[str] | None]]:
    """Yield (rpc_url, dev keys or None): the configured endpoint, or a fresh local anvil."""
    if settings.rpc_url is not None:
        yield settings.rpc_url, None
        return
    with AnvilNode() as node:
        yield node.rpc_url, list(node.private_keys)


def _signer_keys(
    settings: Settings, dev_keys: list[str] | None, *, check_threshold: bool = True
) -> list[str]:
    """The oracle signer keys: from the keystores in ``keystore_dir``, configured, or dev
    accounts 5, 6, 7 on a local anvil node.

    Raises:
        ConfigError: no keys on a remote chain, a keystore that cannot be opened, or (with
            ``check_threshold``: all signers are local) a threshold above the number of keys.
    """
    if settings.keystore_dir is not None:
        if settings.oracle_keys:
            raise ConfigError("both keystore_dir and oracle_keys are set; give one")
        password = read_password(settings.keystore_password_file, settings.keystore_password)
        keys = load_keystores(settings.keystore_dir, password)
    elif settings.oracle_keys:
        keys = [k.get_secret_value() for k in settings.oracle_keys]
    elif dev_keys is not None:
        keys = dev_keys[5:8]
    else:
        raise ConfigError("oracle signer keys are required on a remote chain "
                          "(set CCOMP_KEYSTORE_DIR or CCOMP_ORACLE_KEYS)")
    if check_threshold and settings.oracle_threshold > len(keys):
        raise ConfigError(f"oracle_threshold {settings.oracle_threshold} exceeds the "
                          f"{len(keys)} signer keys")
    return keys


def _check_keys(settings: Settings) -> None:
    """Fail early if the oracle or sponsor keys cannot be had (remote chain without keys, a
    keystore that does not open); on a local anvil node its dev accounts stand in."""
    dev_placeholders = None if settings.rpc_url is not None else [""] * 10
    _signer_keys(settings, dev_placeholders, check_threshold=settings.oracle_signers is None)
    _key(settings.sponsor_key, dev_placeholders, 2, "sponsor")


def _key(secret, dev_keys: list[str] | None, dev_index: int, what: str) -> str:
    if secret is not None:
        return secret.get_secret_value()
    if dev_keys is None:
        raise ConfigError(f"{what} key is required on a remote chain (set CCOMP_{what.upper()}_KEY)")
    return dev_keys[dev_index]


def campaign_params(
    settings: Settings, client: ChainClient, token: str, sponsor: str, signer_keys: Sequence[str]
) -> CampaignParams:
    """The campaign the settings describe: rounds, caps, signers (``settings.oracle_signers``,
    else the addresses of ``signer_keys``) and threshold, windows; the guardian is
    ``settings.guardian`` or the sponsor, the posting deadline counts from the chain's latest
    block.

    Raises:
        ConfigError: the threshold exceeds the number of signers.
    """
    signers = tuple(settings.oracle_signers or (Account.from_key(k).address for k in signer_keys))
    if settings.oracle_threshold > len(signers):
        raise ConfigError(f"oracle_threshold {settings.oracle_threshold} exceeds the "
                          f"{len(signers)} signers")
    return CampaignParams(
        token=token,
        guardian=settings.guardian or sponsor,
        signers=signers,
        threshold=settings.oracle_threshold,
        num_rounds=settings.n_rounds,
        round_cap_wei=settings.campaign_round_cap_wei,
        holder_cap_wei=settings.campaign_holder_cap_wei,
        challenge_window_s=settings.challenge_window_s,
        claim_window_s=settings.claim_window_s,
        posting_deadline=client.block_timestamp() + settings.posting_window_s,
    )


def campaign_record(
    settings: Settings, params: CampaignParams, sponsor: str, claim_deadline: int
) -> dict[str, Any]:
    """The campaign's fields of the deployment file: signers, threshold, guardian, sponsor,
    windows (Unix seconds), budget and caps (wei as decimal strings)."""
    return {
        "signers": list(params.signers),
        "threshold": params.threshold,
        "guardian": params.guardian,
        "sponsor": sponsor,
        "challenge_window_s": params.challenge_window_s,
        "posting_deadline": params.posting_deadline,
        "claim_deadline": claim_deadline,
        "total_budget_wei": wei_str(settings.total_budget_wei, "total_budget_wei"),
        "round_cap_wei": wei_str(params.round_cap_wei, "round_cap_wei"),
        "holder_cap_wei": wei_str(params.holder_cap_wei, "holder_cap_wei"),
    }


def open_store(settings: Settings) -> RoundStore:
    """The round-state database of the run, migrated to the newest schema.

    ``settings.state_url``, or SQLite at ``<run_dir>/state.db`` (:mod:`offchain.state`).
    """
    from offchain.state import RoundStore, default_url, make_engine, upgrade

    url = settings.state_url or default_url(settings.run_dir)
    upgrade(url)
    return RoundStore(make_engine(url))


def artifact_sha256(path: Path) -> str:
    """Hex SHA-256 of an artifact: a file's bytes, or for a folder the SHA-256 of its sorted
    ``<relative path>\0<file SHA-256>\n`` lines (hidden temporaries excluded)."""
    if path.is_file():
        return sha256_file(path)
    lines = [
        f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n"
        for file in sorted(path.rglob("*"))
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts)
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class RoundStep:
    """One stage of a round: its stable key (:data:`STAGES`), a display label, the work, and the
    artifact whose SHA-256 the database records (None: nothing to hash)."""

    key: str
    label: str
    run: Callable[[], object]
    output: Path | None


class RoundLedger:
    """A round's record in the state database: each stage begun, finished or failed there.

    A stage the database holds ``done`` is skipped (its artifact must still exist); one left
    ``started`` by a killed process, or ``failed``, runs again, and the stage functions skip
    whatever they already wrote (every artifact is written atomically).
    """

    def __init__(self, store: RoundStore, round_pk: int, round_id: int) -> None:
        self.store, self.round_pk, self.round_id = store, round_pk, round_id

    def run(self, step: RoundStep) -> bool:
        """Run ``step`` unless it is done; True if it ran.

        Raises:
            StageError: the stage is done but its artifact is gone, or another live process is
                running it; whatever the stage raises (the stage is then recorded ``failed``).
        """
        if not self.store.begin_stage(self.round_pk, step.key):
            if step.output is not None and not step.output.exists() and step.key in _ALWAYS_OUTPUT:
                raise StageError(
                    f"round {self.round_id}: stage {step.key} is recorded done but {step.output} "
                    "is missing; the run folder was changed by hand"
                )
            return False
        fault_point(f"stage:{step.key}:begun", self.round_id)
        try:
            step.run()
        except BaseException as exc:
            self.store.fail_stage(self.round_pk, step.key, f"{type(exc).__name__}: {exc}")
            raise
        fault_point(f"stage:{step.key}:ran", self.round_id)
        output = step.output if step.output is not None and step.output.exists() else None
        self.store.finish_stage(self.round_pk, step.key,
                                artifact_sha256(output) if output is not None else None)
        return True


_ALWAYS_OUTPUT = frozenset(
    {"prepare", "train", "generate", "attribute", "copyright", "quality", "policy", "allocate"}
)
"""Stages whose artifact exists whenever they are done (sign, submit, … write none for a round
that pays nothing)."""


@dataclass
class RoundRunner:
    """Everything the rounds of one deployed campaign need; :meth:`run` runs one round.

    Used by :func:`run_campaign` (round after round) and by ``python -m offchain run-round``
    (:func:`offchain.oracle.operations.run_round`, one round per call).
    """

    settings: Settings
    holders: list[Holder]
    policy: BudgetPolicy
    ml: stages.MLConfig
    quality_reference: object | None
    chain: _ChainStages
    store: RoundStore
    campaign_pk: int

    @property
    def run_dir(self) -> Path:
        return Path(self.settings.run_dir)

    def participation(self, round_id: int) -> np.ndarray:
        """Holders still in the campaign at ``round_id``: bool (N,), every holder in round 1,
        then each round's decision to stay (:func:`stays_next_round`) over the earlier rounds.

        Raises:
            StageError: an earlier round has no allocation yet.
        """
        participating = np.ones(len(self.holders), dtype=bool)
        prices = [h.reservation_price_wei for h in self.holders]
        for earlier in range(1, round_id):
            paths = RoundPaths(self.run_dir, earlier)
            if not paths.allocation.exists():
                raise StageError(f"round {earlier} is not allocated yet; run it before round "
                                 f"{round_id}")
            amounts = [parse_wei(h["amount_wei"], "amount_wei")
                       for h in read_json(paths.allocation)["holders"]]
            participating = stays_next_round(participating, amounts, prices,
                                             read_json(paths.copyright)["loss"])
        return participating

    def steps(self, paths: RoundPaths, participating: np.ndarray, round_pk: int
              ) -> list[RoundStep]:
        """The round's stages in pipeline order (quality only with a reference)."""
        ml, chain, settings = self.ml, self.chain, self.settings
        quality = (
            [RoundStep("quality", "quality (FID)",
                       lambda: stages.assess_quality(paths, ml, self.quality_reference),
                       paths.quality)]
            if self.quality_reference is not None
            else []
        )
        return [
            RoundStep("prepare", "prepare",
                      lambda: stages.prepare(paths, self.holders, participating), paths.manifest),
            RoundStep("train", "train", lambda: stages.train(paths, ml), paths.checkpoint),
            RoundStep("generate", "generate", lambda: stages.generate(paths, ml), paths.samples),
            RoundStep("attribute", "attribute (TRAK)", lambda: stages.attribute(paths, ml),
                      paths.contributions),
            RoundStep("copyright", "copyright loss", lambda: stages.assess_copyright(paths, ml),
                      paths.copyright),
            *quality,
            RoundStep("policy", "policy",
                      lambda: stages.decide(paths, self.policy, settings.n_rounds,
                                            settings.total_budget_wei,
                                            caps=chain.payout_caps()),
                      paths.decision),
            RoundStep("allocate", "allocate + Merkle", lambda: stages.allocate(paths),
                      paths.allocation),
            RoundStep("sign", "sign (EIP-712, k-of-n)",
                      lambda: chain.sign(paths, self.store, round_pk), paths.signature),
            RoundStep("submit", "submit", lambda: chain.submit(paths, self.store, round_pk),
                      paths.submission),
            RoundStep("finalize", "challenge window",
                      lambda: chain.finalize(paths, self.store, round_pk), paths.finality),
            RoundStep("claim", "claims",
                      lambda: claim_all(paths, chain.pool, chain.claim_keys, chain.relayer_key),
                      paths.claims),
        ]

    def run(self, round_id: int, console: Console, participating: np.ndarray | None = None,
            until: str | None = None) -> RoundPaths:
        """Run (or resume) round ``round_id`` through every stage, or up to and including stage
        ``until`` (a key of :data:`STAGES`, e.g. ``sign``); its paths.

        Raises:
            StageError: an earlier round is missing, a stage is running in another process,
                too few oracle signatures (:class:`AwaitingSignatures`), a revoked round.
        """
        if until is not None and until not in STAGES:
            raise ConfigError(f"unknown stage {until!r}; choose one of {', '.join(STAGES)}")
        paths = RoundPaths(self.run_dir, round_id)
        if participating is None:
            participating = self.participation(round_id)
        round_pk = self.store.ensure_round(self.campaign_pk, round_id)
        ledger = RoundLedger(self.store, round_pk, round_id)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            for step in self.steps(paths, participating, round_pk):
                task = progress.add_task(f"round {round_id}: {step.label}", total=1)
                ran = ledger.run(step)
                progress.update(task, completed=1,
                                description=f"round {round_id}: {step.label}"
                                + ("" if ran else " (done before)"))
                if step.key == until:
                    break
        return paths


RUN_MARKER = ".ccomp-run"
"""File that marks a folder as a run folder this project created; ``demo --fresh`` deletes
only such folders (and older run folders, see :func:`is_run_folder`)."""

_RUN_ENTRY = re.compile(
    r"(deployment\.json|holders\.json|payments\.png|quality_reference|round_\d+"
    r"|state\.db(-wal|-shm|-journal)?|\..+\.tmp)"
)
"""Top-level entries a run writes (``.<name>.*.tmp``: an atomic write cut short by a crash)."""


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder a run of this project created: it holds :data:`RUN_MARKER`,
    or (a run folder of a version before the marker) it holds ``deployment.json`` or
    ``holders.json`` and nothing but entries a run writes (``round_NNN/``, ``state.db``,
    ``payments.png``, ``quality_reference/``). Any other file makes it not a run folder."""
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / RUN_MARKER).is_file():
        return True
    names = [entry.name for entry in path.iterdir()]
    return bool({"deployment.json", "holders.json"} & set(names)) and all(
        _RUN_ENTRY.fullmatch(name) for name in names
    )


def prepare_run_dir(run_dir: Path, fresh: bool) -> None:
    """Make ``run_dir`` a marked run folder; with ``fresh``, empty it first.

    A missing or empty folder is created and marked; a run folder (:func:`is_run_folder`) is
    deleted first with ``fresh``, else kept (and marked). Call it only after every input is
    validated, so that a refusal loses nothing.

    Raises:
        ConfigError: ``run_dir`` is a file or a symbolic link, or a non-empty folder that is not
            a run folder (nothing is deleted: choose another folder or empty it yourself).
    """
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise ConfigError(f"run folder {run_dir} is a file or a symbolic link; choose a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not is_run_folder(run_dir):
            raise ConfigError(
                f"{run_dir} is not empty and is not a run folder (no {RUN_MARKER} marker); "
                "nothing was deleted: choose another --run-dir or empty it yourself"
            )
        if fresh:
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).write_text("created by python -m offchain (a run folder)\n")


def load_run_inputs(
    settings: Settings, holders: list[Holder] | None = None
) -> tuple[list[Holder], BudgetPolicy, stages.MLConfig, object | None]:
    """Holders (``holders``, else :func:`load_holders`), policy, ML settings and FID reference
    of a run (the reference is prepared once per run folder); writes or checks
    ``<run_dir>/holders.json``.

    Raises:
        ConfigError: the holders differ from those the run folder started with.
        DataError: the holders cannot be loaded.
    """
    run_dir = Path(settings.run_dir)
    seed_everything(settings.seed)
    holders = holders if holders is not None else load_holders(settings)
    policy = make_policy(settings.policy, seed=settings.seed)
    ml = stages.MLConfig(
        image_size=settings.image_size, train_steps=settings.train_steps,
        n_samples=settings.n_samples, proj_dim=settings.proj_dim,
        trak_timesteps=settings.trak_timesteps, quality_samples=settings.quality_samples,
        quality_classifier_epochs=settings.quality_classifier_epochs,
        copyright_encoder=settings.copyright_encoder, trak_output=settings.trak_output,
        trak_ensemble=settings.trak_ensemble, seed=settings.seed,
    )
    manifest = run_dir / "holders.json"
    if manifest.exists():
        known = read_json(manifest)["manifest_hash"]
        if known not in manifest_hashes(holders):
            raise ConfigError(
                f"the holders differ from those {run_dir} started with (holders.json); a "
                "campaign keeps its holders: use a new run directory for new ones"
            )
    else:
        write_dataset_manifest(holders, manifest)
    quality_dataset = quality_reference_dataset(settings)
    quality_reference = (
        stages.prepare_quality_reference(run_dir, holders, quality_dataset, ml)
        if quality_dataset
        else None
    )
    return holders, policy, ml, quality_reference


def holder_claim_keys(
    settings: Settings, holders: Sequence[Holder], client: ChainClient, dev_chain: bool
) -> dict[str, str]:
    """Keys of the shipped demo holders (address → key), who claim for themselves; on a dev
    chain each gets 1 ETH of gas money once. Own holders (``holders_dir``) are claimed for by
    the relayer."""
    claim_keys: dict[str, str] = {}
    if settings.holders_dir is None:
        for holder in holders:
            claim_keys[holder.address] = holder_private_key(holder.name)
            if dev_chain and client.eth_balance(holder.address) == 0:
                client.set_eth_balance(holder.address, 10**18)
    return claim_keys


def run_campaign(
    settings: Settings,
    console: Console | None = None,
    fresh: bool = False,
    on_round: Callable[[RoundPaths], None] | None = None,
) -> CampaignResult:
    """Run the whole main job: deploy, fund, T rounds, claims, summary.

    Each round's stages are recorded in the run's state database (:func:`open_store`); a
    round that stopped part-way resumes with ``python -m offchain run-round``.

    Args:
        settings: the run's settings (profile, budget in wei, policy, chain).
        console: where tables and progress go (a quiet console in tests).
        fresh: empty ``settings.run_dir`` first, after every input (holders, keys, contracts)
            is validated, and only if it is a run folder (:func:`prepare_run_dir`). A run on a
            new local chain must start fresh: its chain artifacts (signatures, submissions)
            belong to the old chain.
        on_round: called with each finished round's paths.

    Raises:
        ConfigError: the run directory holds chain artifacts of another chain, is not a run
            folder, or keys are missing on a remote chain.
        DataError: the holders cannot be loaded (two with one address, a bad image …).
    """
    console = console or Console()
    started = time.perf_counter()
    run_dir = Path(settings.run_dir)
    holders = load_holders(settings)  # every input is checked before the folder is touched
    _check_keys(settings)
    compiled = compile_contracts(solc_path=settings.solc_path)
    prepare_run_dir(run_dir, fresh)
    if (run_dir / "deployment.json").exists() and settings.rpc_url is None:
        raise ConfigError(
            f"{run_dir} holds a deployment on an earlier local chain; run with --fresh or "
            "choose another run directory"
        )
    holders, policy, ml, quality_reference = load_run_inputs(settings, holders)
    store = open_store(settings)

    with _chain(settings) as (rpc_url, dev_keys):
        client = ChainClient(rpc_url, confirmations=settings.confirmations)
        deployed = _deploy_campaign(settings, client, compiled, dev_keys)
        _write_deployment(run_dir, settings, rpc_url, deployed)
        pool, campaign_id, params = deployed.pool, deployed.campaign_id, deployed.params
        claim_keys = holder_claim_keys(settings, holders, client, dev_keys is not None)
        console.print(
            f"[bold]Campaign[/bold]: {len(holders)} holders, {settings.n_rounds} rounds, budget "
            f"{settings.total_budget_wei / 10**18:,.0f} TST, policy {policy.name}, chain "
            f"{client.chain_id} at {rpc_url}, pool {pool.address} campaign {campaign_id} "
            f"({params.threshold}-of-{len(params.signers)} signers)"
        )
        chain = _ChainStages(client, pool, campaign_id, deployed.signer_keys,
                             deployed.sponsor_key, claim_keys, dev_keys is not None,
                             settings.signature_ttl_s, signers=tuple(params.signers),
                             threshold=params.threshold, cosign_wait_s=settings.cosign_wait_s)
        campaign_pk = _new_campaign_record(store, client.chain_id, pool.address, campaign_id,
                                           run_dir)
        runner = RoundRunner(settings, holders, policy, ml, quality_reference, chain, store,
                             campaign_pk)
        rounds_run, allocated, participating = _run_rounds(
            runner, settings.n_rounds, len(holders), console, on_round)
        balances = [deployed.token.balance_of(h.address) for h in holders]
        plot = payments_plot(run_dir, [r for r in range(1, settings.n_rounds + 1)
                                       if RoundPaths(run_dir, r).allocation.exists()])
        console.print(summary_table([h.name for h in holders],
                                    [h.reservation_price_wei for h in holders],
                                    allocated, balances, participating.tolist()))
        result = CampaignResult(
            run_dir=run_dir, rounds=rounds_run, names=[h.name for h in holders],
            allocated_wei=allocated, balances_wei=balances,
            participating=participating.tolist(), plot=plot, pool_address=pool.address,
            seconds=time.perf_counter() - started,
            extras={"unallocated_wei": pool.unallocated(campaign_id),
                    "campaign_id": campaign_id},
        )
    console.print(f"Payments plot: {plot}; artifacts in {run_dir}; {result.seconds:.1f} s")
    return result


@dataclass(frozen=True)
class _DeployedCampaign:
    """What :func:`_deploy_campaign` set up on the chain, and the keys that act on it."""

    token: TokenClient
    pool: PoolClient
    campaign_id: int
    params: CampaignParams
    claim_deadline: int
    sponsor: str
    sponsor_key: str
    signer_keys: list[str]


def _deploy_campaign(
    settings: Settings, client: ChainClient, compiled: dict, dev_keys: list[str] | None
) -> _DeployedCampaign:
    """Deploy the TestToken and the pool, create the campaign and fund it with the budget (wei).

    On a dev chain account 0 deploys; elsewhere the sponsor deploys its own campaign.
    """
    signer_keys = _signer_keys(settings, dev_keys, check_threshold=settings.oracle_signers is None)
    sponsor_key = _key(settings.sponsor_key, dev_keys, 2, "sponsor")
    deployer_key = dev_keys[0] if dev_keys else sponsor_key
    sponsor = Account.from_key(sponsor_key).address
    token_address = client.deploy(compiled["TestToken"], sender_key=deployer_key)
    token = TokenClient(client, token_address, compiled["TestToken"].abi)
    pool = PoolClient.deploy(client, compiled["CompensationPool"], deployer_key,
                             token_abi=compiled["TestToken"].abi)
    params = campaign_params(settings, client, token_address, sponsor, signer_keys)
    campaign_id, _ = pool.create_campaign(sponsor_key, params)
    claim_deadline = pool.get_campaign(campaign_id).claim_deadline
    token.mint(deployer_key, sponsor, settings.total_budget_wei)
    pool.fund(sponsor_key, campaign_id, settings.total_budget_wei)
    return _DeployedCampaign(token, pool, campaign_id, params, claim_deadline, sponsor,
                             sponsor_key, signer_keys)


def _write_deployment(
    run_dir: Path, settings: Settings, rpc_url: str, deployed: _DeployedCampaign
) -> None:
    """``<run_dir>/deployment.json``: addresses, campaign, signers, windows, budget and caps
    (wei as decimal strings)."""
    write_json(run_dir / "deployment.json", {
        "rpc_url": rpc_url, "chain_id": deployed.pool.client.chain_id,
        "token": deployed.token.address, "pool": deployed.pool.address,
        "campaign_id": deployed.campaign_id,
        **campaign_record(settings, deployed.params, deployed.sponsor, deployed.claim_deadline),
    })


def _new_campaign_record(
    store: RoundStore, chain_id: int, pool_address: str, campaign_id: int, run_dir: Path
) -> int:
    """The state database's key of a campaign just created on chain.

    Raises:
        ConfigError: the database already holds rounds of it (a new local chain reuses
            addresses and ids: the record is of an earlier chain).
    """
    campaign_pk = store.ensure_campaign(chain_id, pool_address, campaign_id, str(run_dir))
    if store.stage_status(store.ensure_round(campaign_pk, 1), "prepare") is not None:
        raise ConfigError(
            f"the state database already has rounds of campaign {campaign_id} of pool "
            f"{pool_address} on chain {chain_id}, which was just created; use a "
            "fresh database (CCOMP_STATE_URL) or run directory"
        )
    return campaign_pk


def _run_rounds(
    runner: RoundRunner, n_rounds: int, n_holders: int, console: Console,
    on_round: Callable[[RoundPaths], None] | None,
) -> tuple[int, list[int], np.ndarray]:
    """Run rounds 1 … ``n_rounds`` while any holder stays; (rounds run, wei allocated per
    holder, bool (H,) mask of the holders still in)."""
    participating = np.ones(n_holders, dtype=bool)
    allocated = [0] * n_holders
    rounds_run = 0
    for round_id in range(1, n_rounds + 1):
        if not participating.any():
            console.print(f"Round {round_id}: every holder has left; the campaign ends.")
            break
        paths = runner.run(round_id, console, participating)
        print_round(console, paths)
        rounds_run += 1
        if on_round:
            on_round(paths)
        amounts = [parse_wei(h["amount_wei"], "amount_wei")
                   for h in read_json(paths.allocation)["holders"]]
        allocated = [a + b for a, b in zip(allocated, amounts, strict=True)]
        participating = runner.participation(round_id + 1)
    return rounds_run, allocated, participating


@dataclass(frozen=True)
class _ChainStages:
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
        from offchain.state import SubmissionStatus

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
