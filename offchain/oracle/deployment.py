"""The deployment file (``<run_dir>/deployment.json``): where a campaign lives on chain.

One type, :class:`Deployment`, owns the file's format: ``demo`` (:func:`offchain.oracle.campaign.
run_campaign`) and ``deploy``/``create-campaign`` (:mod:`offchain.oracle.operations`) write it
through :meth:`Deployment.to_json`; ``status``, ``claim``, ``reclaim``, ``run-round`` and the API
read it through :func:`read_deployment`. The campaign's parameters come from the settings
(:func:`campaign_params`); its fields in the file from :func:`campaign_record`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import is_address

from offchain.allocation import wei_str
from offchain.chain import ChainClient, TokenClient
from offchain.chain.pool import CampaignParams, PoolClient, TxResult
from offchain.config import Settings
from offchain.errors import ConfigError
from offchain.jsonsafe import UnsafeJSON, loads_bounded
from offchain.utils import write_json

__all__ = [
    "DEPLOYMENT_FILE",
    "Deployment",
    "campaign_params",
    "campaign_record",
    "deploy_contracts",
    "fund_campaign",
    "open_campaign",
    "deployment_path",
    "load_deployment",
    "read_deployment",
]

DEPLOYMENT_FILE = "deployment.json"
"""Name of the deployment file in a run folder."""


@dataclass
class Deployment:
    """What the deployment file records (addresses checksummed, money in wei).

    The file is one JSON object: ``rpc_url``, ``chain_id``, ``token``, ``pool``, ``test_token``
    (when recorded), ``campaign_id``, then the :attr:`campaign` fields (:func:`campaign_record`).
    """

    rpc_url: str
    """The chain's JSON-RPC endpoint the deployment was made through."""
    chain_id: int
    token: str
    """The payment token (ERC-20) address."""
    pool: str
    """The ``CompensationPool`` address."""
    test_token: bool | None = True
    """The token is the ``TestToken`` deployed with the pool (open ``mint``), so ``fund`` may
    mint the sponsor's shortfall. None: not recorded in the file (``demo`` writes none: its token
    is always its own TestToken); a file without it reads as True."""
    campaign_id: int | None = None
    """The latest campaign created through this file (None before ``create-campaign``)."""
    campaign: dict[str, Any] = field(default_factory=dict)
    """That campaign's fields (:func:`campaign_record`)."""

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object (key order as written)."""
        data = {k: v for k, v in asdict(self).items() if k != "campaign"}
        if self.test_token is None:
            del data["test_token"]
        return {**data, **self.campaign}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        """Inverse of :meth:`to_json` (unchecked: :func:`read_deployment` checks a file)."""
        known = {"rpc_url", "chain_id", "token", "pool", "test_token", "campaign_id"}
        return cls(
            rpc_url=data["rpc_url"],
            chain_id=int(data["chain_id"]),
            token=data["token"],
            pool=data["pool"],
            test_token=bool(data.get("test_token", True)),
            campaign_id=data.get("campaign_id"),
            campaign={k: v for k, v in data.items() if k not in known},
        )

    def write(self, path: Path) -> Path:
        """Write :meth:`to_json` to ``path`` atomically; returns ``path``."""
        return write_json(path, self.to_json())


def deployment_path(settings: Settings, path: Path | None = None) -> Path:
    """The deployment file: ``path``, or ``<run_dir>/deployment.json``."""
    return Path(path) if path is not None else Path(settings.run_dir) / DEPLOYMENT_FILE


def load_deployment(settings: Settings, path: Path | None = None) -> Deployment:
    """Read the deployment file (``path``, else ``<run_dir>/deployment.json``).

    Raises:
        ConfigError: the file is missing or corrupt (see :func:`read_deployment`).
    """
    file = deployment_path(settings, path)
    if not file.exists():
        raise ConfigError(f"no deployment file {file}; run `python -m offchain deploy` first")
    return read_deployment(file)


_DEPLOYMENT_FIELDS = {"rpc_url": str, "chain_id": int, "token": str, "pool": str}


def read_deployment(file: Path) -> Deployment:
    """Read and check a deployment file: a JSON object with ``rpc_url`` (str), ``chain_id``
    (int), ``token`` and ``pool`` (addresses), optional ``campaign_id`` (int or null).

    Raises:
        ConfigError: one line naming the file and what is wrong (unreadable, not JSON, not an
            object, a missing or mistyped field).
    """
    try:
        data = loads_bounded(Path(file).read_bytes(), max_bytes=1 << 20,
                             what=f"deployment file {file}")
    except OSError as exc:
        raise ConfigError(f"cannot read deployment file {file}: {exc.strerror}") from None
    except UnsafeJSON as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"deployment file {file} is not a JSON object")
    missing = sorted(set(_DEPLOYMENT_FIELDS) - set(data))
    if missing:
        raise ConfigError(f"deployment file {file} lacks {', '.join(missing)}")
    for key, kind in _DEPLOYMENT_FIELDS.items():
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise ConfigError(f"deployment file {file}: {key} must be a {kind.__name__}")
    for key in ("token", "pool"):
        if not is_address(data[key]):
            raise ConfigError(f"deployment file {file}: {key} {data[key]!r} is not an address")
    campaign_id = data.get("campaign_id")
    if campaign_id is not None and (
        isinstance(campaign_id, bool) or not isinstance(campaign_id, int)
    ):
        raise ConfigError(f"deployment file {file}: campaign_id must be an int or null")
    return Deployment.from_json(data)


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


def deploy_contracts(
    client: ChainClient, compiled: dict, deployer_key: str, token: str | None = None
) -> tuple[TokenClient, PoolClient]:
    """Deploy a ``CompensationPool`` (admin: the deployer) and, unless ``token`` names an
    existing ERC-20, a ``TestToken`` first; the token and the pool.

    ``compiled`` is :func:`offchain.chain.compile_contracts`'s output.
    """
    token_abi = compiled["TestToken"].abi
    token_address = token or client.deploy(compiled["TestToken"], sender_key=deployer_key)
    pool = PoolClient.deploy(client, compiled["CompensationPool"], deployer_key,
                             token_abi=token_abi)
    return TokenClient(client, token_address, token_abi), pool


def open_campaign(
    settings: Settings,
    client: ChainClient,
    pool: PoolClient,
    token: str,
    sponsor_key: str,
    signer_keys: Sequence[str],
) -> tuple[int, CampaignParams, int]:
    """Create the campaign the settings describe (:func:`campaign_params`) on ``pool``, paid in
    ``token``, with the sponsor as sender and admin; (campaign id, its parameters, its claim
    deadline in Unix seconds)."""
    sponsor = Account.from_key(sponsor_key).address
    params = campaign_params(settings, client, token, sponsor, signer_keys)
    campaign_id, _ = pool.create_campaign(sponsor_key, params)
    return campaign_id, params, pool.get_campaign(campaign_id).claim_deadline


def fund_campaign(
    pool: PoolClient,
    campaign_id: int,
    sponsor_key: str,
    amount_wei: int,
    *,
    test_token: str | None,
) -> tuple[int, TxResult]:
    """Fund the campaign with ``amount_wei`` from the sponsor (approve, then ``fund``); when the
    campaign pays in ``test_token`` (a TestToken deployed with the pool, open ``mint``) the
    sponsor first mints whatever its balance lacks. (wei minted, the ``fund`` transaction's
    result).

    Raises:
        ConfigError: ``amount_wei`` ≤ 0.
    """
    if amount_wei <= 0:
        raise ConfigError(f"amount must be > 0 wei, got {amount_wei}")
    sponsor = Account.from_key(sponsor_key).address
    minted = 0
    token = pool.token(campaign_id) if test_token is not None else None
    if token is not None and token.address == test_token:
        minted = max(amount_wei - token.balance_of(sponsor), 0)
        if minted:
            token.mint(sponsor_key, sponsor, minted)
    return minted, pool.fund(sponsor_key, campaign_id, amount_wei)
