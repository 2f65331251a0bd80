"""Step-by-step campaign operations shared by the CLI (``python -m offchain deploy`` …) and
``scripts/``: deploy, create a campaign, fund it, read its status, claim, reclaim.

Each function takes the :class:`~offchain.config.Settings` (chain, keys, campaign parameters)
and explicit arguments, and keeps the addresses in a deployment file (JSON, default
``<run_dir>/deployment.json``, :class:`~offchain.oracle.deployment.Deployment`) that
:func:`offchain.oracle.campaign.run_campaign` writes too, so a file from ``demo`` can be read by
``status``, ``claim`` and ``reclaim``.

Unlike ``demo`` these commands never start a chain of their own: ``settings.rpc_url`` is
required. Keys come from the settings (``CCOMP_SPONSOR_KEY``, ``CCOMP_ORACLE_KEYS`` or
``CCOMP_KEYSTORE_DIR``); with ``dev=True`` the missing ones are anvil's well-known dev accounts
(:mod:`offchain.oracle.keys`, as in ``demo``), for a local anvil node only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from eth_account import Account
from rich.console import Console

from offchain.allocation import PayoutTree, RoundAllocation, parse_wei
from offchain.chain import ChainClient, compile_contracts
from offchain.chain.pool import LeafClaim, PoolClient, Reclaimed, RoundStatus
from offchain.config import Settings
from offchain.errors import ConfigError
from offchain.jsonsafe import UnsafeJSON, loads_bounded
from offchain.layout import RoundPaths
from offchain.oracle.chain_stages import ChainStages
from offchain.oracle.deployment import (
    Deployment,
    campaign_record,
    deploy_contracts,
    deployment_path,
    fund_campaign,
    open_campaign,
)
from offchain.oracle.keys import (
    DEV_DEPLOYER,
    dev_keys,
    holder_claim_keys,
    signer_keys,
    sponsor_key,
)
from offchain.oracle.report import print_round
from offchain.oracle.run_folder import load_run_inputs, open_store
from offchain.oracle.runner import RoundRunner
from offchain.oracle.signing import round_digest, sign_round
from offchain.rounds.pipeline import STAGE_KEYS
from offchain.utils import read_json

if TYPE_CHECKING:
    from offchain.state import RoundStore

__all__ = [
    "ClaimResult",
    "FundResult",
    "ReclaimResult",
    "claim",
    "create_campaign",
    "deploy",
    "fund",
    "reclaim",
    "run_round",
    "status",
]

@dataclass(frozen=True)
class FundResult:
    campaign_id: int
    sponsor: str
    amount_wei: int
    minted_wei: int
    tx_hash: str
    unallocated_wei: int


@dataclass(frozen=True)
class ClaimResult:
    campaign_id: int
    holder: str
    rounds: list[int]
    amount_wei: int
    tx_hash: str | None
    skipped: dict[int, str]
    """Round id → why a leaf of this holder was not claimed (already claimed, not final …)."""


@dataclass(frozen=True)
class ReclaimResult:
    campaign_id: int
    sponsor: str
    amount_wei: int
    tx_hash: str


def _rpc_url(settings: Settings) -> str:
    if settings.rpc_url is None:
        raise ConfigError("an RPC endpoint is required (--rpc-url or CCOMP_RPC_URL)")
    return settings.rpc_url


def _sponsor_key(settings: Settings, dev: bool) -> str:
    return sponsor_key(settings, dev_keys(dev))


def _connect(settings: Settings, deployment: Deployment) -> tuple[ChainClient, PoolClient]:
    """A client on ``settings.rpc_url`` (else the file's endpoint) and the deployed pool.

    Raises:
        ConfigError: the endpoint serves another chain than the deployment's.
    """
    client = ChainClient(
        settings.rpc_url or deployment.rpc_url, confirmations=settings.confirmations
    )
    if client.chain_id != deployment.chain_id:
        raise ConfigError(
            f"the RPC serves chain {client.chain_id}, the deployment is on chain "
            f"{deployment.chain_id}"
        )
    compiled = compile_contracts(solc_path=settings.solc_path)
    pool = PoolClient(
        client,
        deployment.pool,
        compiled["CompensationPool"].abi,
        token_abi=compiled["TestToken"].abi,
    )
    return client, pool


def deploy(
    settings: Settings,
    *,
    token: str | None = None,
    dev: bool = False,
    path: Path | None = None,
) -> Deployment:
    """Deploy a ``CompensationPool`` (admin: the deployer) and, unless ``token`` names an
    existing ERC-20, a ``TestToken``; write the deployment file.

    The deployer is dev account :data:`~offchain.oracle.keys.DEV_DEPLOYER` with ``dev``, else
    the sponsor key.
    """
    rpc_url = _rpc_url(settings)
    dev_accounts = dev_keys(dev)
    deployer_key = dev_accounts[DEV_DEPLOYER] if dev_accounts else sponsor_key(settings, None)
    compiled = compile_contracts(solc_path=settings.solc_path)
    client = ChainClient(rpc_url, confirmations=settings.confirmations)
    test_token, pool = deploy_contracts(client, compiled, deployer_key, token)
    deployment = Deployment(
        rpc_url=rpc_url,
        chain_id=client.chain_id,
        token=test_token.address,
        pool=pool.address,
        test_token=token is None,
    )
    deployment.write(deployment_path(settings, path))
    return deployment


def create_campaign(
    settings: Settings,
    deployment: Deployment,
    *,
    dev: bool = False,
    path: Path | None = None,
) -> int:
    """Create a campaign on the deployed pool with the settings' rounds, caps, signers
    (``oracle_signers``, else the signer keys' addresses), threshold and windows (sender and admin: the sponsor; guardian: ``settings.guardian`` or
    the sponsor); record it in the deployment file and return its id."""
    dev_accounts = dev_keys(dev)
    client, pool = _connect(settings, deployment)
    # With oracle_signers the sponsor names the signers and needs none of their keys.
    signing_keys = [] if settings.oracle_signers else signer_keys(settings, dev_accounts)
    sponsors_key = sponsor_key(settings, dev_accounts)
    campaign_id, params, claim_deadline = open_campaign(
        settings, client, pool, deployment.token, sponsors_key, signing_keys
    )
    deployment.campaign_id = campaign_id
    deployment.campaign = campaign_record(
        settings, params, Account.from_key(sponsors_key).address, claim_deadline
    )
    deployment.write(deployment_path(settings, path))
    return campaign_id


def fund(
    settings: Settings,
    deployment: Deployment,
    campaign_id: int,
    amount_wei: int,
    *,
    dev: bool = False,
) -> FundResult:
    """Fund the campaign with ``amount_wei`` from the sponsor (approve, then ``fund``); on the
    test token deployed here, first mint whatever the sponsor's balance lacks.

    Raises:
        ConfigError: ``amount_wei`` ≤ 0 (before anything is sent).
    """
    if amount_wei <= 0:
        raise ConfigError(f"amount must be > 0 wei, got {amount_wei}")
    _, pool = _connect(settings, deployment)
    sponsor_key = _sponsor_key(settings, dev)
    sponsor = Account.from_key(sponsor_key).address
    minted, result = fund_campaign(
        pool, campaign_id, sponsor_key, amount_wei,
        test_token=deployment.token if deployment.test_token else None,
    )
    return FundResult(
        campaign_id, sponsor, amount_wei, minted, result.tx_hash, pool.unallocated(campaign_id)
    )


def round_state(status: RoundStatus, finalizes_at: int, now: int) -> str:
    """A posted round's state: ``challengeable`` (the guardian may still revoke it),
    ``pending`` (its window is over; it finalizes with ``finalizeRound`` or its first claim),
    ``finalized`` or ``revoked``."""
    if status is RoundStatus.PENDING:
        return "challengeable" if now < finalizes_at else "pending"
    return status.name.lower()


def status(settings: Settings, deployment: Deployment, campaign_id: int) -> dict[str, Any]:
    """The campaign as the chain sees it now: parameters, escrow, signers and each posted
    round with its state (see :func:`round_state`); money in wei, times in Unix seconds."""
    client, pool = _connect(settings, deployment)
    info = pool.get_campaign(campaign_id)
    now = client.block_timestamp()
    rounds = []
    for round_id in range(1, info.next_round_id):
        r = pool.get_round(campaign_id, round_id)
        rounds.append(
            {
                "round_id": round_id,
                "state": round_state(r.status, r.finalizes_at, now),
                "merkle_root": r.merkle_root,
                "total_wei": r.total_wei,
                "claimed_wei": r.claimed_wei,
                "finalizes_at": r.finalizes_at,
            }
        )
    return {
        "chain_id": client.chain_id,
        "pool": pool.address,
        "campaign_id": campaign_id,
        "token": info.token,
        "admin": info.admin,
        "guardian": info.guardian,
        "signers": pool.get_signers(campaign_id),
        "threshold": info.threshold,
        "signer_set_version": info.signer_set_version,
        "num_rounds": info.num_rounds,
        "round_cap_wei": info.round_cap_wei,
        "holder_cap_wei": info.holder_cap_wei,
        "challenge_window_s": info.challenge_window_s,
        "now": now,
        "posting_deadline": info.posting_deadline,
        "claim_deadline": info.claim_deadline,
        "total_funded_wei": info.total_funded_wei,
        "total_allocated_wei": info.total_allocated_wei,
        "unallocated_wei": info.unallocated_wei,
        "settled": info.settled,
        "rounds": rounds,
    }


def claim(
    settings: Settings,
    deployment: Deployment,
    campaign_id: int,
    holder_key: str,
    *,
    run_dir: Path | None = None,
    round_dirs: list[Path] | None = None,
) -> ClaimResult:
    """Claim every unclaimed leaf of the holder (``holder_key``'s address) in one
    ``claimRounds`` transaction sent by the holder, with the proofs from the rounds'
    ``tree.json`` (``round_dirs``, else every ``round_NNN`` of ``run_dir`` or
    ``settings.run_dir``). Rounds still challengeable, revoked or not on chain are skipped.
    """
    client, pool = _connect(settings, deployment)
    holder = Account.from_key(holder_key).address
    if round_dirs is None:
        base = Path(run_dir or settings.run_dir)
        round_dirs = sorted(p for p in base.glob("round_[0-9]*") if p.is_dir())
    now = client.block_timestamp()
    leaves: list[LeafClaim] = []
    skipped: dict[int, str] = {}
    for directory in round_dirs:
        try:
            paths = RoundPaths(directory.parent, int(directory.name.removeprefix("round_")))
        except ValueError:
            raise ConfigError(f"{directory} is not a round folder (round_NNN)") from None
        tree_file = Path(directory) / paths.tree.name  # round_1 as well as round_001
        if not tree_file.exists():
            continue
        tree = PayoutTree.from_json(read_json(tree_file))
        for index, address, amount in tree.entries:
            if address.lower() != holder.lower() or amount == 0:
                continue
            r = pool.get_round(campaign_id, paths.round_id)
            state = round_state(r.status, r.finalizes_at, now) if r.exists else "not posted"
            if state not in ("pending", "finalized"):
                skipped[paths.round_id] = state
            elif r.merkle_root.lower() != tree.root.lower():
                skipped[paths.round_id] = f"on-chain root {r.merkle_root} differs from tree.json"
            elif pool.is_claimed(campaign_id, paths.round_id, index):
                skipped[paths.round_id] = "already claimed"
            else:
                leaves.append(LeafClaim(paths.round_id, index, amount, tuple(tree.proof(index))))
    tx_hash = None
    if leaves:
        tx_hash = pool.claim_rounds(holder_key, campaign_id, holder, leaves).tx_hash
    return ClaimResult(
        campaign_id,
        holder,
        [leaf.round_id for leaf in leaves],
        sum(leaf.amount_wei for leaf in leaves),
        tx_hash,
        skipped,
    )


def reclaim(
    settings: Settings,
    deployment: Deployment,
    campaign_id: int,
    *,
    dev: bool = False,
) -> ReclaimResult:
    """The sponsor takes back its pro-rata share of what was never claimed, after the claim
    deadline (before it the pool reverts ``ClaimWindowOpen``, raised as
    :class:`~offchain.chain.ContractRevert`)."""
    _, pool = _connect(settings, deployment)
    sponsor_key = _sponsor_key(settings, dev)
    sponsor = Account.from_key(sponsor_key).address
    result = pool.reclaim(sponsor_key, campaign_id)
    amount = sum(e.amount_wei for e in result.only(Reclaimed))  # type: ignore[attr-defined]
    return ReclaimResult(campaign_id, sponsor, amount, result.tx_hash)


def run_round(
    settings: Settings,
    deployment: Deployment,
    campaign_id: int,
    *,
    round_id: int | None = None,
    until: str | None = None,
    dev: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run, or resume, one round of a deployed, funded campaign: train → … → claims.

    The campaign's length and budget come from the chain (``numRounds``, the funded total),
    the holders from the settings (they must be those the run folder started with), the
    stages' progress from the run's state database (:func:`offchain.oracle.run_folder.open_store`):
    a round stopped part-way (a crash, ``kill -9``, missing co-signatures) resumes at the
    first stage not done, and a posted round is never posted again.

    Args:
        round_id: the round to run; None: the first round whose claims are not done.
        until: stop after this stage (a key of :data:`~offchain.rounds.pipeline.STAGE_KEYS`, e.g.
            ``sign`` or ``submit``); None: run every stage.

    Returns:
        The round's id, status in the database, budget and Merkle root, and the stages' state.

    Raises:
        ConfigError: the campaign is unfunded, every round is done, or the holders changed.
        StageError: an earlier round is not done, a stage runs in another process, fewer than
            k oracle signatures (:class:`~offchain.oracle.chain_stages.AwaitingSignatures`).
    """
    from offchain.state import StageStatus  # sqlalchemy: loaded only by a run

    console = console or Console()
    client, pool = _connect(settings, deployment)
    info = pool.get_campaign(campaign_id)
    if info.total_funded_wei == 0:
        raise ConfigError(f"campaign {campaign_id} is not funded; run `fund` first")
    settings = settings.model_copy(
        update={"n_rounds": info.num_rounds, "total_budget_wei": info.total_funded_wei}
    )
    signing_keys = signer_keys(settings, dev_keys(dev), check_threshold=False)
    relayer_key = _sponsor_key(settings, dev)
    holders, policy, ml, quality_reference = load_run_inputs(settings)
    store = open_store(settings)
    chain = ChainStages(
        client, pool, campaign_id, signing_keys, relayer_key,
        holder_claim_keys(settings, holders, client, dev), dev, settings.signature_ttl_s,
        signers=tuple(pool.get_signers(campaign_id)), threshold=info.threshold,
        cosign_wait_s=settings.cosign_wait_s,
    )
    campaign_pk = store.ensure_campaign(
        client.chain_id, pool.address, campaign_id, str(settings.run_dir)
    )
    runner = RoundRunner(settings, holders, policy, ml, quality_reference, chain, store,
                         campaign_pk)
    if round_id is None:
        round_id = next(
            (
                r for r in range(1, info.num_rounds + 1)
                if store.stage_status(store.ensure_round(campaign_pk, r), "claim")
                is not StageStatus.DONE
            ),
            None,
        )
        if round_id is None:
            raise ConfigError(f"all {info.num_rounds} rounds of campaign {campaign_id} are done")
    elif not 1 <= round_id <= info.num_rounds:
        raise ConfigError(f"round {round_id} is outside 1..{info.num_rounds}")
    participating = runner.participation(round_id)
    if not participating.any():
        raise ConfigError(f"every holder has left campaign {campaign_id} before round {round_id}")
    paths = runner.run(round_id, console, participating, until=until)
    round_pk = store.ensure_round(campaign_pk, round_id)
    if not paths.allocation.exists():
        return {"campaign_id": campaign_id, "round_id": round_id,
                "status": str(store.round_status(round_pk).value),
                "stages": _stage_states(store, round_pk), "run_dir": str(settings.run_dir)}
    print_round(console, paths)
    allocation = read_json(paths.allocation)
    submission = read_json(paths.submission) if paths.submission.exists() else {}
    return {
        "campaign_id": campaign_id,
        "round_id": round_id,
        "status": str(store.round_status(round_pk).value),
        "budget_wei": parse_wei(allocation["budget_wei"], "budget_wei"),
        "merkle_root": allocation["merkle_root"],
        "tx_hash": submission.get("tx_hash"),
        "stages": _stage_states(store, round_pk),
        "run_dir": str(settings.run_dir),
    }


MAX_SIGNING_REQUEST_BYTES = 64 * 1024
"""Largest signing request (or answer) ``cosign`` parses from an API; real ones are < 2 KiB."""


def _stage_states(store: RoundStore, round_pk: int) -> dict[str, str | None]:
    """Stage key → ``started``/``done``/``failed``, or None if never begun."""
    return {
        key: (record.status.value if (record := store.stage_run(round_pk, key)) else None)
        for key in STAGE_KEYS
    }


def cosign(
    api_url: str,
    round_id: int,
    signer_key: str,
    *,
    chain_id: int | None = None,
    pool: str | None = None,
    campaign_id: int | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Co-sign a round over the oracle API (k-of-n signing from another operator's machine).

    Fetches ``GET /rounds/{round_id}/signing-request``, checks it (the digest is recomputed
    from the EIP-712 ``RoundAllocation``; round, and when given chain id, pool and campaign id
    must be the expected ones), signs the digest locally and posts the signature to
    ``POST /rounds/{round_id}/signatures``. The key never leaves this process.

    Returns:
        The server's answer (signer, digest, signatures collected and threshold) and the
        allocation that was signed (Merkle root, total in wei, provenance, deadline).

    Raises:
        ConfigError: the API is unreachable or answers an error, or the request is not what
            this signer expects (another chain, pool, campaign or round, a wrong digest).
    """
    base = api_url.rstrip("/")
    try:
        response = httpx.get(f"{base}/rounds/{round_id}/signing-request", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {base}: {exc}") from exc
    if not response.is_success:
        raise ConfigError(f"{base} answered {response.status_code}: {_detail(response)}")
    try:
        request = loads_bounded(response.content, max_bytes=MAX_SIGNING_REQUEST_BYTES,
                                what=f"the signing request from {base}")
        allocation = RoundAllocation.from_json(request["allocation"])
        digest = "0x" + round_digest(request["chain_id"], request["verifying_contract"],
                                     allocation).hex()
    except UnsafeJSON as exc:
        raise ConfigError(str(exc)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"the signing request from {base} is malformed "
                          f"({type(exc).__name__}: {exc}); refusing to sign") from None
    expected = {
        "round_id": (allocation.round_id, round_id),
        "digest": (request["digest"].lower(), digest),
        "chain_id": (request["chain_id"], chain_id),
        "pool": (request["verifying_contract"].lower(), pool.lower() if pool else None),
        "campaign_id": (allocation.campaign_id, campaign_id),
    }
    for what, (got, want) in expected.items():
        if want is not None and got != want:
            raise ConfigError(f"the signing request's {what} is {got}, expected {want}; "
                              "refusing to sign")
    signature = sign_round(signer_key, request["chain_id"], request["verifying_contract"],
                           allocation)
    try:
        posted = httpx.post(f"{base}/rounds/{round_id}/signatures",
                            json={"signature": signature}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {base}: {exc}") from exc
    if not posted.is_success:
        raise ConfigError(f"{base} refused the signature ({posted.status_code}): "
                          f"{_detail(posted)}")
    try:
        answer = loads_bounded(posted.content, max_bytes=MAX_SIGNING_REQUEST_BYTES,
                               what=f"the answer of {base}")
    except UnsafeJSON as exc:
        raise ConfigError(f"signature posted, but {exc}") from None
    if not isinstance(answer, dict):
        raise ConfigError(f"signature posted, but {base} answered {type(answer).__name__}")
    return {**answer, "merkle_root": allocation.merkle_root,
            "total_wei": allocation.total_wei, "deadline": allocation.deadline,
            "checkpoint_hash": allocation.checkpoint_hash,
            "dataset_root": allocation.dataset_root,
            "attribution_hash": allocation.attribution_hash}


def _detail(response: Any) -> str:
    """The ``detail`` of an error answer (bounded parse), else its first 200 characters."""
    try:
        body = loads_bounded(response.content, max_bytes=MAX_SIGNING_REQUEST_BYTES)
        return str(body.get("detail", response.text))[:500]
    except (UnsafeJSON, AttributeError):
        return response.text[:200]
