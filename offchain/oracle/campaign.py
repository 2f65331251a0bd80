"""The main job: deploy, fund, run a campaign round after round, from training to holders' claims.

:func:`run_campaign` checks every input, deploys the token and the pool, creates and funds the
campaign (on a fresh local anvil node unless ``settings.rpc_url`` names a chain), writes the
deployment file (:class:`~offchain.oracle.deployment.Deployment`) and runs the rounds with a
:class:`~offchain.oracle.runner.RoundRunner`. Round by round the holders decide whether to stay
(:func:`offchain.policy.participation.stays_next_round`); the campaign ends after ``n_rounds``
or when every holder has left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from eth_account import Account
from rich.console import Console

from offchain.allocation import WEI_PER_TOKEN, parse_wei
from offchain.chain import AnvilNode, ChainClient, TokenClient, compile_contracts
from offchain.chain.pool import CampaignParams, PoolClient
from offchain.config import Settings
from offchain.errors import ConfigError
from offchain.layout import RoundPaths
from offchain.oracle.chain_stages import ChainStages
from offchain.oracle.deployment import (
    DEPLOYMENT_FILE,
    Deployment,
    campaign_record,
    deploy_contracts,
    fund_campaign,
    open_campaign,
)
from offchain.oracle.keys import (
    DEV_DEPLOYER,
    check_keys,
    holder_claim_keys,
    signer_keys,
    sponsor_key,
)
from offchain.oracle.report import payments_plot, print_round, summary_table
from offchain.oracle.run_folder import (
    check_backend,
    load_holders,
    load_run_inputs,
    open_store,
    prepare_run_dir,
)
from offchain.oracle.runner import RoundRunner
from offchain.utils import read_json

if TYPE_CHECKING:  # the state database (sqlalchemy) is imported when a run opens it
    from offchain.state import RoundStore

__all__ = ["CampaignResult", "run_campaign"]


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


@contextmanager
def _chain(settings: Settings) -> Iterator[tuple[str, list[str] | None]]:
    """Yield (rpc_url, dev keys or None): the configured endpoint, or a fresh local anvil."""
    if settings.rpc_url is not None:
        yield settings.rpc_url, None
        return
    with AnvilNode(anvil_path=str(settings.anvil_path) if settings.anvil_path else None) as node:
        yield node.rpc_url, list(node.private_keys)


def run_campaign(
    settings: Settings,
    console: Console | None = None,
    fresh: bool = False,
    on_round: Callable[[RoundPaths], None] | None = None,
) -> CampaignResult:
    """Run the whole main job: deploy, fund, T rounds, claims, summary.

    Each round's stages are recorded in the run's state database (:func:`~offchain.oracle.run_folder.open_store`); a
    round that stopped part-way resumes with ``python -m offchain run-round``.

    Args:
        settings: the run's settings (profile, budget in wei, policy, chain).
        console: where tables and progress go (a quiet console in tests).
        fresh: empty ``settings.run_dir`` first, after every input (holders, keys, contracts)
            is validated, and only if it is a run folder
            (:func:`~offchain.oracle.run_folder.prepare_run_dir`). A run on a
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
    check_backend(settings)
    check_keys(settings)
    compiled = compile_contracts(solc_path=settings.solc_path)
    prepare_run_dir(run_dir, fresh)
    if (run_dir / DEPLOYMENT_FILE).exists() and settings.rpc_url is None:
        raise ConfigError(
            f"{run_dir} holds a deployment on an earlier local chain; run with --fresh or "
            "choose another run directory"
        )
    holders, policy, ml, quality_reference = load_run_inputs(settings, holders)
    store = open_store(settings)

    with _chain(settings) as (rpc_url, dev_keys):
        client = ChainClient(rpc_url, confirmations=settings.confirmations)
        deployed = _deploy_campaign(settings, client, compiled, dev_keys)
        _deployment(settings, rpc_url, deployed).write(run_dir / DEPLOYMENT_FILE)
        pool, campaign_id, params = deployed.pool, deployed.campaign_id, deployed.params
        claim_keys = holder_claim_keys(settings, holders, client, dev_keys is not None)
        console.print(
            f"[bold]Campaign[/bold]: {len(holders)} holders, {settings.n_rounds} rounds, budget "
            f"{settings.total_budget_wei / WEI_PER_TOKEN:,.0f} TST, policy {policy.name}, chain "
            f"{client.chain_id} at {rpc_url}, pool {pool.address} campaign {campaign_id} "
            f"({params.threshold}-of-{len(params.signers)} signers)"
        )
        chain = ChainStages(client, pool, campaign_id, deployed.signer_keys,
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

    On a dev chain account :data:`~offchain.oracle.keys.DEV_DEPLOYER` deploys; elsewhere the sponsor deploys its own campaign.
    """
    signing_keys = signer_keys(settings, dev_keys, check_threshold=settings.oracle_signers is None)
    sponsors_key = sponsor_key(settings, dev_keys)
    deployer_key = dev_keys[DEV_DEPLOYER] if dev_keys else sponsors_key
    sponsor = Account.from_key(sponsors_key).address
    token, pool = deploy_contracts(client, compiled, deployer_key)
    campaign_id, params, claim_deadline = open_campaign(
        settings, client, pool, token.address, sponsors_key, signing_keys)
    fund_campaign(pool, campaign_id, sponsors_key, settings.total_budget_wei, test_token=token.address)
    return _DeployedCampaign(token, pool, campaign_id, params, claim_deadline, sponsor,
                             sponsors_key, signing_keys)


def _deployment(settings: Settings, rpc_url: str, deployed: _DeployedCampaign) -> Deployment:
    """The deployment file's record of the campaign just deployed: addresses, campaign, signers,
    windows, budget and caps (wei as decimal strings); ``test_token`` is not recorded (the
    token is always the TestToken deployed here)."""
    return Deployment(
        rpc_url=rpc_url, chain_id=deployed.pool.client.chain_id,
        token=deployed.token.address, pool=deployed.pool.address, test_token=None,
        campaign_id=deployed.campaign_id,
        campaign=campaign_record(settings, deployed.params, deployed.sponsor,
                                 deployed.claim_deadline),
    )


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
