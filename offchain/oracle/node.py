"""The oracle node: runs a campaign round after round, from training to holders' claims.

Per round: :mod:`offchain.rounds.stages` (prepare → train → generate → attribute → copyright →
decide → allocate), then here: :func:`sign` (EIP-712, k-of-n, :mod:`offchain.oracle.signing`),
:func:`submit` (``postRound`` on chain, never twice), :func:`await_finality` (the challenge
window) and :func:`claim_all` (each holder's Merkle claim). Like the off-chain stages, each chain stage writes one artifact atomically and is skipped
when that artifact exists; :func:`submit` also asks the chain before sending, so a lost
``submission.json`` cannot cause a second post.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from eth_account import Account
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from offchain.allocation import PayoutCaps, PayoutTree
from offchain.chain import AnvilNode, ChainClient, ContractRevert, TokenClient, compile_contracts
from offchain.chain.pool import CampaignParams, PoolClient, RoundPosted, RoundStatus
from offchain.config import Settings
from offchain.data.holders import (
    Holder,
    holder_private_key,
    load_holder_folders,
    mnist_holders,
    write_dataset_manifest,
)
from offchain.errors import ConfigError, StageError
from offchain.oracle.keystore import load_keystores, read_password
from offchain.oracle.report import payments_plot, print_round, summary_table
from offchain.oracle.signing import (
    RoundAllocation,
    recover_round_signer,
    round_digest,
    sign_round_k_of_n,
)
from offchain.policy import BudgetPolicy, make_policy
from offchain.rounds import stages
from offchain.rounds.layout import RoundPaths
from offchain.rounds.participation import stays_next_round
from offchain.utils import read_json, seed_everything, write_json

__all__ = ["CampaignResult", "await_finality", "claim_all", "run_campaign", "sign", "submit"]

logger = logging.getLogger(__name__)


def sign(
    paths: RoundPaths,
    signer_keys: Sequence[str],
    chain_id: int,
    pool_address: str,
    campaign_id: int,
    signer_set_version: int,
    deadline: int,
) -> RoundPaths:
    """Sign the round's allocation (EIP-712 ``RoundAllocation``) with every local signer key.

    The signed struct binds the campaign, the round, the Merkle root and total, the provenance
    commitments of ``allocation.json`` and the signer-set version, valid until ``deadline``
    (Unix seconds). Output: ``signature.json`` with the allocation, its digest, and the
    signatures ordered by signer address (as ``postRound`` requires). Skipped when the round
    pays nothing (no Merkle root).
    """
    if paths.signature.exists():
        return paths
    allocation = read_json(paths.allocation)
    if allocation["merkle_root"] is None:
        return paths
    signed = RoundAllocation(
        campaign_id=campaign_id,
        round_id=paths.round_id,
        merkle_root=allocation["merkle_root"],
        total_wei=int(allocation["total_wei"]),
        signer_set_version=signer_set_version,
        deadline=deadline,
        **allocation["provenance"],
    )
    signatures = sign_round_k_of_n(signer_keys, chain_id, pool_address, signed)
    signers = [recover_round_signer(sig, chain_id, pool_address, signed) for sig in signatures]
    write_json(
        paths.signature,
        {
            "chain_id": chain_id,
            "verifying_contract": pool_address,
            "allocation": signed.to_json(),
            "digest": "0x" + round_digest(chain_id, pool_address, signed).hex(),
            "signers": signers,
            "signatures": signatures,
        },
    )
    return paths


def submit(paths: RoundPaths, pool: PoolClient, sender_key: str) -> RoundPaths:
    """Post the signed round on chain once.

    Before sending, the chain is asked for the campaign's next round id: if this round is
    already there (a crash after sending), its root is checked against ours and recorded
    instead of sending.

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
    if next_round > paths.round_id:
        on_chain = pool.get_round(campaign_id, paths.round_id)
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
    result = pool.post_round(sender_key, allocation, signed["signatures"])
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
        amount = int(holder["amount_wei"])
        if amount == 0:
            continue
        index, address = holder["index"], holder["address"]
        if pool.is_claimed(campaign_id, paths.round_id, index):
            records.append({"index": index, "address": address, "amount_wei": amount,
                            "ok": True, "already_claimed": True})
            continue
        before = pool.asset_balance(asset, address)
        result = pool.claim(
            claim_keys.get(address, relayer_key), campaign_id, paths.round_id, index, address,
            amount, tree.proof(index),
        )
        received = pool.asset_balance(asset, address) - before
        records.append({"index": index, "address": address, "amount_wei": amount,
                        "tx_hash": result.tx_hash, "gas_used": result.gas_used,
                        "received_wei": received, "ok": received == amount})
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


def _signer_keys(settings: Settings, dev_keys: list[str] | None) -> list[str]:
    """The oracle signer keys: from the keystores in ``keystore_dir``, configured, or dev
    accounts 5, 6, 7 on a local anvil node.

    Raises:
        ConfigError: no keys on a remote chain, a keystore that cannot be opened, or a
            threshold above the number of keys.
    """
    if settings.keystore_dir is not None:
        if settings.oracle_keys:
            raise ConfigError("both keystore_dir and oracle_keys are set; give one")
        password = read_password(settings.keystore_password_file)
        keys = load_keystores(settings.keystore_dir, password)
    elif settings.oracle_keys:
        keys = [k.get_secret_value() for k in settings.oracle_keys]
    elif dev_keys is not None:
        keys = dev_keys[5:8]
    else:
        raise ConfigError("oracle signer keys are required on a remote chain "
                          "(set CCOMP_KEYSTORE_DIR or CCOMP_ORACLE_KEYS)")
    if settings.oracle_threshold > len(keys):
        raise ConfigError(f"oracle_threshold {settings.oracle_threshold} exceeds the "
                          f"{len(keys)} signer keys")
    return keys


def _key(secret, dev_keys: list[str] | None, dev_index: int, what: str) -> str:
    if secret is not None:
        return secret.get_secret_value()
    if dev_keys is None:
        raise ConfigError(f"{what} key is required on a remote chain (set CCOMP_{what.upper()}_KEY)")
    return dev_keys[dev_index]


def campaign_params(
    settings: Settings, client: ChainClient, token: str, sponsor: str, signer_keys: Sequence[str]
) -> CampaignParams:
    """The campaign the settings describe: rounds, caps, signers and threshold, windows; the
    guardian is ``settings.guardian`` or the sponsor, the posting deadline counts from the
    chain's latest block."""
    return CampaignParams(
        token=token,
        guardian=settings.guardian or sponsor,
        signers=tuple(Account.from_key(k).address for k in signer_keys),
        threshold=settings.oracle_threshold,
        num_rounds=settings.n_rounds,
        round_cap_wei=settings.campaign_round_cap_wei,
        holder_cap_wei=settings.campaign_holder_cap_wei,
        challenge_window_s=settings.challenge_window_s,
        claim_window_s=settings.claim_window_s,
        posting_deadline=client.block_timestamp() + settings.posting_window_s,
    )


def run_campaign(
    settings: Settings,
    console: Console | None = None,
    fresh: bool = False,
    on_round: Callable[[RoundPaths], None] | None = None,
) -> CampaignResult:
    """Run the whole main job: deploy, fund, T rounds, claims, summary.

    Args:
        settings: the run's settings (profile, budget in wei, policy, chain).
        console: where tables and progress go (a quiet console in tests).
        fresh: remove ``settings.run_dir`` first. A run on a new local chain must start fresh:
            its chain artifacts (signatures, submissions) belong to the old chain.
        on_round: called with each finished round's paths.

    Raises:
        ConfigError: the run directory holds chain artifacts of another chain, or keys are
            missing on a remote chain.
    """
    console = console or Console()
    started = time.perf_counter()
    run_dir = Path(settings.run_dir)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if (run_dir / "deployment.json").exists() and settings.rpc_url is None:
        raise ConfigError(
            f"{run_dir} holds a deployment on an earlier local chain; run with --fresh or "
            "choose another run directory"
        )
    seed_everything(settings.seed)
    holders = load_holders(settings)
    policy = make_policy(settings.policy, seed=settings.seed)
    ml = stages.MLConfig(
        image_size=settings.image_size, train_steps=settings.train_steps,
        n_samples=settings.n_samples, proj_dim=settings.proj_dim,
        trak_timesteps=settings.trak_timesteps, quality_samples=settings.quality_samples,
        quality_classifier_epochs=settings.quality_classifier_epochs,
        copyright_encoder=settings.copyright_encoder, trak_output=settings.trak_output,
        trak_ensemble=settings.trak_ensemble, seed=settings.seed,
    )
    write_dataset_manifest(holders, run_dir / "holders.json")
    quality_dataset = quality_reference_dataset(settings)
    quality_reference = (
        stages.prepare_quality_reference(run_dir, holders, quality_dataset, ml)
        if quality_dataset
        else None
    )
    compiled = compile_contracts(solc_path=settings.solc_path)

    with _chain(settings) as (rpc_url, dev_keys):
        client = ChainClient(rpc_url, confirmations=settings.confirmations)
        signer_keys = _signer_keys(settings, dev_keys)
        sponsor_key = _key(settings.sponsor_key, dev_keys, 2, "sponsor")
        # On a dev chain account 0 deploys; elsewhere the sponsor deploys its own campaign.
        deployer_key = dev_keys[0] if dev_keys else sponsor_key
        sponsor = Account.from_key(sponsor_key).address
        token_address = client.deploy(compiled["TestToken"], sender_key=deployer_key)
        token = TokenClient(client, token_address, compiled["TestToken"].abi)
        pool = PoolClient.deploy(client, compiled["CompensationPool"], deployer_key,
                                 token_abi=compiled["TestToken"].abi)
        pool_address = pool.address
        params = campaign_params(settings, client, token_address, sponsor, signer_keys)
        campaign_id, _ = pool.create_campaign(sponsor_key, params)
        campaign = pool.get_campaign(campaign_id)
        token.mint(deployer_key, sponsor, settings.total_budget_wei)
        pool.fund(sponsor_key, campaign_id, settings.total_budget_wei)
        write_json(run_dir / "deployment.json", {
            "rpc_url": rpc_url, "chain_id": client.chain_id, "token": token_address,
            "pool": pool_address, "campaign_id": campaign_id, "signers": list(params.signers),
            "threshold": params.threshold, "guardian": params.guardian, "sponsor": sponsor,
            "challenge_window_s": params.challenge_window_s,
            "posting_deadline": params.posting_deadline,
            "claim_deadline": campaign.claim_deadline,
            "total_budget_wei": settings.total_budget_wei,
            "round_cap_wei": params.round_cap_wei, "holder_cap_wei": params.holder_cap_wei,
        })
        claim_keys: dict[str, str] = {}
        if settings.holders_dir is None:
            for holder in holders:
                claim_keys[holder.address] = holder_private_key(holder.name)
                if dev_keys is not None:  # holders pay their own gas on the dev chain
                    client.set_eth_balance(holder.address, 10**18)
        console.print(
            f"[bold]Campaign[/bold]: {len(holders)} holders, {settings.n_rounds} rounds, budget "
            f"{settings.total_budget_wei / 10**18:,.0f} TST, policy {policy.name}, chain "
            f"{client.chain_id} at {rpc_url}, pool {pool_address} campaign {campaign_id} "
            f"({params.threshold}-of-{len(params.signers)} signers)"
        )

        participating = np.ones(len(holders), dtype=bool)
        allocated = [0] * len(holders)
        rounds_run = 0
        for round_id in range(1, settings.n_rounds + 1):
            paths = RoundPaths(run_dir, round_id)
            if not participating.any():
                console.print(f"Round {round_id}: every holder has left; the campaign ends.")
                break
            chain = _ChainStages(client, pool, campaign_id, signer_keys, sponsor_key,
                                 claim_keys, dev_keys is not None, settings.signature_ttl_s)
            _run_steps(console, round_id, _round_steps(paths, holders, participating, ml,
                                                        policy, settings, chain,
                                                        quality_reference))
            print_round(console, paths)
            rounds_run += 1
            if on_round:
                on_round(paths)
            allocation = read_json(paths.allocation)
            amounts = [int(h["amount_wei"]) for h in allocation["holders"]]
            allocated = [a + b for a, b in zip(allocated, amounts, strict=True)]
            participating = stays_next_round(
                participating, amounts, [h.reservation_price_wei for h in holders],
                read_json(paths.copyright)["loss"],
            )
        balances = [token.balance_of(h.address) for h in holders]
        plot = payments_plot(run_dir, [r for r in range(1, settings.n_rounds + 1)
                                       if RoundPaths(run_dir, r).allocation.exists()])
        console.print(summary_table([h.name for h in holders],
                                    [h.reservation_price_wei for h in holders],
                                    allocated, balances, participating.tolist()))
        result = CampaignResult(
            run_dir=run_dir, rounds=rounds_run, names=[h.name for h in holders],
            allocated_wei=allocated, balances_wei=balances,
            participating=participating.tolist(), plot=plot, pool_address=pool_address,
            seconds=time.perf_counter() - started,
            extras={"unallocated_wei": pool.unallocated(campaign_id),
                    "campaign_id": campaign_id},
        )
    console.print(f"Payments plot: {plot}; artifacts in {run_dir}; {result.seconds:.1f} s")
    return result


@dataclass(frozen=True)
class _ChainStages:
    """What the chain stages of a round need."""

    client: ChainClient
    pool: PoolClient
    campaign_id: int
    signer_keys: Sequence[str]
    relayer_key: str
    claim_keys: Mapping[str, str]
    dev_chain: bool
    signature_ttl_s: int

    def sign(self, paths: RoundPaths) -> RoundPaths:
        version = self.pool.get_campaign(self.campaign_id).signer_set_version
        deadline = self.client.block_timestamp() + self.signature_ttl_s
        return sign(paths, self.signer_keys, self.client.chain_id, self.pool.address,
                    self.campaign_id, version, deadline)

    def payout_caps(self) -> PayoutCaps:
        """The campaign's round and holder caps and its unallocated escrow, read now (wei)."""
        info = self.pool.get_campaign(self.campaign_id)
        return PayoutCaps(info.round_cap_wei, info.holder_cap_wei, info.unallocated_wei)


def _round_steps(
    paths: RoundPaths,
    holders: Sequence[Holder],
    participating: np.ndarray,
    ml: stages.MLConfig,
    policy: BudgetPolicy,
    settings: Settings,
    chain: _ChainStages,
    quality_reference: object | None = None,
) -> list[tuple[str, Callable[[], object]]]:
    """The round's stages in order, as (name, thunk) pairs (quality only with a reference)."""
    quality = (
        [("quality (FID)", lambda: stages.assess_quality(paths, ml, quality_reference))]
        if quality_reference is not None
        else []
    )
    return [
        ("prepare", lambda: stages.prepare(paths, holders, participating)),
        ("train", lambda: stages.train(paths, ml)),
        ("generate", lambda: stages.generate(paths, ml)),
        ("attribute (TRAK)", lambda: stages.attribute(paths, ml)),
        ("copyright loss", lambda: stages.assess_copyright(paths, ml)),
        *quality,
        ("policy", lambda: stages.decide(paths, policy, settings.n_rounds,
                                         settings.total_budget_wei, caps=chain.payout_caps())),
        ("allocate + Merkle", lambda: stages.allocate(paths)),
        ("sign (EIP-712, k-of-n)", lambda: chain.sign(paths)),
        ("submit", lambda: submit(paths, chain.pool, chain.relayer_key)),
        ("challenge window", lambda: await_finality(paths, chain.pool, chain.relayer_key,
                                                    dev_chain=chain.dev_chain)),
        ("claims", lambda: claim_all(paths, chain.pool, chain.claim_keys, chain.relayer_key)),
    ]


def _run_steps(console: Console, round_id: int,
               steps: Sequence[tuple[str, Callable[[], object]]]) -> None:
    """Run a round's steps in order with a spinner line per step and its time."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        for name, step in steps:
            task = progress.add_task(f"round {round_id}: {name}", total=1)
            step()
            progress.update(task, completed=1)
